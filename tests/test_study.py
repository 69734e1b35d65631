"""The study's data hand-off, alignment analysis and findings: on hand-made inputs."""

import numpy as np
import pytest

from helpers.study import alignment
from helpers.study import findings
from helpers.study import metrics
from helpers.suite import paths
from helpers.study import data as study
from helpers.study.drafters.base import DrafterEval
from helpers.study.pairs import PairFormatError, RecordedPair, save_parquet

from conftest import DEV_PAIRS, require_shared


def pairs_(n_clips: int, q: int = 2) -> list[RecordedPair]:
    return [RecordedPair(f"clip{c}", c, k, f"q{k}", (5, 6, 7), (8, 9, 10, 11)) for c in range(n_clips) for k in range(q)]


def fake_eval(name: str, correct: list[list[bool]], gamma: int = 3) -> DrafterEval:
    c = [np.array(x, dtype=bool) for x in correct]
    sd = metrics.summarize_sd([metrics.simulate_sd(x, gamma) for x in c])
    return DrafterEval(name, metrics.rate([(int(x.sum()), len(x)) for x in c]), float("nan"), sd, c,
                       [np.zeros(len(x), dtype=int) for x in c])


def test_run_prefix_resolves_inside_the_run_folder(tmp_path):
    assert paths.resolve_in_run("run:03_inference/pairs.parquet", tmp_path) == tmp_path / "03_inference" / "pairs.parquet"
    assert paths.resolve_in_run("params", tmp_path) == paths.REPO_ROOT / "params"


def test_study_data_round_trip_and_split_is_shared(tmp_path):
    src = save_parquet(pairs_(10), tmp_path / "in.parquet", vocab_size=12)
    run = tmp_path / "run"
    pairs, vocab = study.read_recorded(str(src), str(run))
    assert vocab == 12 and len(pairs) == 20
    split = study.make_split(pairs, 0.6, 0.2)
    study.write_study_data(str(run), pairs, split, vocab)
    paths.write_results(run, "10_data", {"vocab_size": vocab, "tokenizer_path": "tok", "source": str(src)})
    back = study.load_study_data(str(run))
    assert back.split == split and back.vocab_size == 12
    keys = [set(p.key for p in getattr(back.split, part)) for part in ("train", "val", "test")]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    assert {p.clip_index for p in back.split.test} == {8, 9}  # test = the last clips in clip order


def test_read_recorded_errors(tmp_path):
    with pytest.raises(paths.MissingStageOutput, match="--only 03_inference"):
        study.read_recorded("run:03_inference/pairs.parquet", str(tmp_path), preset="smoke")
    with pytest.raises(FileNotFoundError, match="pairs_path"):
        study.read_recorded(str(tmp_path / "absent.parquet"), str(tmp_path))
    src = save_parquet(pairs_(3), tmp_path / "in.parquet", vocab_size=12)
    with pytest.raises(PairFormatError, match="outside"):
        study.read_recorded(str(src), str(tmp_path), vocab_size=10)  # id 11 is not below 10
    with pytest.raises(ValueError, match="max_pairs"):
        study.read_recorded(str(src), str(tmp_path), max_pairs=-1)
    assert len(study.read_recorded(str(src), str(tmp_path), max_pairs=4)[0]) == 4


def test_missing_data_stage_names_the_command(tmp_path):
    with pytest.raises(paths.MissingStageOutput, match="--only 10_data"):
        study.load_study_data(str(tmp_path), "smoke")


def test_dev_pairs_load_through_the_study(tmp_path):
    require_shared(DEV_PAIRS)
    pairs, vocab = study.read_recorded(str(DEV_PAIRS), str(tmp_path))
    assert vocab == 32000 and len(pairs) == 800
    assert pairs == sorted(pairs, key=lambda p: (p.clip_index, p.question_index))


def test_paired_bootstrap_identical_is_zero_and_sign_follows_better():
    pairs = pairs_(6, 1)
    a = fake_eval("a", [[True, True, False]] * 6)
    b = fake_eval("b", [[False, False, False]] * 6)
    same = alignment.paired_bootstrap(a, a, pairs, 3, n_boot=50)
    assert same["mat_diff"] == same["mat_diff_lo"] == same["mat_diff_hi"] == 0
    diff = alignment.paired_bootstrap(a, b, pairs, 3, n_boot=50)
    assert diff["token_match_diff"] == pytest.approx(2 / 3) and diff["mat_diff_lo"] > 0
    assert diff["n_clips"] == 6


