"""The named drafters of the study: how each is trained, saved and loaded back.

    seed_token_adapter   the study's TokenAdapter (reads the draft's output only)
    target_prior_ngram   content-free control: the target's own prefix, n-gram (stupid backoff)
    target_prior_kn      content-free control: interpolated Kneser-Ney n-gram
    target_prior_suffix  content-free control: suffix datastore of all training answers + Kneser-Ney
    target_prior_question content-free control: the training answers to the same question + Kneser-Ney
    cross_modal          draft output + target prefix, encoder-decoder (+ the n-gram prior, mixed)
    target_prior_neural  the same network with the draft hidden: the ablation of cross_modal
    draft_retrieval      target answers of the clips with similar DRAFT answers + Kneser-Ney
    draft_copy           Kneser-Ney with the draft's unsaid content tokens boosted (a pointer)
    draft_direct         the draft model's own tokens, unchanged (nothing to train)

`train(name, train, val, recipe)` fits one on the training pairs, with every choice (checkpoint,
n-gram order, mixture weight, lookup settings) made on the validation pairs, and returns it with a
summary. The count and lookup drafters (helpers.study.drafters.lookup) choose their settings by
validation MAT at `recipe.select_gamma`, the quantity the study reports. Stage 20 trains and saves
them into its folder; stages 30 and 35 load them from there. No test pair enters.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from helpers.study.drafters.base import RawDraft, evaluate
from helpers.study.drafters import lookup
from helpers.study.drafters.cross_modal import CrossModalConfig, CrossModalDrafter, choose_prior_weight
from helpers.study.drafters.ngram import NgramPrior
from helpers.study.drafters.seed_adapter import AdapterConfig, SeedAdapterDrafter
from helpers.study.pairs import RecordedPair
from helpers.training import TrainConfig

NAMES = ("seed_token_adapter", "target_prior_ngram", "cross_modal", "target_prior_neural", "target_prior_kn",
         "target_prior_suffix", "target_prior_question", "draft_retrieval", "draft_copy")
LOOKUP = ("target_prior_kn", "target_prior_suffix", "target_prior_question", "draft_retrieval",
          "draft_copy")  # saved as JSON (lookup.py)
UNTRAINED = ("draft_direct",)


@dataclass
class Recipe:
    """How the drafters are trained: the parameters of notebook 20, one field each."""
    device: str = "cpu"
    seed: int = 0
    adapter_epochs: int = 50                   # the seed recipe (early stopping usually ends sooner)
    adapter_lr: float = 1e-4
    adapter_batch_size: int = 32
    adapter_patience: int = 10
    adapter_output_vocab: str = "train"        # "full": the seed's softmax over all ids
    adapter_max_minutes: float = 0.0
    text_vocab: int = 32000                    # the models' vocabulary (the adapter's embedding rows)
    ngram_orders: list[int] = field(default_factory=lambda: [2, 3, 4, 5, 6])
    cm_epochs: int = 40
    cm_lr: float = 1e-3
    cm_batch_size: int = 32
    cm_patience: int = 8
    cm_d_model: int = 256
    cm_max_minutes: float = 0.0
    cm_prior_weights: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    progress: bool = True
    # count and lookup drafters: every list is a grid, validation MAT at select_gamma picks one value each
    select_gamma: int = 5
    kn_orders: list[int] = field(default_factory=lambda: [4, 6, 8, 10])
    suffix_max_ctx: list[int] = field(default_factory=lambda: [8, 16, 32])
    suffix_weights: list[float] = field(default_factory=lambda: [0.3, 0.6, 1.0])
    retrieval_neighbours: list[int] = field(default_factory=lambda: [5, 20, 80])
    retrieval_temperatures: list[float] = field(default_factory=lambda: [0.05, 0.2])
    retrieval_weights: list[float] = field(default_factory=lambda: [0.1, 0.3, 0.6])   # also target_prior_question's
    retrieval_same_question: bool = True       # draft_retrieval: also try retrieving among the same question's answers only (chosen after the grid)
    question_backoffs: list[float] = field(default_factory=lambda: [0.3, 0.6])  # draft_retrieval with same_question: weight of the question's answers in what retrieval leaves (tried after same_question)
    coverage_boosts: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0, 2.0])  # suffix and retrieval, chosen last
    copy_boosts: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    copy_doc_shares: list[float] = field(default_factory=lambda: [0.2, 0.5])
    tree_branch: int = 4                       # candidates pushed per expanded node of a token tree


def check_names(names: Sequence[str]) -> list[str]:
    bad = [n for n in names if n not in NAMES]
    if bad:
        raise ValueError(f"unknown drafter(s) {bad}; known: {list(NAMES)}")
    return list(names)


def checkpoint(folder: str | Path, name: str) -> Path:
    return Path(folder) / (f"{name}.json" if name == "target_prior_ngram" or name in LOOKUP else f"{name}.pt")


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


def select_settings(drafter, val: Sequence[RecordedPair], grid: dict[str, Sequence], gamma: int) -> dict[str, float]:
    """Try every combination of the attribute values in `grid` on a fitted drafter (attributes that
    do not change what was fitted) and keep the one with the best validation MAT at gamma (ties:
    the first in grid order). Returns the validation MAT of every combination, keyed 'a=1, b=2'."""
    keys, scores, best = list(grid), {}, None
    for combo in itertools.product(*(grid[k] for k in keys)):
        for k, v in zip(keys, combo):
            setattr(drafter, k, v)
        label = ", ".join(f"{k}={v}" for k, v in zip(keys, combo))
        scores[label] = evaluate(drafter, val, gamma).sd.mat
        if best is None or scores[label] > scores[best[0]]:
            best = (label, combo)
    if best is None:
        raise ValueError(f"empty grid {grid}")
    for k, v in zip(keys, best[1]):
        setattr(drafter, k, v)
    return scores


def fit_lookup(name: str, train: Sequence[RecordedPair], val: Sequence[RecordedPair], recipe: Recipe,
               trained: dict) -> tuple[lookup.CountDrafter, dict]:
    """A count or lookup drafter with its settings chosen by validation MAT at recipe.select_gamma.
    The Kneser-Ney order is chosen once (target_prior_kn) and reused by the others when trained."""
    g = recipe.select_gamma
    kn = trained.get("target_prior_kn")
    scores: dict[str, float] = {}
    if kn is None or name == "target_prior_kn":
        best = None
        for order in recipe.kn_orders:
            m = lookup.KneserNeyPrior(int(order)).fit(train)
            scores[f"order={order}"] = evaluate(m, val, g).sd.mat
            if best is None or scores[f"order={order}"] > scores[f"order={best.order}"]:
                best = m
        if best is None:
            raise ValueError("kn_orders is empty")
        kn = best
        if name == "target_prior_kn":
            return kn, {"val_mat_by_setting": scores, "chosen": {"order": kn.order}}
    order = kn.order
    if name == "target_prior_suffix":
        best_d, best_mat = None, -1.0
        for mc in recipe.suffix_max_ctx:
            d = lookup.SuffixPrior(int(mc), order=order).fit(train)
            s = select_settings(d, val, {"weight": recipe.suffix_weights}, g)
            scores.update({f"max_ctx={mc}, {k}": v for k, v in s.items()})
            if max(s.values()) > best_mat:
                best_d, best_mat = d, max(s.values())
        d = best_d
        scores.update(_select_coverage(d, val, recipe, f"max_ctx={d.max_ctx}, weight={d.weight}", best_mat))
    elif name == "target_prior_question":
        d = lookup.QuestionPrior(order=order).fit(train)
        scores = select_settings(d, val, {"weight": recipe.retrieval_weights}, g)
        best = max(scores, key=scores.get)
        scores.update(_select_coverage(d, val, recipe, best, scores[best]))
    elif name == "draft_retrieval":
        d = lookup.DraftRetrieval(order=order).fit(train)
        scores = select_settings(d, val, {"neighbours": recipe.retrieval_neighbours, "temperature":
                                          recipe.retrieval_temperatures, "weight": recipe.retrieval_weights}, g)
        best = max(scores, key=scores.get)
        base = scores[best]
        if recipe.retrieval_same_question:          # kept only where it raises validation MAT
            tried, best, base = select_if_better(d, val, "same_question", [True], best, base, g)
            scores.update(tried)
        if d.same_question and recipe.question_backoffs:     # the question, not Kneser-Ney alone, as back-off
            tried, best, base = select_if_better(d, val, "question_backoff", recipe.question_backoffs, best, base, g)
            scores.update(tried)
        scores.update(_select_coverage(d, val, recipe, best, base))
    elif name == "draft_copy":
        d = lookup.DraftCopy(order=order).fit(train)
        scores = select_settings(d, val, {"boost": recipe.copy_boosts, "max_doc_share": recipe.copy_doc_shares}, g)
    else:
        raise ValueError(f"{name!r} is not a lookup drafter")
    return d, {"val_mat_by_setting": scores, "chosen": d.settings()}


def select_if_better(d, val: Sequence[RecordedPair], attr: str, values: Sequence, label: str, base: float,
                     gamma: int) -> tuple[dict[str, float], str, float]:
    """One more setting of a drafter whose others are chosen (`label`, with `base` their validation
    MAT at the attribute's current value): the best of `values` by validation MAT is taken only if it
    beats `base`; otherwise the attribute keeps its value. Returns (the MAT of each value tried,
    keyed '<label>, attr=v'; the label of what is kept; its MAT)."""
    current = getattr(d, attr)
    tried = select_settings(d, val, {attr: values}, gamma)
    scores = {f"{label}, {k}": v for k, v in tried.items()}
    best = max(tried, key=tried.get)
    if tried[best] <= base:
        setattr(d, attr, current)
        return scores, label, base
    return scores, f"{label}, {best}", tried[best]


def _select_coverage(d, val: Sequence[RecordedPair], recipe: Recipe, label: str, base: float) -> dict[str, float]:
    """The coverage boost of a drafter whose other settings are chosen (`label`, with `base` their
    validation MAT, which is coverage 0's): validation MAT picks it; a boost that does no better
    than none is not taken. Returns the MAT of each boost tried, keyed '<label>, coverage=b'."""
    d.coverage = 0.0
    boosts = [b for b in recipe.coverage_boosts if b > 0]
    if not boosts:
        return {}
    return select_if_better(d, val, "coverage", boosts, label, base, recipe.select_gamma)[0]


def _network_summary(hist) -> dict:
    return {"n_params": hist.n_params, "train_seconds": hist.train_seconds, "best_epoch": hist.best_epoch,
            "epochs_run": len(hist.epochs), "val_token_match": hist.best_value, "stop_reason": hist.stop_reason,
            "history": asdict(hist)}


def train(name: str, train: Sequence[RecordedPair], val: Sequence[RecordedPair], recipe: Recipe,
          trained: dict | None = None):
    """Fit drafter `name` -> (drafter, summary). `trained`: drafters fitted earlier in this run
    (cross_modal reuses target_prior_ngram as its mixed-in prior when it is there)."""
    check_names([name])
    trained = trained or {}
    t0 = time.perf_counter()
    if name in LOOKUP:
        d, info = fit_lookup(name, train, val, recipe, trained)
        d.tree_branch = recipe.tree_branch
        chosen = ", ".join(f"{k} {v}" for k, v in info["chosen"].items())
        val_tm = evaluate(d, val, recipe.select_gamma).token_match
        return d, {"n_params": sum(len(e.toks) for e in d.index.entries.values()), "train_seconds": time.perf_counter() - t0,
                   "best_epoch": None, "epochs_run": None, "val_token_match": val_tm,
                   "val_mat": max(info["val_mat_by_setting"].values()),
                   "stop_reason": f"{chosen} chosen on validation MAT", **info}
    if name == "target_prior_ngram":
        ngram, scores = fit_ngram(train, val, recipe.ngram_orders)
        return ngram, {"n_params": sum(len(c) for c in ngram.counts.values()), "train_seconds": time.perf_counter() - t0,
                       "best_epoch": None, "epochs_run": None, "val_token_match": scores[ngram.order],
                       "stop_reason": f"order {ngram.order} chosen on validation", "order": ngram.order,
                       "val_token_match_by_order": scores}
    if name == "seed_token_adapter":
        d = SeedAdapterDrafter(AdapterConfig(text_vocab=recipe.text_vocab, output_vocab=recipe.adapter_output_vocab),
                               recipe.device)
        hist = d.fit(train, val, TrainConfig(epochs=recipe.adapter_epochs, batch_size=recipe.adapter_batch_size,
                                             lr=recipe.adapter_lr, patience=recipe.adapter_patience, seed=recipe.seed,
                                             device=recipe.device, max_minutes=recipe.adapter_max_minutes,
                                             progress=recipe.progress))
        return d, _network_summary(hist)
    d = CrossModalDrafter(CrossModalConfig(d_model=recipe.cm_d_model, use_draft=name == "cross_modal"), recipe.device)
    hist = d.fit(train, val, TrainConfig(epochs=recipe.cm_epochs, batch_size=recipe.cm_batch_size, lr=recipe.cm_lr,
                                         patience=recipe.cm_patience, seed=recipe.seed, device=recipe.device,
                                         max_minutes=recipe.cm_max_minutes, progress=recipe.progress))
    summary = _network_summary(hist)
    if name == "cross_modal":  # mix in the n-gram prior of the target's phrasing, weight chosen on validation
        prior = trained.get("target_prior_ngram") or fit_ngram(train, val, recipe.ngram_orders)[0]
        scores = choose_prior_weight(d, prior, val, recipe.cm_prior_weights)
        summary.update(prior_weight=d.prior_weight, val_token_match_by_weight=scores,
                       val_token_match_network_only=summary["val_token_match"],
                       val_token_match=scores[d.prior_weight])
    summary["train_seconds"] = time.perf_counter() - t0
    return d, summary


def save(drafter, folder: str | Path, name: str) -> Path:
    path = checkpoint(folder, name)
    drafter.save(path)
    return path


def load(folder: str | Path, name: str, device: str = "cpu"):
    if name == "draft_direct":
        return RawDraft()
    path = checkpoint(folder, name)
    if not path.exists():
        raise FileNotFoundError(f"{path}: drafter {name!r} was not trained in this run "
                                f"(add it to the `drafters` parameter of 20_train_drafters)")
    if name == "target_prior_ngram":
        return NgramPrior.load(path)
    if name in LOOKUP:
        return lookup.load(path)
    if name == "seed_token_adapter":
        return SeedAdapterDrafter.load(path, device)
    return CrossModalDrafter.load(path, device)
