"""The named drafters of the study: how each is trained, saved and loaded back.

    seed_token_adapter   the study's TokenAdapter (reads the draft's output only)
    target_prior_ngram   content-free control: the target's own prefix, n-gram
    cross_modal          draft output + target prefix, encoder-decoder
    target_prior_neural  the same network with the draft hidden: the ablation of cross_modal
Stage 20 trains and saves them into its folder; stage 30 loads them from there.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from helpers.study.pairs import RecordedPair
from helpers.study.drafters.base import evaluate
from helpers.study.drafters.cross_modal import CrossModalConfig, CrossModalDrafter
from helpers.study.drafters.ngram import NgramPrior
from helpers.study.drafters.seed_adapter import AdapterConfig, SeedAdapterDrafter

NAMES = ("seed_token_adapter", "target_prior_ngram", "cross_modal", "target_prior_neural")
SEES_DRAFT = {"seed_token_adapter": True, "target_prior_ngram": False, "cross_modal": True,
              "target_prior_neural": False, "draft_direct": True}
SEES_TARGET_PREFIX = {"seed_token_adapter": False, "target_prior_ngram": True, "cross_modal": True,
                      "target_prior_neural": True, "draft_direct": False}


def check_names(names: Sequence[str]) -> list[str]:
    bad = [n for n in names if n not in NAMES]
    if bad:
        raise ValueError(f"unknown drafter(s) {bad}; known: {list(NAMES)}")
    return list(names)


def checkpoint(folder: str | Path, name: str) -> Path:
    return Path(folder) / (f"{name}.json" if name == "target_prior_ngram" else f"{name}.pt")


def fit_ngram(train: Sequence[RecordedPair], val: Sequence[RecordedPair], orders: Sequence[int],
              gamma: int = 5) -> tuple[NgramPrior, dict[int, float]]:
    """Fit one n-gram prior per order; validation token match picks the order."""
    scores = {}
    best = None
    for n in orders:
        m = NgramPrior(order=int(n)).fit(train)
        scores[int(n)] = evaluate(m, val, gamma).token_match
        if best is None or scores[int(n)] > scores[best.order]:
            best = m
    if best is None:
        raise ValueError("ngram_orders is empty")
    return best, scores


def load(folder: str | Path, name: str, device: str = "cpu"):
    path = checkpoint(folder, name)
    if not path.exists():
        raise FileNotFoundError(f"{path}: drafter {name!r} was not trained in this run "
                                f"(add it to the `drafters` parameter of 20_train_drafters)")
    if name == "target_prior_ngram":
        return NgramPrior.load(path)
    if name == "seed_token_adapter":
        return SeedAdapterDrafter.load(path, device)
    return CrossModalDrafter.load(path, device)


__all__ = ["NAMES", "AdapterConfig", "CrossModalConfig", "check_names", "checkpoint", "fit_ngram", "load"]
