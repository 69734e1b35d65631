"""draft_features: a drafter conditioned on the draft model's hidden states instead of its words.

The draft model's prefill (vision tower + prompt forward, ~30 ms into a 7B run) produces hidden
states long before its first answer token exists. This drafter reads those: the last layer's
states over the prompt, pooled into a few vectors (the mean over the visual positions and the
state at the last prompt position, which is what the draft model's answer is generated from),
projected into the encoder of the cross_modal network (helpers.study.drafters.cross_modal),
whose causal decoder reads the target's accepted prefix. With `use_features=False` the encoder
sees zeros: the same architecture, data and training as a content-free neural prior, the
ablation that isolates what the features add.

Features exist only where the draft model runs (the synthetic world, or real checkpoints):
`extract(backend, items)` computes them from a draft `Backend` and work items; the drafter keeps
them by pair key (`helpers.study.pairs.RecordedPair.key`).
"""
from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from helpers.study import metrics
from helpers.study.drafters import graphs
from helpers.study.drafters.cross_modal import PAD, CrossModalConfig, CrossModalDrafter, EncoderDecoder
from helpers.study.drafters.lookup import COVERAGE_TOP
from helpers.study.pairs import RecordedPair
from helpers.training import IGNORE, MISS, ModelDevice, TrainConfig, chunks, fit_token_model, pad_batch


@torch.no_grad()
def extract(backend, items, load_inputs) -> dict[str, np.ndarray]:
    """{item.key: (2, H) float32}: the draft model's last-layer hidden states after its prompt,
    mean over the visual rows and at the last prompt position. backend: the draft model's
    helpers.models.backend.Backend (any family), whose batch size sets how many prompts go through
    one forward (right-padded: causal attention keeps padding out of the real positions);
    load_inputs(item) -> (draft input, target input)."""
    from helpers.models.decoder import language_model_of
    llama, _ = language_model_of(backend.model)
    out = {}
    for s in range(0, len(items), backend.batch):
        chunk = items[s:s + backend.batch]
        xs = [load_inputs(it)[0] for it in chunk]
        n_items = [backend.adapter.n_items(x) for x in xs]
        emb, n = backend.prompt([it.question for it in chunk], backend.encode(xs), n_items)
        h = llama(inputs_embeds=emb).last_hidden_state.float()                      # (B, T, H)
        for b, it in enumerate(chunk):
            ids = torch.tensor(backend.adapter.prompt_ids(it.question, n_items[b]), device=h.device)
            row = h[b, : n[b]]
            out[it.key] = torch.stack([row[ids == backend.adapter.placeholder].mean(0), row[-1]]).cpu().numpy()
    return out


class FeatureNet(EncoderDecoder):
    """EncoderDecoder whose encoder reads projected feature vectors (B, S, F) instead of tokens."""

    def __init__(self, cfg: CrossModalConfig, vocab: int, feat_dim: int):
        super().__init__(cfg, vocab)
        self.proj = torch.nn.Sequential(torch.nn.LayerNorm(feat_dim), torch.nn.Linear(feat_dim, cfg.d_model))

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, None]:   # (B, S, F) -> (B, S, D), no padding
        s = self.proj(src) + self.src_pos(torch.arange(src.shape[1], device=src.device))
        return self.net.encoder(s), None


