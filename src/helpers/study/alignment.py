"""Alignment analysis: choices made on validation, then the drafter table, SD statistics,
examples and failures on the test pairs.

All inputs are `DrafterEval`s (helpers.study.drafters.base.evaluate) of the same pairs, so every
drafter is judged by the same exact greedy-SD simulation and the same token metrics. Anything
chosen (the headline drafter, gamma) is chosen from validation evaluations (`headline`,
`choose_gamma`); the test evaluations only report.
"""
from __future__ import annotations

import json
from collections import Counter
from typing import Sequence

import numpy as np
import pandas as pd

from helpers.models.tokenizer import pieces
from helpers.study import literature, metrics
from helpers.study.drafters.base import DrafterEval, Visibility, evaluate, stream_timing, with_visibility
from helpers.study.pairs import RecordedPair
from helpers.suite.paths import stage_dir


# --- choices, made on validation -------------------------------------------------------------

def headline(val_evals: dict[str, DrafterEval], exclude: Sequence[str] = ("draft_direct",)) -> str:
    """The drafter with the highest validation MAT (ties: the first in order): the one the
    findings lead with. Chosen on validation so that the test numbers stay unbiased."""
    names = [n for n in val_evals if n not in exclude] or list(val_evals)
    return max(names, key=lambda n: (val_evals[n].sd.mat, -names.index(n)))


def choose_gamma(val_eval: DrafterEval, gammas: Sequence[int], cost_ratio_c: float) -> tuple[int, pd.DataFrame]:
    """The gamma that maximises the implied decode speedup MAT(gamma) / (gamma c + 1) on
    validation, for a draft step costing c target steps. (MAT alone never falls as gamma grows
    under greedy verification, so maximising it would always pick the largest gamma.)"""
    rows = []
    for g in gammas:
        mat = metrics.summarize_sd(val_eval.simulate(int(g))).mat
        rows.append({"gamma": int(g), "MAT (validation)": mat, "speedup": metrics.speedup_from_mat(mat, int(g), cost_ratio_c)})
    table = pd.DataFrame(rows).set_index("gamma")
    return int(table["speedup"].idxmax()), table


def stream_costs(run_dir: str) -> tuple[dict[str, float], str]:
    """Costs (ms) that set streamed visibility by default: the timings 03_inference recorded for
    this run's own models when it recorded the pairs at batch 1, else the 7B figures measured on an
    H200 (literature.H200_EAGER). Returns (stream_timing's keyword arguments, where they came from)."""
    res = stage_dir(run_dir, "03_inference", create=False) / "results.json"
    t = json.loads(res.read_text()).get("timings_ms", {}) if res.exists() else {}
    med = {k: v["median"] for k, v in t.items()}
    if med.get("target_batch") == 1 and med.get("draft_batch") == 1:       # batch-1 latencies
        return ({"draft_prefill_ms": med["draft_vision"] + med["draft_prefill"],
                 "draft_decode_ms": med["draft_decode_per_token"],
                 "target_prefill_ms": med["target_vision"] + med["target_prefill"],
                 "verify_ms": med["target_decode_per_token"]},
                "the per-stage timings 03_inference recorded for this run's models (medians, batch 1, this machine)")
    h = literature.H200_EAGER
    return ({"draft_prefill_ms": h["draft_prefill_ms"], "draft_decode_ms": h["draft_decode_ms"],
             "target_prefill_ms": h["target_prefill_ms"], "verify_ms": h["verify_ms"]},
            f"the 7B pair's costs measured on an {h['device']}")


def visibility(lead: float, rate: float, run_dir: str) -> tuple[Visibility, str]:
    """Streamed visibility: `lead` and `rate` when >= 0, else derived from measured costs."""
    costs, source = stream_costs(run_dir)
    derived = stream_timing(**costs)
    vis = Visibility("streamed", lead if lead >= 0 else derived.lead, rate if rate >= 0 else derived.rate)
    if lead >= 0 and rate >= 0:
        source = "the parameters stream_lead and stream_rate"
    return vis, source


# --- tables ----------------------------------------------------------------------------------

