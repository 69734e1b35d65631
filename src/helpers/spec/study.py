"""The wall-clock study: speculative decoding against target-only greedy on the same decode loop.

Two kinds of measurement, labelled as such in the book:

- *end to end* (`wallclock`): real models (the synthetic world's, or any backend), real drafters,
  the draft model's answer either finished beforehand (`full`) or generating concurrently
  (`concurrent`, helpers.spec.overlap); every SD answer is checked against the target's own
  greedy answer;
- *trace-driven* (`replay`): 7B-shaped models with random weights, where timings are real but
  acceptance would be meaningless, so each step replays the accepted length of the exact
  simulation on recorded pairs: the drafter's real propose call, one verify forward of the right
  width, the cache rolled back to what the trace accepted.

Timing hygiene (Spec-Bench): a warm-up pass first (compiles, captures graphs), synchronisation
around timed regions, greedy, `repeats` repetitions (the median per sample is kept).
"""
from __future__ import annotations

import json
import statistics
import time
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from helpers.models.backend import Backend
from helpers.spec.engine import SpecConfig, greedy_generate, speculative_generate, tree_parents
from helpers.spec.overlap import DraftStream
from helpers.study.drafters.base import DraftContext
from helpers.study.pairs import RecordedPair


def _chunks(n: int, size: int) -> list[range]:
    return [range(s, min(s + size, n)) for s in range(0, n, size)]


def wallclock(target: Backend, frames: Sequence[np.ndarray], questions: Sequence[str], drafters: dict,
              draft_answers: Sequence[Sequence[int]] | None = None, draft: Backend | None = None,
              event_inputs: Sequence[np.ndarray] | None = None, cfg: SpecConfig = SpecConfig(),
              max_new_tokens: int = 50, repeats: int = 3) -> pd.DataFrame:
    """One row per (sample, method): method 'greedy' (target alone) or a drafter's name. Batches of
    target.batch samples. Visibility 'full' uses draft_answers; 'concurrent' (when `draft` and
    event_inputs are given) runs the draft model alongside each batch. Columns: sample, method,
    visibility, batch, latency_ms, prefill_ms, decode_ms, n_tokens, steps, mat, exact, lossy."""
    B, rows = target.batch, []
    modes = (["full"] if draft_answers is not None else []) + (["concurrent"] if draft is not None else [])

    def one(method, idx, mode):
        f, q = [frames[i] for i in idx], [questions[i] for i in idx]
        if method == "greedy":
            return greedy_generate(target, f, q, max_new_tokens), None
        if mode == "full":
            return speculative_generate(target, drafters[method], f, q, lambda b: draft_answers[idx[b]], cfg,
                                        max_new_tokens), None
        ds = DraftStream(draft, [event_inputs[i] for i in idx], q, max_new_tokens).start()
        res = speculative_generate(target, drafters[method], f, q, ds.visible, cfg, max_new_tokens)
        return res, ds.join()

    for idx in _chunks(len(questions), B):
        idx = list(idx)
        one("greedy", idx, "full")                                          # warm-up of this batch shape
        for method, mode in [("greedy", "-")] + [(m, v) for m in drafters for v in modes]:
            if method != "greedy":
                one(method, idx, mode)                                      # warm-up (drafter caches, graphs)
            runs = [one(method, idx, mode) for _ in range(repeats)]
            for j, i in enumerate(idx):
                lat = statistics.median(r.total_ms for r, _ in runs)
                r, ds = runs[0]
                row = r.rows[j]
                rows.append({"sample": i, "method": method, "visibility": mode, "batch": len(idx), "latency_ms": lat,
                             "prefill_ms": statistics.median(x.prefill_ms for x, _ in runs),
                             "decode_ms": statistics.median(x.decode_ms for x, _ in runs),
                             "n_tokens": len(row.ids), "steps": len(row.steps), "mat": row.mat, "ids": row.ids,
                             "draft_ms": sum(s.draft_ms for s in row.steps) / max(1, len(idx)),
                             "draft_model_ms": ds.times_ms[-1] if ds is not None and ds.times_ms else float("nan"),
                             "lossy": r.lossy})
    df = pd.DataFrame(rows)
    ref = df[df.method == "greedy"].set_index("sample")["ids"]
    df["exact"] = [ids == ref[s] for s, ids in zip(df["sample"], df["ids"])]
    return df


