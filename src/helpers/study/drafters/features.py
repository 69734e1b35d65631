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

from typing import Sequence

import numpy as np
import torch

from helpers.study.drafters.cross_modal import PAD, CrossModalConfig, CrossModalDrafter, EncoderDecoder
from helpers.study.pairs import RecordedPair
from helpers.training import IGNORE, MISS, TrainConfig, chunks, fit_token_model, pad_batch


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
