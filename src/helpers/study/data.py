"""The study's data hand-off: recorded pairs -> one split that every later stage shares.

Stage 10_data validates the pairs, fixes the train / validation / test split by clip order
(`split.json` lists each part's pair keys) and writes the parts in the suite's Parquet format
as two files: `pairs_trainval.parquet` (training and validation) and `pairs_test.parquet`.
Stage 20 reads only the first (`load_study_data(..., parts=TRAIN_VAL)`), so training cannot see
a test pair; stage 30 reads both. A locked test set kept elsewhere (`test_pairs_path`) replaces
the split's test part; training and validation then come from `pairs_path` alone.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from helpers.study import metrics
from helpers.study.pairs import (LLAMA_VOCAB_SIZE, RecordedPair, Split, load_pairs, save_parquet, split_by_clip,
                    stored_vocab_size)
from helpers.suite.paths import RUN_PREFIX, note_input, read_results, require_stage_file, resolve_in_run, stage_dir

DATA_STAGE = "10_data"


def read_recorded(pairs_path: str, run_dir: str, vocab_size: int = 0, max_pairs: int = 0,
                  preset: str = "default", param: str = "pairs_path") -> tuple[list[RecordedPair], int]:
    """Validated pairs in clip order (the first `max_pairs` if > 0) and the vocabulary size used
    to validate them. `vocab_size` 0: the one stored in a Parquet file (LLaMA's for JSON)."""
    if max_pairs < 0:
        raise ValueError(f"max_pairs must be >= 0, got {max_pairs}")
    if pairs_path.startswith(RUN_PREFIX):  # an earlier stage's output: say which command makes it
        stage, _, name = pairs_path[len(RUN_PREFIX):].partition("/")
        require_stage_file(run_dir, stage, name, preset)
    path = resolve_in_run(pairs_path, run_dir)
    if not path.exists():
        raise FileNotFoundError(f"recorded pairs not found: {path} (parameter {param}={pairs_path!r})")
    note_input(path)
    pairs = load_pairs(path, vocab_size or None)
    if vocab_size == 0:
        vocab_size = stored_vocab_size(path) or LLAMA_VOCAB_SIZE
    pairs = sorted(pairs, key=lambda p: (p.clip_index, p.question_index))
    return (pairs[:max_pairs] if max_pairs else pairs), vocab_size


TRAIN_VAL = ("train", "val")
ALL_PARTS = ("train", "val", "test")
FILES = {"trainval": "pairs_trainval.parquet", "test": "pairs_test.parquet"}


def write_study_data(run_dir: str, split: Split, vocab_size: int) -> dict[str, Path]:
    """pairs_trainval.parquet, pairs_test.parquet and split.json into the data stage's folder."""
    out = stage_dir(run_dir, DATA_STAGE)
    files = {"trainval": save_parquet(split.train + split.val, out / FILES["trainval"], vocab_size),
             "test": save_parquet(split.test, out / FILES["test"], vocab_size), "split": out / "split.json"}
    files["split"].write_text(json.dumps({name: [p.key for p in getattr(split, name)] for name in ALL_PARTS}, indent=1))
    return files


@dataclass
class StudyData:
    split: Split             # parts not asked for are empty
    vocab_size: int
    tokenizer_path: str
    source: str


def load_study_data(run_dir: str, preset: str = "default", parts: Sequence[str] = ALL_PARTS) -> StudyData:
    """The data stage's split (a clear error naming the command if it has not run). Only the files
    holding `parts` are opened: stage 20 asks for TRAIN_VAL and never reads the test file."""
    bad = set(parts) - set(ALL_PARTS)
    if bad:
        raise ValueError(f"unknown parts {sorted(bad)}; parts are {ALL_PARTS}")
    keys = json.loads(require_stage_file(run_dir, DATA_STAGE, "split.json", preset).read_text())
    info = read_results(run_dir, DATA_STAGE, preset)
    by_key = {}
    for file, holds in (("trainval", TRAIN_VAL), ("test", ("test",))):
        if set(holds) & set(parts):
            by_key.update({p.key: p for p in load_pairs(require_stage_file(run_dir, DATA_STAGE, FILES[file], preset))})
    split = Split(**{name: [by_key[k] for k in keys[name]] if name in parts else [] for name in ALL_PARTS})
    return StudyData(split, info["vocab_size"], info["tokenizer_path"], info["source"])


def make_split(pairs: Sequence[RecordedPair], train_fraction: float, val_fraction: float,
               max_train_pairs: int = 0, test_pairs: Sequence[RecordedPair] | None = None) -> Split:
    """The study's split; `test_pairs` (a locked test set) replaces the test part."""
    return split_by_clip(pairs, train_fraction, val_fraction, max_train_pairs or None, test_pairs)


def length_stats(pairs: Sequence[RecordedPair]) -> dict[str, float]:
    d = np.array([len(p.draft_ids) for p in pairs])
    t = np.array([len(p.target_ids) for p in pairs])
    return {"draft_mean_tokens": float(d.mean()), "target_mean_tokens": float(t.mean()),
            "draft_median_tokens": float(np.median(d)), "target_median_tokens": float(np.median(t)),
            "direct_match": metrics.rate([metrics.direct_match(p.draft_ids, p.target_ids) for p in pairs])}


def openings(pairs: Sequence[RecordedPair], n_words: int = 4, top: int = 5) -> pd.DataFrame:
    """The most frequent first `n_words` words of each model's answers, with counts: where the
    two registers show at a glance."""
    cols = {}
    for kind in ("draft", "target"):
        c = Counter(" ".join(getattr(p, f"{kind}_text").split()[:n_words]) for p in pairs)
        cols[kind] = pd.Series([f"{o}... ({n})" for o, n in c.most_common(top)])
    return pd.DataFrame(cols)