def test_pick_examples_and_gamma_sweep():
    e = fake_eval("x", [[False, True, True], [True, True, True], [True, False, True]])
    assert alignment.pick_examples(e, pairs_(3, 1)) == {"best": 1, "median": 2, "worst": 0}
    sweep = alignment.gamma_sweep({"x": e}, [1, 3])
    assert sweep.loc[1, "x"] == pytest.approx(metrics.summarize_sd([metrics.simulate_sd(c, 1) for c in e.correct]).mat)


class ToyTok:
    def decode(self, ids):
        return "".join(f"<{i}>" for i in ids)


def test_token_table_and_first_divergences():
    p = RecordedPair("c", 0, 0, "q", (1, 2, 3), (7, 8, 9, 10))
    e = fake_eval("x", [[True, False, True]])
    e.top1[0] = np.array([8, 4, 10])
    t = alignment.token_table(p, e.top1[0], ToyTok(), n=10, drafter_label="D")
    assert list(t["Target"]) == ["<8>", "<9>", "<10>"] and list(t["Match"]) == ["✓", "✗", "✓"]
    d = alignment.first_divergences(e, [p], ToyTok())
    assert d.to_dict("records") == [{"drafted": "<4>", "target": "<9>", "count": 1, "share": 1.0}]


def align_results(mat_lo: float, mat_hi: float, seed_mat: float = 1.2, prior_mat: float = 2.0) -> dict:
    row = lambda tm, mat: {"token_match": tm, "top5": 0.5, "mat": mat, "tau": mat - 1, "n_test_pairs": 160,
                           "mat_iid": 1.5, "best_gamma": 5, "mat_by_gamma": {"1": 1.4, "5": mat}}
    return {"gamma": 5, "best_drafter": "target_prior_ngram", "n_test_pairs": 160,
            "seed_token_adapter": row(0.27, seed_mat), "target_prior_ngram": row(0.6, prior_mat),
            "comparisons": {"cross_modal - target_prior_ngram": {
                "token_match_diff": 0.0, "token_match_diff_lo": -0.01, "token_match_diff_hi": 0.01,
                "mat_diff": (mat_lo + mat_hi) / 2, "mat_diff_lo": mat_lo, "mat_diff_hi": mat_hi, "n_clips": 40}}}


def test_findings_wording_follows_the_numbers():
    data = {"split": {"train": 200}}
    no_gain = findings.draft_content(align_results(-0.1, 0.1))
    gain = findings.draft_content(align_results(0.05, 0.3))
    loss = findings.draft_content(align_results(-0.3, -0.05))
    assert "No detectable gain" in no_gain.text and "helps" in gain.text and "hurts" in loss.text
    seed = findings.seed_adapter(align_results(0, 0), data)
    assert "26.7%" in seed.text and "within 3 points" in seed.text and "below the content-free" in seed.text
    assert findings.seed_adapter(align_results(0, 0, seed_mat=3.0), data).recommendation == ""
    sp = findings.speed(align_results(0, 0), cost_ratio_c=0.05)
    assert "(MAT - 1) / gamma = 0.200" in sp.text and "1.60x" in sp.text  # 2.0 / (5 * 0.05 + 1)
    assert "no gain" in findings.speed(align_results(0, 0), cost_ratio_c=1.0).text
    md = findings.to_markdown(findings.findings(data, {"drafters": {}}, align_results(-0.1, 0.1), 0.05))
    assert md.count("**") == 2 * 4 and "*Recommendation:*" in md


def test_training_finding_flags_drafters_still_improving():
    train = {"drafters": {"a": {"best_epoch": 12, "epochs_run": 12, "stop_reason": "all 12 epochs run"},
                          "b": {"best_epoch": 3, "epochs_run": 13, "stop_reason": "no validation improvement for 10 epochs"}}}
    f = findings.training(train)
    assert "`a`" in f.text and "`b`" not in f.text
    assert findings.training({"drafters": {"b": train["drafters"]["b"]}}) is None