class FeatureDrafter(CrossModalDrafter):
    """cross_modal's decoder and training, its encoder fed the draft model's features (by pair key)."""

    def __init__(self, cfg: CrossModalConfig, features: dict[str, np.ndarray], use_features: bool = True,
                 device: str = "cpu"):
        super().__init__(cfg, device, "draft_features" if use_features else "target_prior_neural_same_net")
        self.features, self.use_features = features, use_features
        self.needs = ("the draft model's hidden states after its prompt (no draft token), and the target's prefix"
                      if use_features else "the target's accepted prefix only (features zeroed)")
        self.reads_draft = False     # features exist after the draft's prefill: no draft token is waited for
        self.feat_dim = next(iter(features.values())).shape[-1]

    def _feats(self, pairs: Sequence[RecordedPair]) -> torch.Tensor:
        return self._feats_of([p.key for p in pairs])

    def _feats_of(self, keys: Sequence[str]) -> torch.Tensor:
        missing = [k for k in keys if k not in self.features]
        if missing:
            raise KeyError(f"no draft features for {missing[:5]} ({len(missing)} pairs)")
        f = torch.tensor(np.stack([self.features[k] for k in keys]), dtype=torch.float32)
        return f if self.use_features else torch.zeros_like(f)

    def _batches(self, pairs, shuffle, rng):
        out = []
        for g in chunks(pairs, self.batch_size, shuffle, rng):
            tgt = pad_batch([self._enc(p.target_ids[:-1]) for p in g], PAD)
            y = pad_batch([self._enc(p.target_ids[1:], MISS) for p in g], IGNORE, tgt.shape[1])
            out.append(((self._feats(g), tgt), y))
        return out

    def fit(self, train, val, tcfg: TrainConfig):
        self.batch_size = tcfg.batch_size
        self._build_vocab(train)
        torch.manual_seed(tcfg.seed)
        self.model = FeatureNet(self.cfg, len(self.itos), self.feat_dim).to(self.device)
        return fit_token_model(self.model, self._batches, train, val, tcfg, desc=self.name)

    def predict_topk(self, pairs, k, visible=None):
        itos = torch.tensor(self.itos)
        out = []
        for p in pairs:
            top = itos[self._probs_of(self._feats([p]), p.target_ids[:-1], p.question).topk(k, dim=-1).indices].numpy()
            need = len(p.target_ids) - 1 - top.shape[0]
            out.append(np.vstack([top, -np.ones((need, k), dtype=top.dtype)]) if need > 0 else top)
        return out

    def propose(self, ctx, n):
        """Greedy chain of n from the features of the pair `ctx.key` (computed at the draft model's
        prefill) and the target's prefix: one network pass per drafted token, no draft token read."""
        if ctx.key not in self.features:
            raise KeyError(f"no draft features for pair {ctx.key!r}: this drafter drafts only for pairs whose "
                           "draft-model features were extracted (the online engine's contexts carry none)")
        return self._chain(self._feats_of([ctx.key]), ctx.target_prefix, n, ctx.question)


# --- one network pass per chain: heads per offset (Medusa-style) ---------------------------------

class OffsetHeads(nn.Module):
    """n heads on a decoder's last state x (after its final norm): head i (1..n) predicts the token
    i places after the next one, z = x + SiLU(W_i x), logits z @ E^T with the backbone's own tied
    output embedding E (as Medusa's heads read the base model's last state). W_i starts at zero, so
    each head starts as the backbone's next-token distribution."""

    def __init__(self, d_model: int, n: int):
        super().__init__()
        self.lin = nn.ModuleList(nn.Linear(d_model, d_model) for _ in range(n))
        for lin in self.lin:
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor, out_weight: torch.Tensor) -> torch.Tensor:   # (..., D) -> (n, ..., V)
        return torch.stack([(x + nn.functional.silu(lin(x))) @ out_weight.T for lin in self.lin])


class HeadsNet(nn.Module):
    """A trained FeatureNet (frozen) and its OffsetHeads: from one decoder state, the logits of the
    next token (row 0, the backbone's own) and of the n tokens after it (rows 1..n)."""

    def __init__(self, backbone: FeatureNet, heads: OffsetHeads):
        super().__init__()
        self.backbone, self.heads = backbone, heads

    def offsets(self, h: torch.Tensor) -> torch.Tensor:                 # (..., D) -> (1 + n, ..., V)
        w = self.backbone.embed.weight
        return torch.cat([(h @ w.T)[None], self.heads(h, w)])

    def probs(self, h: torch.Tensor) -> torch.Tensor:                   # (..., D) -> (1 + n, ..., V), float32
        lg = self.offsets(h).float()
        lg[..., :2] = -torch.inf                                            # PAD/UNK are never drafts
        return lg.softmax(-1)