def evaluate_all(drafters: dict, pairs: Sequence[RecordedPair], gamma: int, k: int,
                 streamed: Visibility | None = None) -> tuple[dict[str, DrafterEval], dict[str, DrafterEval]]:
    """Every drafter on `pairs` under full visibility and, when given, streamed visibility."""
    full = {n: evaluate(d, pairs, gamma, k) for n, d in drafters.items()}
    stream = {n: with_visibility(full[n], d, pairs, gamma, streamed) for n, d in drafters.items()} if streamed else {}
    return full, stream


def drafter_table(test: dict[str, DrafterEval], test_streamed: dict[str, DrafterEval],
                  val: dict[str, DrafterEval], needs: dict[str, str]) -> pd.DataFrame:
    """One row per drafter: what it reads, test token metrics, test MAT/tau under both
    visibilities, and the validation MAT that the choices were made on."""
    rows = {}
    for n, e in test.items():
        rows[n] = {"reads": needs.get(n, ""), "token match": e.token_match, "top-5": e.top5,
                   "MAT full": e.sd.mat, "tau full": e.sd.tau,
                   "MAT streamed": test_streamed[n].sd.mat if n in test_streamed else float("nan"),
                   "MAT validation": val[n].sd.mat if n in val else float("nan")}
    return pd.DataFrame(rows).T.rename_axis("drafter")


def gamma_sweep(evals: dict[str, DrafterEval], gammas: Sequence[int]) -> pd.DataFrame:
    """MAT of each drafter for each gamma (rows gamma, columns drafter), under each one's visibility."""
    return pd.DataFrame({name: [metrics.summarize_sd(e.simulate(int(g))).mat for g in gammas]
                         for name, e in evals.items()}, index=pd.Index(gammas, name="gamma"))


def leviathan_check(evals: dict[str, DrafterEval], gamma: int) -> pd.DataFrame:
    """Measured MAT next to Leviathan's i.i.d. prediction from the drafter's token match."""
    rows = []
    for name, e in evals.items():
        alpha = e.token_match
        rows.append({"drafter": name, "alpha (token match)": alpha, "MAT measured": e.sd.mat,
                     "MAT if i.i.d.": metrics.expected_tokens_per_step(alpha, gamma)})
    return pd.DataFrame(rows).set_index("drafter")


