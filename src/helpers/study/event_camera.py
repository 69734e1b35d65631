"""What does the event camera add? The drafter study of chapter 35 and scripts/drafter_study.py.

Every drafter is one of two roles: a content-free prior (it reads the target's accepted prefix
only; names `target_prior_*`) or a draft reader (it also reads the draft model's answer). The
question is how much the best draft reader gains over the best prior, both chosen on validation:

- chains: exact greedy SD at gamma (base.evaluate), full and streamed draft visibility;
- trees: exact tree SD (metrics.simulate_tree_sd) for drafters with `propose_tree`, MAT vs nodes;
- the MAT ratio reader / prior with a clip-bootstrap interval (alignment.mat_ratio_bootstrap);
- where the gain sits: per target position, and which tokens the reader gets right that the prior
  misses (teacher-forced, full visibility);
- learning curves: the whole train -> choose -> test pipeline at several training-set sizes;
- cost: wall-clock ms per `propose` / `propose_tree` call (median over test steps), the networks on
  the CPU and, where there is one, on the GPU (`cost_table`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import time
from collections import Counter
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from helpers.study import alignment, metrics
from helpers.study.drafters.base import FULL, DraftContext, DrafterEval, Visibility, evaluate, with_visibility
from helpers.study.drafters.lookup import RecentAnswers, Tfidf, covered
from helpers.study.pairs import RecordedPair

PRIOR_PREFIX = "target_prior"


def reads_draft(name: str) -> bool:
    """Content-free priors are named target_prior_*; every other drafter reads the draft's answer."""
    return not name.startswith(PRIOR_PREFIX)


def best_of(val_mat: dict[str, float], draft_readers: bool) -> str | None:
    """The drafter with the highest validation MAT among the priors or among the draft readers
    (ties: the first in order); None when that role has no drafter."""
    names = [n for n in val_mat if reads_draft(n) == draft_readers]
    return max(names, key=lambda n: (val_mat[n], -names.index(n))) if names else None


# --- chains and trees ------------------------------------------------------------------------

def chain_evals(drafters: dict, pairs: Sequence[RecordedPair], gamma: int,
                streamed: Visibility | None = None) -> tuple[dict[str, DrafterEval], dict[str, DrafterEval]]:
    full = {n: evaluate(d, pairs, gamma) for n, d in drafters.items()}
    stream = {n: with_visibility(full[n], d, pairs, gamma, streamed) for n, d in drafters.items()} if streamed else {}
    return full, stream


def tree_traces(drafter, pairs: Sequence[RecordedPair], n_nodes: int,
                visibility: Visibility = FULL) -> list[metrics.SDTrace]:
    """Exact tree SD of one drafter on each pair; at verify step s it sees the draft tokens that
    exist then (visibility) and the target's accepted prefix."""
    out = []
    for p in pairs:
        def propose(s, prefix, n, p=p):
            return drafter.propose_tree(DraftContext.of(p, prefix, visibility.visible(s, len(p.draft_ids))), n)
        out.append(metrics.simulate_tree_sd(propose, p.target_ids, n_nodes))
    return out


def tree_sweep(drafters: dict, pairs: Sequence[RecordedPair], sizes: Sequence[int],
               visibility: Visibility = FULL) -> dict[str, dict[int, list[metrics.SDTrace]]]:
    """Tree traces of every drafter that can propose trees, per tree size."""
    return {n: {int(k): tree_traces(d, pairs, int(k), visibility) for k in sizes}
            for n, d in drafters.items() if hasattr(d, "propose_tree")}


def mat_table(traces: dict[str, dict[int, list[metrics.SDTrace]]]) -> pd.DataFrame:
    """MAT per drafter (rows) and tree size (columns)."""
    return pd.DataFrame({n: {k: metrics.summarize_sd(t).mat for k, t in by.items()} for n, by in traces.items()}).T


# --- where the draft helps -------------------------------------------------------------------

