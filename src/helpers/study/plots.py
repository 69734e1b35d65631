"""Figures of the study chapters (matplotlib/seaborn). Each returns the Figure."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from helpers.study import metrics
from helpers.study.event_camera import ratio_line


def training_curves(histories: dict[str, dict]):
    """Validation token match and train/validation loss per epoch, one colour per drafter."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.4))
    for i, (name, h) in enumerate(histories.items()):
        ep = pd.DataFrame(h["epochs"])
        if ep.empty:
            continue
        col = f"C{i}"
        a.plot(ep["epoch"], ep["val_token_match"], color=col, label=name)
        a.axvline(h["best_epoch"], color=col, ls=":", lw=1)
        b.plot(ep["epoch"], ep["train_loss"], color=col, ls="--", label=f"{name} train")
        b.plot(ep["epoch"], ep["val_loss"], color=col, label=f"{name} val")
    a.set(xlabel="epoch", ylabel="validation token match", title="Validation token match (dotted: chosen epoch)")
    b.set(xlabel="epoch", ylabel="cross-entropy (nats/token)", title="Loss (train has label smoothing)")
    a.legend(fontsize=8)
    b.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def position_acceptance(evals: dict, max_pos: int = 40):
    """Teacher-forced correctness by target position, and SD's per-slot acceptance."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.4))
    for i, (name, e) in enumerate(evals.items()):
        acc = metrics.correctness_by_position(e.correct, max_pos + 1)
        a.plot(np.arange(1, max_pos + 1), acc, label=name, color=f"C{i}")
        b.plot(np.arange(1, e.sd.gamma + 1), e.sd.slot_acceptance, marker="o", label=name, color=f"C{i}")
    a.set(xlabel="target position", ylabel="top-1 correct (teacher-forced)", ylim=(0, 1),
          title="Correctness by position")
    b.set(xlabel="draft slot j in a verify step", ylabel="P(accept j | accepted j-1)", ylim=(0, 1),
          title="Per-slot acceptance in SD")
    a.legend(fontsize=8)
    fig.tight_layout()
    return fig


def accept_histograms(evals: dict):
    """Share of verify steps that accepted n drafts, n = 0..gamma."""
    names = list(evals)
    gamma = evals[names[0]].sd.gamma
    fig, ax = plt.subplots(figsize=(8, 3.2))
    w = 0.8 / len(names)
    for i, name in enumerate(names):
        h = np.asarray(evals[name].sd.accept_hist, dtype=float)
        ax.bar(np.arange(gamma + 1) + (i - (len(names) - 1) / 2) * w, h / h.sum(), w, label=name, color=f"C{i}")
    ax.set(xlabel="drafts accepted in a verify step", ylabel="share of verify steps", xticks=range(gamma + 1),
           title=f"Accepted length per verify step (gamma = {gamma})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def gamma_and_leviathan(sweep: pd.DataFrame, alphas: dict[str, float], chosen: int | None = None):
    """Measured MAT against gamma (solid) and Leviathan's i.i.d. prediction (dashed); `chosen`:
    the gamma chosen on validation (dotted vertical line)."""
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    if chosen is not None:
        ax.axvline(chosen, color="k", ls=":", lw=1)
    g = np.asarray(sweep.index)
    for i, name in enumerate(sweep.columns):
        ax.plot(g, sweep[name], marker="o", color=f"C{i}", label=f"{name} measured")
        ax.plot(g, [metrics.expected_tokens_per_step(alphas[name], int(x)) for x in g], ls="--", color=f"C{i}", lw=1)
    ax.axhline(1, color="grey", lw=0.8)
    ax.set(xlabel="gamma (drafts per verify step)", ylabel="MAT (tokens per target call)",
           title="MAT vs gamma (dashed: i.i.d. prediction)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def speedup_map(mats: dict[str, float], gamma: int, cs: Sequence[float] = (0.0, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)):
    """Decode-phase speedup implied by each measured MAT for draft/target cost ratios c."""
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    for i, (name, mat) in enumerate(mats.items()):
        ax.plot(cs, [metrics.speedup_from_mat(mat, gamma, c) for c in cs], marker="o", color=f"C{i}", label=name)
    ax.axhline(1, color="grey", lw=0.8)
    ax.set_xscale("symlog", linthresh=0.02)
    ax.set(xlabel="c = draft step cost / target step cost", ylabel="implied decode speedup",
           title=f"Implied decode-phase speedup (gamma = {gamma})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def mat_overview(drafters: dict[str, dict], headline: str, gamma: int):
    """The key figure: each drafter's test MAT with the draft finished and streaming in, the
    headline drafter (chosen on validation) marked; 1.0 is plain decoding."""
    names = list(drafters)
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(names) + 1.2))
    ax.barh(y - 0.2, [drafters[n]["mat"] for n in names], 0.4, color="C0", label="draft finished (full)")
    ax.barh(y + 0.2, [drafters[n]["mat_streamed"] for n in names], 0.4, color="C1", label="draft streaming in")
    ax.axvline(1.0, color="grey", lw=0.8)
    ax.set_yticks(y, [f"{n}  (headline)" if n == headline else n for n in names])
    ax.invert_yaxis()
    ax.set(xlabel=f"MAT: tokens per target verify step (gamma = {gamma}; 1.0 = plain decoding)",
           title="Accepted tokens per verify step, test pairs")
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.06), ncol=2, frameon=False)  # clear of the bars
    fig.tight_layout()
    return fig


def tree_sizes(mats: pd.DataFrame, chain_gamma: int):
    """MAT against the number of tree nodes per verify step (columns of `mats`), one line per
    drafter (rows) and visibility; a chain of `chain_gamma` drafts is the dotted vertical line."""
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    for i, (label, row) in enumerate(mats.iterrows()):
        ax.plot([int(c) for c in row.index], row.values, marker="o", color=f"C{i}", label=label,
                ls="--" if "streamed" in str(label) else "-")
    ax.axvline(chain_gamma, color="k", ls=":", lw=1)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="tree nodes verified per step (log scale)", ylabel="MAT (tokens per verify step)",
           title="Token trees: MAT vs tree size, test pairs")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def position_gain(gain: pd.DataFrame, reader: str, prior: str, smooth: int = 3):
    """Teacher-forced correctness of the best draft reader and the best prior by target position,
    and the reader's gain (running mean over `smooth` positions)."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.2))
    x = np.asarray(gain.index)
    a.plot(x, gain["reader"], color="C1", label=reader)
    a.plot(x, gain["prior"], color="C0", label=prior)
    a.set(xlabel="target position", ylabel="top-1 correct (teacher-forced)", ylim=(0, 1), title="Correctness by position")
    a.legend(fontsize=8)
    b.bar(x, gain["gain"], color=np.where(gain["gain"] >= 0, "C2", "C3"), width=0.8)
    b.plot(x, gain["gain"].rolling(smooth, center=True, min_periods=1).mean(), color="k", lw=1)
    b.axhline(0, color="grey", lw=0.8)
    b.set(xlabel="target position", ylabel="reader - prior (share of pairs)", title="Where the draft reader gains")
    fig.tight_layout()
    return fig