class Pending:
    """A queued pass's (1 + n, V) probabilities: `ready()` says whether they have arrived (the host
    can do other work meanwhile), calling it waits for them and returns them as numpy."""

    def __init__(self, result: Callable[[], np.ndarray], event: torch.cuda.Event | None = None):
        self.result, self.event = result, event

    def ready(self) -> bool:
        return self.event is None or self.event.query()

    def __call__(self) -> np.ndarray:
        if self.event is not None:
            self.event.synchronize()
        return self.result()


class StaticHeads:
    """HeadsNet's one pass per chain at a static shape (the prefix right-padded to max_len), as
    graphs.Replay: `launch(src, prefix, key)` queues the pass (and the encoder, unless `key` names
    the src of the previous launch: the features are the pair's, fixed for its whole answer, and the
    backbone is frozen; an encoder changed in place between two such launches would not be seen) and
    returns a Pending of the (1 + n, V) probabilities on the host (PAD and UNK at 0); on a GPU the
    copy to the host is queued too, so the host can work while the GPU runs and waits only when it
    needs them."""

    def __init__(self, model: HeadsNet, src: torch.Tensor, max_len: int, graph: bool = True):
        bb, self.max_len, self.device = model.backbone, max_len, src.device
        self.encoder = graphs.Replay(lambda s: bb.encode(s)[0], [src], graph)
        memory = bb.encode(src)[0]

        def probs(x, memory):               # x (1, max_len + 1): the padded prefix, then its last position
            h = bb.hidden(memory, None, x[:, :max_len])[0]
            return model.probs(h.index_select(0, x[0, max_len:])[0])
        x = torch.full((1, max_len + 1), PAD, dtype=torch.long, device=src.device)
        x[0, max_len] = 0
        self.prober = graphs.Replay(probs, [x, memory], graph)   # memory last: a launch on the same src passes x only
        self.on_gpu = src.is_cuda
        n_out, vocab = len(model.heads.lin) + 1, bb.embed.weight.shape[0]
        # pinned staging on a GPU: a copy from pageable host memory may block the host until the queue drains;
        # the prefix is written through a numpy view (cheaper than a torch index assignment per call)
        self.staged_src = torch.empty(src.shape, dtype=src.dtype, pin_memory=self.on_gpu)
        self.staged_x = torch.full((1, max_len + 1), PAD, dtype=torch.long, pin_memory=self.on_gpu)
        self.x = self.staged_x.numpy()[0]
        self.host = torch.empty((n_out, vocab), pin_memory=self.on_gpu)
        self.done = torch.cuda.Event() if self.on_gpu else None
        self.graphed = self.encoder.graph is not None and self.prober.graph is not None
        self.src_key = None                 # the key of the src whose encoding the prober's memory holds

    def launch(self, src: torch.Tensor, prefix: Sequence[int], key: object = None) -> Pending:
        # the staging buffers are free again: the previous launch's result was waited for after its copies
        prefix = prefix[: self.max_len]
        x, n = self.x, len(prefix)
        x[:n] = prefix
        x[n: self.max_len] = PAD
        x[self.max_len] = n - 1
        if key is not None and key == self.src_key:
            out = self.prober(self.staged_x)                   # the encoder's output from the last launch, still in place
        else:
            self.staged_src.copy_(src)
            out = self.prober(self.staged_x, self.encoder(self.staged_src))
            self.src_key = key
        if not self.on_gpu:
            return Pending(out.numpy)
        self.host.copy_(out, non_blocking=True)
        self.done.record()
        return Pending(self.host.numpy, self.done)


