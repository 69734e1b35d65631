"""Recorded-pair loaders: both formats, validation errors that name the record, splits."""
import json

import pytest

from helpers.study.pairs import (PairFormatError, RecordedPair, load_pairs, load_parquet, load_seed_json,
                           save_parquet, split_by_clip)
from helpers.models.tokenizer import load_tokenizer, pieces
from conftest import DEV_PAIRS, LLAMA_TOKENIZER, require_shared


def _seed_doc(results):
    return {"questions": ["q?"], "results": results}


def _rec(i, egpt=(512, 278), vl=(450, 1820), sid=None):
    return {"sample_idx": i, "question_idx": 0, "sample_id": sid or f"clip{i}", "query": "q?",
            "egpt_tokens": list(egpt), "egpt_text": "e", "vl_tokens": list(vl), "vl_text": "v"}


def _write(tmp_path, doc):
    p = tmp_path / "pairs.json"
    p.write_text(json.dumps(doc))
    return p


def test_dev_pairs_load():
    pairs = load_seed_json(require_shared(DEV_PAIRS))
    assert len(pairs) == 800
    assert all(p.target_ids[0] == 450 for p in pairs)
    assert [p.clip_index for p in pairs] == list(range(800))


@pytest.mark.parametrize("bad, message", [
    (_rec(1, egpt=()), "draft_ids is empty"),
    (_rec(1, vl=(450, 32000)), "outside the vocabulary"),
    (_rec(1, vl=(450, -3)), "outside the vocabulary"),
    (_rec(0, sid="clip0"), "duplicates record 0"),
])
def test_seed_json_errors_name_the_record(tmp_path, bad, message):
    p = _write(tmp_path, _seed_doc([_rec(0), bad]))
    with pytest.raises(PairFormatError, match=message) as e:
        load_seed_json(p)
    assert "record 1" in str(e.value)


def test_seed_json_missing_field(tmp_path):
    r = _rec(3)
    del r["vl_tokens"]
    with pytest.raises(PairFormatError, match=r"record 0 \(sample_id 'clip3'\).*missing fields \['vl_tokens'\]"):
        load_seed_json(_write(tmp_path, _seed_doc([r])))


def test_wrong_top_level_and_extension(tmp_path):
    with pytest.raises(PairFormatError, match="'results' list"):
        load_seed_json(_write(tmp_path, [1, 2]))
    with pytest.raises(PairFormatError, match="unknown recorded-pair format"):
        load_pairs(tmp_path / "x.csv")


def _pair(i, q=0, draft=(1, 2, 3), target=(4, 5), timings=None):
    return RecordedPair(f"c{i}", i, q, "q?", tuple(draft), tuple(target), "d", "t", timings or {})


def test_parquet_round_trip_with_timings(tmp_path):
    pairs = [_pair(0, timings={"draft_prefill": 1.5, "target_prefill": 9.0}), _pair(1, target=(4, 5, 6))]
    path = save_parquet(pairs, tmp_path / "p.parquet", vocab_size=10)
    back = load_parquet(path)                      # vocab size stored with the table
    assert back[0] == pairs[0]
    assert back[1].target_ids == (4, 5, 6) and back[1].timings_ms == {}
    with pytest.raises(PairFormatError, match="outside the vocabulary"):
        load_parquet(path, vocab_size=5)


def test_parquet_refuses_to_save_bad_pairs(tmp_path):
    with pytest.raises(PairFormatError, match="record 1.*duplicates record 0"):
        save_parquet([_pair(0), _pair(0)], tmp_path / "p.parquet", vocab_size=10)


def test_split_by_clip_is_deterministic_and_never_straddles():
    pairs = [_pair(c, q) for c in range(10) for q in range(3)]
    s = split_by_clip(list(reversed(pairs)), 0.6, 0.2)
    assert s.sizes() == {"train": 18, "val": 6, "test": 6}
    clips = [{p.clip_index for p in part} for part in (s.train, s.val, s.test)]
    assert clips == [set(range(6)), {6, 7}, {8, 9}]
    assert split_by_clip(pairs, 0.6, 0.2) == s
    assert len(split_by_clip(pairs, 0.6, 0.2, max_train_pairs=4).train) == 4
    with pytest.raises(ValueError, match="too few"):
        split_by_clip(pairs[:6], 0.6, 0.2)


def test_a_locked_test_file_replaces_the_test_part():
    """A held-out test set kept in its own file: the pairs given then split into train and validation
    alone (in the ratio 0.6 : 0.2), the test part is the held-out pairs in clip order, and a clip in
    both is refused."""
    pairs = [_pair(c, q) for c in range(8) for q in range(2)]
    locked = [_pair(c, q) for c in (12, 10, 11) for q in range(2)]
    s = split_by_clip(pairs, 0.6, 0.2, test=locked)
    assert [{p.clip_index for p in part} for part in (s.train, s.val)] == [set(range(6)), {6, 7}]
    assert [p.clip_index for p in s.test] == [10, 10, 11, 11, 12, 12]
    assert len(split_by_clip(pairs, 0.6, 0.2, max_train_pairs=3, test=locked).train) == 3
    assert split_by_clip(pairs, 0.7, 0.3, test=locked).sizes()["test"] == 6       # no share left for a test part: fine
    with pytest.raises(ValueError, match="both in the held-out test pairs"):
        split_by_clip(pairs, 0.6, 0.2, test=locked + [_pair(3, 0)])


def test_llama_tokenizer_pieces_and_round_trip():
    tok = load_tokenizer(require_shared(LLAMA_TOKENIZER))
    pairs = load_seed_json(require_shared(DEV_PAIRS))
    assert pieces(tok, [450, 281, 4015, 6520]) == ["The", "w", "inding", "road"]
    for p in pairs[:50]:
        assert tok.decode(list(p.target_ids)) == p.target_text