def learning_curves(curve: pd.DataFrame, line_at: dict[int, float] | None = None):
    """Test MAT of each drafter against training pairs (left) and the ratio best reader / best prior
    (right), both chosen on validation at each size. line_at ({training pairs: the least-squares
    line's ratio there}, event_camera.ratio_line_at): that line (event_camera.ratio_line) is drawn through the measured sizes
    and on to those sizes (dashed where it extrapolates), each marked."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.2))
    ratio_name = "ratio best reader / best prior"
    for i, (name, g) in enumerate(curve[curve["drafter"] != ratio_name].groupby("drafter", sort=False)):
        a.plot(g["train pairs"], g["MAT test"], marker="o", color=f"C{i}", label=name,
               ls="--" if name.startswith("target_prior") else "-")
    r = curve[curve["drafter"] == ratio_name]
    b.plot(r["train pairs"], r["MAT test"], marker="o", color="k", label="test")
    b.plot(r["train pairs"], r["MAT validation"], marker="s", color="grey", ls=":", label="validation")
    b.axhline(1.0, color="grey", lw=0.8)
    marks = {n: v for n, v in (line_at or {}).items() if v == v}
    line = ratio_line(curve) if marks else None
    if line:
        slope, icpt = line
        lo, hi = float(r["train pairs"].min()), float(r["train pairs"].max())
        xs = np.array([lo, hi])
        b.plot(xs, slope * np.log2(xs) + icpt, color="C3", lw=1, label="least-squares line (test)")
        far = max(max(marks), hi)
        if far > hi:
            xs = np.array([hi, far])
            b.plot(xs, slope * np.log2(xs) + icpt, color="C3", lw=1, ls="--", label="the line, extrapolated")
        ns = sorted(marks)
        b.plot(ns, [marks[n] for n in ns], marker="D", color="C3", ls="none", label="the line at the original study's sizes")
        for n in ns:
            b.annotate(f"{n:,}", (n, marks[n]), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
        b.margins(y=0.15)
    for ax in (a, b):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("training pairs (log scale)")
    a.set(ylabel="MAT (tokens per verify step)", title="MAT vs training pairs (dashed: priors)")
    b.set(ylabel="MAT ratio", title="Best draft reader / best prior")
    a.legend(fontsize=7)
    b.legend(fontsize=7)
    fig.tight_layout()
    return fig


def mixture_weights(scores: dict[str, dict[float, float]], chosen: dict[str, float], prior_mat: float | None,
                    prior: str, title: str):
    """Validation MAT of each network mixed with a prior against the network's weight (0: the prior
    alone, 1: the network alone), one line per network; the prior's own validation MAT dotted; each
    line's chosen weight (`chosen`, as cross_modal.choose_prior_weight set it) ringed."""
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    for i, (name, s) in enumerate(scores.items()):
        w = sorted(s)
        ax.plot(w, [s[x] for x in w], marker="o", color=f"C{i}", label=name)
        ax.plot([chosen[name]], [s[chosen[name]]], marker="o", ms=12, mfc="none", color=f"C{i}")
    if prior_mat is not None and prior_mat == prior_mat:
        ax.axhline(prior_mat, color="grey", ls=":", lw=1, label=f"{prior} alone")
    ax.set(xlabel="network weight in the mixture", ylabel="MAT, validation pairs", title=title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def consecutive_similarity(sims: pd.DataFrame, corr: dict[str, float]):
    """Each pair against the one before it asked the same question: how alike their draft answers are
    (x) and their target answers (y), one colour per part, with Pearson's r in the legend."""
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    for i, (part, g) in enumerate(sims.groupby("part", sort=False)):
        ax.scatter(g["draft similarity"], g["target similarity"], s=12, alpha=0.6, color=f"C{i}",
                   label=f"{part} ({len(g)} pairs, " + (f"r = {corr[part]:.2f})" if corr[part] == corr[part] else "too few for r)"))
    ax.set(xlabel="draft answers' similarity to the previous clip's (TF-IDF cosine)",
           ylabel="target answers' similarity", xlim=(-0.02, 1.02), ylim=(-0.02, 1.02),
           title="Does the draft change when the target does?")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig
