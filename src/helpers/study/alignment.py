"""Alignment analysis on the test split: the drafter table, SD statistics, examples, failures.

All inputs are `DrafterEval`s (helpers.study.drafters.base.evaluate) of the same test pairs, so every
drafter is judged by the same exact greedy-SD simulation and the same token metrics.
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np
import pandas as pd

from helpers.study import metrics
from helpers.study.drafters.base import DrafterEval
from helpers.study.pairs import RecordedPair, pieces

# The study's published test figures (background.md): literature values, shown side by side.
STUDY_FIGURES = pd.DataFrame([
    {"run": "study 1q, 200 train", "train_pairs": 200, "test_pairs": 1100, "direct_match": 0.0158,
     "token_match": 0.2666, "top5": 0.4391},
    {"run": "study 1q", "train_pairs": 5200, "test_pairs": 1100, "direct_match": 0.0158,
     "token_match": 0.2790, "top5": 0.5164},
    {"run": "study 10q (seed report)", "train_pairs": 52000, "test_pairs": 11000, "direct_match": 0.0805,
     "token_match": 0.2148, "top5": 0.5152},
])


def drafter_table(evals: dict[str, DrafterEval]) -> pd.DataFrame:
    return pd.DataFrame([e.row() for e in evals.values()]).set_index("drafter")


def gamma_sweep(evals: dict[str, DrafterEval], gammas: Sequence[int]) -> pd.DataFrame:
    """MAT of each drafter for each gamma (rows gamma, columns drafter)."""
    return pd.DataFrame({name: [metrics.summarize_sd([metrics.simulate_sd(c, g) for c in e.correct]).mat
                                for g in gammas] for name, e in evals.items()}, index=pd.Index(gammas, name="gamma"))


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
    traces = [metrics.simulate_sd(c, gamma) for c in e.correct]
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
