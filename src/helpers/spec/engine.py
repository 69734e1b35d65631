"""Speculative decoding: a drafter proposes, the target verifies in one forward pass, greedy.

Notation, stated once: the *target* is the model whose greedy output must come out (Video-LLaVA);
*drafts* are the tokens a drafter proposes from what it may see (`DraftContext`: the question, the
draft model's tokens that exist now, the target's accepted prefix). Per verify step and row:

    tokens = [last, d1 .. d_g]         last: the target's newest token, not yet in its cache
    logits = target.verify(tokens)     one forward over the KV cache: the target's next token after each
    accept the longest prefix d1..d_a that equals the target's own greedy choices,
    emit d1..d_a and the target's token after d_a (its correction, or a bonus when all matched),
    keep last + d1..d_a in the cache (rolling back is setting the row's length).

So the output is the target's greedy output token for token (lossless). Rows of a batch accept
different counts and stay ragged: each keeps its own length; the verify width is fixed
(gamma_max + 1, short chains padded and never accepted past their end) so one CUDA graph serves
every step. Token trees: `propose_tree` nodes are verified in one forward with a tree attention
mask (StaticDecoder.verify_tree) and the longest accepted root-to-node path is kept.
Optional lossy acceptance (a draft in the target's top-k, or with probability >= p) is always
labelled lossy in the results.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from helpers.models.backend import Backend
from helpers.study.drafters.base import DraftContext


@dataclass
class SpecConfig:
    gamma: int = 5                # drafts per verify step (the start value when adaptive)
    adaptive: bool = False        # grow gamma after a fully accepted step, shrink it after a miss
    gamma_min: int = 1
    gamma_max: int = 8            # the verify width is gamma_max + 1 when adaptive, gamma + 1 otherwise
    tree_nodes: int = 0           # > 0: ask the drafter for token trees of this many nodes (propose_tree)
    lossy_topk: int = 0           # > 0: also accept a draft within the target's top-k (LOSSY)
    lossy_prob: float = 0.0       # > 0: also accept a draft the target gives at least this probability (LOSSY)

    @property
    def lossy(self) -> bool:
        return self.lossy_topk > 0 or self.lossy_prob > 0

    @property
    def width(self) -> int:
        return (self.tree_nodes if self.tree_nodes else (self.gamma_max if self.adaptive else self.gamma)) + 1


@dataclass
class Step:
    drafted: int
    accepted: int
    emitted: int
    draft_ms: float               # the drafter's propose call (all rows of the batch)
    verify_ms: float              # the target's verify forward (CUDA-synchronized)
    visible: int = -1             # draft-model tokens that existed when this row was drafted


@dataclass
class RowResult:
    ids: list[int]
    steps: list[Step] = field(default_factory=list)

    @property
    def mat(self) -> float:
        """Tokens per verify step, bonus included; the prefill's token is not a verify step's."""
        return (len(self.ids) - 1) / max(1, len(self.steps))


@dataclass
class SpecRun:
    rows: list[RowResult]
    prefill_ms: float             # vision + prompt forward up to the first token
    decode_ms: float              # every verify step
    total_ms: float
    lossy: bool = False


VisibleDraft = Callable[[int], Sequence[int]]   # row -> the draft model's tokens that exist now


def _accept_chain(drafts: list[int], greedy: list[int], probs: torch.Tensor | None, cfg: SpecConfig) -> int:
    """How many leading drafts the target accepts: equality with its greedy token, or (lossy)
    top-k membership / probability above a threshold."""
    a = 0
    for i, d in enumerate(drafts):
        ok = d == greedy[i]
        if not ok and probs is not None:
            p = probs[i]
            ok = (cfg.lossy_topk > 0 and bool((p.topk(cfg.lossy_topk).indices == d).any())) or \
                 (cfg.lossy_prob > 0 and float(p[d]) >= cfg.lossy_prob)
        if not ok:
            break
        a += 1
    return a


def tree_parents(trees: Sequence[Sequence[tuple[int, int]]], batch: int, width: int) -> torch.Tensor:
    """Parents (batch, width) for verify_tree: node 0 of each row is the last emitted token (the
    root, parent -1); drafted node u (parent p among the drafted nodes, -1 for the root) is node
    u + 1 with parent p + 1. Rows without a tree and padding hang off the root."""
    parents = torch.zeros((batch, width), dtype=torch.long)
    parents[:, 0] = -1
    for b, nodes in enumerate(trees):
        for u, (par, _) in enumerate(nodes):
            parents[b, u + 1] = par + 1
    return parents


def _accept_tree(nodes: list[tuple[int, int]], greedy: list[int]) -> list[int]:
    """Engine node indices (root 0, drafter node u at u + 1) of the longest root-to-node path whose
    tokens equal the target's greedy choices after each node: the path after the root."""
    children: dict[int, list[tuple[int, int]]] = {}
    for u, (parent, tok) in enumerate(nodes):
        children.setdefault(parent + 1, []).append((u + 1, tok))
    path, at = [], 0
    while True:
        nxt = next((u for u, tok in children.get(at, []) if tok == greedy[at]), None)
        if nxt is None:
            return path
        path.append(nxt)
        at = nxt


def _ms_since(t0: float, backend: Backend) -> float:
    backend.sync()
    return (time.perf_counter() - t0) * 1e3