def position_gain(reader: DrafterEval, prior: DrafterEval, max_pos: int = 50) -> pd.DataFrame:
    """Teacher-forced top-1 correctness of both by target position (1 = the token after the
    prefill's), the difference and the number of pairs reaching the position."""
    r = metrics.correctness_by_position(reader.correct, max_pos + 1)
    p = metrics.correctness_by_position(prior.correct, max_pos + 1)
    n = [sum(len(c) > i for c in reader.correct) for i in range(max_pos)]
    return pd.DataFrame({"reader": r, "prior": p, "gain": r - p, "pairs": n},
                        index=pd.Index(range(1, max_pos + 1), name="target position"))


def token_wins(reader: DrafterEval, prior: DrafterEval, pairs: Sequence[RecordedPair], decode: Callable,
               top: int = 15) -> pd.DataFrame:
    """Target tokens the reader predicts right where the prior does not ('reader wins') and the
    reverse ('prior wins'), teacher-forced, with counts; `decode(id)` gives the token's text."""
    wins, losses = Counter(), Counter()
    for p, a, b in zip(pairs, reader.correct, prior.correct):
        t = p.target_ids[1:]
        for i in np.flatnonzero(a & ~b):
            wins[t[i]] += 1
        for i in np.flatnonzero(b & ~a):
            losses[t[i]] += 1
    rows = [{"token": decode(t), "reader wins": wins[t], "prior wins": losses[t], "net": wins[t] - losses[t]}
            for t in set(wins) | set(losses)]
    df = pd.DataFrame(rows, columns=["token", "reader wins", "prior wins", "net"])
    return df.sort_values(["reader wins", "net", "token"], ascending=[False, False, True]).head(top).reset_index(drop=True)


def oracle_content_mat(prior, pairs: Sequence[RecordedPair], gamma: int, remaining: bool = False,
                       boost: float = 1000.0, k: int = 50) -> float:
    """MAT of a count prior told which tokens the target's own answer contains: its k best
    candidates, those in the answer's bag of words (`remaining`: in the multiset of answer tokens
    not yet emitted) made `boost` times as probable; lookup.covered with the answer's own counts.
    No drafter can know this; it bounds what content of the bag-of-words kind (which objects,
    colours, road types) can add to the prior. Teacher-forced and deterministic per (pair, prefix),
    so exact greedy SD follows (metrics)."""
    traces = []
    for p in pairs:
        st, t = prior.state_for(p.key, p.question, p.draft_ids), p.target_ids
        bag, correct = Counter(t), []
        expected = (lambda w: bag.get(w, 0)) if remaining else (lambda w: math.inf if w in bag else 0.0)
        for i in range(len(t) - 1):
            top = covered(prior.dist(st, t[: i + 1]), expected, t[: i + 1], boost - 1, top=k).topk(1)
            correct.append(bool(top) and top[0][0] == t[i + 1])
        traces.append(metrics.simulate_sd(correct, gamma))
    return metrics.summarize_sd(traces).mat


def retrieval_oracle_mat(retrieval, pairs: Sequence[RecordedPair], gamma: int,
                         weights: Sequence[float] = (0.1, 0.3, 0.6)) -> float:
    """MAT of draft-keyed retrieval (a lookup.DraftRetrieval: its training answers and settings)
    keyed instead by the TARGET's own answer: the training clips whose target answers resemble the
    one to come are retrieved, as if the draft named the clip perfectly; the best of the mixing
    `weights` is kept. No drafter has this key; it bounds what retrieving training answers can add,
    however well the draft's content identified the clip. Exact greedy SD (base.evaluate)."""
    oracle = retrieval.keyed_by_targets()
    keyed = [dataclasses.replace(p, draft_ids=p.target_ids) for p in pairs]
    best = 0.0
    for w in weights:
        oracle.weight = float(w)
        best = max(best, evaluate(oracle, keyed, gamma).sd.mat)
    return best


