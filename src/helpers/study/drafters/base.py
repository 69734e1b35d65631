"""What every drafter provides, what it may see, and the one evaluation all drafters go through.

A drafter proposes the target's next tokens from a `DraftContext`: the question, the draft
model's tokens that exist so far and the target's accepted prefix (token 0 from the target's
prefill). Two entry points, one behaviour:

- `propose(ctx, n)`: the online path a speculative-decoding engine calls at each verify step;
  up to n greedy drafts after ctx.target_prefix (fewer when it has nothing more to propose);
- `predict_topk(pairs, k, visible=None)`: the teacher-forced batch path for training and
  evaluation: per pair an int array (L_t - 1, k) of candidates for target positions 1..L_t-1
  given the true prefix, -1 where the drafter proposes nothing. `visible[j]` limits pair j to
  its first visible[j] draft tokens (None: the whole answer, the draft model has finished).

What each drafter needs (`needs`): the content-free priors read only the target's prefix; the
raw draft needs draft token i+1 to propose target token i+1; the seed adapter is causal over
the draft (its output i reads draft tokens 0..i, so it needs draft token i to propose target
token i+1); the cross-modal drafter reads every draft token that exists.

Token trees (`propose_tree(ctx, n_nodes)`, optional: drafters that can propose several
continuations at once): a list of at most n_nodes `(parent, token)` nodes in topological order;
`parent` is the index of an earlier node in the list, or -1 for the root, which is the position
right after ctx.target_prefix (the children of -1 are candidates for the target's next token).
Node i stands for the path root -> ... -> parent -> i; its depth is 1 + its parent's depth. A
verify step feeds every node to the target in one forward pass, node i attending to the accepted
prefix and to its ancestors only (a tree attention mask; positions = prefix length + depth - 1),
and accepts the longest root-to-node path whose tokens equal the target's greedy continuation,
plus the target's own next token after it (`metrics.simulate_tree_sd` simulates this exactly on
recorded pairs). Siblings should carry distinct tokens (a duplicate wastes a node). A chain of n
drafts is the tree [(-1, d0), (0, d1), ..., (n-2, d_{n-1})] (`metrics.chain_tree`).

`Visibility` says how many draft tokens exist at verify step s: `full` (the draft model
finished before the first verify step, the seed study's assumption) or `streamed`
(v(s) = lead + rate * s, the draft model still generating while the target verifies).
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field, replace
from typing import Callable, Protocol, Sequence

import numpy as np

from helpers.study import metrics
from helpers.study.pairs import RecordedPair


@dataclass(frozen=True)
class DraftContext:
    """What a drafter may see at one verify step."""
    question: str
    draft_ids: tuple[int, ...]       # the draft model's tokens that exist now
    target_prefix: tuple[int, ...]   # the target's accepted tokens; [0] came from its prefill
    draft_done: bool = True          # draft_ids is the draft model's whole answer
    key: str = ""                    # the recorded pair's key, for state computed per clip before drafting
                                     # (draft_features: the draft model's prefill hidden states)

    @classmethod
    def of(cls, pair: RecordedPair, prefix: Sequence[int], visible: int | None = None) -> "DraftContext":
        """The context of `pair` after the target accepted `prefix`, with `visible` draft tokens."""
        n = len(pair.draft_ids) if visible is None else max(0, min(visible, len(pair.draft_ids)))
        return cls(pair.question, tuple(pair.draft_ids[:n]), tuple(prefix), n == len(pair.draft_ids), pair.key)


@dataclass(frozen=True)
class Visibility:
    """How many draft tokens exist at verify step s (0-based)."""
    mode: str = "full"     # "full": all of them; "streamed": lead + rate * s
    lead: float = 0.0      # draft tokens that exist when the first verify step starts
    rate: float = 1.0      # draft tokens that arrive per verify step

    def __post_init__(self):
        if self.mode not in ("full", "streamed"):
            raise ValueError(f"visibility mode must be 'full' or 'streamed', got {self.mode!r}")
        if self.mode == "streamed" and (self.lead < 0 or self.rate < 0):
            raise ValueError(f"streamed visibility needs lead >= 0 and rate >= 0, got {self.lead}, {self.rate}")

    def visible(self, step: int, n_draft: int) -> int:
        if self.mode == "full":
            return n_draft
        return min(n_draft, int(math.floor(self.lead + self.rate * step + 1e-9)))

    def label(self) -> str:
        return "full" if self.mode == "full" else f"streamed (lead {self.lead:.1f}, rate {self.rate:.2f})"


FULL = Visibility()


def stream_timing(draft_prefill_ms: float, draft_decode_ms: float, target_prefill_ms: float,
                  verify_ms: float) -> Visibility:
    """Streamed visibility from measured costs, both models starting together (e.g. on two GPUs):
    the draft's token j exists at draft_prefill + j * draft_decode (token 0 comes out of its
    prefill); verify step s starts at target_prefill + s * verify. So at step s
    v(s) = floor((target_prefill - draft_prefill + s * verify) / draft_decode) + 1."""
    if min(draft_decode_ms, verify_ms) <= 0:
        raise ValueError("decode and verify costs must be positive")
    lead = max(0.0, (target_prefill_ms - draft_prefill_ms) / draft_decode_ms + 1)
    return Visibility("streamed", lead, verify_ms / draft_decode_ms)


def best_first_tree(children: Callable[[tuple[int, ...]], list[tuple[int, float]]], n_nodes: int) -> list[tuple[int, int]]:
    """A token tree of at most n_nodes nodes grown best-first by path probability: `children(path)`
    gives (token, probability) candidates after the path (tokens below the root), best first; the
    next node added is always the most probable path not yet in the tree (ties: the earlier
    candidate). With one candidate per call it returns the greedy chain."""
    heap: list[tuple[float, int, int, int, tuple[int, ...]]] = []   # (-path prob, order, parent, token, path)
    order = 0

    def push(parent: int, path: tuple[int, ...], prob: float) -> None:
        nonlocal order
        for tok, p in children(path):
            heapq.heappush(heap, (-prob * p, order, parent, tok, path + (tok,)))
            order += 1

    nodes: list[tuple[int, int]] = []
    push(-1, (), 1.0)
    while heap and len(nodes) < n_nodes:
        negp, _, parent, tok, path = heapq.heappop(heap)
        nodes.append((parent, tok))
        if len(nodes) < n_nodes:
            push(len(nodes) - 1, path, -negp)
    return nodes


class Drafter(Protocol):
    name: str
    needs: str     # what it reads, in words (the book's drafter table)
    ranks: bool    # whether its candidates beyond the first are ranked (top-5 is NaN otherwise)
    # optional: reads_draft = False declares that it never reads the draft (streamed SD then reuses
    # its full-visibility predictions); absent means it may read the draft

    def propose(self, ctx: DraftContext, n: int) -> list[int]: ...

    def predict_topk(self, pairs: Sequence[RecordedPair], k: int,
                     visible: Sequence[int] | None = None) -> list[np.ndarray]: ...


def pad_topk(cands: list[int], k: int) -> list[int]:
    """k candidates, padded with -1 (never a token id) where fewer exist."""
    return (list(cands) + [-1] * k)[:k]


@dataclass
class DrafterEval:
    """One drafter on one set of pairs: teacher-forced token metrics (full visibility) and exact
    greedy SD under `visibility`. `simulate(gamma)` re-runs SD at another gamma cheaply."""
    name: str
    visibility: Visibility
    token_match: float          # teacher-forced top-1 accuracy on target[1:], micro-averaged
    top5: float                 # target[i+1] among the top-5 candidates (NaN if the drafter has no ranking)
    sd: metrics.SDSummary       # exact greedy SD at gamma
    correct: list[np.ndarray]   # per pair, bool (L_t - 1,), full visibility
    top1: list[np.ndarray]      # per pair, int (L_t - 1,), full visibility
    traces: list[metrics.SDTrace] = field(default_factory=list)
    _views: "_Views | None" = None

    def simulate(self, gamma: int, adaptive: tuple[int, int] | None = None) -> list[metrics.SDTrace]:
        """Exact greedy SD traces at gamma (adaptive = (gamma_min, gamma_max): gamma adapted per step)."""
        return self._views.traces(gamma, adaptive) if self._views else [
            metrics.simulate_sd(c, gamma, t >= 0, adaptive) for c, t in zip(self.correct, self.top1)]

    def row(self) -> dict:
        return {"drafter": self.name, "visibility": self.visibility.mode, "token_match": self.token_match,
                "top5": self.top5, "mat": self.sd.mat, "tau": self.sd.tau, "gamma": self.sd.gamma,
                "n_pairs": self.sd.n_pairs}


class _Views:
    """Teacher-forced top-1 of one drafter per (pair, visible draft tokens), computed on demand:
    under streamed visibility each verify step may see a different draft prefix."""

    def __init__(self, drafter: Drafter, pairs: Sequence[RecordedPair], visibility: Visibility,
                 full_top1: list[np.ndarray]):
        self.drafter, self.pairs, self.visibility = drafter, list(pairs), visibility
        self.cache = [{len(p.draft_ids): t} for p, t in zip(pairs, full_top1)]

    def top1(self, j: int, v: int) -> np.ndarray:
        n_draft = len(self.pairs[j].draft_ids)
        if not getattr(self.drafter, "reads_draft", True):             # a prior: what is visible changes nothing
            return self.cache[j][n_draft]
        if v < n_draft and v not in self.cache[j] and getattr(self.drafter, "causal_over_draft", False):
            # output i reads draft tokens 0..i only and has no output where token i does not exist yet:
            # the view of v tokens is the whole draft's outputs cut at v, with no pass of its own
            cut = self.cache[j][n_draft].copy()
            cut[v:] = -1
            self.cache[j][v] = cut
        if v not in self.cache[j]:
            self.cache[j][v] = self.drafter.predict_topk([self.pairs[j]], 1, [v])[0][:, 0]
        return self.cache[j][v]

    def traces(self, gamma: int, adaptive: tuple[int, int] | None = None) -> list[metrics.SDTrace]:
        out = []
        for j, p in enumerate(self.pairs):
            tgt = np.asarray(p.target_ids[1:])

            def view(s, j=j, tgt=tgt):
                t = self.top1(j, self.visibility.visible(s, len(self.pairs[j].draft_ids)))[: len(tgt)]
                return t == tgt, t >= 0
            out.append(metrics.simulate_sd_steps(len(p.target_ids), gamma, view, adaptive))
        return out


def evaluate(drafter: Drafter, pairs: Sequence[RecordedPair], gamma: int, k: int = 5,
             visibility: Visibility = FULL) -> DrafterEval:
    """Token metrics (teacher-forced, full visibility) and exact greedy SD at gamma under
    `visibility` for one drafter on `pairs`."""
    preds = drafter.predict_topk(pairs, k)
    corrects, top1s, tm, tk = [], [], [], []
    for p, pr in zip(pairs, preds):
        tgt = np.asarray(p.target_ids)
        if pr.shape[0] < len(tgt) - 1:
            raise ValueError(f"{drafter.name}: {pr.shape[0]} predictions for {p.key}, need {len(tgt) - 1}")
        pr = pr[: len(tgt) - 1]
        top1s.append(pr[:, 0])
        corrects.append(pr[:, 0] == tgt[1:])
        tm.append(metrics.token_match(pr, tgt))
        tk.append(metrics.topk_match(pr, tgt))
    views = None if visibility.mode == "full" else _Views(drafter, pairs, visibility, top1s)
    ev = DrafterEval(drafter.name, visibility, metrics.rate(tm),
                     metrics.rate(tk) if getattr(drafter, "ranks", True) else float("nan"),
                     None, corrects, top1s, _views=views)  # type: ignore[arg-type]
    ev.traces = ev.simulate(gamma)
    ev.sd = metrics.summarize_sd(ev.traces)
    return ev


def with_visibility(e: DrafterEval, drafter: Drafter, pairs: Sequence[RecordedPair], gamma: int,
                    visibility: Visibility) -> DrafterEval:
    """The same drafter's SD under another visibility, reusing its token metrics."""
    views = None if visibility.mode == "full" else _Views(drafter, pairs, visibility, e.top1)
    out = replace(e, visibility=visibility, _views=views)
    out.traces = out.simulate(gamma)
    out.sd = metrics.summarize_sd(out.traces)
    return out


class RawDraft:
    """The draft model's own tokens used unchanged as drafts: proposes target[i+1] = draft[i+1]
    (no adapter). Its token match is the study's direct baseline shifted onto SD's footing."""

    name = "draft_direct"
    needs = "draft token i+1 to propose target token i+1"
    ranks = False

    def propose(self, ctx: DraftContext, n: int) -> list[int]:
        k = len(ctx.target_prefix)
        return list(ctx.draft_ids[k:k + n])

    def predict_topk(self, pairs, k, visible=None):
        out = []
        for j, p in enumerate(pairs):
            n = len(p.target_ids) - 1
            v = len(p.draft_ids) if visible is None else min(visible[j], len(p.draft_ids))
            d = list(p.draft_ids[1:v]) + [-1] * max(0, n - max(0, v - 1))
            out.append(np.array([pad_topk([t], k) for t in d[:n]], dtype=np.int64).reshape(n, k))
        return out