@torch.no_grad()
def speculative_generate(target: Backend, drafter, pixel_inputs: Sequence, questions: Sequence[str],
                         visible_draft: VisibleDraft, cfg: SpecConfig = SpecConfig(), max_new_tokens: int = 50,
                         prefilled: tuple[torch.Tensor, float] | None = None) -> SpecRun:
    """Greedy SD for up to target.batch rows. visible_draft(row) -> the draft model's tokens that
    exist at the moment of the call (all of them if it finished first; a growing list if it is
    generating concurrently, see helpers.spec.overlap). `prefilled`: (first-token logits, ms) when
    the caller ran the target's prefill itself."""
    n = len(questions)
    t_start = time.perf_counter()
    if prefilled is None:
        visual = target.encode(pixel_inputs)
        logits = target.prefill(questions, visual, [target.adapter.n_items(p) for p in pixel_inputs])
        prefill_ms = _ms_since(t_start, target)
    else:
        logits, prefill_ms = prefilled
    first = logits.argmax(-1)[:n].tolist()
    rows = [RowResult([t]) for t in first]
    done = [t == target.eos or max_new_tokens <= 1 for t in first]
    gammas = [cfg.gamma] * n
    lengths = target.decoder.lengths.clone()
    pad = target.eos
    t_dec = time.perf_counter()
    while not all(done):
        t0 = time.perf_counter()
        proposals, seen = [], []
        for b in range(n):
            if done[b]:
                proposals.append([]), seen.append(-1)
                continue
            vis = tuple(visible_draft(b))
            ctx = DraftContext(questions[b], vis, tuple(rows[b].ids))
            room = max_new_tokens - len(rows[b].ids)
            if cfg.tree_nodes:
                nodes = drafter.propose_tree(ctx, cfg.tree_nodes)[: cfg.tree_nodes]
                proposals.append(nodes)
            else:
                proposals.append(list(drafter.propose(ctx, min(gammas[b], room)))[: min(gammas[b], room)])
            seen.append(len(vis))
        draft_ms = (time.perf_counter() - t0) * 1e3
        t1 = time.perf_counter()
        W = cfg.width
        toks = torch.full((target.batch, W), pad, dtype=torch.long)
        for b in range(n):
            toks[b, 0] = rows[b].ids[-1]
            body = [tok for _, tok in proposals[b]] if cfg.tree_nodes else proposals[b]
            toks[b, 1:1 + len(body)] = torch.tensor(body, dtype=torch.long)
        toks = toks.to(target.device)
        if cfg.tree_nodes:
            parents = tree_parents(proposals[:n], target.batch, W)
            out = target.decoder.verify_tree(toks, parents)        # (B, W, V); the tree shape is read on the host
        else:
            out = target.decoder.verify(toks)                                        # (B, W, V)
        greedy_t = out.argmax(-1)
        probs = out.softmax(-1) if cfg.lossy else None
        verify_ms = _ms_since(t1, target)                                            # synchronises first
        greedy = greedy_t.tolist()
        keep_paths = []
        for b in range(n):
            if done[b]:
                keep_paths.append([])                                # nothing kept: the row's length stays
                continue
            if cfg.tree_nodes:
                path = _accept_tree(proposals[b], greedy[b])
                emitted = [int(toks[b, u]) for u in path] + [greedy[b][path[-1] if path else 0]]
                keep_paths.append([0] + path)
                drafted, a = len(proposals[b]), len(path)
            else:
                drafts = proposals[b]
                a = _accept_chain(drafts, greedy[b], probs[b] if probs is not None else None, cfg)
                emitted = drafts[:a] + [greedy[b][a]]
                drafted = len(drafts)
                lengths[b] += 1 + a
                if cfg.adaptive:
                    gammas[b] = min(cfg.gamma_max, gammas[b] + 1) if a == drafted else max(cfg.gamma_min, gammas[b] - 1)
            room = max_new_tokens - len(rows[b].ids)
            emitted = emitted[:room]
            if target.eos in emitted:
                emitted = emitted[: emitted.index(target.eos) + 1]
            rows[b].ids.extend(emitted)
            rows[b].steps.append(Step(drafted, a, len(emitted), draft_ms, verify_ms, seen[b]))
            done[b] = rows[b].ids[-1] == target.eos or len(rows[b].ids) >= max_new_tokens
        if cfg.tree_nodes:
            target.decoder.keep_path(keep_paths + [[]] * (target.batch - n))
        else:
            target.decoder.set_lengths(lengths)
    decode_ms = _ms_since(t_dec, target)
    return SpecRun(rows, prefill_ms, decode_ms, _ms_since(t_start, target), cfg.lossy)


@torch.no_grad()
def greedy_generate(target: Backend, pixel_inputs: Sequence, questions: Sequence[str],
                    max_new_tokens: int = 50) -> SpecRun:
    """Target-only greedy decoding on the same decode loop, in SpecRun form (one step per token)."""
    n = len(questions)
    t_start = time.perf_counter()
    visual = target.encode(pixel_inputs)
    logits = target.prefill(questions, visual, [target.adapter.n_items(p) for p in pixel_inputs])
    prefill_ms = _ms_since(t_start, target)
    tok = logits.argmax(-1)
    rows = [RowResult([t]) for t in tok[:n].tolist()]
    done = [r.ids[-1] == target.eos or max_new_tokens <= 1 for r in rows]
    t_dec = time.perf_counter()
    while not all(done):
        t0 = time.perf_counter()
        tok = target.decoder.decode(tok).argmax(-1)
        ms = _ms_since(t0, target)
        nxt = tok[:n].tolist()
        for b in range(n):
            if not done[b]:
                rows[b].ids.append(nxt[b])
                rows[b].steps.append(Step(0, 0, 1, 0.0, ms))
                done[b] = nxt[b] == target.eos or len(rows[b].ids) >= max_new_tokens
    decode_ms = _ms_since(t_dec, target)
    return SpecRun(rows, prefill_ms, decode_ms, _ms_since(t_start, target))