def reference_drafts(pairs: Sequence[RecordedPair], answers: Mapping[tuple[str, int], str],
                     encode: Callable[[str], Sequence[int]]) -> list[RecordedPair]:
    """The pairs with each draft replaced by a reference answer: answers[(clip_id, question_index)],
    token ids `encode(text)` (as the draft model would emit it). With the synthetic world's
    draft-register captions this is what a draft model that perceived every clip perfectly, and
    said it as it was trained to, would answer."""
    missing = [p.key for p in pairs if (p.clip_id, p.question_index) not in answers]
    if missing:
        raise ValueError(f"{len(missing)} pair(s) have no reference answer, e.g. {missing[:3]}: the references "
                         f"come from another world than these pairs")
    return [dataclasses.replace(p, draft_ids=tuple(int(t) for t in encode(answers[(p.clip_id, p.question_index)])),
                                draft_text=answers[(p.clip_id, p.question_index)]) for p in pairs]


def perfect_draft_mat(reader, train: Sequence[RecordedPair], pairs: Sequence[RecordedPair], gamma: int,
                      weights: Sequence[float] = (0.1, 0.3, 0.6), neighbours: Sequence[int] = (5, 20)) -> float:
    """MAT on `pairs` of a count or lookup draft reader (its settings kept, `refit`) fitted on `train`,
    both carrying reference drafts (`reference_drafts`): what the reader would make of a perfect
    draft model. A DraftRetrieval's mixing weight and neighbours are the best on `pairs` (the
    settings chosen for real drafts need not suit perfect ones). An oracle: no deployed draft model
    says its reference caption. Exact greedy SD (base.evaluate)."""
    fitted = refit(reader, train)
    grid = ([{"weight": float(w), "neighbours": int(k)} for w in weights for k in neighbours]
            if hasattr(fitted, "weight") and hasattr(fitted, "neighbours") else [{}])
    best = 0.0
    for setting in grid:
        for attr, value in setting.items():
            setattr(fitted, attr, value)
        best = max(best, evaluate(fitted, pairs, gamma).sd.mat)
    return best


