"""Recorded pairs: one (clip, question) with the draft's and the target's greedy outputs.

Two on-disk formats are read:
- the seed study's JSON (`{"questions": [...], "results": [{sample_idx, question_idx,
  sample_id, query, egpt_tokens, egpt_text, vl_tokens, vl_text}, ...]}`);
- the suite's own Parquet table (one row per pair, token ids as list<int32>, optional
  per-stage timings as float columns named `timing_<stage>_ms`).
The suite writes only Parquet. Every load is validated; a bad record is an error that names
it. Nothing is dropped silently.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from helpers.suite.paths import resolve

LLAMA_VOCAB_SIZE = 32000  # LLaMA-2 / Vicuna text vocabulary shared by EventGPT and Video-LLaVA


class PairFormatError(ValueError):
    """A recorded pair (or the file holding it) is malformed."""


@dataclass(frozen=True)
class RecordedPair:
    clip_id: str                    # stable clip identifier (DSEC: the study's sample_id)
    clip_index: int                 # position of the clip in recording order (splits follow it)
    question_index: int
    question: str
    draft_ids: tuple[int, ...]      # draft model's generated ids (no prompt)
    target_ids: tuple[int, ...]     # target model's generated ids (no prompt); [0] comes from prefill
    draft_text: str = ""
    target_text: str = ""
    timings_ms: dict[str, float] = field(default_factory=dict)  # optional per-stage timings

    @property
    def key(self) -> str:
        return f"{self.clip_id}/q{self.question_index}"


def _check(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise PairFormatError(f"{where}: {msg}")


def validate_pairs(pairs: Sequence[RecordedPair], vocab_size: int, source: str = "pairs") -> None:
    """Raise PairFormatError naming the first bad record: empty sequences, ids outside
    [0, vocab_size), duplicated (clip, question) keys."""
    _check(len(pairs) > 0, source, "no pairs")
    seen: dict[str, int] = {}
    for i, p in enumerate(pairs):
        where = f"{source}, record {i} (clip {p.clip_id!r}, question {p.question_index})"
        for name in ("draft_ids", "target_ids"):
            ids = getattr(p, name)
            _check(len(ids) > 0, where, f"{name} is empty")
            bad = [t for t in ids if not 0 <= t < vocab_size]
            _check(not bad, where, f"{name} has ids outside the vocabulary [0, {vocab_size}): {bad[:5]}")
        _check(p.key not in seen, where, f"duplicates record {seen.get(p.key)} (same clip and question)")
        seen[p.key] = i


# --- the seed study's JSON -------------------------------------------------------------

_SEED_FIELDS = ("sample_idx", "question_idx", "sample_id", "query", "egpt_tokens", "vl_tokens")


def load_seed_json(path: str | Path, vocab_size: int = LLAMA_VOCAB_SIZE) -> list[RecordedPair]:
    """Pairs from the seed pipeline's JSON (e.g. ../shared/data/dsec_1q/pairs_dev.json)."""
    path = resolve(path)
    if not path.exists():
        raise FileNotFoundError(f"recorded pairs not found: {path}")
    doc = json.loads(path.read_text())
    _check(isinstance(doc, dict) and isinstance(doc.get("results"), list), str(path),
           "expected a JSON object with a 'results' list (the seed study's format)")
    pairs = []
    for i, r in enumerate(doc["results"]):
        missing = [f for f in _SEED_FIELDS if f not in r]
        _check(not missing, f"{path}, record {i} (sample_id {r.get('sample_id')!r})",
               f"missing fields {missing}")
        pairs.append(RecordedPair(
            clip_id=str(r["sample_id"]), clip_index=int(r["sample_idx"]),
            question_index=int(r["question_idx"]), question=str(r["query"]),
            draft_ids=tuple(int(t) for t in r["egpt_tokens"]),
            target_ids=tuple(int(t) for t in r["vl_tokens"]),
            draft_text=str(r.get("egpt_text", "")), target_text=str(r.get("vl_text", "")),
        ))
    validate_pairs(pairs, vocab_size, str(path))
    return pairs


# --- the suite's Parquet ---------------------------------------------------------------

_PARQUET_FIELDS = ("clip_id", "clip_index", "question_index", "question", "draft_ids",
                   "target_ids", "draft_text", "target_text")
_TIMING_PREFIX, _TIMING_SUFFIX = "timing_", "_ms"
_VOCAB_KEY = b"helpers.vocab_size"  # Parquet schema metadata: the vocabulary the ids belong to


def save_parquet(pairs: Sequence[RecordedPair], path: str | Path, vocab_size: int) -> Path:
    """Write pairs (validated first) as the suite's Parquet table."""
    import pandas as pd

    validate_pairs(pairs, vocab_size, "pairs to save")
    stages = sorted({k for p in pairs for k in p.timings_ms})
    rows = []
    for p in pairs:
        row = {f: getattr(p, f) for f in _PARQUET_FIELDS}
        row["draft_ids"], row["target_ids"] = list(p.draft_ids), list(p.target_ids)
        for s in stages:
            row[f"{_TIMING_PREFIX}{s}{_TIMING_SUFFIX}"] = p.timings_ms.get(s, np.nan)
        rows.append(row)
    path = resolve(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows)
    df.attrs = {}
    df.to_parquet(path, index=False)
    # the vocabulary size travels with the table so a reader can validate ids without guessing
    import pyarrow.parquet as pq
    table = pq.read_table(path)
    meta = dict(table.schema.metadata or {})
    meta[_VOCAB_KEY] = str(vocab_size).encode()
    pq.write_table(table.replace_schema_metadata(meta), path)
    return path