def _pair_counts(e: DrafterEval, gamma: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    hits = np.array([c.sum() for c in e.correct], dtype=float)
    n = np.array([len(c) for c in e.correct], dtype=float)
    traces = e.traces if e.sd.gamma == gamma else e.simulate(gamma)
    emitted = np.array([sum(t.emitted) for t in traces], dtype=float)
    steps = np.array([t.steps for t in traces], dtype=float)
    return hits, n, emitted, steps


def paired_bootstrap(a: DrafterEval, b: DrafterEval, pairs: Sequence[RecordedPair], gamma: int,
                     n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
    """Difference a - b in token match and MAT with a 95% interval from resampling clips (a
    clip's questions move together, as they are not independent)."""
    clips = np.array([p.clip_index for p in pairs])
    uniq = np.unique(clips)
    idx = [np.flatnonzero(clips == c) for c in uniq]
    ha, na, ea, sa = _pair_counts(a, gamma)
    hb, nb, eb, sb = _pair_counts(b, gamma)
    rng = np.random.default_rng(seed)
    d_tm, d_mat = [], []
    for _ in range(n_boot):
        pick = np.concatenate([idx[i] for i in rng.integers(0, len(uniq), len(uniq))])
        d_tm.append(ha[pick].sum() / na[pick].sum() - hb[pick].sum() / nb[pick].sum())
        d_mat.append(ea[pick].sum() / sa[pick].sum() - eb[pick].sum() / sb[pick].sum())
    out = {"token_match_diff": a.token_match - b.token_match, "mat_diff": a.sd.mat - b.sd.mat,
           "n_clips": int(len(uniq)), "n_boot": n_boot}
    for key, vals in (("token_match_diff", d_tm), ("mat_diff", d_mat)):
        out[f"{key}_lo"], out[f"{key}_hi"] = (float(v) for v in np.percentile(vals, [2.5, 97.5]))
    return out


def tokens_and_steps(traces: Sequence) -> np.ndarray:
    """(pairs, 2): tokens emitted and verify steps of each pair, from SDTraces or from such rows
    (the form chapter 30 stores in its results for chapter 35)."""
    return np.array([(sum(t.emitted), t.steps) if isinstance(t, metrics.SDTrace) else tuple(t) for t in traces],
                    dtype=float).reshape(-1, 2)


def mat_ratio_bootstrap(a: Sequence, b: Sequence, clips: Sequence,
                        n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict[str, float]:
    """MAT(a) / MAT(b) on the same pairs (SDTraces, or (tokens, steps) rows, in the same order) with a
    percentile interval from resampling clips with replacement (a clip's pairs move together). MAT
    pools verify steps, so each resample recomputes both as sum(emitted) / sum(steps) over the draws."""
    if not (len(a) == len(b) == len(clips)) or not len(a):
        raise ValueError(f"need the same non-zero number of traces and clips, got {len(a)}, {len(b)}, {len(clips)}")
    (ea, sa), (eb, sb) = tokens_and_steps(a).T, tokens_and_steps(b).T
    clips = np.asarray(clips)
    uniq = np.unique(clips)
    member = np.searchsorted(uniq, clips)                     # pair -> clip number
    per = lambda v: np.bincount(member, v, len(uniq))        # noqa: E731  (per-clip sums)
    ca, cs, cb, ct = per(ea), per(sa), per(eb), per(sb)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(uniq), (n_boot, len(uniq)))   # (B, clips)
    w = np.stack([np.bincount(d, minlength=len(uniq)) for d in draws]).astype(float)   # (B, clips) multiplicities
    ratios = (w @ ca / (w @ cs)) / (w @ cb / (w @ ct))
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(ratios, [tail, 100 - tail])
    return {"ratio": float((ea.sum() / sa.sum()) / (eb.sum() / sb.sum())), "lo": float(lo), "hi": float(hi),
            "mat_a": float(ea.sum() / sa.sum()), "mat_b": float(eb.sum() / sb.sum()), "n_clips": int(len(uniq)),
            "n_pairs": int(len(a)), "n_boot": int(n_boot), "level": level}


def pick_examples(e: DrafterEval, pairs: Sequence[RecordedPair]) -> dict[str, int]:
    """Indices of the best, median and worst pairs by tokens accepted in the first verify step
    without a gamma cap (the leading run of correct drafts), ties broken by token match."""
    lead = np.array([int(np.argmin(c)) if not c.all() else len(c) for c in e.correct])
    tm = np.array([c.mean() if len(c) else 0.0 for c in e.correct])
    order = np.lexsort((tm, lead))  # ascending
    return {"best": int(order[-1]), "median": int(order[len(order) // 2]), "worst": int(order[0])}


def token_table(pair: RecordedPair, top1: np.ndarray, tokenizer, n: int = 15,
                drafter_label: str = "Drafted") -> pd.DataFrame:
    """The seed report's token-by-token table: position i predicts target token i+1."""
    m = min(n, len(pair.target_ids) - 1)
    draft = list(pair.draft_ids[:m]) + [None] * max(0, m - len(pair.draft_ids))
    return pd.DataFrame({
        "Pos": range(m),
        "Draft": [tokenizer.decode([t]) if t is not None else "" for t in draft],
        drafter_label: [tokenizer.decode([int(t)]) if t >= 0 else "-" for t in top1[:m]],
        "Target": pieces(tokenizer, pair.target_ids[1:m + 1]),
        "Match": ["✓" if int(a) == b else "✗" for a, b in zip(top1[:m], pair.target_ids[1:m + 1])],
    }).set_index("Pos")


def first_divergences(e: DrafterEval, pairs: Sequence[RecordedPair], tokenizer, n: int = 15) -> pd.DataFrame:
    """Most frequent (drafted, actual) token pairs at each pair's first mismatch."""
    c = Counter()
    for p, ok, top in zip(pairs, e.correct, e.top1):
        if ok.all():
            continue
        i = int(np.argmin(ok))
        drafted = tokenizer.decode([int(top[i])]) if top[i] >= 0 else "-"
        c[(drafted, tokenizer.decode([p.target_ids[i + 1]]))] += 1
    total = sum(c.values())
    return pd.DataFrame([{"drafted": d, "target": t, "count": k, "share": k / total}
                         for (d, t), k in c.most_common(n)])