def far_partners(pairs: Sequence[RecordedPair]) -> dict[int, int]:
    """Pair index -> the index of the pair asked the same question half the recording away (in clip
    order): a permutation within each question's pairs, so every clip's draft is used once. Pairs
    whose question no other clip was asked have no partner and are left out."""
    by_question: dict[str, list[int]] = {}
    for i in sorted(range(len(pairs)), key=lambda i: (pairs[i].clip_index, pairs[i].question_index)):
        by_question.setdefault(pairs[i].question, []).append(i)
    other = {}
    for idx in by_question.values():
        if len({pairs[i].clip_id for i in idx}) > 1:
            other.update({i: idx[(k + max(1, len(idx) // 2)) % len(idx)] for k, i in enumerate(idx)})
    return other


def swapped_drafts(pairs: Sequence[RecordedPair]) -> tuple[list[int], list[RecordedPair]]:
    """The pairs that have a far partner (`far_partners`), each with the draft model's output for
    that partner's clip instead of its own: its draft tokens, text and clip id (the key under which
    a drafter finds the draft model's hidden states). The target's answer, the question and the
    clip's place in the recording stay this pair's. Returns (indices into `pairs`, swapped pairs)."""
    other = far_partners(pairs)
    kept = sorted(other)
    return kept, [dataclasses.replace(pairs[i], clip_id=pairs[other[i]].clip_id, draft_ids=pairs[other[i]].draft_ids,
                                      draft_text=pairs[other[i]].draft_text) for i in kept]


def content_control(readers: dict, pairs: Sequence[RecordedPair], own_rows: Mapping[str, Sequence], gamma: int,
                    n_boot: int, seed: int = 0) -> dict[str, dict]:
    """What this clip's draft adds through each draft reader: its exact greedy SD at gamma (full
    visibility) with each pair's own draft (`own_rows[name]`: SDTraces or (tokens, steps) rows in the
    order of `pairs`) against the same drafter with the draft of a clip half the recording away
    (`swapped_drafts`), on the pairs that have one. Per reader the clip-bootstrap MAT ratio own /
    other (alignment.mat_ratio_bootstrap: mat_a with its own draft, mat_b with the other's). A ratio
    near 1 says the reader's MAT comes from what it learned of the target's answers, not from what
    the draft says about this clip."""
    kept, swapped = swapped_drafts(pairs)
    if not kept:
        return {}
    clips = [pairs[i].clip_index for i in kept]
    out = {}
    for name, drafter in readers.items():
        own = alignment.tokens_and_steps(own_rows[name])
        if len(own) != len(pairs):
            raise ValueError(f"{name}: {len(own)} rows of its own SD for {len(pairs)} pairs")
        other = evaluate(drafter, swapped, gamma).traces
        out[name] = alignment.mat_ratio_bootstrap(own[kept], other, clips, n_boot, seed)
    return out


FACT_LABELS = {"objects": "objects", "motion": "agent motions", "scene": "scene-level facts"}   # for the book's prose


def fact_agreement(pairs: Sequence[RecordedPair], categories: Sequence[str] = ("objects", "motion", "scene")) -> pd.DataFrame:
    """How much the draft's answer says about the target's, fact by fact: the facts each answer names
    (`helpers.world.grounding.answer_facts`: objects, agent motions, scene-level facts, by the synthetic
    world's word patterns, which the recorded DSEC answers share), and per category the share of the
    facts the draft names that the target's answer to the same question names too, against the same
    share for the draft of another clip asked that question, half the recording away (chance: a draft
    that reads nothing of this clip; far away, because neighbouring clips of one recording show much
    the same road). lift = agreement / chance. Categories the drafts never name are left out."""
    from helpers.world.grounding import answer_facts
    draft = [answer_facts(p.draft_text) for p in pairs]
    target = [answer_facts(p.target_text) for p in pairs]
    other = far_partners(pairs)
    rows = []
    for c in categories:
        named = sum(len(d[c]) for d in draft)
        if not named:
            continue
        hits = sum(len(draft[i][c] & target[i][c]) for i in range(len(pairs)))
        ch_named = sum(len(draft[other[i]][c]) for i in other)
        ch_hits = sum(len(draft[other[i]][c] & target[i][c]) for i in other)
        agree, chance = hits / named, (ch_hits / ch_named if ch_named else float("nan"))
        rows.append({"facts": c, "named by the draft": named, "agreement": agree, "chance": chance,
                     "lift": agree / chance if chance > 0 else float("nan")})
    return pd.DataFrame(rows, columns=["facts", "named by the draft", "agreement", "chance", "lift"])


# --- cost ------------------------------------------------------------------------------------

def sd_contexts(pairs: Sequence[RecordedPair], traces: Sequence[metrics.SDTrace], visibility: Visibility = FULL,
                max_calls: int = 200, seed: int = 0) -> list[DraftContext]:
    """Up to max_calls verify steps of the given SD traces, as the contexts a drafter meets there
    (the draft tokens visible at each step) and in the order it meets them: the answers sampled,
    each one's steps in sequence (a drafter may keep what a pair's earlier steps computed)."""
    per_pair = []
    for p, t in zip(pairs, traces):
        k, steps = 1, []
        for s, e in enumerate(t.emitted):
            steps.append(DraftContext.of(p, p.target_ids[:k], visibility.visible(s, len(p.draft_ids))))
            k += e
        per_pair.append(steps)
    return [c for j in np.random.default_rng(seed).permutation(len(per_pair)) for c in per_pair[j]][:max_calls]


def interleaved_cost_ms(calls: dict, pairs: Sequence[RecordedPair], traces: Sequence[metrics.SDTrace],
                        visibility: Visibility = FULL, max_calls: int = 200, seed: int = 0, warmup: int = 3) -> dict:
    """{key: median wall-clock ms of calls[key](ctx)} over the verify steps of `sd_contexts`, the
    calls interleaved: at every step each runs once, in an order that rotates from step to step, so
    that what else the host does meanwhile (other load, clock changes, caches another call
    evicted, as the target's step would) weighs on all of them alike and their differences are
    measured on the same contexts at the same moments. `warmup` steps first, untimed (a GPU
    network's first calls load kernels). A drafter returns token ids as Python ints, so a GPU
    network's call has synchronised when it returns."""
    ctxs, keys = sd_contexts(pairs, traces, visibility, max_calls, seed), list(calls)
    for c in ctxs[:warmup]:
        for k in keys:
            calls[k](c)
    times: dict = {k: [] for k in keys}
    for s, c in enumerate(ctxs):
        for k in keys[s % len(keys):] + keys[: s % len(keys)]:
            t0 = time.perf_counter()
            calls[k](c)
            times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: float(np.median(v)) if v else float("nan") for k, v in times.items()}


def call_cost_ms(call: Callable[[DraftContext], object], pairs: Sequence[RecordedPair], traces: Sequence[metrics.SDTrace],
                 visibility: Visibility = FULL, max_calls: int = 200, seed: int = 0, warmup: int = 3) -> float:
    """Median wall-clock ms of `call(ctx)` over the verify steps of `sd_contexts` (one call of
    interleaved_cost_ms)."""
    return interleaved_cost_ms({0: call}, pairs, traces, visibility, max_calls, seed, warmup)[0]


def is_network(drafter) -> bool:
    """A drafter whose calls run a torch network (it can move to a GPU); count and lookup drafters
    are Python over dictionaries and run on the host CPU wherever the target runs."""
    return hasattr(drafter, "model") and hasattr(drafter, "device")


def cost_table(drafters: dict, pairs: Sequence[RecordedPair], traces: Sequence[metrics.SDTrace], gamma: int,
               tree_sizes: Sequence[int] = (), calls: int = 30, gpu: str | None = None) -> pd.DataFrame:
    """Median ms per call of every drafter at the verify steps of `traces`: a chain of gamma drafts
    (`propose`) and, for drafters that grow trees, a tree of k nodes. Networks are timed on the CPU
    and, with `gpu` (a torch device such as "cuda"), again there, wherever they were loaded (each
    goes back to its own device afterwards): replaying CUDA graphs ("chain (GPU)", what they do on a
    GPU) and, for those that can, eagerly ("chain (GPU, eager)"). The chains are timed interleaved
    (interleaved_cost_ms): the networks on the CPU in one loop, and in another those on the GPU with
    the host drafters (with no GPU, all in the first), so that a drafter on the GPU and a count drafter
    on its host are compared at the same moments. Rows: drafters; columns "runs" (network or host
    CPU), the chains' columns, "tree k" (trees run on the CPU)."""
    nets = [n for n, d in drafters.items() if is_network(d)]
    rows = {n: {"runs": "network" if n in nets else "host CPU"} for n in drafters}

    def chain(d, graphed=None):
        def call(ctx):
            if graphed is not None:
                d.cuda_graphs = graphed                     # _on restores the drafter's own setting after
            return d.propose(ctx, gamma)
        return call
    loops = [("cpu", {(n, "chain (CPU)"): chain(drafters[n]) for n in drafters if n in nets or not gpu})]
    if gpu:
        on_gpu = {}
        for n in drafters:
            if n not in nets:
                on_gpu[(n, "chain (CPU)")] = chain(drafters[n])
                continue
            on_gpu[(n, "chain (GPU)")] = chain(drafters[n], True)
            if hasattr(drafters[n], "cuda_graphs"):
                on_gpu[(n, "chain (GPU, eager)")] = chain(drafters[n], False)
        loops.append((gpu, on_gpu))
    for dev, loop in loops:
        if not loop:
            continue
        with contextlib.ExitStack() as stack:
            for n in dict.fromkeys(n for n, _ in loop):
                if n in nets:
                    stack.enter_context(_on(drafters[n], dev, True if dev != "cpu" else None))
            for (n, col), ms in interleaved_cost_ms(loop, pairs, traces, max_calls=calls).items():
                rows[n][col] = ms
    for n, d in drafters.items():
        if hasattr(d, "propose_tree"):
            for k in tree_sizes:
                rows[n][f"tree {k}"] = call_cost_ms(lambda ctx, d=d, k=k: d.propose_tree(ctx, k), pairs, traces,
                                                    max_calls=max(1, calls // 2))
    return cost_frame(rows)


@contextlib.contextmanager
def _on(drafter, device, graphed: bool | None = None):
    """A network drafter on `device` for the block, replaying CUDA graphs there or not (`graphed`;
    None: as set), back on its own device and setting after (device None: as it is)."""
    if device is None:
        yield
        return
    home, home_graphs = drafter.device, getattr(drafter, "cuda_graphs", None)
    drafter.device = device                       # a network drafter's device moves its model (ModelDevice)
    if graphed is not None and home_graphs is not None:
        drafter.cuda_graphs = graphed
    try:
        yield
    finally:
        drafter.device = home
        if home_graphs is not None:
            drafter.cuda_graphs = home_graphs


def cost_frame(cost_ms: dict[str, dict]) -> pd.DataFrame:
    """{drafter: {column: ms}} (cost_table's rows, or a results.json's "cost_ms") as a table in
    a fixed column order: runs, chain (CPU), chain (GPU), trees by size ("tree k": they run on the CPU)."""
    df = pd.DataFrame(cost_ms).T.rename_axis("drafter")
    if "runs" in df.columns:                                 # results written before the label was shortened
        df["runs"] = df["runs"].replace({"host CPU (Python)": "host CPU"})
    df = df.rename(columns=lambda c: c.removesuffix(" (CPU)") if c.startswith("tree ") else c)   # trees: CPU only
    trees = sorted((c for c in df.columns if c.startswith("tree ")), key=lambda c: int(c.split()[1]))
    return df[[c for c in ("runs", "chain (CPU)", "chain (GPU)", "chain (GPU, eager)") if c in df.columns] + trees]


def cost_records(table: pd.DataFrame) -> dict[str, dict]:
    """cost_table's rows for a results file: {drafter: {column: value}}, the cells it has only."""
    return {n: {k: v for k, v in row.items() if v == v} for n, row in table.to_dict("index").items()}


def network_cost_text(table: pd.DataFrame, step_ms: float, gpu_name: str) -> str:
    """What a cost table with a "chain (GPU)" column says of the network drafters, against a target
    decode step of step_ms: their range on the GPU and its host CPU, which cost a step or more, what
    CUDA graphs buy (where the table has "chain (GPU, eager)"), and which gain little from the GPU
    when run eagerly. Tables without the eager column were measured eagerly."""
    nets = table[(table["runs"] == "network") & table["chain (GPU)"].notna()] if "chain (GPU)" in table else table[:0]
    if nets.empty:
        return "No GPU measurement of the networks is at hand for this run."
    g, c = nets["chain (GPU)"].astype(float), nets["chain (CPU)"].astype(float)
    e = nets["chain (GPU, eager)"].astype(float).dropna() if "chain (GPU, eager)" in nets else g[:0]
    eager = e if len(e) else g
    over = [f"`{n}`" for n in nets.index if g[n] >= step_ms]
    slow = [f"`{n}`" for n in eager.index if eager[n] >= 0.8 * c[n]]
    text = (f"On the {gpu_name} the networks cost {g.min():.1f} to {g.max():.1f} ms per chain (on that machine's CPU "
            f"{c.min():.1f} to {c.max():.1f} ms): "
            + (f"{', '.join(over)} cost at least a {step_ms:.1f} ms target step. " if over else
               f"all below a {step_ms:.1f} ms target step. ")
            + "Each drafted token is one pass of the network (the seed's adapter drafts a chain in one pass). ")
    if len(e):
        speed = e / g[e.index]
        text += (f"Those figures replay each pass as a CUDA graph (one launch); run eagerly, the same chains cost "
                 f"{e.min():.1f} to {e.max():.1f} ms, {speed.min():.1f} to {speed.max():.1f} times as much. ")
    if slow:
        text += (f"Run eagerly, {', '.join(slow)} {'is' if len(slow) == 1 else 'are'} at most a fifth faster on the GPU "
                 "than on its CPU: at batch 1 a pass of such a small network is a row of short kernel launches, "
                 "not arithmetic.")
    return text.strip()


# --- the comparison --------------------------------------------------------------------------

def ratio(reader_traces, prior_traces, pairs: Sequence[RecordedPair], n_boot: int, seed: int = 0) -> dict:
    return alignment.mat_ratio_bootstrap(reader_traces, prior_traces, [p.clip_index for p in pairs], n_boot, seed)


def learning_curve(names: Sequence[str], split, sizes: Sequence[int], fit: Callable, gamma: int) -> pd.DataFrame:
    """For each training-set size n (the first n training pairs; 0 = all): fit every drafter with
    `fit(name, train, val, trained) -> drafter` (choices on validation), pick the best prior and
    the best reader by validation MAT, and report both on the test pairs."""
    rows = []
    for n in sizes:
        train = split.train[:n] if n else split.train
        trained, val_mat = {}, {}
        for name in names:
            trained[name] = fit(name, train, split.val, trained)
            val_mat[name] = evaluate(trained[name], split.val, gamma).sd.mat
        test = {name: evaluate(d, split.test, gamma) for name, d in trained.items()}
        prior, reader = best_of(val_mat, False), best_of(val_mat, True)
        for name in names:
            rows.append({"train pairs": len(train), "drafter": name, "MAT validation": val_mat[name],
                         "MAT test": test[name].sd.mat, "best prior": name == prior, "best reader": name == reader})
        if prior and reader:
            rows.append({"train pairs": len(train), "drafter": "ratio best reader / best prior",
                         "MAT validation": val_mat[reader] / val_mat[prior],
                         "MAT test": test[reader].sd.mat / test[prior].sd.mat, "best prior": False, "best reader": False})
    return pd.DataFrame(rows)


def refit(drafter, train: Sequence[RecordedPair]):
    """A count or lookup drafter with the same settings fitted on other training pairs (for a cheap
    learning curve that keeps the settings chosen on validation with all the training pairs)."""
    out = type(drafter)(**drafter.settings(), name=drafter.name)
    out.tree_branch = drafter.tree_branch
    return out.fit(train)


def online_evals(drafter, train: Sequence[RecordedPair], pairs: Sequence[RecordedPair], gamma: int,
                 every: int) -> list[DrafterEval]:
    """A count or lookup drafter whose datastore also holds the target's answers to the pairs before
    each one, as a deployment answering clip after clip would have them: fitted on train (settings
    kept; `drafter` itself is left as it is), then before each block pairs[s:s + every] updated with
    the block before it (`update`), so that it holds train + pairs[:s]. No pair sees its own answer or
    a later one. One evaluation per block, in order."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    evals, d = [], refit(drafter, train)
    for s in range(0, len(pairs), every):
        d.update(pairs[max(0, s - every):s])
        evals.append(evaluate(d, pairs[s:s + every], gamma))
    return evals


def online_traces(drafter, train: Sequence[RecordedPair], pairs: Sequence[RecordedPair], gamma: int,
                  every: int) -> list[metrics.SDTrace]:
    """The chains of `online_evals`, one per pair in order."""
    return [t for e in online_evals(drafter, train, pairs, gamma, every) for t in e.traces]


def online_token_match(evals: Sequence[DrafterEval]) -> float:
    """Teacher-forced top-1 accuracy over all the blocks of `online_evals`, micro-averaged."""
    correct = np.concatenate([c for e in evals for c in e.correct])
    return float(correct.mean()) if len(correct) else float("nan")


def recent_label(d: RecentAnswers) -> str:
    """'name: tau=.., horizon=.., weight=.., temperature=..', the key of `choose_recent`'s scores."""
    return f"{d.name}: " + ", ".join(f"{k}={v}" for k, v in d.settings().items() if k not in ("order", "max_ctx"))


def online_sweep(drafter, train: Sequence[RecordedPair], pairs: Sequence[RecordedPair], gamma: int,
                 settings: Sequence[dict]) -> list[list[metrics.SDTrace]]:
    """`online_traces` (every 1) of `drafter` under each of several settings (attribute values that
    change how it reads its store, not what it fitted) from one store: fitted on train once, each
    pair's answer taken in once, every setting evaluated on a pair before the next answer comes in.
    The same traces as online_traces of a copy per setting, in the time of one store's updates.
    Returns one list of traces per setting, in order."""
    d, out = refit(drafter, train), [[] for _ in settings]
    for j, p in enumerate(pairs):
        d.update(pairs[j - 1:j] if j else [])
        for traces, setting in zip(out, settings):
            for k, v in setting.items():
                setattr(d, k, v)
            traces += evaluate(d, [p], gamma).traces
    return out


def choose_recent(train: Sequence[RecordedPair], val: Sequence[RecordedPair], gamma: int, order: int,
                  taus: Sequence[float], horizons: Sequence[int], weights: Sequence[float],
                  temperatures: Sequence[float]) -> tuple[RecentAnswers, RecentAnswers, dict[str, float]]:
    """The latest-answers drafters (`RecentAnswers`), chosen by their MAT on the validation pairs
    taken into the store one by one (`online_sweep`): the content-free one's tau, horizon and weight
    from the grid; then the draft-keyed one, the prior's settings with each temperature (the draft
    can only reweigh the answers the prior uses). Returns (prior, reader, validation MAT by setting,
    keyed by `recent_label`), both fitted on train; ties go to the first in grid order."""
    if not (taus and horizons and weights and temperatures):
        raise ValueError("every grid of the latest-answers drafters needs at least one value")
    scores: dict[str, float] = {}

    def best_of(candidates: list[RecentAnswers]) -> RecentAnswers:
        keys = ("tau", "horizon", "weight", "temperature")          # what a sweep may change (not order, max_ctx)
        runs = online_sweep(candidates[0], train, val, gamma, [{k: getattr(c, k) for k in keys} for c in candidates])
        best = None
        for c, traces in zip(candidates, runs):
            scores[recent_label(c)] = metrics.summarize_sd(traces).mat
            if best is None or scores[recent_label(c)] > scores[recent_label(best)]:
                best = c
        return best.fit(train)

    prior = best_of([RecentAnswers(t, h, w, order=order) for t, h, w in itertools.product(taus, horizons, weights)])
    reader = best_of([RecentAnswers(prior.tau, prior.horizon, prior.weight, t, order=order, name="draft_recent")
                      for t in temperatures])
    return prior, reader, scores


def consecutive_similarity(pairs: Sequence[RecordedPair]) -> pd.DataFrame:
    """For each pair and the one before it asked the same question (clip order): the TF-IDF cosine of
    their draft answers and of their target answers (idf over these pairs' own answers). Whether the
    draft model's answer changes when the target's does: what a draft-keyed latest-answers drafter
    relies on."""
    drafts, targets = Tfidf([p.draft_ids for p in pairs]).matrix, Tfidf([p.target_ids for p in pairs]).matrix
    last: dict[str, int] = {}
    rows = []
    for j, p in enumerate(pairs):
        i = last.get(p.question)
        if i is not None:
            rows.append({"key": p.key, "draft similarity": float(drafts[i] @ drafts[j]),
                         "target similarity": float(targets[i] @ targets[j])})
        last[p.question] = j
    return pd.DataFrame(rows, columns=["key", "draft similarity", "target similarity"])


def refittable(drafter) -> bool:
    """Count and lookup drafters refit in seconds with their settings kept (`refit`)."""
    return hasattr(drafter, "settings") and hasattr(drafter, "fit") and not is_network(drafter)


def ratio_line(curve: pd.DataFrame, column: str = "MAT test") -> tuple[float, float] | None:
    """(slope, intercept) of the least-squares line of the reader/prior ratio against log2(training
    pairs); None with fewer than two sizes."""
    r = curve[curve["drafter"] == "ratio best reader / best prior"]
    if len(r) < 2:
        return None
    slope, intercept = np.polyfit(np.log2(r["train pairs"].astype(float)), r[column].astype(float), 1)
    return float(slope), float(intercept)


def slope_per_doubling(curve: pd.DataFrame, column: str = "MAT test") -> float:
    """Least-squares slope of the reader/prior ratio against log2(training pairs): the change of
    the ratio per doubling of the data (an extrapolation beyond the measured sizes is a guess)."""
    line = ratio_line(curve, column)
    return line[0] if line else float("nan")


def ratio_line_at(curve: pd.DataFrame, n_pairs: float, column: str = "MAT test") -> float:
    """The least-squares line of `slope_per_doubling` read at n_pairs training pairs (the original
    study's 5,200 and 52,000): a measurement's summary inside the measured sizes, a guess beyond them."""
    line = ratio_line(curve, column)
    return line[0] * float(np.log2(n_pairs)) + line[1] if line else float("nan")
