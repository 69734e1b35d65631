"""What every drafter provides, and the one evaluation all drafters go through.

A drafter predicts target token i+1 from (the draft model's output, target tokens 0..i).
`predict_topk(pairs, k)` returns, per pair, an int array (L_t - 1, k) of candidates for
target positions 1..L_t-1 under teacher forcing (true prefix). Drafters that ignore the
target prefix (the seed adapter, the raw draft) fit the same signature. `propose` drafts
greedily after an arbitrary prefix; it exists so tests can check the exact-SD shortcut in
`helpers.study.metrics` against an explicit propose/verify loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from helpers.study import metrics
from helpers.study.pairs import RecordedPair


class Drafter(Protocol):
    name: str

    def predict_topk(self, pairs: Sequence[RecordedPair], k: int) -> list[np.ndarray]: ...

    def propose(self, pair: RecordedPair, prefix: list[int], n: int) -> list[int]: ...


@dataclass
class DrafterEval:
    name: str
    token_match: float          # teacher-forced top-1 accuracy on target[1:], micro-averaged
    top5: float                 # target[i+1] among the top-5 candidates (NaN if the drafter has no ranking)
    sd: metrics.SDSummary       # exact greedy SD at gamma
    correct: list[np.ndarray]   # per pair, bool (L_t - 1,)
    top1: list[np.ndarray]      # per pair, int (L_t - 1,)

    def row(self) -> dict:
        return {"drafter": self.name, "token_match": self.token_match, "top5": self.top5,
                "mat": self.sd.mat, "tau": self.sd.tau, "gamma": self.sd.gamma,
                "n_test_pairs": self.sd.n_pairs}


def evaluate(drafter: Drafter, pairs: Sequence[RecordedPair], gamma: int, k: int = 5) -> DrafterEval:
    """Token metrics and exact greedy SD for one drafter on `pairs` (the test split)."""
    preds = drafter.predict_topk(pairs, k)
    corrects, top1s, tm, tk = [], [], [], []
    has_ranking = True
    for p, pr in zip(pairs, preds):
        tgt = np.asarray(p.target_ids)
        assert pr.shape[0] >= len(tgt) - 1, f"{drafter.name}: too few predictions for {p.key}"
        pr = pr[: len(tgt) - 1]
        top1s.append(pr[:, 0])
        corrects.append(pr[:, 0] == tgt[1:])
        tm.append(metrics.token_match(pr, tgt))
        tk.append(metrics.topk_match(pr, tgt))
        has_ranking &= bool((pr[:, 1:] >= 0).any()) if pr.shape[1] > 1 else False
    traces = [metrics.simulate_sd(c, gamma) for c in corrects]
    return DrafterEval(
        name=drafter.name, token_match=metrics.rate(tm),
        top5=metrics.rate(tk) if has_ranking else float("nan"),
        sd=metrics.summarize_sd(traces), correct=corrects, top1=top1s,
    )


def pad_topk(cands: list[int], k: int) -> list[int]:
    """k candidates, padded with -1 (never a token id) where fewer exist."""
    return (list(cands) + [-1] * k)[:k]


class RawDraft:
    """The draft model's own tokens used unchanged as drafts: predicts target[i+1] = draft[i+1]
    (no adapter). Its token match is the study's direct baseline shifted onto SD's footing."""

    name = "draft_direct"

    def predict_topk(self, pairs, k):
        out = []
        for p in pairs:
            n = len(p.target_ids) - 1
            d = list(p.draft_ids[1:n + 1]) + [-1] * max(0, n - (len(p.draft_ids) - 1))
            out.append(np.array([pad_topk([t], k) for t in d], dtype=np.int64).reshape(n, k))
        return out

    def propose(self, pair, prefix, n):
        k = len(prefix)
        return [pair.draft_ids[i] if i < len(pair.draft_ids) else -1 for i in range(k, k + n)]
