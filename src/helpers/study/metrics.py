"""Token-alignment and speculative-decoding metrics. Pure functions on id sequences.

Notation, stated once: the *target* (Video-LLaVA) is the model whose greedy output must be
reproduced; the *draft* (EventGPT) output is evidence a drafter may use. Target token 0
comes from the target's own prefill; a drafter predicts target token i+1 from whatever it
sees up to i. `preds[i]` is therefore always a prediction of `target[i + 1]`.

Greedy SD on recorded pairs is exact: the target's greedy continuation of its own accepted
prefix is its recorded output. For a drafter that is deterministic given (draft output,
target prefix), the greedy drafts of a verify step match the target for exactly as long as
its teacher-forced top-1 predictions do (while drafts match, the drafter's context *is* the
true prefix). So SD acceptance follows from the teacher-forced correctness vector alone.
A drafter that proposes nothing at a position (-1, e.g. a draft token that does not exist yet)
ends its chain there; the step then verifies fewer drafts. `simulate_sd_with_proposals` checks
the shortcut against an explicit propose/verify loop.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np


# --- the seed study's metrics ------------------------------------------------------------

def token_match(preds: np.ndarray, target: Sequence[int]) -> tuple[int, int]:
    """(correct, total) of top-1 predictions `preds[i]` (shape (>=L-1,) or (>=L-1, k)) of
    target[i+1], over the L-1 positions the target defines. The study's 'acceptance rate'."""
    nxt = np.asarray(target[1:])
    p = np.asarray(preds)
    top1 = p[: len(nxt), 0] if p.ndim == 2 else p[: len(nxt)]
    return int((top1 == nxt).sum()), len(nxt)


def topk_match(preds: np.ndarray, target: Sequence[int]) -> tuple[int, int]:
    """(hits, total): target[i+1] among the k candidates preds[i, :] (shape (L-1, k))."""
    nxt = np.asarray(target[1:])
    p = np.asarray(preds)[: len(nxt)]
    return int((p == nxt[:, None]).any(axis=1).sum()), len(nxt)


def direct_match(draft: Sequence[int], target: Sequence[int]) -> tuple[int, int]:
    """The study's 'direct' baseline: draft[i] == target[i], no shift. Denominator = target
    length (a missing draft position counts as a miss), so it shares the denominator family
    of the other rates instead of the study's mixed ones."""
    n = len(target)
    m = min(len(draft), n)
    return int((np.asarray(draft[:m]) == np.asarray(target[:m])).sum()), n


def leading_matches(pred: Sequence[int], actual: Sequence[int]) -> int:
    """Length of the leading run where pred[i] == actual[i]: what greedy SD accepts."""
    n = 0
    for a, b in zip(pred, actual):
        if a != b:
            break
        n += 1
    return n


def rate(pairs_of_counts: Sequence[tuple[int, int]]) -> float:
    """Micro-average of (hits, total) counts: every target position weighs the same."""
    hits = sum(h for h, _ in pairs_of_counts)
    total = sum(t for _, t in pairs_of_counts)
    return hits / total if total else float("nan")


# --- exact greedy speculative decoding on a recorded pair --------------------------------

@dataclass
class SDTrace:
    """One pair's greedy SD run, per verify step s: drafted[s] = drafts proposed (0..gamma; fewer
    when the drafter has nothing more to propose or fewer tokens remain), accepted[s] = drafts
    accepted (0..drafted[s]), emitted[s] = tokens the step adds (accepted + the target's
    bonus/correction token, capped at the end of the recorded output)."""
    gamma: int
    drafted: list[int] = field(default_factory=list)
    accepted: list[int] = field(default_factory=list)
    emitted: list[int] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return len(self.accepted)


def _leading(mask: np.ndarray) -> int:
    """Length of the leading run of True."""
    return int(np.argmin(mask)) if not mask.all() else len(mask)