def classify_mismatches(target: Backend, frames: Sequence[np.ndarray], questions: Sequence[str], df: pd.DataFrame,
                        threshold: float = 0.5) -> pd.DataFrame:
    """Why a speculative answer differs from the target's greedy one (`wallclock`'s rows that are
    not exact). At the first differing position the target is teacher-forced through the greedy
    answer's prefix (prefill, then one verify forward over the prefix; `target`: a batch-1
    backend), and the gap between its two best logits there is the margin. A margin below
    `threshold` with the speculative token the runner-up is a *near tie*: bf16 arithmetic in a
    k-token verify forward and in a one-token decode step may order two nearly equal logits
    differently. Anything else is a *real bug*. One row per mismatched answer."""
    ref = df[df.method == "greedy"].drop_duplicates("sample").set_index("sample")["ids"]
    bad = df[(df.method != "greedy") & ~df.exact.astype(bool)]
    out = []
    for _, r in bad.iterrows():
        g, s = list(ref[r["sample"]]), list(r["ids"])
        i = next((k for k, (a, b) in enumerate(zip(g, s)) if a != b), min(len(g), len(s)))
        row = {"sample": r["sample"], "method": r["method"], "visibility": r["visibility"], "batch": r["batch"],
               "position": i, "greedy_token": g[i] if i < len(g) else None, "sd_token": s[i] if i < len(s) else None}
        if i >= min(len(g), len(s)):
            out.append({**row, "margin": float("nan"), "sd_token_rank": -1, "verdict": "real bug"})   # lengths differ
            continue
        p = frames[r["sample"]]
        logits = target.prefill([questions[r["sample"]]], target.encode([p]), [target.adapter.n_items(p)])[0]
        if i > 0:
            ids = torch.tensor([g[:i]], dtype=torch.long, device=target.device)
            logits = target.decoder.verify(ids)[0, i - 1]
        logits = logits.float()
        top = logits.topk(2).values
        margin = float(top[0] - top[1])
        rank = int((logits > logits[s[i]]).sum())
        out.append({**row, "margin": margin, "sd_token_rank": rank,
                    "verdict": "near tie" if margin < threshold and rank <= 1 else "real bug"})
    cols = ["sample", "method", "visibility", "batch", "position", "greedy_token", "sd_token", "margin",
            "sd_token_rank", "verdict"]
    return pd.DataFrame(out, columns=cols)


def speedups(df: pd.DataFrame) -> pd.DataFrame:
    """Per method and visibility: mean of per-sample ratios and ratio of means of greedy latency over
    SD latency (prefill included), the same without the prefill, MAT, and the exact-match rate."""
    g = df[df.method == "greedy"].set_index("sample")
    out = []
    for (m, v), d in df[df.method != "greedy"].groupby(["method", "visibility"]):
        d = d.set_index("sample")
        base, sd = g.loc[d.index], d
        out.append({"method": m, "visibility": v, "samples": len(d),
                    "speedup (mean of ratios)": float((base.latency_ms / sd.latency_ms).mean()),
                    "speedup (ratio of means)": float(base.latency_ms.mean() / sd.latency_ms.mean()),
                    "decode speedup (ratio of means)": float(base.decode_ms.mean() / sd.decode_ms.mean()),
                    "MAT": float(sd.n_tokens.sum() - len(sd)) / float(sd.steps.sum()),
                    "exact match": float(d.exact.mean()), "lossy": bool(d.lossy.any())})
    return pd.DataFrame(out).set_index(["method", "visibility"])


