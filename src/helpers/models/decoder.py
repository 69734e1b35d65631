"""A LLaMA language model run over a preallocated KV cache: the suite's one decode loop.

Both models of the study are LLaMA decoders (Vicuna-7B inside EventGPT and Video-LLaVA; the
synthetic world's two small models too). `StaticDecoder` wraps the transformers `LlamaModel`
(embeddings, layers, norms, MLPs: their weights and their own forward code) plus `lm_head`, and
owns only what speed needs: the KV cache, rotary positions, attention masks and the step
functions. `compile()` makes one decode step (and one verify step of each width) one CUDA graph
of torch.compile'd code: the decoder layer is compiled once (all layers share its code, so compile
time does not grow with depth: "regional compilation"), and each step is captured whole with
`torch.cuda.CUDAGraph` on first use per shape, so replaying it launches nothing from Python.

The cache is written by position, as in gpt-fast: row b's token at position p lives in slot p.
Rows of a batch have their own lengths (no left padding: a row's positions are exactly those it
would have alone, so batched greedy output equals batch-1 output). Attention masks only admit
slots below each query's position, so a rejected draft or a padded prompt position leaves stale
entries that are never read before being overwritten: rolling back is setting `lengths`.

Primitives (B = batch rows, all greedy-agnostic: they return logits):
    prefill(embeds, n)     prompts (B, T, D), real lengths n (B,) -> logits of each row's last real token (B, V)
    decode(tokens)         one token per row at its length -> logits (B, V); lengths += 1
    verify(tokens)         k tokens per row in ONE forward at lengths..lengths+k-1 -> logits (B, k, V);
                           lengths unchanged (the caller sets them to what it accepted)
    verify_tree(tokens, parents)  n tree nodes per row in one forward with a tree attention mask
    keep_path(path, n)     move an accepted tree path's cache entries into place
    set_lengths(n)         (B,) tokens in the cache per row: rolling back is setting them
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """LLaMA's RMSNorm, as transformers computes it (variance in fp32, cast back, then the weight)."""
    xf = x.float()
    return w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def _block(x, cos, sin, kc, vc, b, h_kv, s, mask, w_ln1, w_qkv, w_o, w_ln2, w_gu, w_down,
           eps: float, n_heads: int, n_kv: int, head_dim: int, sdpa_masked: bool = False):
    """One decoder layer over the cache: x (B, T, D) -> (B, T, D). Weights come as tensors (QKV
    and gate/up fused, one matrix each), so one compiled graph serves every layer. Writes keys
    and values into kc / vc (B, Hkv, S, Dh) at slots s (B, T, 1); attends under mask (B, T, S), or
    causally over these T tokens alone when mask is None (prefill of an empty cache). Under a mask
    the attention is plain matmuls, or with sdpa_masked PyTorch's fused attention with the mask."""
    B, T, _ = x.shape
    qkv = _rms(x, w_ln1, eps) @ w_qkv.T                                               # (B, T, (H + 2 Hkv) Dh)
    q, k, v = qkv.split([n_heads * head_dim, n_kv * head_dim, n_kv * head_dim], dim=-1)
    q = q.view(B, T, n_heads, head_dim).transpose(1, 2)                              # (B, H, T, Dh)
    k = k.view(B, T, n_kv, head_dim).transpose(1, 2)                                 # (B, Hkv, T, Dh)
    v = v.view(B, T, n_kv, head_dim).transpose(1, 2)
    q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
    kc[b, h_kv, s] = k.transpose(1, 2)                                              # (B, T, Hkv, Dh)
    vc[b, h_kv, s] = v.transpose(1, 2)
    if mask is None:
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=n_kv != n_heads)
    elif sdpa_masked:
        o = F.scaled_dot_product_attention(q, kc, vc, attn_mask=mask[:, None], enable_gqa=n_kv != n_heads)
    else:
        # a few queries against the whole cache: plain matmuls (split over the cache length by the
        # GEMM) read the cache at full bandwidth, where a fused kernel would parallelise over heads only
        kk, vv = kc, vc
        if n_kv != n_heads:
            kk, vv = kk.repeat_interleave(n_heads // n_kv, 1), vv.repeat_interleave(n_heads // n_kv, 1)
        att = (q @ kk.transpose(-1, -2)).float() * head_dim ** -0.5                   # (B, H, T, S)
        att = att.masked_fill(~mask[:, None], float("-inf")).softmax(-1).to(q.dtype)
        o = att @ vv                                                                  # (B, H, T, Dh)
    x = x + o.transpose(1, 2).reshape(B, T, -1) @ w_o.T
    gate, up = (_rms(x, w_ln2, eps) @ w_gu.T).chunk(2, dim=-1)                         # (B, T, F) each
    return x + (F.silu(gate) * up) @ w_down.T


def language_model_of(model) -> tuple[nn.Module, nn.Module]:
    """(LlamaModel, lm_head) inside a transformers VLM (LLaVA, Video-LLaVA), a LlamaForCausalLM,
    or anything exposing `.language_model` (EventGPT)."""
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(inner, "language_model"):      # LLaVA / Video-LLaVA (transformers 5)
        return inner.language_model, model.lm_head
    if hasattr(model, "language_model"):                              # EventGPT (helpers.models.eventgpt)
        return language_model_of(model.language_model)
    if inner is not None and hasattr(inner, "layers"):                # LlamaForCausalLM
        return inner, model.lm_head
    raise TypeError(f"no LLaMA language model found in {type(model).__name__}")


def cache_slots(max_len: int, device) -> int:
    """Slots a cache for max_len tokens gets: on a GPU a multiple of 64 (at an odd cache length the
    verify step's attention matmuls fall on unaligned tensor-core kernels: 8.5 ms against 5.0 ms on
    an H200); on a CPU exactly max_len (every extra slot is extra work there)."""
    align = 64 if torch.device(device).type == "cuda" else 1
    return -(-max_len // align) * align


def _fused_weights(llama: nn.Module) -> list[tuple]:
    """Per layer: (input norm, fused QKV, output projection, post-attention norm, fused gate/up,
    down). The fused matrices are copies (7B: 9 GB), so they are made once per model and shared by
    every decoder over it (a replay holds decoders of several batch sizes); remade if any source
    weight changed since (training in between)."""
    src = [(l.self_attn.q_proj.weight, l.self_attn.k_proj.weight, l.self_attn.v_proj.weight,
            l.mlp.gate_proj.weight, l.mlp.up_proj.weight) for l in llama.layers]
    stamp = [(w.data_ptr(), w._version) for ws in src for w in ws]
    cached = llama.__dict__.get("_fused_decoder_weights")
    if cached is None or cached[0] != stamp:
        with torch.no_grad():
            fused = [(l.input_layernorm.weight, torch.cat([q, k, v]), l.self_attn.o_proj.weight,
                      l.post_attention_layernorm.weight, torch.cat([g, u]), l.mlp.down_proj.weight)
                     for l, (q, k, v, g, u) in zip(llama.layers, src)]
        llama.__dict__["_fused_decoder_weights"] = cached = (stamp, fused)
    return cached[1]


class StaticDecoder(nn.Module):
    def __init__(self, llama: nn.Module, lm_head: nn.Module, batch: int, max_len: int,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                 attention: str = "auto"):
        super().__init__()
        cfg = llama.config
        rope = getattr(cfg, "rope_parameters", None) or {"rope_type": "default", "rope_theta": cfg.rope_theta}
        if rope.get("rope_type", "default") != "default":
            raise NotImplementedError(f"rope_type {rope['rope_type']!r}: only LLaMA's default RoPE is supported")
        self.llama, self.lm_head = llama, lm_head
        p = next(llama.parameters())
        dtype, device = dtype or p.dtype, torch.device(device) if device is not None else p.device
        self.n_layers, self.n_heads = cfg.num_hidden_layers, cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.batch, self.max_len = batch, cache_slots(max_len, device)
        if attention not in ("matmul", "sdpa", "auto"):
            raise ValueError(f"attention must be 'matmul', 'sdpa' or 'auto', got {attention!r}")
        # how decode / verify steps attend over the cache (see _block); 'auto': on a GPU fused SDPA
        # for one query per row (decode) and matmuls for several (verify), the faster of each on an
        # H200; on a CPU matmuls throughout
        self.attention = attention
        shape = (self.n_layers, batch, self.n_kv, self.max_len, self.head_dim)
        self.register_buffer("k_cache", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("lengths", torch.zeros(batch, dtype=torch.long, device=device), persistent=False)
        self.register_buffer("slots", torch.arange(self.max_len, device=device), persistent=False)
        inv = 1.0 / (rope["rope_theta"] ** (torch.arange(0, self.head_dim, 2, dtype=torch.float) / self.head_dim))
        self.register_buffer("inv_freq", inv.to(device), persistent=False)
        if getattr(cfg, "hidden_act", "silu") != "silu" or getattr(cfg, "attention_bias", False) \
                or getattr(cfg, "mlp_bias", False):
            raise NotImplementedError("only LLaMA's SiLU MLP without biases is supported")
        if not all(l.self_attn.q_proj.weight.is_floating_point() for l in llama.layers):
            raise NotImplementedError("quantized (e.g. 4-bit) language-model weights: the suite's decode loop fuses "
                                      "bf16/fp32 weight matrices; load the model unquantized, or run it 4-bit "
                                      "through transformers' generate (helpers.models.vlm.generate_greedy)")
        self.weights = _fused_weights(llama)
        self.eps = llama.layers[0].input_layernorm.variance_epsilon
        self._block = _block
        self._graphs: dict = {}
        self._compiled = False
        self._longest = 0          # host copy of lengths.max(), so a step can refuse to overflow without a sync

    @classmethod
    def for_model(cls, model, batch: int, max_len: int, **kw) -> "StaticDecoder":
        return cls(*language_model_of(model), batch, max_len, **kw)

    def compile(self) -> "StaticDecoder":
        """Compile the decoder layer (once per step shape) and replay decode / verify steps as
        CUDA graphs. On a CPU this only compiles the layer."""
        import torch._dynamo
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        torch._dynamo.config.accumulated_recompile_limit = max(torch._dynamo.config.accumulated_recompile_limit, 512)
        self._block = torch.compile(_block, fullgraph=True, dynamic=False)
        self._compiled = True
        return self

    def _graphed(self, name: str, fn, *inputs: torch.Tensor) -> torch.Tensor:
        """fn(*inputs) as a captured CUDA graph, one per (name, input shapes): the first call warms
        up (compiling), captures, and every call replays. Warm-up and capture write only cache slots
        at or after each row's length, which the real step overwrites; lengths are not touched."""
        if not (self._compiled and inputs[0].is_cuda):
            return fn(*inputs)
        key = (name, *(tuple(x.shape) for x in inputs))
        if key not in self._graphs:
            static = [x.clone() for x in inputs]
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    fn(*static)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            pool = next(iter(self._graphs.values()))[0].pool() if self._graphs else None
            with torch.cuda.graph(graph, pool=pool):
                out = fn(*static)
            self._graphs[key] = (graph, static, out)
        graph, static, out = self._graphs[key]
        for s, x in zip(static, inputs):
            s.copy_(x)
        graph.replay()
        return out.clone()

    # --- the forward pass ------------------------------------------------------------------
    def _rope(self, pos: torch.Tensor, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = pos[..., None].float() * self.inv_freq                    # (B, T, Dh/2)
        emb = torch.cat((freqs, freqs), dim=-1)                           # (B, T, Dh)
        return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]  # (B, 1, T, Dh)

    def _layers(self, x: torch.Tensor, pos: torch.Tensor, slots: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
        """x (B, T, D) at positions pos (B, T), written into cache slots (B, T): see _block."""
        B = x.shape[0]
        cos, sin = self._rope(pos, x.dtype)
        b = torch.arange(B, device=x.device)[:, None, None]
        h_kv = torch.arange(self.n_kv, device=x.device)[None, None, :]
        block = _block if mask is None else self._block        # prefill (varying lengths) stays eager
        sdpa = self.attention == "sdpa" or (self.attention == "auto" and x.shape[1] == 1 and x.is_cuda)
        for i, w in enumerate(self.weights):
            x = block(x, cos, sin, self.k_cache[i], self.v_cache[i], b, h_kv, slots[:, :, None], mask, *w,
                      self.eps, self.n_heads, self.n_kv, self.head_dim, sdpa)
        return self.llama.norm(x)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.llama.embed_tokens(tokens)

    # --- primitives ----------------------------------------------------------------------------
    @torch.no_grad()
    def prefill(self, embeds: torch.Tensor, n: torch.Tensor | list[int]) -> torch.Tensor:
        """Prompts (B, T, D), right-padded, with n (B,) real tokens each: fills every row's cache
        from slot 0 and returns the logits (B, V) of each row's last real token."""
        B, T, _ = embeds.shape
        if B != self.batch or T > self.max_len:
            raise ValueError(f"prefill of {B} x {T} into a cache of {self.batch} rows x {self.max_len} slots")
        n = torch.as_tensor(n, device=embeds.device)
        pos = torch.arange(T, device=embeds.device)[None].expand(B, T)
        h = self._layers(embeds, pos, pos, None)                                      # (B, T, D)
        self.set_lengths(n)
        return self.lm_head(h[torch.arange(B, device=h.device), n - 1]).float()       # (B, V)

    def _decode_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        pos = self.lengths[:, None]                                                   # (B, 1)
        mask = self.slots[None, None, :] <= pos[:, :, None]                           # (B, 1, S)
        return self.lm_head(self._layers(self.embed(tokens[:, None]), pos, pos, mask)[:, 0]).float()

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """One token per row (B,), written at each row's length: logits (B, V) of the next token."""
        if self._longest >= self.max_len:
            raise ValueError("decode would write past the end of the cache: allocate a longer one")
        logits = self._graphed("decode", self._decode_logits, tokens)
        self.lengths += 1
        self._longest += 1
        return logits

    def set_lengths(self, lengths) -> None:
        """Roll back (or forward) every row's length: the cache keeps slots below it."""
        self.lengths.copy_(torch.as_tensor(lengths, device=self.lengths.device))
        self._longest = int(self.lengths.max())

    def _verify_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        pos = self.lengths[:, None] + torch.arange(tokens.shape[1], device=tokens.device)  # (B, k)
        mask = self.slots[None, None, :] <= pos[:, :, None]                                # (B, k, S)
        return self.lm_head(self._layers(self.embed(tokens), pos, pos, mask)).float()      # (B, k, V)

    @torch.no_grad()
    def verify(self, tokens: torch.Tensor) -> torch.Tensor:
        """Score k given tokens per row (B, k) in one forward over the cache; lengths unchanged."""
        if self._longest + tokens.shape[1] > self.max_len:
            raise ValueError("verify would write past the end of the cache: allocate a longer one")
        return self._graphed("verify", self._verify_logits, tokens)

    @torch.no_grad()
    def verify_tree(self, tokens: torch.Tensor, parents: torch.Tensor) -> torch.Tensor:
        """Score a token tree per row in one forward: tokens (B, n), parents (B, n) (index of an
        earlier node; -1 for the root, the last emitted token, not yet in the cache). Node u sits
        at position lengths + depth(u) and cache slot lengths + u, and attends to the prefix and
        to its own ancestors. Returns (B, n, V): the target's next-token logits after each node.
        The tree's shape is worked out on the host (n is small), so the forward itself is one
        replayed graph per tree width, like verify."""
        B, n = tokens.shape
        if self._longest + n > self.max_len:
            raise ValueError("verify_tree would write past the end of the cache: allocate a longer one")
        par = parents.detach().cpu().numpy()
        anc = np.zeros((B, n, n), dtype=bool)                        # ancestor-or-self
        depth = np.zeros((B, n), dtype=np.int64)
        for u in range(n):
            anc[:, u, u] = True
            for b in np.nonzero(par[:, u] >= 0)[0]:
                p = par[b, u]
                if p >= u:
                    raise ValueError(f"node {u} of row {b} names parent {p}: parents must come earlier")
                anc[b, u] |= anc[b, p]
                depth[b, u] = depth[b, p] + 1
        dev = tokens.device
        return self._graphed("tree", self._tree_logits, tokens, torch.from_numpy(depth).to(dev),
                             torch.from_numpy(anc).to(dev))

    def _tree_logits(self, tokens: torch.Tensor, depth: torch.Tensor, anc: torch.Tensor) -> torch.Tensor:
        B, n = tokens.shape
        pos = self.lengths[:, None] + depth                                          # (B, n)
        slots = self.lengths[:, None] + torch.arange(n, device=tokens.device)        # (B, n)
        rel = self.slots[None, None, :] - self.lengths[:, None, None]                # (B, 1, S)
        in_tree = (rel >= 0) & (rel < n)
        tree = torch.gather(anc, 2, rel.clamp(0, n - 1).expand(B, n, -1))            # (B, n, S)
        mask = (rel < 0) | (in_tree & tree)
        return self.lm_head(self._layers(self.embed(tokens), pos, slots, mask)).float()

    @torch.no_grad()
    def keep_path(self, path: list[list[int]]) -> None:
        """After verify_tree: row b accepted the nodes path[b] (root first, in depth order); move
        their cache entries to consecutive slots and set lengths to cover them."""
        for b, nodes in enumerate(path):
            start = int(self.lengths[b])
            src = torch.tensor([start + u for u in nodes], device=self.k_cache.device)
            dst = torch.arange(start, start + len(nodes), device=self.k_cache.device)
            self.k_cache[:, b, :, dst] = self.k_cache[:, b, :, src]
            self.v_cache[:, b, :, dst] = self.v_cache[:, b, :, src]
            self.lengths[b] = start + len(nodes)
        self._longest = int(self.lengths.max())