def _chain(view: np.ndarray, start: int, n: int) -> np.ndarray:
    """The n chain offsets from target position `start` of a (positions,) view, or of an
    (offsets, positions) view read at row i for offset i (the last row past the rows)."""
    if view.ndim == 1:
        return view[start:start + n]
    return view[np.minimum(np.arange(n), len(view) - 1), np.arange(start, start + n)]


def simulate_sd(correct: Sequence[bool], gamma: int, proposed: Sequence[bool] | None = None,
                adaptive: tuple[int, int] | None = None) -> SDTrace:
    """Greedy SD from teacher-forced correctness: correct[i] says whether the drafter's top-1 given
    the true prefix target[:i+1] equals target[i+1]; proposed[i] whether it proposes anything there
    (default: everywhere). Target token 0 is the prefill's. adaptive: see simulate_sd_steps."""
    c = np.asarray(correct, dtype=bool)
    p = np.ones_like(c) if proposed is None else np.asarray(proposed, dtype=bool)
    return simulate_sd_steps(len(c) + 1, gamma, lambda s: (c, p), adaptive)


def simulate_sd_steps(n_target: int, gamma: int, step_view: Callable[[int], tuple[np.ndarray, np.ndarray]],
                      adaptive: tuple[int, int] | None = None) -> SDTrace:
    """simulate_sd where what the drafter sees changes with the verify step s (streamed drafts):
    step_view(s) -> (correct, proposed), each bool (n_target - 1,), as in simulate_sd, or each
    (offsets, n_target - 1) for a drafter whose prediction depends on the chain offset (row i for
    the chain's i-th draft, the last row past them: simulate_sd_offsets). Exact for greedy SD: while
    drafts match, the drafter's context *is* the true prefix.
    adaptive = (gamma_min, gamma_max): gamma starts at `gamma`, grows by one after a step that
    accepted every draft and shrinks by one after a miss, within the bounds (the engine's
    SpecConfig(adaptive=True) rule)."""
    if gamma < 1:
        raise ValueError(f"gamma must be >= 1, got {gamma}")
    if adaptive is not None and not 1 <= adaptive[0] <= gamma <= adaptive[1]:
        raise ValueError(f"adaptive bounds {adaptive} must satisfy 1 <= gamma_min <= gamma ({gamma}) <= gamma_max")
    trace, k, s, g = SDTrace(gamma), 1, 0, gamma  # k = tokens already produced, g = this step's gamma
    while k < n_target:
        correct, proposed = step_view(s)
        m = min(g, n_target - k)
        drafted = _leading(_chain(proposed, k - 1, m))             # a chain stops where proposals stop
        accepted = _leading(_chain(correct, k - 1, drafted))
        emitted = min(accepted + 1, n_target - k)
        trace.drafted.append(drafted)
        trace.accepted.append(accepted)
        trace.emitted.append(emitted)
        k, s = k + emitted, s + 1
        if adaptive is not None:
            g = min(adaptive[1], g + 1) if accepted == drafted else max(adaptive[0], g - 1)
    return trace


def simulate_sd_offsets(correct: np.ndarray, gamma: int, proposed: np.ndarray | None = None) -> SDTrace:
    """Greedy SD for a drafter whose prediction depends on where in its chain a token falls (heads
    per offset, as in Medusa: the chain's i-th token comes from head i, read at the chain's start).
    correct[i, j] (and proposed[i, j]) say whether the token the drafter puts at chain offset i
    on target position j (drafting target[j + 1]) is right, given that the chain's earlier tokens
    were: teacher forcing stays exact, since while drafts match the context *is* the true prefix.
    Offsets past the last row use the last row. One row is simulate_sd."""
    c = np.atleast_2d(np.asarray(correct, dtype=bool))
    p = np.ones_like(c) if proposed is None else np.atleast_2d(np.asarray(proposed, dtype=bool))
    if c.shape != p.shape:
        raise ValueError(f"correct {c.shape} and proposed {p.shape} differ in shape")
    return simulate_sd_steps(c.shape[1] + 1, gamma, lambda s: (c, p))