def replay(target: Backend, pixel_input: np.ndarray, question: str, pairs: Sequence[RecordedPair],
           traces: Sequence, drafter=None, repeats: int = 3, gamma: int | None = None, tree_nodes: int = 0,
           baseline: dict | None = None, before: Callable[[int], None] | None = None) -> pd.DataFrame:
    """Trace-driven SD on a (7B-shaped) target, one pair at a time at batch 1: prefill a real-shaped
    prompt, then per recorded step the drafter's real propose call on that step's context (when a
    drafter is given), one verify forward of width gamma + 1 (or, with tree_nodes, the drafter's
    own tree of tree_nodes + 1 nodes under a tree mask, its accepted path compacted in the cache),
    and the cache rolled back to the trace's accepted length. The baseline is target-only greedy
    for as many tokens, on the same loop; `baseline` (a dict filled on first use, keyed by pair)
    lets several replays of the same pairs share one greedy measurement. `before(j)`, when given,
    runs before pair j is timed, outside the timing (an online drafter takes the answers before pair j
    into its store there; the warm-up on pair 0 comes first). One row per pair: greedy and SD latency
    (median of repeats), with and without prefill."""
    gamma = gamma or traces[0].gamma
    width = (tree_nodes or gamma) + 1
    dec = target.decoder
    visual = target.encode([pixel_input])
    n_items = [target.adapter.n_items(pixel_input)]
    baseline = {} if baseline is None else baseline

    def prefill():
        t0 = time.perf_counter()
        tok = target.prefill([question], visual, n_items).argmax(-1)
        target.sync()
        return tok, (time.perf_counter() - t0) * 1e3

    def greedy(n):
        tok, pre = prefill()
        t0 = time.perf_counter()
        for _ in range(n - 1):
            tok = dec.decode(tok).argmax(-1)
        target.sync()
        return pre, (time.perf_counter() - t0) * 1e3

    def sd(pair, trace):
        tok, pre = prefill()
        t0, k, draft_ms = time.perf_counter(), 1, 0.0
        toks = torch.full((dec.batch, width), 3, dtype=torch.long, device=target.device)
        for a, d in zip(trace.accepted, trace.drafted):
            ctx = DraftContext(pair.question, pair.draft_ids, tuple(pair.target_ids[:k]))
            td = time.perf_counter()
            if tree_nodes:
                nodes = drafter.propose_tree(ctx, tree_nodes)[:tree_nodes] if drafter is not None else []
                parents = tree_parents([nodes] * dec.batch, dec.batch, width)
            elif drafter is not None:
                drafter.propose(ctx, d)
            draft_ms += (time.perf_counter() - td) * 1e3
            if tree_nodes:
                dec.verify_tree(toks, parents)
                dec.keep_path([list(range(a + 1))] * dec.batch)
            else:
                dec.verify(toks)
                dec.set_lengths(dec.lengths + 1 + a)
            k += a + 1
        target.sync()
        return pre, (time.perf_counter() - t0) * 1e3, draft_ms

    rows = []
    greedy(4), sd(pairs[0], traces[0])                                       # warm-up: graphs captured
    for j, (pair, trace) in enumerate(zip(pairs, traces)):
        if before is not None:
            before(j)
        n = len(pair.target_ids)
        if pair.key not in baseline:
            g = [greedy(n) for _ in range(repeats)]
            baseline[pair.key] = (statistics.median(x[0] for x in g), statistics.median(x[1] for x in g))
        s = [sd(pair, trace) for _ in range(repeats)]
        rows.append({"key": pair.key, "n_tokens": n, "steps": trace.steps, "draft_tokens": len(pair.draft_ids),
                     "mat": (n - 1) / max(1, trace.steps),
                     "greedy_prefill_ms": baseline[pair.key][0], "greedy_decode_ms": baseline[pair.key][1],
                     "sd_prefill_ms": statistics.median(x[0] for x in s),
                     "sd_decode_ms": statistics.median(x[1] for x in s),
                     "drafter_ms": statistics.median(x[2] for x in s)})
    df = pd.DataFrame(rows)
    df["greedy_ms"] = df.greedy_prefill_ms + df.greedy_decode_ms
    df["sd_ms"] = df.sd_prefill_ms + df.sd_decode_ms
    return df


