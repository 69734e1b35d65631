"""The study's data hand-off: recorded pairs -> one split that every later stage shares.

Stage 10_data validates the pairs, writes them in the suite's Parquet format and fixes the
train / validation / test split by clip order (`split.json` lists each part's pair keys).
Stages 20 and 30 read both back through `load_study_data`, so no stage can split differently,
and the test part reaches only the evaluation notebook.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from helpers.study import metrics
from helpers.study.pairs import (LLAMA_VOCAB_SIZE, RecordedPair, Split, load_pairs, save_parquet, split_by_clip,
                    stored_vocab_size)
from helpers.suite.paths import RUN_PREFIX, read_results, require_stage_file, resolve_in_run, stage_dir

DATA_STAGE = "10_data"


def read_recorded(pairs_path: str, run_dir: str, vocab_size: int = 0, max_pairs: int = 0,
                  preset: str = "default") -> tuple[list[RecordedPair], int]:
    """Validated pairs in clip order (the first `max_pairs` if > 0) and the vocabulary size used
    to validate them. `vocab_size` 0: the one stored in a Parquet file (LLaMA's for JSON)."""
    if max_pairs < 0:
        raise ValueError(f"max_pairs must be >= 0, got {max_pairs}")
    if pairs_path.startswith(RUN_PREFIX):  # an earlier stage's output: say which command makes it
        stage, _, name = pairs_path[len(RUN_PREFIX):].partition("/")
        require_stage_file(run_dir, stage, name, preset)
    path = resolve_in_run(pairs_path, run_dir)
    if not path.exists():
        raise FileNotFoundError(f"recorded pairs not found: {path} (parameter pairs_path={pairs_path!r})")
    pairs = load_pairs(path, vocab_size or None)
    if vocab_size == 0:
        vocab_size = stored_vocab_size(path) or LLAMA_VOCAB_SIZE
    pairs = sorted(pairs, key=lambda p: (p.clip_index, p.question_index))
    return (pairs[:max_pairs] if max_pairs else pairs), vocab_size


def write_study_data(run_dir: str, pairs: Sequence[RecordedPair], split: Split, vocab_size: int) -> dict[str, Path]:
    """pairs.parquet + split.json into the data stage's folder."""
    out = stage_dir(run_dir, DATA_STAGE)
    parquet = save_parquet(pairs, out / "pairs.parquet", vocab_size)
    split_file = out / "split.json"
    split_file.write_text(json.dumps({name: [p.key for p in part] for name, part in
                                      (("train", split.train), ("val", split.val), ("test", split.test))}, indent=1))
    return {"pairs": parquet, "split": split_file}


@dataclass
class StudyData:
    split: Split
    vocab_size: int
    tokenizer_path: str
    source: str


def load_study_data(run_dir: str, preset: str = "default") -> StudyData:
    """The data stage's pairs and split (a clear error naming the command if it has not run)."""
    parquet = require_stage_file(run_dir, DATA_STAGE, "pairs.parquet", preset)
    keys = json.loads(require_stage_file(run_dir, DATA_STAGE, "split.json", preset).read_text())
    info = read_results(run_dir, DATA_STAGE, preset)
    by_key = {p.key: p for p in load_pairs(parquet)}
    parts = {name: [by_key[k] for k in keys[name]] for name in ("train", "val", "test")}
    return StudyData(Split(**parts), info["vocab_size"], info["tokenizer_path"], info["source"])


def make_split(pairs: Sequence[RecordedPair], train_fraction: float, val_fraction: float,
               max_train_pairs: int = 0) -> Split:
    return split_by_clip(pairs, train_fraction, val_fraction, max_train_pairs or None)


def length_stats(pairs: Sequence[RecordedPair]) -> dict[str, float]:
    d = np.array([len(p.draft_ids) for p in pairs])
    t = np.array([len(p.target_ids) for p in pairs])
    return {"draft_mean_tokens": float(d.mean()), "target_mean_tokens": float(t.mean()),
            "draft_median_tokens": float(np.median(d)), "target_median_tokens": float(np.median(t)),
            "direct_match": metrics.rate([metrics.direct_match(p.draft_ids, p.target_ids) for p in pairs])}
