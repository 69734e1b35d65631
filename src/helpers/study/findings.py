"""Findings and recommendations written from a run's results, by thresholds — never fixed prose.

`findings(results)` takes the stages' results.json dicts and returns `Finding`s whose wording
depends on the numbers (and whose numbers are formatted from them), so a rerun on other data
cannot leave a stale sentence behind. Pure functions: tested on hand-made results.
"""
from __future__ import annotations

from dataclasses import dataclass

from helpers.study.metrics import speedup_from_mat

STUDY_1Q = {"200": 0.2666, "5200": 0.2790}  # the study's 1q test token match (background.md)


@dataclass
class Finding:
    title: str
    text: str
    recommendation: str = ""


def _interval(c: dict, key: str) -> str:
    return f"{c[key]:+.3f} (95% interval {c[key + '_lo']:+.3f} to {c[key + '_hi']:+.3f})"


def draft_content(align: dict) -> Finding:
    """Does the draft model's output add to what the target's own prefix predicts?"""
    comps = align.get("comparisons", {})
    key = next((k for k in ("cross_modal - target_prior_ngram", "cross_modal - target_prior_neural") if k in comps), None)
    if key is None:
        return Finding("What the event-camera draft adds", "Not measured: this run did not train both `cross_modal` "
                       "and a content-free prior.", "Train `cross_modal` with a prior to answer the study's question.")
    c = comps[key]
    a, b = key.split(" - ")
    if c["mat_diff_lo"] > 0:
        rel = c["mat_diff"] / align[b]["mat"] if b in align else float("nan")
        verdict = (f"Reading the draft's output helps{', modestly' if rel < 0.1 else ''}: `{a}` accepts more per "
                   f"verify step than `{b}`, MAT difference {_interval(c, 'mat_diff')}, "
                   f"{rel:+.1%} of the content-free drafter's MAT.")
        rec = "Keep the draft model in the loop; its content is worth the extra input."
    elif c["mat_diff_hi"] < 0:
        verdict = (f"Reading the draft's output hurts: `{a}` accepts less than `{b}`, MAT difference "
                   f"{_interval(c, 'mat_diff')} — the network overfits the draft with this little data.")
        rec = "Use the content-free prior, or train the cross-modal drafter on more pairs."
    else:
        verdict = (f"No detectable gain from the draft's content: `{a}` vs `{b}` differ by "
                   f"{_interval(c, 'mat_diff')} in MAT and {_interval(c, 'token_match_diff')} in token match "
                   f"over {c['n_clips']} test clips.")
        rec = ("Most of what any drafter gets right is the target's own phrasing, which its accepted prefix "
               "already predicts; to gain from the event camera, condition on the draft's content more "
               "directly (hidden states rather than tokens) or use more training pairs.")
    return Finding("What the event-camera draft adds", verdict, rec)


def seed_adapter(align: dict, data: dict) -> Finding | None:
    if "seed_token_adapter" not in align:
        return None
    s = align["seed_token_adapter"]
    n_train = data.get("split", {}).get("train", "?")
    gap = min((s["token_match"] - v for v in STUDY_1Q.values()), key=abs)
    text = (f"The study's TokenAdapter reaches token match {s['token_match']:.1%} (top-5 {s['top5']:.1%}) on "
            f"{s['n_test_pairs']} test pairs after training on {n_train} pairs; the study reported "
            f"{STUDY_1Q['200']:.1%} with 200 and {STUDY_1Q['5200']:.1%} with 5,200 training pairs on its own test split — "
            + ("within 3 points." if abs(gap) <= 0.03 else f"{100 * gap:+.1f} percentage points from the nearer of the two."))
    prior = align.get("target_prior_ngram")
    rec = ""
    if prior is not None and prior["mat"] > s["mat"]:
        text += (f" Yet in SD it accepts MAT {s['mat']:.2f}, below the content-free n-gram prior's {prior['mat']:.2f}: "
                 "it never sees the target's accepted prefix, so one early miss misaligns every later draft.")
        rec = "Do not use a drafter that ignores the target's accepted prefix; condition on it."
    return Finding("The study's TokenAdapter, reproduced", text, rec)


def speed(align: dict, cost_ratio_c: float) -> Finding:
    best = align["best_drafter"]
    b, g = align[best], align["gamma"]
    break_even = (b["mat"] - 1) / g
    sp = speedup_from_mat(b["mat"], g, cost_ratio_c)
    gammas = {int(k): v for k, v in b["mat_by_gamma"].items()}
    g_best = max(gammas, key=lambda x: speedup_from_mat(gammas[x], x, cost_ratio_c))
    text = (f"Best drafter `{best}`: MAT {b['mat']:.2f} (tau {b['tau']:.2f}) at gamma = {g}. Lossless SD pays off "
            f"only while a draft step costs less than (MAT - 1) / gamma = {break_even:.3f} of a target decode step. "
            f"At c = {cost_ratio_c:g} the implied decode-phase speedup is {sp:.2f}x")
    text += "." if sp > 1 else ", i.e. no gain."
    rec = (f"Draft {g_best} token(s) per verify step at c = {cost_ratio_c:g} "
           f"(implied speedup {speedup_from_mat(gammas[g_best], g_best, cost_ratio_c):.2f}x).")
    return Finding("What speculative decoding can gain", text, rec)


def iid_model(align: dict) -> Finding:
    best = align["best_drafter"]
    b = align[best]
    ratio = b["mat"] / b["mat_iid"]
    direction = ("more tokens per step than" if ratio > 1.05 else "fewer tokens per step than" if ratio < 0.95
                 else "about as many tokens per step as")
    return Finding("Leviathan's i.i.d. model as a predictor",
                   f"For `{best}` the measured MAT is {b['mat']:.2f} against {b['mat_iid']:.2f} predicted from its "
                   f"token match as i.i.d. acceptance: {direction} independence predicts (ratio {ratio:.2f}).",
                   "Report measured MAT from exact SD; do not convert token match into speedups with the i.i.d. formula."
                   if abs(ratio - 1) > 0.05 else "")


def training(train: dict) -> Finding | None:
    still = [n for n, s in train.get("drafters", {}).items()
             if s.get("best_epoch") and s.get("epochs_run") and s["best_epoch"] >= s["epochs_run"] - 1
             and "patience" not in str(s.get("stop_reason", ""))]
    if not still:
        return None
    return Finding("Training budget", "Still improving when training stopped: " + ", ".join(f"`{n}`" for n in still)
                   + " (the best validation epoch is the last or second to last).",
                   "Give these drafters more epochs or time (e.g. on a GPU) before reading their numbers as final.")


def findings(data: dict, train: dict, align: dict, cost_ratio_c: float) -> list[Finding]:
    out = [draft_content(align), seed_adapter(align, data), speed(align, cost_ratio_c), iid_model(align), training(train)]
    return [f for f in out if f is not None]


def to_markdown(items: list[Finding]) -> str:
    lines = []
    for i, f in enumerate(items, 1):
        lines.append(f"**{i}. {f.title}.** {f.text}")
        if f.recommendation:
            lines.append(f"\n*Recommendation:* {f.recommendation}")
        lines.append("")
    return "\n".join(lines)
