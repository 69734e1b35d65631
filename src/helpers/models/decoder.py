"""A LLaMA language model run over a preallocated KV cache: the suite's one decode loop.

Both models of the study are LLaMA decoders (Vicuna-7B inside EventGPT and Video-LLaVA; the
synthetic world's two small models too). `StaticDecoder` wraps the transformers `LlamaModel`
(embeddings, layers, norms, MLPs: their weights and their own forward code) plus `lm_head`, and
owns only what speed needs: the KV cache, rotary positions, attention masks and the step
functions, so that one decode step is one CUDA graph (`torch.compile(mode="reduce-overhead")`).

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
    lengths                (B,) tokens in the cache per row; assign to roll back
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


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


class StaticDecoder(nn.Module):
    def __init__(self, llama: nn.Module, lm_head: nn.Module, batch: int, max_len: int,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None):
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
        self.batch, self.max_len = batch, max_len
        shape = (self.n_layers, batch, self.n_kv, max_len, self.head_dim)
        self.register_buffer("k_cache", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("lengths", torch.zeros(batch, dtype=torch.long, device=device), persistent=False)
        self.register_buffer("slots", torch.arange(max_len, device=device), persistent=False)
        inv = 1.0 / (rope["rope_theta"] ** (torch.arange(0, self.head_dim, 2, dtype=torch.float) / self.head_dim))
        self.register_buffer("inv_freq", inv.to(device), persistent=False)
        self._decode_fn = self._decode_logits
        self._compiled = False

    @classmethod
    def for_model(cls, model, batch: int, max_len: int, **kw) -> "StaticDecoder":
        return cls(*language_model_of(model), batch, max_len, **kw)

    def compile(self, mode: str = "reduce-overhead") -> "StaticDecoder":
        """One CUDA graph per decode step (and per verify width, compiled on first use)."""
        self._decode_fn = torch.compile(self._decode_logits, mode=mode, fullgraph=True)
        self._verify_fn = torch.compile(self._verify_logits, mode=mode, fullgraph=True)
        self._compiled = True
        return self

    # --- the forward pass ------------------------------------------------------------------
    def _rope(self, pos: torch.Tensor, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = pos[..., None].float() * self.inv_freq                    # (B, T, Dh/2)
        emb = torch.cat((freqs, freqs), dim=-1)                           # (B, T, Dh)
        return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]  # (B, 1, T, Dh)

    def _layers(self, x: torch.Tensor, pos: torch.Tensor, slots: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
        """x (B, T, D) at positions pos (B, T), written into cache slots (B, T); attention over the
        cache under mask (B, T, S), or, with mask None, causally over these T tokens alone (prefill
        of an empty cache)."""
        B, T, _ = x.shape
        cos, sin = self._rope(pos, x.dtype)
        b = torch.arange(B, device=x.device)[:, None, None]
        h_kv = torch.arange(self.n_kv, device=x.device)[None, None, :]
        s = slots[:, :, None]
        gqa = self.n_kv != self.n_heads
        for i, layer in enumerate(self.llama.layers):
            a = layer.self_attn
            h = layer.input_layernorm(x)
            q = a.q_proj(h).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)   # (B, H, T, Dh)
            k = a.k_proj(h).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)      # (B, Hkv, T, Dh)
            v = a.v_proj(h).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
            q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
            self.k_cache[i][b, h_kv, s] = k.transpose(1, 2)                          # (B, T, Hkv, Dh)
            self.v_cache[i][b, h_kv, s] = v.transpose(1, 2)
            if mask is None:
                o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
            else:
                o = F.scaled_dot_product_attention(q, self.k_cache[i], self.v_cache[i],
                                                   attn_mask=mask[:, None], enable_gqa=gqa)  # (B, H, T, Dh)
            x = x + a.o_proj(o.transpose(1, 2).reshape(B, T, -1))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
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
        self.lengths.copy_(n)
        return self.lm_head(h[torch.arange(B, device=h.device), n - 1]).float()       # (B, V)

    def _decode_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        pos = self.lengths[:, None]                                                   # (B, 1)
        mask = self.slots[None, None, :] <= pos[:, :, None]                           # (B, 1, S)
        return self.lm_head(self._layers(self.embed(tokens[:, None]), pos, pos, mask)[:, 0]).float()

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """One token per row (B,), written at each row's length: logits (B, V) of the next token."""
        if self._compiled:
            torch.compiler.cudagraph_mark_step_begin()
        logits = self._decode_fn(tokens)
        self.lengths += 1
        return logits

    def _verify_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        pos = self.lengths[:, None] + torch.arange(tokens.shape[1], device=tokens.device)  # (B, k)
        mask = self.slots[None, None, :] <= pos[:, :, None]                                # (B, k, S)
        return self.lm_head(self._layers(self.embed(tokens), pos, pos, mask)).float()      # (B, k, V)

    @torch.no_grad()
    def verify(self, tokens: torch.Tensor) -> torch.Tensor:
        """Score k given tokens per row (B, k) in one forward over the cache; lengths unchanged."""
        if int(self.lengths.max()) + tokens.shape[1] > self.max_len:
            raise ValueError("verify would write past the end of the cache: allocate a longer one")
        if self._compiled:
            torch.compiler.cudagraph_mark_step_begin()
            return self._verify_fn(tokens)
        return self._verify_logits(tokens)

    @torch.no_grad()
    def verify_tree(self, tokens: torch.Tensor, parents: torch.Tensor) -> torch.Tensor:
        """Score a token tree per row in one forward: tokens (B, n), parents (B, n) (index of an
        earlier node; -1 for the root, the last emitted token, not yet in the cache). Node u sits
        at position lengths + depth(u) and cache slot lengths + u, and attends to the prefix and
        to its own ancestors. Returns (B, n, V): the target's next-token logits after each node."""
        B, n = tokens.shape
        dev = tokens.device
        anc = torch.eye(n, dtype=torch.bool, device=dev).expand(B, n, n).clone()    # (B, n, n) ancestor-or-self
        depth = torch.zeros(B, n, dtype=torch.long, device=dev)
        for u in range(n):
            par = parents[:, u]
            has = par >= 0
            if has.any():
                pu = par.clamp(min=0)
                anc[has, u] |= anc[has, pu[has]]
                depth[has, u] = depth[has, pu[has]] + 1
        pos = self.lengths[:, None] + depth                                          # (B, n)
        slots = self.lengths[:, None] + torch.arange(n, device=dev)                  # (B, n)
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
