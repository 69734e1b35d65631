"""Count models over a set of token sequences (the target's training answers), shared by the
count-based drafters: every context of up to `max_ctx` tokens, each occurrence with the answer it
came from, so that the same table serves three estimators of the next token:

- `kneser_ney(prefix)`: interpolated Kneser-Ney (Chen & Goodman 1998; one discount per order,
  D = n1 / (n1 + 2 n2)), the standard strong smoothing of an n-gram model;
- `longest(prefix, weights)`: the next tokens seen after the longest suffix of the prefix that
  occurs in the data (an infini-gram / REST / prompt-lookup datastore), by (weighted) count;
- `weighted(prefix, weights)`: Witten-Bell interpolation of counts where answer j weighs
  weights[j], so that some answers (e.g. those of clips whose draft answers resemble this one)
  count more than others. With equal weights it is a plain Witten-Bell n-gram model.

A `Dist` holds a next-token distribution lazily: explicit probabilities for the tokens seen after
the prefix plus coefficients of dense base distributions (the unigram level), so that a top-k
needs only the explicit tokens and the k best of each base, not the whole vocabulary.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

BOS = -2  # the left neighbour of an answer's first token, for Kneser-Ney continuation counts


@dataclass
class Dist:
    """p(w) = explicit.get(w, 0) + sum(coef * base[w] for coef, base, order in bases)."""
    explicit: dict[int, float] = field(default_factory=dict)
    bases: list[tuple[float, np.ndarray, np.ndarray]] = field(default_factory=list)  # (coef, probs, ids by prob)
    _top: dict = field(default_factory=dict, repr=False, compare=False)             # k -> topk(k), computed once

    def prob(self, w: int) -> float:
        return self.explicit.get(w, 0.0) + sum(c * float(b[w]) for c, b, _ in self.bases if 0 <= w < len(b))

    def topk(self, k: int) -> list[tuple[int, float]]:
        """The k most probable tokens with their probabilities (ties: the smaller id first)."""
        if k not in self._top:
            self._top[k] = self._topk(k)
        return self._top[k]

    def _topk(self, k: int) -> list[tuple[int, float]]:
        cand = set(self.explicit)
        for c, b, order in self.bases:
            if c > 0:
                cand.update(order[:k].tolist())
        w = np.fromiter(cand, dtype=np.int64, count=len(cand))
        p = np.fromiter((self.explicit.get(t, 0.0) for t in w.tolist()), dtype=float, count=len(w))
        for c, b, _ in self.bases:
            inside = w < len(b)
            p[inside] += c * b[w[inside]]
        best = np.lexsort((w, -p))[:k]                      # by probability, then by id
        return [(t, q) for t, q in zip(w[best].tolist(), p[best].tolist()) if q > 0]

    def scaled(self, a: float) -> "Dist":
        return Dist({w: a * p for w, p in self.explicit.items()}, [(a * c, b, o) for c, b, o in self.bases])

    def plus(self, other: "Dist") -> "Dist":
        out = dict(self.explicit)
        for w, p in other.explicit.items():
            out[w] = out.get(w, 0.0) + p
        return Dist(out, self.bases + other.bases)


@dataclass
class _Entry:
    toks: np.ndarray      # (T,) distinct next tokens seen after the context
    occ_tok: np.ndarray   # (O,) per occurrence: index into toks
    occ_doc: np.ndarray   # (O,) per occurrence: the sequence it came from
    count: np.ndarray     # (T,) occurrences per token
    cont: np.ndarray      # (T,) distinct left neighbours of (context, token): Kneser-Ney continuation counts
    occ_left: np.ndarray  # (O,) per occurrence: the token left of the context (BOS at an answer's start)

    @classmethod
    def of(cls, occ: list[tuple[int, int, int]]) -> "_Entry":
        """From (token, doc, left) occurrences (Python over small lists: most contexts occur once or twice)."""
        toks = np.array(sorted({w for w, _, _ in occ}), dtype=np.int64)
        occ_tok = np.searchsorted(toks, [w for w, _, _ in occ])
        cont = Counter(w for w, _ in {(w, left) for w, _, left in occ})
        return cls(toks, occ_tok, np.array([d for _, d, _ in occ]), np.bincount(occ_tok, minlength=len(toks)).astype(float),
                   np.array([cont[w] for w in toks.tolist()], dtype=float), np.array([left for _, _, left in occ]))

    def plus(self, occ: list[tuple[int, int, int]]) -> "_Entry":
        """This entry with more occurrences after its own: the same arrays as `of` on all of them. A
        frequent context holds thousands and an online store adds a few at a time, so large entries
        grow in array operations over the old occurrences; small ones go through `of`."""
        if len(self.occ_tok) < 64:
            return _Entry.of(list(zip(self.toks[self.occ_tok].tolist(), self.occ_doc.tolist(), self.occ_left.tolist())) + occ)
        w = np.array([t for t, _, _ in occ], dtype=np.int64)
        toks = np.union1d(self.toks, w)
        occ_tok = np.concatenate([np.searchsorted(toks, self.toks)[self.occ_tok], np.searchsorted(toks, w)])
        occ_left = np.concatenate([self.occ_left, np.array([left for _, _, left in occ], dtype=self.occ_left.dtype)])
        occ_doc = np.concatenate([self.occ_doc, np.array([d for _, d, _ in occ], dtype=self.occ_doc.dtype)])
        span = int(occ_left.max()) - BOS + 1                               # left neighbours are >= BOS
        distinct = np.unique(occ_tok * span + (occ_left - BOS)) // span     # one per (token, left neighbour)
        return _Entry(toks, occ_tok, occ_doc, np.bincount(occ_tok, minlength=len(toks)).astype(float),
                      np.bincount(distinct, minlength=len(toks)).astype(float), occ_left)


class CountIndex:
    def __init__(self, docs: Sequence[Sequence[int]], max_ctx: int):
        if max_ctx < 0:
            raise ValueError(f"max_ctx must be >= 0, got {max_ctx}")
        if not docs:
            raise ValueError("no sequences to count")
        self.max_ctx, self.n_docs, self.vocab = int(max_ctx), 0, 0
        self.entries: dict[tuple, _Entry] = {}
        self._n12 = np.zeros((self.max_ctx + 1, 2))    # per context length: n1, n2 of its discount statistic
        self.add(docs)

    def add(self, docs: Sequence[Sequence[int]]) -> "CountIndex":
        """Count more sequences (numbered after those counted already): only the contexts they
        contain are rebuilt, then the discounts and the unigram level; the result equals an index
        built on all the sequences at once (an online datastore grows by a few answers at a time)."""
        occ: dict[tuple, list[tuple[int, int, int]]] = defaultdict(list)   # context -> (token, doc, left)
        for j, t in enumerate(docs, start=self.n_docs):
            t = list(t)
            for i in range(1, len(t)):        # token 0 is the target's prefill token: never predicted
                for n in range(0, self.max_ctx + 1):
                    if i - n < 0:
                        break
                    occ[tuple(t[i - n:i])].append((t[i], j, t[i - n - 1] if i - n - 1 >= 0 else BOS))
        self.n_docs += len(docs)
        stats = defaultdict(lambda: ([], []))          # context length -> (statistics dropped, added)
        for ctx, lst in occ.items():
            old = self.entries.get(ctx)
            if old is not None:
                stats[len(ctx)][0].append(self._stat(ctx, old))
            self.entries[ctx] = _Entry.of(lst) if old is None else old.plus(lst)
            stats[len(ctx)][1].append(self._stat(ctx, self.entries[ctx]))
        for n, (dropped, added) in stats.items():      # count-of-counts, updated in bulk
            for sign, vals in ((-1, dropped), (1, added)):
                if vals:
                    v = np.concatenate(vals)
                    self._n12[n] += sign * np.array([(v == 1).sum(), (v == 2).sum()], dtype=float)
        self.vocab = max([self.vocab] + [int(max(d)) + 1 for d in docs if len(d)])
        self.discount = [self._discount(n) for n in range(self.max_ctx + 1)]
        self.unigram = self._kn_unigram()
        self.unigram_order = np.argsort(-self.unigram, kind="stable")
        self.__dict__.pop("_kn_memo", None)    # memoised distributions of the old counts
        return self

    def _stat(self, ctx: tuple, e: _Entry) -> np.ndarray:
        """The counts Kneser-Ney discounts at this context's length: raw at the top, continuation below."""
        return e.count if len(ctx) == self.max_ctx else e.cont

    def _discount(self, n: int) -> float:
        """Kneser-Ney's discount for contexts of n tokens from the count-of-counts of its statistic."""
        n1, n2 = self._n12[n]
        return float(n1 / (n1 + 2 * n2)) if n1 + n2 > 0 else 0.5

    def _kn_unigram(self) -> np.ndarray:
        """Level 0 of Kneser-Ney: discounted continuation counts plus a uniform floor."""
        e = self.entries[()]
        c = self._stat((), e)
        d, total = self.discount[0], c.sum()
        p = np.full(self.vocab, d * len(e.toks) / total / self.vocab)
        p[e.toks] += np.maximum(c - d, 0) / total
        return p

    def entry(self, ctx: Sequence[int]) -> _Entry | None:
        return self.entries.get(tuple(ctx))

    def _contexts(self, prefix: Sequence[int], n_ctx: int | None) -> list[tuple]:
        n = min(self.max_ctx if n_ctx is None else n_ctx, self.max_ctx, len(prefix))
        return [tuple(prefix[len(prefix) - i:]) for i in range(1, n + 1)]

    def kneser_ney(self, prefix: Sequence[int], n_ctx: int | None = None) -> Dist:
        """Interpolated Kneser-Ney with contexts of up to n_ctx tokens: raw counts at the longest
        context asked for, continuation counts below it. Memoised by those last tokens (the
        answers are formulaic, so the same contexts recur; callers never modify a Dist)."""
        ctxs = self._contexts(prefix, n_ctx)
        key = ctxs[-1] if ctxs else ()
        memo = self.__dict__.setdefault("_kn_memo", {})
        if key not in memo:
            if len(memo) > 200_000:
                memo.clear()
            memo[key] = self._kneser_ney(ctxs)
        return memo[key]

    def _kneser_ney(self, ctxs: list[tuple]) -> Dist:
        top = len(ctxs)
        explicit: dict[int, float] = {}
        coef = 1.0
        for n, ctx in enumerate(ctxs, start=1):
            e = self.entries.get(ctx)
            if e is None:
                break
            c = e.count if n == top else e.cont
            total, d = c.sum(), self.discount[n]
            lam = d * len(e.toks) / total
            explicit = {w: lam * p for w, p in explicit.items()}
            for w, v in zip(e.toks.tolist(), (np.maximum(c - d, 0) / total).tolist()):
                explicit[w] = explicit.get(w, 0.0) + v
            coef *= lam
        # every token, seen at a higher order or not, also gets coef * its unigram-level probability
        return Dist(explicit, [(coef, self.unigram, self.unigram_order)])

    def longest(self, prefix: Sequence[int], weights: np.ndarray | None = None,
                n_ctx: int | None = None, min_ctx: int = 1) -> tuple[dict[int, float], int]:
        """Next-token frequencies after the longest suffix of `prefix` (at least min_ctx tokens) that
        occurs in the data with positive weight, and that suffix's length (0: none)."""
        for ctx in reversed(self._contexts(prefix, n_ctx)):
            if len(ctx) < min_ctx:
                break
            e = self.entries.get(ctx)
            if e is None:
                continue
            c = e.count if weights is None else np.bincount(e.occ_tok, weights[e.occ_doc], len(e.toks))
            total = c.sum()
            if total > 0:
                return {w: v / total for w, v in zip(e.toks.tolist(), c.tolist()) if v > 0}, len(ctx)
        return {}, 0

    def weighted(self, prefix: Sequence[int], weights: np.ndarray, n_ctx: int | None = None) -> tuple[dict[int, float], float]:
        """Witten-Bell interpolation of weighted counts over contexts of 1..n_ctx tokens. Returns
        the explicit probabilities and the mass left for a lower-order model (1 when no context
        of the prefix occurs in any answer with positive weight)."""
        explicit: dict[int, float] = {}
        left = 1.0
        for ctx in self._contexts(prefix, n_ctx):
            e = self.entries.get(ctx)
            if e is None:
                break
            c = np.bincount(e.occ_tok, weights[e.occ_doc], len(e.toks))
            total = c.sum()
            if total <= 0:
                break
            seen = c > 0
            lam = total / (total + seen.sum())             # weight of this order; 1 - lam backs off
            explicit = {w: (1 - lam) * p for w, p in explicit.items()}
            for w, v in zip(e.toks[seen].tolist(), c[seen].tolist()):
                explicit[w] = explicit.get(w, 0.0) + lam * v / total
            left *= 1 - lam
        if not explicit:
            return {}, 1.0
        return explicit, left