def simulate_sd_with_proposals(propose: Callable[[int, list[int], int], list[int]],
                               target: Sequence[int], gamma: int) -> SDTrace:
    """Reference propose/verify loop: propose(step, prefix, n) returns up to n greedy drafts after
    `prefix` at verify step `step`; the 'target' verifies against its recorded greedy output.
    Slow, for tests of the shortcut above."""
    trace, k, length, s = SDTrace(gamma), 1, len(target), 0
    while k < length:
        remaining = length - k
        drafts = list(propose(s, list(target[:k]), min(gamma, remaining)))
        if len(drafts) > min(gamma, remaining):
            raise ValueError(f"proposed {len(drafts)} drafts, at most {min(gamma, remaining)} allowed")
        n = leading_matches(drafts, target[k: k + len(drafts)])
        emitted = min(n + 1, remaining)
        trace.drafted.append(len(drafts))
        trace.accepted.append(n)
        trace.emitted.append(emitted)
        k, s = k + emitted, s + 1
    return trace


def check_tree(nodes: Sequence[tuple[int, int]]) -> None:
    """A token tree is a list of (parent, token) in topological order: parent is the index of an
    earlier node or -1 (the root: the position right after the accepted prefix)."""
    for i, (parent, token) in enumerate(nodes):
        if not -1 <= parent < i:
            raise ValueError(f"tree node {i}: parent {parent} is not -1 or an earlier node")
        if token < 0:
            raise ValueError(f"tree node {i}: token {token} is not a token id")


def tree_depths(nodes: Sequence[tuple[int, int]]) -> list[int]:
    """Depth of each node (children of the root have depth 1)."""
    depth: list[int] = []
    for parent, _ in nodes:
        depth.append(1 if parent < 0 else depth[parent] + 1)
    return depth


def accept_tree(nodes: Sequence[tuple[int, int]], continuation: Sequence[int]) -> int:
    """Length of the longest root-to-node path whose tokens equal continuation[0], [1], ...:
    what greedy verification of the whole tree in one target forward pass accepts."""
    matched = [False] * len(nodes)   # node i lies on a path that matches the continuation so far
    best = 0
    for i, (d, (parent, token)) in enumerate(zip(tree_depths(nodes), nodes)):
        if d <= len(continuation) and (parent < 0 or matched[parent]) and token == continuation[d - 1]:
            matched[i] = True
            best = max(best, d)
    return best


def simulate_tree_sd(propose_tree: Callable[[int, list[int], int], list[tuple[int, int]]],
                     target: Sequence[int], n_nodes: int) -> SDTrace:
    """Exact greedy SD with token trees: at verify step s, propose_tree(s, accepted_prefix, n_nodes)
    returns at most n_nodes (parent, token) nodes (format: `check_tree`); the target verifies every
    node in one forward pass (tree attention) and accepts the longest root-to-node path that equals
    its own greedy continuation, which on a recorded pair is its recorded output. The step emits the
    accepted tokens + the target's bonus/correction token, capped at the end of the recorded output.
    Nodes deeper than the tokens left cannot be verified and are dropped before counting.
    drafted[s] = nodes verified; SDTrace.gamma = n_nodes. A chain of n nodes (each the child of the
    previous) gives exactly simulate_sd_with_proposals at gamma = n."""
    if n_nodes < 1:
        raise ValueError(f"n_nodes must be >= 1, got {n_nodes}")
    trace, k, length, s = SDTrace(n_nodes), 1, len(target), 0
    while k < length:
        remaining = length - k
        nodes = list(propose_tree(s, list(target[:k]), n_nodes))
        if len(nodes) > n_nodes:
            raise ValueError(f"proposed {len(nodes)} tree nodes, at most {n_nodes} allowed")
        check_tree(nodes)
        kept = sum(d <= remaining for d in tree_depths(nodes))   # a deeper node's ancestors are kept too
        n = accept_tree(nodes, target[k:])
        emitted = min(n + 1, remaining)
        trace.drafted.append(kept)
        trace.accepted.append(n)
        trace.emitted.append(emitted)
        k, s = k + emitted, s + 1
    return trace