def replay_batched(target: Backend, pixel_input: np.ndarray, question: str, pairs: Sequence[RecordedPair],
                   traces: Sequence, drafter=None, repeats: int = 3, width: int | None = None,
                   before: Callable[[int], None] | None = None) -> pd.DataFrame:
    """Trace-driven SD at batch B = target.batch, against batched greedy on the same loop. Pairs go
    B at a time (a last, partial batch is left out); their rows stay ragged: at every step each row
    still inside its trace gets its drafter's real propose call (one after another on the CPU, as
    in the engine), all B rows are scored in one verify forward of `width` tokens (default the
    traces' gamma + 1), and each row's cache advances by its own 1 + accepted. Finished rows idle
    until the batch's longest trace ends, as they do in batched greedy, whose baseline runs the
    batch's longest answer. One row per batch: tokens, greedy and SD ms (prefill included, medians
    of `repeats`), verify steps, drafter ms. `before(j)`, when given, runs before the batch whose
    first pair is j (and before the warm-up, with j = 0), outside the timing: an online drafter takes
    in the answers of the batches before it."""
    B, dec = target.batch, target.decoder
    width = width or traces[0].gamma + 1
    visual = target.encode([pixel_input])[0]
    n_items = target.adapter.n_items(pixel_input)

    def prefill():
        return target.prefill([question] * B, [visual] * B, [n_items] * B).argmax(-1)

    def greedy(chunk):
        t0 = time.perf_counter()
        tok = prefill()
        for _ in range(max(len(p.target_ids) for p in chunk) - 1):
            tok = dec.decode(tok).argmax(-1)
        target.sync()
        return (time.perf_counter() - t0) * 1e3

    def sd(chunk, trs):
        t0, draft_ms, steps = time.perf_counter(), 0.0, 0
        prefill()
        toks = torch.full((B, width), 3, dtype=torch.long, device=target.device)
        s, k = [0] * B, [1] * B
        while any(s[i] < t.steps for i, t in enumerate(trs)):
            adv = [0] * B
            td = time.perf_counter()
            for i, (p, t) in enumerate(zip(chunk, trs)):
                if s[i] < t.steps:
                    if drafter is not None:
                        drafter.propose(DraftContext(p.question, p.draft_ids, tuple(p.target_ids[:k[i]])), t.drafted[s[i]])
                    adv[i] = 1 + t.accepted[s[i]]
                    k[i] += t.emitted[s[i]]
                    s[i] += 1
            draft_ms += (time.perf_counter() - td) * 1e3
            dec.verify(toks)
            dec.set_lengths(dec.lengths + torch.tensor(adv, device=target.device))
            steps += 1
        target.sync()
        return (time.perf_counter() - t0) * 1e3, draft_ms, steps

    rows = []
    chunks = [range(i, i + B) for i in range(0, len(pairs) - B + 1, B)]
    if not chunks:
        raise ValueError(f"{len(pairs)} pairs cannot fill one batch of {B}")
    first = [pairs[i] for i in chunks[0]]
    if before is not None:
        before(0)
    greedy(first), sd(first, [traces[i] for i in chunks[0]])                      # warm-up: graphs captured
    for c in chunks:
        if before is not None:
            before(c.start)
        chunk, trs = [pairs[i] for i in c], [traces[i] for i in c]
        g = statistics.median(greedy(chunk) for _ in range(repeats))
        runs = [sd(chunk, trs) for _ in range(repeats)]
        rows.append({"batch": B, "tokens": sum(len(p.target_ids) for p in chunk),
                     "greedy_ms": g, "sd_ms": statistics.median(r[0] for r in runs),
                     "drafter_ms": statistics.median(r[1] for r in runs), "steps": runs[0][2],
                     "greedy_steps": max(len(p.target_ids) for p in chunk) - 1})
    return pd.DataFrame(rows)


