"""target_prior_ngram: a content-free control drafter.

It predicts the target's next token from the target's own accepted prefix only, with an
n-gram model of the target's training outputs (stupid backoff). Whatever a drafter that
also reads the draft model's output gains over this one is what the event camera adds.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from helpers.study.pairs import RecordedPair
from helpers.study.drafters.base import DraftContext, pad_topk

BACKOFF = 0.4  # stupid-backoff discount per order dropped (Brants et al. 2007)


@dataclass
class NgramPrior:
    order: int = 4                       # n: predict from the last n-1 target tokens
    name: str = "target_prior_ngram"
    needs = "the target's accepted prefix only"
    ranks = True
    reads_draft = False

    def fit(self, train: Sequence[RecordedPair]) -> "NgramPrior":
        if self.order < 1:
            raise ValueError(f"ngram order must be >= 1, got {self.order}")
        self.counts: dict[tuple, Counter] = defaultdict(Counter)
        for p in train:
            t = list(p.target_ids)
            for i in range(1, len(t)):
                for n in range(0, self.order):       # context length n = 0 .. order-1
                    if i - n < 0:
                        break
                    self.counts[tuple(t[i - n:i])][t[i]] += 1
        return self

    def scores(self, prefix: Sequence[int], k: int | None = None) -> dict[int, float]:
        """Stupid-backoff scores of candidate next tokens; with `k`, stop backing off once k
        candidates are known (enough for a top-k), else collect every order."""
        scores: dict[int, float] = {}
        for n in range(min(self.order - 1, len(prefix)), -1, -1):
            ctx = tuple(prefix[len(prefix) - n:]) if n else ()
            c = self.counts.get(ctx)
            if not c:
                continue
            total, w = sum(c.values()), BACKOFF ** (self.order - 1 - n)
            for tok, cnt in c.items():
                if tok not in scores:  # a longer context's estimate wins
                    scores[tok] = w * cnt / total
            if k is not None and len(scores) >= k:
                break
        return scores

    def distribution(self, prefix: Sequence[int], k: int = 50) -> dict[int, float]:
        """The scores of (at least) the k best candidates, normalised to sum to one (for mixing
        with a neural drafter; the long unigram tail is left out to keep this cheap)."""
        s = self.scores(prefix, k)
        z = sum(s.values()) or 1.0
        return {t: v / z for t, v in s.items()}

    def _topk(self, prefix: Sequence[int], k: int) -> list[int]:
        ranked = sorted(self.scores(prefix, k).items(), key=lambda kv: (-kv[1], kv[0]))
        return pad_topk([t for t, _ in ranked], k)

    def predict_topk(self, pairs, k, visible=None):
        return [np.array([self._topk(p.target_ids[: i + 1], k) for i in range(len(p.target_ids) - 1)],
                         dtype=np.int64).reshape(-1, k) for p in pairs]

    def propose(self, ctx: DraftContext, n: int) -> list[int]:
        seq = list(ctx.target_prefix)
        for _ in range(n):
            tok = self._topk(seq, 1)[0]
            if tok < 0:
                break
            seq.append(tok)
        return seq[len(ctx.target_prefix):]

    # --- persistence (JSON: the counts are the whole model) -------------------------
    def save(self, path: str | Path) -> None:
        table = [[list(ctx), [[t, c] for t, c in cnt.items()]] for ctx, cnt in self.counts.items()]
        Path(path).write_text(json.dumps({"order": self.order, "name": self.name, "counts": table}))

    @classmethod
    def load(cls, path: str | Path) -> "NgramPrior":
        d = json.loads(Path(path).read_text())
        m = cls(order=d["order"], name=d["name"])
        m.counts = defaultdict(Counter, {tuple(ctx): Counter({t: c for t, c in cnt}) for ctx, cnt in d["counts"]})
        return m