def chain_tree(tokens: Sequence[int]) -> list[tuple[int, int]]:
    """A chain of drafts as a token tree: node i is the child of node i-1."""
    return [(i - 1, int(t)) for i, t in enumerate(tokens)]


@dataclass
class SDSummary:
    gamma: int
    n_pairs: int
    steps: int
    mat: float                      # mean tokens per verify step, target's bonus token included (plain decoding = 1.0)
    tau: float                      # mean accepted drafts per verify step, bonus excluded
    mean_drafted: float             # mean drafts proposed per verify step (<= gamma)
    accept_hist: list[int]          # accept_hist[n] = verify steps that accepted n drafts, n = 0..gamma
    slot_acceptance: list[float]    # P(draft j accepted | draft j proposed and draft j-1 accepted), j = 1..gamma


def summarize_sd(traces: Sequence[SDTrace]) -> SDSummary:
    """Pool verify steps of many pairs (micro-average, as Spec-Bench's MAT)."""
    if not traces:
        raise ValueError("no SD traces to summarize")
    gamma = traces[0].gamma
    acc = np.concatenate([np.asarray(t.accepted, dtype=int) for t in traces])
    dra = np.concatenate([np.asarray(t.drafted, dtype=int) for t in traces])
    emi = np.concatenate([np.asarray(t.emitted, dtype=int) for t in traces])
    hist = np.bincount(acc, minlength=gamma + 1)
    reached = np.array([((acc >= j - 1) & (dra >= j)).sum() for j in range(1, gamma + 1)], dtype=float)
    passed = np.array([(acc >= j).sum() for j in range(1, gamma + 1)], dtype=float)
    slot = np.divide(passed, reached, out=np.full(gamma, np.nan), where=reached > 0)
    return SDSummary(gamma=gamma, n_pairs=len(traces), steps=int(len(acc)), mat=float(emi.mean()),
                     tau=float(acc.mean()), mean_drafted=float(dra.mean()), accept_hist=hist.tolist(),
                     slot_acceptance=slot.tolist())


def correctness_by_position(corrects: Sequence[Sequence[bool]], max_len: int) -> np.ndarray:
    """Mean teacher-forced correctness at each predicted target position 1..max_len-1
    (NaN where no pair reaches it). Shape (max_len - 1,)."""
    out = np.full(max_len - 1, np.nan)
    for i in range(max_len - 1):
        vals = [c[i] for c in corrects if len(c) > i]
        if vals:
            out[i] = float(np.mean(vals))
    return out


# --- Leviathan et al. (2023), i.i.d. acceptance model -------------------------------------

def expected_tokens_per_step(alpha: float, gamma: int) -> float:
    """E[tokens per target call] = (1 - alpha^(gamma+1)) / (1 - alpha)."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return float(gamma + 1) if alpha == 1 else (1 - alpha ** (gamma + 1)) / (1 - alpha)


def walltime_improvement(alpha: float, gamma: int, c: float) -> float:
    """Expected speedup over plain decoding with draft/target step cost ratio c:
    (1 - alpha^(gamma+1)) / ((1 - alpha)(gamma c + 1))."""
    if c < 0:
        raise ValueError(f"cost ratio c must be >= 0, got {c}")
    return expected_tokens_per_step(alpha, gamma) / (gamma * c + 1)


def speedup_from_mat(mat: float, gamma: int, c: float) -> float:
    """Decode-phase speedup implied by a *measured* MAT: each verify step costs gamma draft
    steps plus one target step (verifying gamma+1 tokens costs about one decode step)."""
    return mat / (gamma * c + 1)