def batch_of_one(rows: pd.DataFrame) -> pd.DataFrame:
    """A batch-1 chain replay's rows (`replay`) in replay_batched's form: batches of one are the chain
    replay's own rows, measured once."""
    return pd.DataFrame({"batch": 1, "tokens": rows.n_tokens, "greedy_ms": rows.greedy_ms, "sd_ms": rows.sd_ms,
                         "drafter_ms": rows.drafter_ms, "steps": rows.steps, "greedy_steps": rows.n_tokens - 1})


def batched_summary(df: pd.DataFrame) -> dict:
    """Throughput of a batched replay: tokens per second of SD and greedy, and their ratio."""
    return {"batch": int(df.batch.iloc[0]), "batches": len(df), "tokens": int(df.tokens.sum()),
            "greedy_tokens_per_s": float(df.tokens.sum() / df.greedy_ms.sum() * 1e3),
            "sd_tokens_per_s": float(df.tokens.sum() / df.sd_ms.sum() * 1e3),
            "throughput_ratio": float(df.greedy_ms.sum() / df.sd_ms.sum()),
            "drafter_share": float(df.drafter_ms.sum() / df.sd_ms.sum()),
            "verify_steps_per_batch": float(df.steps.mean()), "greedy_steps_per_batch": float(df.greedy_steps.mean())}


def replay_summary(df: pd.DataFrame) -> dict:
    """Speedups of a replay: mean of ratios and ratio of means, prefill included and excluded."""
    return {"samples": len(df), "mat": float((df.n_tokens - 1).sum() / df.steps.sum()),
            "speedup_mean_of_ratios": float((df.greedy_ms / df.sd_ms).mean()),
            "speedup_ratio_of_means": float(df.greedy_ms.mean() / df.sd_ms.mean()),
            "decode_speedup_mean_of_ratios": float((df.greedy_decode_ms / df.sd_decode_ms).mean()),
            "decode_speedup_ratio_of_means": float(df.greedy_decode_ms.mean() / df.sd_decode_ms.mean()),
            "prefill_ms": float(df.greedy_prefill_ms.median()),
            "decode_step_ms": float((df.greedy_decode_ms / (df.n_tokens - 1)).median()),
            "verify_step_ms": float(((df.sd_decode_ms - df.drafter_ms) / df.steps).median()),
            "drafter_ms_per_step": float((df.drafter_ms / df.steps).median())}


def leviathan_prediction(alpha: float, gamma: int, drafter_ms: float, step_ms: float, verify_ms: float) -> float:
    """Leviathan et al.'s decode-phase speedup with measured costs: expected tokens per step
    (1 - alpha^(gamma+1)) / (1 - alpha) over the step's cost (drafting + one verify) in target
    decode steps. With verify = one decode step and drafter cost gamma c steps this is their
    (1 - alpha^(gamma+1)) / ((1 - alpha)(gamma c + 1))."""
    from helpers.study.metrics import expected_tokens_per_step
    return expected_tokens_per_step(alpha, gamma) / ((drafter_ms + verify_ms) / step_ms)


def validation_choice(study_run: str) -> dict | None:
    """What a study run chose on validation (30_alignment's results: `headline`, the drafter, and
    `gamma_choice`), recorded as an input of the calling stage; None when that stage did not run."""
    import json

    from helpers.suite.paths import note_input, stage_dir
    f = stage_dir(study_run, "30_alignment", create=False) / "results.json"
    return json.loads(note_input(f).read_text()) if f.exists() else None


def chosen_drafter(study_run: str) -> str | None:
    """The drafter the study run chose on validation (30_alignment's headline), or None."""
    return (validation_choice(study_run) or {}).get("headline")