def load_parquet(path: str | Path, vocab_size: int | None = None) -> list[RecordedPair]:
    """Pairs from the suite's Parquet table; vocab_size defaults to the one stored with it."""
    import pyarrow.parquet as pq

    path = resolve(path)
    if not path.exists():
        raise FileNotFoundError(f"recorded pairs not found: {path}")
    table = pq.read_table(path)
    missing = [f for f in _PARQUET_FIELDS if f not in table.column_names]
    _check(not missing, str(path), f"missing columns {missing}")
    stored = (table.schema.metadata or {}).get(_VOCAB_KEY)
    if vocab_size is None:
        _check(stored is not None, str(path), "no vocab_size given and none stored in the file")
        vocab_size = int(stored)
    timing_cols = [c for c in table.column_names
                   if c.startswith(_TIMING_PREFIX) and c.endswith(_TIMING_SUFFIX)]
    cols = table.to_pydict()
    pairs = []
    for i in range(table.num_rows):
        where = f"{path}, record {i}"
        for f in _PARQUET_FIELDS:
            _check(cols[f][i] is not None, where, f"field {f!r} is null")
        timings = {c[len(_TIMING_PREFIX):-len(_TIMING_SUFFIX)]: float(cols[c][i])
                   for c in timing_cols if cols[c][i] is not None and not np.isnan(cols[c][i])}
        pairs.append(RecordedPair(
            clip_id=str(cols["clip_id"][i]), clip_index=int(cols["clip_index"][i]),
            question_index=int(cols["question_index"][i]), question=str(cols["question"][i]),
            draft_ids=tuple(int(t) for t in cols["draft_ids"][i]),
            target_ids=tuple(int(t) for t in cols["target_ids"][i]),
            draft_text=str(cols["draft_text"][i]), target_text=str(cols["target_text"][i]),
            timings_ms=timings,
        ))
    validate_pairs(pairs, vocab_size, str(path))
    return pairs


def stored_vocab_size(path: str | Path) -> int | None:
    """The vocabulary size stored with a suite Parquet file (None for other formats)."""
    path = resolve(path)
    if path.suffix.lower() not in (".parquet", ".pq"):
        return None
    import pyarrow.parquet as pq
    v = (pq.read_schema(path).metadata or {}).get(_VOCAB_KEY)
    return int(v) if v else None


def load_pairs(path: str | Path, vocab_size: int | None = None) -> list[RecordedPair]:
    """Either format, chosen by extension (.json = seed study, .parquet = suite)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        return load_seed_json(path, vocab_size or LLAMA_VOCAB_SIZE)
    if suffix in (".parquet", ".pq"):
        return load_parquet(path, vocab_size)
    raise PairFormatError(f"{path}: unknown recorded-pair format {suffix!r} (use .json or .parquet)")


# --- splits ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Split:
    train: list[RecordedPair]
    val: list[RecordedPair]
    test: list[RecordedPair]

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def split_by_clip(pairs: Sequence[RecordedPair], train_fraction: float, val_fraction: float,
                  max_train_pairs: int | None = None, test: Sequence[RecordedPair] | None = None) -> Split:
    """Deterministic split by clip order: the first clips train, the next validate, the last
    test. A clip's questions never straddle parts. Test = whatever remains, so it is touched
    only by the final evaluation. `max_train_pairs` keeps the first N training pairs (to
    reproduce small-data runs) without moving the other boundaries.

    `test`: a held-out set kept elsewhere (a locked test file). Then `pairs` give training and
    validation alone, in the ratio train_fraction : val_fraction, and no clip may be in both."""
    if not (0 < train_fraction < 1 and 0 < val_fraction < 1 and train_fraction + val_fraction <= 1):
        raise ValueError(f"need 0 < train_fraction, val_fraction and their sum <= 1; got "
                         f"{train_fraction}, {val_fraction}")
    if test is None and train_fraction + val_fraction >= 1:
        raise ValueError(f"train_fraction + val_fraction must leave clips for the test part; got "
                         f"{train_fraction} + {val_fraction}")
    clips = sorted({p.clip_index for p in pairs})
    if test is None:
        n_train, n_val = int(round(train_fraction * len(clips))), int(round(val_fraction * len(clips)))
    else:
        n_train = int(round(train_fraction / (train_fraction + val_fraction) * len(clips)))
        n_val = len(clips) - n_train
        shared = sorted({p.clip_id for p in pairs} & {p.clip_id for p in test})
        if shared:
            raise ValueError(f"{len(shared)} clip(s) are both in the held-out test pairs and in the pairs to "
                             f"train on, e.g. {shared[:3]}: a test set must be disjoint from training")
    if n_train == 0 or n_val == 0 or (test is None and n_train + n_val >= len(clips)):
        raise ValueError(f"{len(clips)} clips are too few for fractions {train_fraction}/{val_fraction}")
    part = {c: (0 if i < n_train else 1 if i < n_train + n_val else 2) for i, c in enumerate(clips)}
    ordered = sorted(pairs, key=lambda p: (p.clip_index, p.question_index))
    buckets: list[list[RecordedPair]] = [[], [], []]
    for p in ordered:
        buckets[part[p.clip_index]].append(p)
    train = buckets[0][:max_train_pairs] if max_train_pairs else buckets[0]
    if test is not None:
        buckets[2] = sorted(test, key=lambda p: (p.clip_index, p.question_index))
    return Split(train=train, val=buckets[1], test=buckets[2])