class FeatureHeadsDrafter(ModelDevice):
    """draft_features_heads: a trained FeatureDrafter mixed with its prior, drafting a whole chain
    from ONE network pass. The pass gives the next token's distribution (the backbone's) and, from
    heads per offset (OffsetHeads, trained with the backbone frozen, as Medusa-1), the distributions
    of the tokens after it; the chain's i-th token is the argmax of weight_i x the pass's row i plus
    (1 - weight_i) x the prior's distribution after the tokens drafted so far (computed on the host,
    while the GPU runs the pass); past the heads, the prior alone. weights = (the next token's, the
    heads'), chosen on validation (`choose_weights`). The autoregressive mixture runs a pass per
    token: this trades some of its accuracy at later offsets for a chain that costs one pass."""

    cuda_graphs = True

    def __init__(self, base: FeatureDrafter, n_heads: int = 4, name: str = "draft_features_heads"):
        if getattr(base, "model", None) is None or base.prior is None:
            raise ValueError("heads need a trained FeatureDrafter with a prior mixed in (set_prior)")
        if n_heads < 1:
            raise ValueError(f"n_heads must be >= 1, got {n_heads}")
        self.base, self.name = base, name
        self.model = HeadsNet(base.model, OffsetHeads(base.cfg.d_model, n_heads)).to(base.device)
        self._n_out, self._vocab = n_heads + 1, base.model.embed.weight.shape[0]
        self.needs = base.needs + "; one network pass per chain"
        self.reads_draft, self.ranks = False, False
        self.weights = (base.prior_weight, 0.0)
        self.prior_top = COVERAGE_TOP   # the prior's best candidates mixed in: those a count prior ranks cheaply

    # plain attributes: read on every drafted token, and a torch module's attribute lookup costs
    # microseconds (about 5% of a chain's host time); the heads and the vocabulary are fixed at __init__
    @property
    def n_out(self) -> int:
        return self._n_out

    @property
    def vocab(self) -> int:
        return self._vocab

    # --- training the heads (the backbone frozen) --------------------------------------
    @torch.no_grad()
    def _rows(self, pairs: Sequence[RecordedPair]) -> tuple[torch.Tensor, torch.Tensor]:
        """The backbone's states at every target position of `pairs` (N, D) and the labels of each
        head there (N, n): the token i + 1 places ahead, IGNORE past the answer or outside the vocabulary."""
        bb, b, n = self.model.backbone, self.base, self.n_out - 1
        bb.eval()
        xs, ys = [], []
        for (feats, tgt), y in b._batches(pairs, False, np.random.default_rng(0)):
            h = bb.hidden(*bb.encode(feats.to(self.device)), tgt.to(self.device))
            y = y.masked_fill(y == MISS, IGNORE)
            lab = torch.stack([nn.functional.pad(y[:, i:], (0, i), value=IGNORE) for i in range(1, n + 1)], -1)
            keep = tgt != PAD
            xs.append(h[keep])
            ys.append(lab[keep].to(self.device))
        return torch.cat(xs), torch.cat(ys)

    def fit(self, train: Sequence[RecordedPair], val: Sequence[RecordedPair], epochs: int = 100, lr: float = 1e-3,
            batch_size: int = 512, patience: int = 5, max_minutes: float = 1.0, seed: int = 0) -> dict:
        """Train the heads on the frozen backbone's states (cross-entropy summed over heads, label
        smoothing 0.1); the epoch with the lowest validation loss is kept. Returns the history."""
        torch.manual_seed(seed)
        (xt, yt), (xv, yv) = self._rows(train), self._rows(val)
        heads, w = self.model.heads, self.model.backbone.embed.weight.detach()
        loss_fn = nn.CrossEntropyLoss(ignore_index=IGNORE, label_smoothing=0.1)
        opt = torch.optim.AdamW(heads.parameters(), lr=lr, weight_decay=0.01)

        def loss_of(x, y):
            lg = heads(x, w)                                                 # (n, B, V)
            return loss_fn(lg.flatten(0, 1), y.T.flatten())
        rng, t0 = np.random.default_rng(seed), time.perf_counter()
        best, best_state, history, bad = math.inf, None, [], 0
        for epoch in range(epochs):
            heads.train()
            order = torch.from_numpy(rng.permutation(len(xt))).to(xt.device)
            for s in range(0, len(xt), batch_size):
                idx = order[s:s + batch_size]
                opt.zero_grad()
                loss_of(xt[idx], yt[idx]).backward()
                opt.step()
            heads.eval()
            with torch.no_grad():
                v = float(loss_of(xv, yv))
            history.append(v)
            if v < best - 1e-4:
                best, bad, best_state = v, 0, {k: t.clone() for k, t in heads.state_dict().items()}
            else:
                bad += 1
            if bad >= patience or (max_minutes and time.perf_counter() - t0 > 60 * max_minutes):
                break
        if best_state is not None:                                         # else: no epoch ran, or none improved
            heads.load_state_dict(best_state)
        return {"val_loss": history, "best_epoch": int(np.argmin(history)) + 1, "epochs": len(history),
                "seconds": time.perf_counter() - t0, "train_positions": len(xt)}

    # --- exact chains, teacher-forced -----------------------------------------------------
    @torch.no_grad()
    def _tables(self, p: RecordedPair) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For one pair, at every target position j the chain can reach (T = the answer's positions,
        up to max_len): the pass's probabilities from prefix target[: j + 1] (n_out, T, V), the
        prior's distribution after it (T, V), and the compact id of target[j + 1] (T,; -1 where it
        is outside the vocabulary)."""
        b, bb = self.base, self.model.backbone
        bb.eval()
        prefix = list(p.target_ids[:-1])[: b.cfg.max_len]
        tgt = pad_batch([b._enc(prefix)], PAD).to(self.device)
        probs = self.model.probs(bb.hidden(*bb.encode(b._feats([p]).to(self.device)), tgt)[0]).cpu().numpy()
        rows = np.stack([self._row(prefix[: r + 1], p.question) for r in range(len(prefix))])
        target = np.array([b.stoi.get(t, -1) for t in p.target_ids[1: len(prefix) + 1]])
        return probs, rows, target

    def _row(self, prefix: Sequence[int], question: str) -> np.ndarray:
        """The prior's distribution after `prefix` (its best `prior_top`, renormalised) over the
        network's compact ids, float32 (V,), zero elsewhere: numpy, since a chain needs one per token
        and building a torch tensor costs more than the mixing."""
        row = np.zeros(self.vocab, np.float32)
        cols, vals = self.base._prior_entries(prefix, question, self.prior_top)
        if cols:
            row[list(cols)] = vals
        return row

    @staticmethod
    def _score(w: float, probs: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """w x the pass's probabilities + (1 - w) x the prior's: one expression for the chains drafted
        and the chains simulated, so both round alike."""
        return np.float32(w) * probs + np.float32(1 - w) * rows

    @staticmethod
    def _offset_correct(tables, weights: tuple[float, float], gamma: int) -> tuple[np.ndarray, np.ndarray]:
        """(correct, proposed), each (gamma, T): the chain's token at offset i on position j, the
        argmax of weight x the pass's row i from the chain's start j - i plus (1 - weight) x the
        prior's row at j (the prior alone past the pass's rows); nothing where the row is all zero."""
        probs, rows, target = tables
        n_out, T = probs.shape[0], rows.shape[0]
        correct, proposed = np.zeros((gamma, T), bool), np.zeros((gamma, T), bool)
        for i in range(min(gamma, T)):
            s = FeatureHeadsDrafter._score(weights[min(i, 1)], probs[i, : T - i], rows[i:]) if i < n_out else rows[i:]
            top = s.argmax(-1)
            ok = s[np.arange(len(top)), top] > 0
            proposed[i, i:] = ok
            correct[i, i:] = ok & (top == target[i:])
        return correct, proposed

    def traces(self, pairs: Sequence[RecordedPair], gamma: int,
               weights: Sequence[tuple[float, float]] | None = None) -> dict[tuple[float, float], list[metrics.SDTrace]]:
        """Exact greedy SD traces of the chains this drafter proposes (metrics.simulate_sd_offsets),
        for each weight pair (default: its own), the network's pass run once per pair."""
        weights = [tuple(self.weights)] if weights is None else [tuple(map(float, w)) for w in weights]
        out = {w: [] for w in weights}
        for p in pairs:
            tables = self._tables(p)
            for w in weights:
                correct, proposed = self._offset_correct(tables, w, gamma)
                out[w].append(metrics.simulate_sd_offsets(correct, gamma, proposed))
        return out

    def choose_weights(self, val: Sequence[RecordedPair], grid_next: Sequence[float], grid_heads: Sequence[float],
                       gamma: int) -> dict[tuple[float, float], float]:
        """Set (the next token's, the heads') network weights with the best validation MAT (ties:
        the larger weights); returns every pair's MAT. Heads weighted 0 leave the chain's later
        tokens to the prior: the network mixes into the first token only."""
        grid = [(a, h) for a in grid_next for h in grid_heads]
        scores = {w: metrics.summarize_sd(t).mat for w, t in self.traces(val, gamma, grid).items()}
        self.weights = max(scores, key=lambda w: (scores[w], w))
        return scores

    # --- drafting ------------------------------------------------------------------------
    @torch.no_grad()
    def _launch(self, key: str, prefix: Sequence[int]) -> Pending:
        b = self.base
        if graphs.wanted(self.device, self.cuda_graphs):
            # the pair's features, kept (and their encoding on the GPU) across its verify steps; features
            # replaced under the same key, or switched off, are another token (the array is held, so its id stays its own)
            arr = b.features[key]
            token, last = (key, id(arr), b.use_features), self.__dict__.get("_last_src")
            if last is None or last[0] != token:
                last = self._last_src = (token, b._feats_of([key]), arr)
            src = last[1]
            static = graphs.captured(self, lambda: StaticHeads(self.model, src.to(self.device), b.cfg.max_len),
                                     tuple(src.shape))
            return static.launch(src, b._enc(prefix), token)
        bb = self.model.backbone
        bb.eval()
        src = b._feats_of([key]).to(self.device)
        h = bb.hidden(*bb.encode(src), pad_batch([b._enc(prefix)], PAD).to(self.device))[0, -1]
        return Pending(self.model.probs(h).cpu().numpy)

    @torch.no_grad()
    def propose(self, ctx, n: int) -> list[int]:
        """A greedy chain of up to n from one network pass and the prior's rows; it stops early
        where neither has a candidate. While the pass runs (on a GPU), the host computes the prior's
        rows along the prior's own greedy chain: the mixed chain follows it wherever the pass does
        not overrule the prior, and there those rows are the ones it needs; elsewhere they are
        computed after. The chain is the same either way."""
        b = self.base
        if ctx.key not in b.features:
            raise KeyError(f"no draft features for pair {ctx.key!r}")
        prefix = list(ctx.target_prefix)
        n = max(0, min(n, b.cfg.max_len + 1 - len(prefix)))
        if n == 0:
            return []
        rows: dict[tuple[int, ...], np.ndarray] = {}

        def row(drafted: list[int]) -> np.ndarray:        # the prior's row after the tokens drafted, once each
            k = tuple(drafted)
            if k not in rows:
                rows[k] = self._row([*prefix, *drafted], ctx.question)
            return rows[k]
        pending = self._launch(ctx.key, prefix)
        guess: list[int] = []
        while len(guess) < n and not pending.ready():
            r = row(guess)
            top = int(r.argmax())
            if not r[top] > 0:
                break
            guess.append(b.itos[top])
        probs = pending()
        drafted: list[int] = []
        n_out = self._n_out
        for i in range(n):
            s = self._score(self.weights[min(i, 1)], probs[i], row(drafted)) if i < n_out else row(drafted)
            top = int(s.argmax())
            if not s[top] > 0:
                break
            drafted.append(b.itos[top])
        return drafted