def chosen_gamma(study_run: str) -> int | None:
    """The gamma the study run chose on validation (30_alignment's gamma_choice), or None."""
    choice = validation_choice(study_run)
    return choice["gamma_choice"]["gamma"] if choice else None


def highlight(rep: dict) -> tuple[str, str | None]:
    """Which replayed configurations a report highlights, without looking at their speedups (they
    are measured on the test pairs): the drafter chosen on validation (rep['chosen'], else the first
    replayed), its chain with the draft finished (the headline: validation chose the drafter and the
    chain's gamma) and its largest tree when one was replayed (shown alongside, never chosen on the
    test figures). Returns (chain key, tree key or None)."""
    keys = list(rep["drafters"])
    name = rep.get("chosen")
    if not name or f"{name}|full" not in rep["drafters"]:
        name = keys[0].split("|")[0]
    trees = [k for k in keys if k.startswith(f"{name}|full|tree")]
    tree = max(trees, key=lambda k: int(k.rsplit("tree", 1)[1])) if trees else None
    return f"{name}|full", tree


def replay_7b(study_run: str, drafter_names: Sequence[str], tokenizer, gamma: int, device="cuda",
              max_pairs: int = 0, repeats: int = 3, log=print, build=None, compile: bool = True,
              tree_nodes: Sequence[int] = (), adaptive_max: int = 0, batches: Sequence[int] = (),
              hf_pairs: int = 0, attention: str = "auto", recent: bool = False) -> dict:
    """The 7B trace-driven study: the recorded study's test pairs and trained drafters (a run folder
    whose stages 10-20 ran, e.g. dsec_recorded), exact traces under full and streamed visibility,
    replayed on the 7B-shaped Video-LLaVA with a compiled decode loop; drafters that propose token
    trees are also replayed with trees of each size in tree_nodes (full visibility). Returns per
    drafter, visibility (and tree size) the summary, Leviathan's prediction (chains) and the
    per-pair rows. For the drafter chosen on validation (else the first) also: adaptive gamma
    (adaptive_max > 0: from gamma within [1, adaptive_max], verify width adaptive_max + 1), batched
    throughput at each of `batches` (replay_batched, full visibility, against batched greedy), and
    transformers' generate on the first hf_pairs pairs (their exact lengths) next to its SD and greedy
    latencies. With `recent`, the latest-answers prior that the study run's chapter 35 chose on
    validation (`target_prior_recent`) is replayed too, key 'target_prior_recent|full|online': each
    pair's answer is taken into its store before the next pair, in the traces (online_evals over the
    replayed pairs, in order) and in the replayed drafter alike; at each of `batches` its throughput
    too, the store taking in a batch's answers before the next batch (answers of one batch come
    together), keys 'target_prior_recent|full|online|b<B>'. build(device) -> (target model,
    adapter) replaces the 7B-shaped target (tests use a small one)."""
    from helpers.models import bench, shapes
    from helpers.study import alignment
    from helpers.study import data as study_data
    from helpers.study import event_camera as ec
    from helpers.study.drafters import FULL, evaluate, zoo
    from helpers.study.drafters.lookup import RecentAnswers
    from helpers.suite.paths import stage_dir
    if not drafter_names and not recent:
        raise ValueError("nothing to replay: name a drafter or set recent")
    data = study_data.load_study_data(study_run, parts=("train", "test") if recent else ("test",))
    pairs = data.split.test[:max_pairs] if max_pairs else data.split.test
    if recent:                              # before the 7B model is built: a missing choice fails at once
        res = stage_dir(study_run, "35_event_camera", create=False) / "results.json"
        chosen = json.loads(res.read_text()).get("recent") if res.exists() else None
        if not chosen:
            raise ValueError(f"recent=True replays the latest-answers prior chosen by 35_event_camera, but "
                             f"{study_run} has no such result (run its 35_event_camera with ec_recent_taus set)")
        latest = RecentAnswers(**chosen["prior"], name="target_prior_recent").fit(data.split.train)
    streamed, source = alignment.visibility(-1, -1, study_run)
    if build is None:
        target = shapes.video_llava_7b(device)
        ad = shapes.adapter("target", target, tokenizer)
    else:
        target, ad = build(device)
    question = pairs[0].question
    pixel = shapes.random_inputs("target", 1)[0]
    n_prompt = len(ad.prompt_ids(question, 8))
    width = max([gamma, *tree_nodes, adaptive_max]) + 1
    max_len = n_prompt + max(len(p.target_ids) for p in pairs) + width + 8
    be = Backend(target, tokenizer, 1, max_len, ad, compile=compile, attention=attention)
    out = {"gamma": gamma, "n_pairs": len(pairs), "visibility": {"lead": streamed.lead, "rate": streamed.rate,
                                                                   "source": source}, "prompt_tokens": n_prompt,
           "tree_nodes": list(tree_nodes), "chosen": chosen_drafter(study_run), "drafters": {}}
    if out["chosen"] and drafter_names and out["chosen"] not in drafter_names:   # what validation chose is always replayed
        log(f"{out['chosen']}: chosen on validation by the study run, replayed too")
        drafter_names = [*drafter_names, out["chosen"]]
    baseline: dict = {}
    full: dict = {}                        # name -> (drafter, its full-visibility evaluation), reused below
    batch_backends: dict[int, Backend] = {}   # one per batch size, shared by the drafters measured batched

    def batched(b, traces, drafter, before=None):
        """replay_batched at batch b on its (cached) backend; None, logged, where b does not fit in memory."""
        try:
            if b not in batch_backends:
                batch_backends[b] = Backend(target, tokenizer, b, max_len, ad, compile=compile, attention=attention)
            return replay_batched(batch_backends[b], pixel, question, pairs, traces, drafter, repeats, before=before)
        except torch.cuda.OutOfMemoryError:
            batch_backends.pop(b, None)
            bench._free()
            log(f"batch {b}: CUDA out of memory, left out")
            return None
    for name in drafter_names:
        drafter = zoo.load(stage_dir(study_run, "20_train_drafters", create=False), name)
        for vis in (FULL, streamed):
            ev = evaluate(drafter, pairs, gamma, visibility=vis)
            if vis is FULL:
                full[name] = (drafter, ev)
            df = replay(be, pixel, question, pairs, ev.traces, drafter, repeats, gamma, baseline=baseline)
            summ = replay_summary(df)
            summ["leviathan"] = leviathan_prediction(ev.token_match, gamma, summ["drafter_ms_per_step"],
                                                     summ["decode_step_ms"], summ["verify_step_ms"])
            summ["alpha"] = ev.token_match
            out["drafters"][f"{name}|{vis.mode}"] = {"summary": summ, "rows": df.to_dict("records")}
            log(f"{name} {vis.mode}: {summ['speedup_ratio_of_means']:.2f}x (MAT {summ['mat']:.2f})")
        if not hasattr(drafter, "propose_tree"):
            continue
        for n in tree_nodes:
            traces = ec.tree_traces(drafter, pairs, int(n), FULL)
            df = replay(be, pixel, question, pairs, traces, drafter, repeats, gamma, tree_nodes=int(n), baseline=baseline)
            summ = replay_summary(df)
            summ["tree_nodes"] = int(n)
            out["drafters"][f"{name}|full|tree{int(n)}"] = {"summary": summ, "rows": df.to_dict("records")}
            log(f"{name} full tree {n}: {summ['speedup_ratio_of_means']:.2f}x (MAT {summ['mat']:.2f})")
    if recent:
        evs = ec.online_evals(latest, data.split.train, pairs, gamma, 1)
        live = ec.refit(latest, data.split.train)           # grows pair by pair as the traces' store did

        def take_in(j):
            live.update(pairs[j - 1:j] if j else [])
        df = replay(be, pixel, question, pairs, [t for e in evs for t in e.traces], live, repeats, gamma,
                    baseline=baseline, before=take_in)
        summ = replay_summary(df)
        summ["alpha"] = ec.online_token_match(evs)
        summ["leviathan"] = leviathan_prediction(summ["alpha"], gamma, summ["drafter_ms_per_step"],
                                                 summ["decode_step_ms"], summ["verify_step_ms"])
        out["drafters"]["target_prior_recent|full|online"] = {"summary": summ, "rows": df.to_dict("records"),
                                                              "settings": chosen["prior"]}
        log(f"target_prior_recent full online: {summ['speedup_ratio_of_means']:.2f}x (MAT {summ['mat']:.2f})")
        for b in batches:                   # a batch's answers come together: the store takes them in batch by batch
            if b == 1:
                bdf = batch_of_one(df)
            else:
                traces_b = ec.online_traces(latest, data.split.train, pairs, gamma, b)
                live_b, taken = ec.refit(latest, data.split.train), [0]

                def take_batches(j, live_b=live_b, taken=taken):
                    live_b.update(pairs[taken[0]:j])
                    taken[0] = j
                bdf = batched(b, traces_b, live_b, before=take_batches)
                if bdf is None:
                    continue
            bsum = batched_summary(bdf)
            out.setdefault("batched", {})[f"target_prior_recent|full|online|b{b}"] = {"summary": bsum,
                                                                                      "rows": bdf.to_dict("records")}
            log(f"target_prior_recent batch {b}: throughput {bsum['throughput_ratio']:.2f}x greedy")
    main = out["chosen"] if out["chosen"] in full else next(iter(full), None)
    if main is None:                        # the latest-answers prior alone: nothing chosen to go further with
        return out
    drafter, ev = full[main]
    if adaptive_max:
        df = replay(be, pixel, question, pairs, ev.simulate(gamma, (1, adaptive_max)), drafter, repeats, adaptive_max,
                    baseline=baseline)
        summ = {**replay_summary(df), "adaptive": [1, adaptive_max]}
        out["drafters"][f"{main}|full|adaptive{adaptive_max}"] = {"summary": summ, "rows": df.to_dict("records")}
        log(f"{main} full adaptive gamma 1..{adaptive_max}: {summ['speedup_ratio_of_means']:.2f}x (MAT {summ['mat']:.2f})")
    if hf_pairs:
        rows = {r["key"]: r for r in out["drafters"][f"{main}|full"]["rows"]}
        hf = []
        for p in pairs[:hf_pairs]:
            ms = bench.hf_generate_ms(target, be, pixel, question, len(p.target_ids), repeats)
            hf.append({"key": p.key, "n_tokens": len(p.target_ids), "hf_ms": statistics.median(ms),
                       "greedy_ms": rows[p.key]["greedy_ms"], "sd_ms": rows[p.key]["sd_ms"]})
        h = pd.DataFrame(hf)
        out["hf_generate"] = {"drafter": f"{main}|full", "rows": hf,
                              "sd_vs_hf": float(h.hf_ms.sum() / h.sd_ms.sum()),
                              "greedy_vs_hf": float(h.hf_ms.sum() / h.greedy_ms.sum())}
        log(f"transformers generate on {len(h)} pairs: SD {out['hf_generate']['sd_vs_hf']:.2f}x, "
            f"compiled greedy {out['hf_generate']['greedy_vs_hf']:.2f}x faster")
    if batches:
        for b in batches:
            if b == 1:
                df = batch_of_one(pd.DataFrame(out["drafters"][f"{main}|full"]["rows"]))
            else:
                df = batched(b, ev.traces, drafter)
                if df is None:
                    continue
            summ = batched_summary(df)
            out.setdefault("batched", {})[f"{main}|full|b{b}"] = {"summary": summ, "rows": df.to_dict("records")}
            log(f"{main} batch {b}: throughput {summ['throughput_ratio']:.2f}x greedy "
                f"({summ['sd_tokens_per_s']:.0f} vs {summ['greedy_tokens_per_s']:.0f} tokens/s)")
    return out
