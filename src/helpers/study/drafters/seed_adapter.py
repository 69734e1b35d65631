"""seed_token_adapter: the study's TokenAdapter, architecture and recipe as published.

Embedding(V+10, 512) + learned positions (128) -> 4-layer causal TransformerEncoder (d 512,
8 heads, FFN 2048, GELU, dropout 0.1) -> LayerNorm -> Linear(512, V+10); ~45.5 M params for
the LLaMA vocabulary. It reads only the draft's generated ids: output i (having seen draft
0..i) predicts target token i+1. It never sees the target's accepted prefix, so in SD its
drafts for a step starting at target position k are simply its outputs k-1, k, ...

Speed option `output_vocab="train"`: the parameters stay exactly the seed's, but logits are
computed only for the rows of the output layer whose ids occur as training targets (a few
thousand of 32,010). A token never seen as a training target only ever has its logit pushed
down by training, so it is practically never predicted; dropping it from the softmax saves
over half the CPU time. Label smoothing then spreads over that set instead of all 32,010.
Test-time targets outside the set count as misses (label MISS), never as ignored.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from helpers.study.drafters import graphs
from helpers.study.drafters.base import DraftContext
from helpers.study.pairs import RecordedPair
from helpers.training import IGNORE, MISS, ModelDevice, TrainConfig, chunks, fit_token_model, pad_batch

EXTRA_IDS = 10  # the seed's 32010 = 32000 text ids + 10 spare; the first spare is the pad


@dataclass
class AdapterConfig:
    text_vocab: int = 32000   # the models' text vocabulary
    d_model: int = 512
    n_heads: int = 8
    n_layers: int = 4
    d_ffn: int = 2048
    dropout: float = 0.1
    max_len: int = 128        # positions (the seed padded every sequence to 128)
    output_vocab: str = "full"  # "full" (the seed) or "train" (softmax over training-target ids only)

    @property
    def vocab(self) -> int:
        return self.text_vocab + EXTRA_IDS

    @property
    def pad_id(self) -> int:
        return self.text_vocab


class TokenAdapter(nn.Module):
    def __init__(self, cfg: AdapterConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab, cfg.d_model)
        self.pos = nn.Embedding(cfg.max_len, cfg.d_model)
        layer = nn.TransformerEncoderLayer(cfg.d_model, cfg.n_heads, cfg.d_ffn, cfg.dropout,
                                           activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab)

        # ids whose logits are computed (all when output_vocab == "full"); set by fit()
        self.register_buffer("out_ids", torch.arange(cfg.vocab), persistent=True)

    def forward(self, draft: torch.Tensor) -> torch.Tensor:     # (B, T) -> (B, T, len(out_ids))
        T = draft.shape[1]
        h = self.embed(draft) + self.pos(torch.arange(T, device=draft.device))  # (B, T, D)
        causal = nn.Transformer.generate_square_subsequent_mask(T, device=draft.device)
        h = self.norm(self.encoder(h, mask=causal, is_causal=True))             # (B, T, D)
        if len(self.out_ids) == self.cfg.vocab:
            return self.head(h)
        return h @ self.head.weight[self.out_ids].T + self.head.bias[self.out_ids]


class SeedAdapterDrafter(ModelDevice):
    name = "seed_token_adapter"
    needs = "draft tokens 0..i to propose target token i+1 (causal over the draft, blind to the target's prefix)"
    ranks = True
    cuda_graphs = True      # on a CUDA device, its pass replays a CUDA graph at max_len positions
    causal_over_draft = True  # output i reads draft tokens 0..i: a streamed view is the full pass cut short

    def __init__(self, cfg: AdapterConfig, device: str = "cpu"):
        self.cfg, self.device = cfg, device
        self.model = TokenAdapter(cfg).to(self.device)

    def _batches(self, pairs: Sequence[RecordedPair], shuffle: bool, rng) -> list:
        out = []
        for group in chunks(pairs, self.batch_size, shuffle, rng):
            T = min(self.cfg.max_len, max(max(len(p.draft_ids), len(p.target_ids) - 1) for p in group))
            x = pad_batch([p.draft_ids for p in group], self.cfg.pad_id, T)        # (B, T)
            y = pad_batch([p.target_ids[1:] for p in group], IGNORE, T)          # (B, T) global ids
            y = torch.where(y == IGNORE, y, self._to_out[y.clamp(min=0)])      # -> output index or MISS
            out.append(((x,), y))
        return out

    def _set_out_ids(self, ids: torch.Tensor) -> None:
        self.model.out_ids = ids.to(self.model.out_ids.device)
        self._to_out = torch.full((self.cfg.vocab,), MISS, dtype=torch.long)
        self._to_out[ids.cpu()] = torch.arange(len(ids))

    def fit(self, train, val, tcfg: TrainConfig):
        self.batch_size = tcfg.batch_size
        torch.manual_seed(tcfg.seed)      # fresh initial weights from the seed alone, not from what ran before
        self.model = TokenAdapter(self.cfg).to(self.device)
        if self.cfg.output_vocab == "train":
            self._set_out_ids(torch.tensor(sorted({t for p in train for t in p.target_ids[1:]})))
        elif self.cfg.output_vocab == "full":
            self._set_out_ids(torch.arange(self.cfg.vocab))
        else:
            raise ValueError(f"output_vocab must be 'full' or 'train', got {self.cfg.output_vocab!r}")
        return fit_token_model(self.model, self._batches, train, val, tcfg, desc=self.name)

    @torch.no_grad()
    def _topk_draft(self, draft_ids: Sequence[int], n_positions: int, k: int, draft_done: bool) -> np.ndarray:
        """(n_positions, k) global ids: output i predicts target token i+1 from draft tokens 0..i.
        A finished draft is padded past its end (as the seed trained); an unfinished one has no
        output where its token i does not exist yet (-1)."""
        self.model.eval()
        if graphs.wanted(self.device, self.cuda_graphs):       # one static pass of max_len, replayed as a CUDA graph
            x = pad_batch([draft_ids], self.cfg.pad_id, self.cfg.max_len).to(self.device)
            lg = graphs.captured(self, lambda: graphs.Replay(lambda x: self.model(x)[0], [x]))(x)[:n_positions]
        else:                                                  # causal: the padding past T changes no output before it
            T = min(self.cfg.max_len, max(len(draft_ids), n_positions, 1))
            lg = self.model(pad_batch([draft_ids], self.cfg.pad_id, T).to(self.device))[0, :n_positions]   # (<=n, V)
        top = self.model.out_ids[lg.topk(k, dim=-1).indices].cpu().numpy()          # global ids
        out = -np.ones((n_positions, k), dtype=np.int64)
        out[: top.shape[0]] = top                                                  # beyond max_len: -1
        if not draft_done:
            out[len(draft_ids):] = -1
        return out

    def predict_topk(self, pairs, k, visible=None):
        res = []
        for j, p in enumerate(pairs):
            v = len(p.draft_ids) if visible is None else min(visible[j], len(p.draft_ids))
            res.append(self._topk_draft(p.draft_ids[:v], len(p.target_ids) - 1, k, v == len(p.draft_ids)))
        return res

    def propose(self, ctx: DraftContext, n: int) -> list[int]:
        k = len(ctx.target_prefix)                  # drafts for target tokens k..k+n-1 = outputs k-1..k+n-2
        top1 = self._topk_draft(ctx.draft_ids, k - 1 + n, 1, ctx.draft_done)[k - 1:, 0]
        stop = np.flatnonzero(top1 < 0)
        return [int(t) for t in top1[: stop[0] if len(stop) else n]]

    def save(self, path: str | Path) -> None:
        torch.save({"config": asdict(self.cfg), "state_dict": self.model.state_dict()}, path)

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> "SeedAdapterDrafter":
        ck = torch.load(path, map_location="cpu", weights_only=True)
        d = cls(AdapterConfig(**ck["config"]), device)
        d._set_out_ids(ck["state_dict"]["out_ids"])
        d.model.load_state_dict(ck["state_dict"])
        d.model.eval()
        return d
