"""The study's data hand-off, alignment analysis and findings: on hand-made inputs."""

import numpy as np
import pytest

from helpers.study import alignment
from helpers.study import findings
from helpers.study import metrics
from helpers.suite import paths
from helpers.study import data as study
from helpers.study import literature
from helpers.study.drafters.base import FULL, DrafterEval
from helpers.study.pairs import PairFormatError, RecordedPair, save_parquet

from conftest import DEV_PAIRS, require_shared


def pairs_(n_clips: int, q: int = 2) -> list[RecordedPair]:
    return [RecordedPair(f"clip{c}", c, k, f"q{k}", (5, 6, 7), (8, 9, 10, 11)) for c in range(n_clips) for k in range(q)]


def fake_eval(name: str, correct: list[list[bool]], gamma: int = 3) -> DrafterEval:
    c = [np.array(x, dtype=bool) for x in correct]
    traces = [metrics.simulate_sd(x, gamma) for x in c]
    return DrafterEval(name, FULL, metrics.rate([(int(x.sum()), len(x)) for x in c]), float("nan"),
                       metrics.summarize_sd(traces), c, [np.zeros(len(x), dtype=int) for x in c], traces)


def test_run_prefix_resolves_inside_the_run_folder(tmp_path):
    assert paths.resolve_in_run("run:03_inference/pairs.parquet", tmp_path) == tmp_path / "03_inference" / "pairs.parquet"
    assert paths.resolve_in_run("params", tmp_path) == paths.REPO_ROOT / "params"


def test_study_data_round_trip_and_split_is_shared(tmp_path):
    src = save_parquet(pairs_(10), tmp_path / "in.parquet", vocab_size=12)
    run = tmp_path / "run"
    pairs, vocab = study.read_recorded(str(src), str(run))
    assert vocab == 12 and len(pairs) == 20
    split = study.make_split(pairs, 0.6, 0.2)
    files = study.write_study_data(str(run), split, vocab)
    paths.write_results(run, "10_data", {"vocab_size": vocab, "tokenizer_path": "tok", "source": str(src)})
    back = study.load_study_data(str(run))
    assert back.split == split and back.vocab_size == 12
    keys = [set(p.key for p in getattr(back.split, part)) for part in ("train", "val", "test")]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    assert {p.clip_index for p in back.split.test} == {8, 9}  # test = the last clips in clip order
    # training reads only the train/validation file: it works with the test file gone
    files["test"].unlink()
    trainval = study.load_study_data(str(run), parts=study.TRAIN_VAL)
    assert trainval.split.train == split.train and trainval.split.val == split.val and trainval.split.test == []
    with pytest.raises(paths.MissingStageOutput):
        study.load_study_data(str(run))


def test_a_locked_test_file_replaces_the_test_part():
    pairs, locked = pairs_(20), [RecordedPair(f"held{c}", 100 + c, 0, "q0", (5,), (8, 9)) for c in range(3)]
    split = study.make_split(pairs, 0.6, 0.2, test_pairs=locked)
    assert split.test == locked
    assert len({p.clip_index for p in split.train}) == 15 and len({p.clip_index for p in split.val}) == 5  # 3 : 1
    with pytest.raises(ValueError, match="disjoint"):
        study.make_split(pairs, 0.6, 0.2, test_pairs=pairs_(2))


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


def test_mat_ratio_bootstrap_by_clip():
    clips = [0, 0, 1, 1, 2, 2, 3, 3]
    two = metrics.simulate_sd([True, False] * 4, 3)        # 8 tokens to produce: 4 steps of 2 -> MAT 2
    one = metrics.simulate_sd([False] * 8, 3)               # plain decoding -> MAT 1
    same = alignment.mat_ratio_bootstrap([two] * 8, [two] * 8, clips, n_boot=200)
    assert same["ratio"] == same["lo"] == same["hi"] == pytest.approx(1.0)
    r = alignment.mat_ratio_bootstrap([two] * 8, [one] * 8, clips, n_boot=200)
    assert r["ratio"] == pytest.approx(2.0) and r["lo"] == pytest.approx(2.0) and r["n_clips"] == 4
    # a gain only on clip 0: the interval must straddle the clips that gain and those that do not
    mixed = [two, two] + [one] * 6
    m = alignment.mat_ratio_bootstrap(mixed, [one] * 8, clips, n_boot=400, seed=1)
    tokens, steps = 2 * 8 + 6 * 8, 2 * 4 + 6 * 8
    assert m["ratio"] == pytest.approx((tokens / steps) / 1.0)
    assert m["lo"] == pytest.approx(1.0) and m["hi"] > m["ratio"]      # some resamples draw clip 0 never
    assert m["mat_a"] == pytest.approx(tokens / steps) and m["mat_b"] == 1.0
    with pytest.raises(ValueError, match="same"):
        alignment.mat_ratio_bootstrap([two], [two, two], [0, 1])
    rows = alignment.tokens_and_steps(mixed)                              # the stored form gives the same interval
    assert rows.tolist()[0] == [8, 4] and alignment.mat_ratio_bootstrap(rows, [one] * 8, clips, n_boot=400, seed=1) == m


def test_pick_examples_and_gamma_sweep():
    e = fake_eval("x", [[False, True, True], [True, True, True], [True, False, True]])
    assert alignment.pick_examples(e, pairs_(3, 1)) == {"best": 1, "median": 2, "worst": 0}
    sweep = alignment.gamma_sweep({"x": e}, [1, 3])
    # gamma 1: pair 0 takes 2 steps (miss, then 2 tokens), pair 1: 2 steps, pair 2: 2 steps -> 9 tokens / 6 steps
    # gamma 3: pair 0: 2 steps, pair 1: 1 step, pair 2: 2 steps (2 tokens, then 1) -> 9 tokens / 5 steps
    assert sweep.loc[1, "x"] == pytest.approx(9 / 6) and sweep.loc[3, "x"] == pytest.approx(9 / 5)


def test_choices_are_made_on_validation():
    good, poor = fake_eval("good", [[True, True, True, True]] * 2), fake_eval("poor", [[False] * 4] * 2)
    assert alignment.headline({"poor": poor, "good": good, "draft_direct": good}) == "good"
    # every draft right: MAT = gamma + 1 as long as tokens remain; with c = 0.2 drafting 4 costs 1.8 target steps
    gamma, table = alignment.choose_gamma(good, [1, 2, 4], cost_ratio_c=0.2)
    assert table.loc[4, "MAT (validation)"] == pytest.approx(4.0)                     # 4 tokens in one step
    assert table.loc[2, "speedup"] == pytest.approx((4 / 2) / 1.4) and gamma == 4       # 2.22x at gamma 4
    assert alignment.choose_gamma(poor, [1, 2, 4], 0.2)[0] == 1                      # drafts that miss: draft least


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


def align_results(mat_lo: float, mat_hi: float, seed_mat: float = 1.2, prior_mat: float = 2.0,
                  streamed: float | None = None, cost_ratio_c: float = 0.05) -> dict:
    row = lambda tm, mat: {"token_match": tm, "top5": 0.5, "mat": mat, "tau": mat - 1, "n_pairs": 160,
                           "mat_iid": 1.5, "mat_streamed": mat if streamed is None else streamed, "val_mat": mat,
                           "mat_by_gamma": {"1": 1.4, "3": 1.8, "5": mat}}
    diff = lambda lo, hi: {"token_match_diff": 0.0, "token_match_diff_lo": -0.01, "token_match_diff_hi": 0.01,
                           "mat_diff": (lo + hi) / 2, "mat_diff_lo": lo, "mat_diff_hi": hi, "n_clips": 40}
    return {"gamma": 5, "headline": "target_prior_ngram", "n_test_pairs": 160,
            "gamma_choice": {"gamma": 3, "cost_ratio_c": cost_ratio_c},
            "visibility": {"lead": 3.2, "rate": 1.1, "source": "somewhere"},
            "drafters": {"seed_token_adapter": row(0.27, seed_mat), "target_prior_ngram": row(0.6, prior_mat)},
            "comparisons": {"cross_modal - target_prior_ngram": diff(mat_lo, mat_hi),
                            "cross_modal - target_prior_ngram (streamed)": diff(-0.2, -0.1)}}


def test_findings_wording_follows_the_numbers():
    data = {"split": {"train": 200}}
    no_gain = findings.draft_content(align_results(-0.1, 0.1))
    gain = findings.draft_content(align_results(0.05, 0.3))
    loss = findings.draft_content(align_results(-0.3, -0.05))
    assert "No detectable gain" in no_gain.body and "helps" in gain.body and "hurts" in loss.body
    assert "With the draft still streaming in, it hurts" in gain.body            # the streamed interval lies below 0
    assert "+8.8%" in gain.headline and "`target_prior_ngram`" in gain.headline   # 0.175 / 2.0 of the prior's MAT
    seed = findings.seed_adapter(align_results(0, 0), data)
    assert f"{literature.STUDY_1Q_TOKEN_MATCH[200]:.1%}" in seed.body
    assert "within 3 points" in seed.body and "below the content-free" in seed.body
    assert findings.seed_adapter(align_results(0, 0, seed_mat=3.0), data).recommendation == ""
    sp = findings.speed(align_results(0, 0))
    assert "(MAT - 1) / gamma = 0.200" in sp.body                                  # (2.0 - 1) / 5
    assert "Draft 3 token(s)" in sp.recommendation and "1.57x" in sp.recommendation   # 1.8 / (3 * 0.05 + 1)
    assert "0.72x" in findings.speed(align_results(0, 0, cost_ratio_c=0.5)).recommendation  # 1.8 / 2.5
    vis = findings.visibility(align_results(0, 0, streamed=1.5))
    assert "1.50 instead of 2.00" in vis.body and "25.0% less" in vis.body and vis.recommendation
    assert findings.visibility(align_results(0, 0)).recommendation == ""          # nothing reads late tokens
    assert "accepts MAT 2.00 with the draft streaming as with it finished. No drafter" in findings.visibility(align_results(0, 0)).body
    assert "2.04 instead of 2.00 with the draft finished (2.0% more" in findings.visibility(align_results(0, 0, streamed=2.04)).body
    md = findings.to_markdown(findings.findings(data, {"drafters": {}}, align_results(-0.1, 0.1)))
    assert md.count("**") == 2 * 5 and "*Recommendation:*" in md
    assert len(findings.headlines(findings.findings(data, {"drafters": {}}, align_results(-0.1, 0.1)))) == 2


def test_training_finding_flags_drafters_still_improving():
    train = {"drafters": {"a": {"best_epoch": 12, "epochs_run": 12, "stop_reason": "all 12 epochs run"},
                          "b": {"best_epoch": 3, "epochs_run": 13, "stop_reason": "no validation improvement for 10 epochs"}}}
    f = findings.training(train)
    assert "`a`" in f.body and "`b`" not in f.body
    assert findings.training({"drafters": {"b": train["drafters"]["b"]}}) is None


def test_measured_speed_finding_reads_the_replay():
    summ = lambda sp, mat, **kw: {"speedup_ratio_of_means": sp, "decode_speedup_ratio_of_means": sp + 0.5, "mat": mat,  # noqa: E731
                                  "verify_step_ms": 4.5, "decode_step_ms": 4.2, "drafter_ms_per_step": 0.3,
                                  "prefill_ms": 60, **kw}
    spec = {"replay": {"device": "NVIDIA H200", "gamma": 5, "chosen": "b", "drafters": {
        "a|full": {"summary": summ(2.1, 3.1)},                       # faster on the test traces, but not chosen
        "b|full": {"summary": summ(1.2, 2.0)},
        "b|streamed": {"summary": summ(1.1, 2.0)},
        "b|full|tree10": {"summary": summ(1.3, 2.4, tree_nodes=10)},
        "b|full|tree20": {"summary": summ(1.4, 2.7, tree_nodes=20)}},
        "hf_generate": {"sd_vs_hf": 6.5, "greedy_vs_hf": 5.4},
        "batched": {"b|full|b1": {"summary": {"batch": 1, "throughput_ratio": 1.2}},
                    "b|full|b8": {"summary": {"batch": 8, "throughput_ratio": 1.03}},
                    "b|full|b32": {"summary": {"batch": 32, "throughput_ratio": 0.93}}}},
            "gpu_seconds": [{"GPU-seconds vs greedy": 1.58}],
            "end_to_end": {"where": "CPU", "exact_match": 1.0}}
    chose_b = {**align_results(0, 0), "headline": "b"}               # this run chose the replay's drafter
    f = findings.measured_speed(chose_b, spec)
    assert "`b`, the drafter chosen on validation, with the draft finished gives 1.20x" in f.body
    assert "token trees of 20 nodes, `b` reaches MAT 2.70 and 1.40x" in f.body and "100.0% of the speculative answers" in f.body
    assert "2.10x" not in f.body + f.headline                        # no argmax over test-set measurements
    assert "1.20x" in f.headline and "1.40x" not in f.headline       # nor between shapes: validation chose the chain
    assert f.recommendation.startswith("Serve `b` with chains of gamma 5 (chosen on validation)")   # the replay's gamma
    assert "pays here, not from batch 32 on" in f.recommendation
    assert "6.5x faster, 5.4x of it from the compiled loop" in f.body and "1.03x at batch 8" in f.body
    assert "1.58 times greedy's GPU-seconds" in f.body
    other = {**align_results(0, 0), "headline": "a"}                 # this run chose another drafter than the replay's
    assert "`b`, the drafter the replayed study run chose on validation (this run chose `a`), with" in \
        findings.measured_speed(other, spec).body
    no_choice = {"replay": {**spec["replay"], "chosen": None}}
    assert "`a`, the first drafter replayed" in findings.measured_speed(chose_b, no_choice).body  # first replayed
    titles = [x.title for x in findings.findings({"split": {}}, {"drafters": {}}, align_results(0, 0), spec)]
    assert "Measured speed" in titles and "What speculative decoding can gain" not in titles
    # the latest-answers prior replayed: reported always; served only where chapter 35's validation pairs prefer it
    online = {"replay": {**spec["replay"], "drafters": {**spec["replay"]["drafters"],
                                                        "target_prior_recent|full|online": {"summary": summ(1.9, 2.9)}}}}
    vm = lambda prior: {"recent": {"validation_mat": {"offline": 2.4, "prior": prior, "reader": prior, "store": 2.9}}}  # noqa: E731
    for event in (None, vm(2.8)):                                    # no chapter 35, or validation prefers the store
        f = findings.measured_speed(chose_b, online, event)
        assert "(`target_prior_recent`, its settings chosen on validation; " in f.body and "MAT 2.90 and 1.90x end" in f.body
        assert f.recommendation.startswith("Serve `b` with chains") and "1.90x" not in f.headline
    f = findings.measured_speed(chose_b, online, vm(3.4))
    assert f.recommendation.startswith("Serve `target_prior_recent` (the target's latest answers, recommended above "
                                       "on validation) with chains of gamma 5")
    assert "not from batch 32 on, where batched greedy's throughput is higher (measured with `b`)" in f.recommendation
    assert "`b` makes Video-LLaVA answer 1.20x faster with the same output (prefill included), drafting from the " \
           "target's latest answers 1.90x, against" in f.headline
    assert "SD's throughput over batched greedy is 1.20x at batch 1, 1.03x at batch 8, 0.93x at batch 32 " \
           "with `b`." in f.body
    # the latest answers measured batched too: their own batch figures decide where serving them stops paying
    both = {"replay": {**online["replay"], "batched": {**online["replay"]["batched"],
            "target_prior_recent|full|online|b1": {"summary": {"batch": 1, "throughput_ratio": 1.9}},
            "target_prior_recent|full|online|b8": {"summary": {"batch": 8, "throughput_ratio": 0.97}}}}}
    f = findings.measured_speed(chose_b, both, vm(3.4))
    assert ("0.93x at batch 32 with `b`; 1.90x at batch 1, 0.97x at batch 8 with `target_prior_recent` (its store "
            "taking in each batch's answers before the next batch).") in f.body
    assert "not from batch 8 on, where batched greedy's throughput is higher." in f.recommendation   # its own figures
    above = {"replay": {**both["replay"], "batched": {**both["replay"]["batched"],
             "target_prior_recent|full|online|b8": {"summary": {"batch": 8, "throughput_ratio": 1.09}}}}}
    assert findings.measured_speed(chose_b, above, vm(3.4)).recommendation.endswith(
        "speculative decoding pays here; batched, its gain fades to 1.09x at batch 8.")
    f = findings.measured_speed(chose_b, both, vm(2.8))                # serving b: b's figures, whatever the other's
    assert "not from batch 32 on, where batched greedy's throughput is higher." in f.recommendation
    slow = {"replay": {**online["replay"], "drafters": {**online["replay"]["drafters"],
                                                        "target_prior_recent|full|online": {"summary": summ(1.01, 2.9)}}}}
    assert "does not pay" in findings.measured_speed(chose_b, slow, vm(3.4)).recommendation  # its own speed decides
    r = {"ratio": 1.5, "lo": 1.4, "hi": 1.6, "mat_a": 3.0, "mat_b": 2.0}
    ev = {**event_results(0.99, 1.01), "recent": {**vm(3.4)["recent"], "offline_prior": "target_prior_kn",
                                                  "ratio_prior_vs_offline": r, "ratio_reader_vs_prior": r,
                                                  "similarity_corr": {"validation": 0.02}}}
    item = findings.findings({"split": {}}, {"drafters": {}}, align_results(0, 0), online, ev)
    assert any(x.title == "Measured speed" and "Serve `target_prior_recent`" in x.recommendation for x in item)


def event_results(lo, hi, ratio=None, s_lo=0.9, s_hi=1.1, slope=0.0, trees=True):
    r = lambda a, b, x=None: {"ratio": x if x is not None else (a + b) / 2, "lo": a, "hi": b,   # noqa: E731
                              "mat_a": 2.0 * (x if x is not None else (a + b) / 2), "mat_b": 2.0}
    out = {"gamma": 5, "best": {"prior": "target_prior_kn", "reader": "draft_copy"},
           "ratio_chain": {"full": r(lo, hi, ratio), "streamed": r(s_lo, s_hi)},
           "learning_curve": [{"train pairs": n, "drafter": d} for n in (100, 480) for d in ("draft_copy", "target_prior_kn")], "learning_curve_slope_per_doubling": slope,
           "cost_ms": {"draft_copy": {"chain (CPU)": 0.58}}, "target_step_ms": 5.8}
    if trees:
        out["tree"] = {"by_size": {"5": {"full": r(0.99, 1.01, 1.0)}, "40": {"full": {**r(0.98, 1.02, 1.0), "mat_a": 3.5, "mat_b": 3.5}}}}
    return out


def test_event_camera_finding_says_what_the_clips_own_draft_is_worth():
    r = lambda x, lo, hi, a, b: {"ratio": x, "lo": lo, "hi": hi, "mat_a": a, "mat_b": b}   # noqa: E731
    base = event_results(0.99, 1.01)
    assert "This clip's draft" not in findings.to_markdown([findings.event_camera(base)])
    none = findings.event_camera({**base, "content_control": {"draft_copy": r(1.003, 0.998, 1.009, 2.56, 2.55)}})
    md = findings.to_markdown([none])
    assert ("- *This clip's draft.* `draft_copy` reading each pair's own draft against the same drafter given the draft "
            "of a clip half the recording away: 1.003x (95% interval 0.998 to 1.009; MAT 2.56 vs 2.55); no difference "
            "this test split can detect, so it cannot credit the reader's gain or loss against the prior to what the draft "
            "says about the clip.") in md
    gain = findings.event_camera({**base, "content_control": {"draft_copy": r(1.05, 1.02, 1.08, 2.1, 2.0)}}).body
    assert "the clip's content adds that much through it." in gain
    other = findings.event_camera({**base, "content_control": {"cross_modal": r(1.05, 1.02, 1.08, 2.1, 2.0)}}).body
    assert "This clip" not in other and "half the recording away" not in other     # only the chosen reader's
    feat = {**base, "draft_features": {"ratio_vs_ablation": r(1.0, 0.96, 1.04, 2.0, 2.0), "prior": "target_prior_kn",
                                       "mat": {"draft_features": 2.0}, "prior_mat": 2.0, "max_minutes": 0,
                                       "chosen": "draft_feature_retrieval",
                                       "retrieval": {"ratio_vs_prior": r(1.03, 1.01, 1.05, 2.06, 2.0)},
                                       "content_control": {"draft_feature_retrieval": r(1.04, 1.01, 1.07, 2.08, 2.0),
                                                           "draft_features_mix": r(0.9, 0.8, 0.95, 1.8, 2.0)}}}
    body = findings.event_camera(feat).body
    assert ("`draft_feature_retrieval` (the hidden-state drafter validation prefers) with each pair's own hidden states "
            "against those of a clip half the recording away, asked the same question: 1.040x (95% interval 1.010 to "
            "1.070; MAT 2.08 vs 2.00); what the draft model saw in this clip adds that much, beyond the question its "
            "hidden states also encode.") in body
    assert "mislead" not in body                                          # only the chosen drafter's control


def test_event_camera_finding_follows_the_ratio_and_its_interval():
    bar = findings.event_camera(event_results(1.16, 1.3), bar=1.15)
    gain = findings.event_camera(event_results(1.02, 1.2), bar=1.15)
    none = findings.event_camera(event_results(0.99, 1.01, 1.0))
    feat = {**event_results(1.02, 1.2), "draft_features": {
        "ratio_vs_ablation": {"ratio": 1.0, "lo": 0.96, "hi": 1.04, "mat_a": 2.0, "mat_b": 2.0},
        "mat": {"draft_features": 2.0, "target_prior_neural_same_net": 2.0}, "prior": "target_prior_kn",
        "prior_mat": 2.5, "max_minutes": 0.5}}
    assert ("the features add nothing this test split can detect in this run (both networks train under a "
            "wall-clock budget: repeat it before relying on its sign). Against `target_prior_kn` it reaches 0.80x") \
        in findings.event_camera(feat, bar=1.15).body
    epochs = {**feat, "draft_features": {**feat["draft_features"], "max_minutes": 0}}   # trained for fixed epochs
    assert "in this run (one seed on few pairs: repeat it with other seeds before relying on its sign)." \
        in findings.event_camera(epochs, bar=1.15).body and "wall-clock" not in findings.event_camera(epochs).body
    retr = {**event_results(0.99, 1.01, 1.0), "draft_features": {**feat["draft_features"], "retrieval": {
        "ratio_vs_prior": {"ratio": 1.035, "lo": 1.009, "hi": 1.058, "mat_a": 3.88, "mat_b": 3.75}}}}
    r = findings.event_camera(retr, bar=1.15)
    assert ("(`draft_feature_retrieval`: they exist after its prefill, so a streaming draft costs it nothing) against "
            "`target_prior_kn`: 1.035x (95% interval 1.009 to 1.058; MAT 3.88 vs 3.75); the hidden states help where "
            "the words do not.") in r.body
    assert r.recommendation.startswith("Where the draft model runs next to the target, key the datastore by its "
                                       "hidden states (`draft_feature_retrieval`): 1.03x the MAT of `target_prior_kn`")
    # with the network mixed into the prior as well, validation chooses which one is recommended, never test
    mix = {"name": "draft_features_mix", "prior": "target_prior_question", "weight": 0.5,
           "ratio_vs_prior": {"ratio": 1.02, "lo": 1.004, "hi": 1.04, "mat_a": 3.83, "mat_b": 3.75},
           "ratio_vs_ablation": {"ratio": 1.027, "lo": 1.01, "hi": 1.05, "mat_a": 3.83, "mat_b": 3.73},
           "token_wins": [{"token": " car", "reader wins": 36, "prior wins": 6, "net": 30},   # a word's leading space
                          {"token": "and", "reader wins": 7, "prior wins": 9, "net": -2},
                          {"token": "bus", "reader wins": 21, "prior wins": 8, "net": 13}]}
    both = {**retr, "cost_ms": {**retr["cost_ms"], "draft_features_mix": {"chain (CPU)": 3.1, "chain (GPU)": 1.2}},
            "draft_features": {**retr["draft_features"], "mix": mix, "chosen": "draft_features_mix"}}
    m = findings.event_camera(both, bar=1.15)
    assert ("Mixed with `target_prior_question` (the network weighted 0.5, chosen on validation), the hidden-state "
            "network against `target_prior_kn`: 1.020x (95% interval 1.004 to 1.040; MAT 3.83 vs 3.75); the hidden "
            "states add to the prior. Against the same mixture with the features zeroed: 1.027x") in m.body
    assert "most often where the prior does not (teacher-forced, test pairs): 'car' (36 against 6), 'bus' (21 against 8)." \
        in m.body                                                        # a token the prior wins on net is left out
    assert m.recommendation.startswith("Where the draft model runs next to the target, mix a network that reads its "
                                       "hidden states with the prior (`draft_features_mix`, the network weighted 0.5): "
                                       "1.02x the MAT of `target_prior_kn`, interval 1.00 to 1.04, with no streaming "
                                       "penalty; it costs 3.10 ms per chain of 5 on the CPU (53% of a 5.8 ms compiled 7B "
                                       "target decode step), 1.20 ms on the GPU (21% of it).")
    assert "hidden states lift MAT 1.02x" in m.headline and "1.03x" not in m.headline   # the retrieval's better test figure is not picked
    chosen_retrieval = {**both, "draft_features": {**both["draft_features"], "chosen": "draft_feature_retrieval"}}
    assert "lift MAT 1.03x" in findings.event_camera(chosen_retrieval, bar=1.15).headline
    flat_mix = {**both, "draft_features": {**both["draft_features"], "mix": {
        **mix, "ratio_vs_prior": {"ratio": 1.0, "lo": 0.99, "hi": 1.01, "mat_a": 3.75, "mat_b": 3.75}}}}
    assert "content-free `target_prior_kn`" in findings.event_camera(flat_mix, bar=1.15).recommendation
    # at a 7B step the chain's measured cost decides: 3.83 * 5.8 / (5.8 + 1.2) = 3.17x against 3.75 * 5.8 / 5.9 = 3.69x
    costly = {**both, "cost_ms": {"draft_features_mix": {"runs": "network", "chain (CPU)": 3.1},
                                  "draft_features": {"runs": "network", "chain (CPU)": 2.0},
                                  "target_prior_kn": {"runs": "host CPU", "chain (CPU)": 0.1}},
              "gpu_cost_ms": {"draft_features_mix": {"runs": "network", "chain (CPU)": 9.0, "chain (GPU)": 1.2},
                              "draft_features": {"runs": "network", "chain (CPU)": 8.0, "chain (GPU)": 0.9},
                              "target_prior_kn": {"runs": "host CPU", "chain (CPU)": 0.1}},
              "gpu_cost_from": "measurements/h200/event_camera.json"}
    c = findings.event_camera(costly, bar=1.15)
    assert c.recommendation.startswith("Draft with `target_prior_kn` for now. The draft model's hidden states do carry "
                                       "what the target will say: `draft_features_mix` (the network that reads them, "
                                       "mixed with the prior) accepts 1.02x the tokens per verify step (interval 1.00 "
                                       "to 1.04), but it costs 1.20 ms per chain of 5 on the GPU (measured on the GPU "
                                       "machine: measurements/h200/event_camera.json) against 0.10 ms for "
                                       "`target_prior_kn`, which at a 5.8 ms 7B step (a verify step taken as long) "
                                       "implies 3.17x over greedy decoding against 3.69x.")
    # break-even: 3.83 / 3.75 * (5.8 + 0.1) - 5.8 = 0.23 ms; at these costs equal speedups where
    # 3.83 (t + 0.1) = 3.75 (t + 1.2): t = (3.75 * 1.2 - 3.83 * 0.1) / 0.08 = 51.5 ms, 8.9 times the 5.8 ms step
    assert c.recommendation.endswith("It pays once its chain of 5 costs under 0.23 ms (the network alone costs 0.90 ms "
                                     "there), or at today's costs for a target whose verify step takes over 51 ms (9 "
                                     "times this 7B step).") \
        and "do not yet pay at 7B" in c.headline
    # the mixture drafted from one pass per chain: recommended when, at the measured costs, its VALIDATION MAT
    # makes it faster than the prior; test: 3.81 * 5.8 / (5.8 + 0.15) = 3.71x against 3.69x
    heads = {"name": "draft_features_heads", "n_heads": 4, "val_mat": 3.80, "weights": [0.65, 0.5],
             "ratio_vs_prior": {"ratio": 1.016, "lo": 1.002, "hi": 1.03, "mat_a": 3.81, "mat_b": 3.75}}
    one_pass = {**costly, "val_mat": {"target_prior_kn": 3.70},
                "draft_features": {**costly["draft_features"], "heads": heads},
                "gpu_cost_ms": {**costly["gpu_cost_ms"], "draft_features_heads": {"runs": "network", "chain (GPU)": 0.15}}}
    o = findings.event_camera(one_pass, bar=1.15)
    assert ("The same mixture drafting its chain from one network pass (`draft_features_heads`: 4 heads for the tokens "
            "after the next on the frozen network, weights chosen on validation) against `target_prior_kn`: 1.016x") in o.body
    assert o.recommendation.startswith("Where the draft model runs next to the target, draft with `draft_features_heads`: "
                                       "one network pass per chain, 1.02x the MAT of `target_prior_kn` (interval 1.00 to "
                                       "1.03); it costs 0.15 ms per chain") and "implies 3.71x over greedy decoding against 3.69x" \
        in o.recommendation and "pay at 7B" in o.headline
    # on validation it would not pay (3.71 * 5.8 / 5.95 = 3.62x < 3.70 * 5.8 / 5.9 = 3.64x): not recommended, whatever test says
    v = findings.event_camera({**one_pass, "draft_features": {**one_pass["draft_features"], "heads": {**heads, "val_mat": 3.71}}})
    assert v.recommendation.startswith("Draft with `target_prior_kn` for now.")
    assert ("Drafted from one pass per chain (`draft_features_heads`), the mixture keeps 1.02x the prior's MAT, and it "
            "costs 0.15 ms per chain") in v.recommendation and "on the validation pairs, which decide, it is not faster" in v.recommendation
    # costlier: 3.81 / 3.75 * 5.9 - 5.8 = 0.194 ms is where it would pay
    dear = {**one_pass, "gpu_cost_ms": {**one_pass["gpu_cost_ms"], "draft_features_heads": {"runs": "network", "chain (GPU)": 0.5}}}
    assert "; it would pay under 0.19 ms per chain, or for a target step over " in findings.event_camera(dear).recommendation
    cheap = {**costly, "gpu_cost_ms": {**costly["gpu_cost_ms"], "draft_features_mix": {"runs": "network", "chain (GPU)": 0.1}}}
    ch = findings.event_camera(cheap, bar=1.15)
    assert "implies 3.77x over greedy decoding against 3.69x. With the draft's words alone" in ch.recommendation
    assert ch.recommendation.startswith("Where the draft model runs next to the target, mix a network")
    for no_gain in ({**mix, "weight": 0.0}, {**mix, "gain_on_validation": False}):   # weight 0, or a tie with it
        unused = {**both, "draft_features": {**both["draft_features"], "mix": no_gain}}
        u = findings.event_camera(unused, bar=1.15)
        assert "scores no higher on validation than the prior alone" in u.body and "mix a network" not in u.recommendation
    assert "hidden states lift MAT 1.03x" in r.headline and "its words (1.00x) do not" in r.headline
    flat = {**retr, "draft_features": {**retr["draft_features"], "retrieval": {
        "ratio_vs_prior": {"ratio": 1.0, "lo": 0.98, "hi": 1.02, "mat_a": 3.75, "mat_b": 3.75}}}}
    f = findings.event_camera(flat, bar=1.15)
    assert "no difference this test split can detect." in f.body and "content-free `target_prior_kn`" in f.recommendation
    words_help = findings.event_camera({**retr, "ratio_chain": event_results(1.02, 1.2)["ratio_chain"]}, bar=1.15)
    assert "; the hidden states help." in words_help.body and words_help.recommendation.startswith("Use `draft_copy`")
    loss = findings.event_camera(event_results(0.9, 0.97))
    assert "meets the bar of 1.15x" in bar.body and bar.recommendation.startswith("Use `draft_copy`")
    assert "below the bar" in gain.body and "below the 1.15x bar" in gain.headline
    assert "no difference" in none.body and "content-free `target_prior_kn`" in none.recommendation
    assert "1.000x (95% interval 0.990 to 1.010; MAT 2.00 vs 2.00)" in none.body
    assert "does worse" in loss.body and "only 0.94x" in loss.headline
    assert "no detectable difference" in none.body                      # streamed interval 0.9..1.1 contains 1
    assert "still ahead" in findings.event_camera(event_results(1.02, 1.2, s_lo=1.01, s_hi=1.05)).body
    assert "trees of 40 nodes" in none.body and "3.50" in none.body      # the largest tree reported
    assert "10% of a 5.8 ms" in none.body                                 # 0.58 / 5.8
    slow = {**event_results(0.99, 1.01), "cost_ms": {"draft_copy": {"chain (CPU)": 58.0, "chain (GPU)": 2.9}}}
    assert "10.0 times a 5.8 ms compiled 7B target decode step (2.90 ms on the GPU, 50% of it)" in findings.event_camera(slow).body
    assert "on the GPU" not in none.body
    assert "stays flat" in none.body and "extrapolation" in none.body
    assert "training pairs the ratio stays flat" in none.body                # its reader is on the curve
    net = {**event_results(0.99, 1.01), "best": {"prior": "target_prior_kn", "reader": "cross_modal"}}
    assert ("training pairs the ratio (among the drafters refitted per size, which `cross_modal` is not) stays flat"
            in findings.event_camera(net).body)                              # a network reader is not refitted per size
    assert "grows (+0.050 per doubling" in findings.event_camera(event_results(0.99, 1.01, slope=0.05)).body
    assert "shrinks" in findings.event_camera(event_results(0.99, 1.01, slope=-0.05)).body
    line = {**event_results(0.99, 1.01, slope=0.05), "learning_curve_line_at": {"5200": 1.04, "52000": 1.21, "9": float("nan")}}
    text = findings.event_camera(line).body
    assert "1.04 at 5,200 pairs (extrapolated to 11 times the largest size measured) and 1.21 at 52,000 pairs (extrapolated to 108 times" in text and " at 9 pairs" not in text
    inside = {**line, "learning_curve": [{"train pairs": 100}, {"train pairs": 5600}]}
    assert "1.04 at 5,200 pairs (inside the measured sizes)" in findings.event_camera(inside).body
    assert "trees" not in findings.event_camera(event_results(0.99, 1.01, trees=False)).body
    oracle = {**event_results(0.99, 1.01), "oracle": {"prior": "target_prior_kn", "mat": 2.0, "bag": 2.2, "remaining": 2.5}}
    assert "to 1.10x its validation MAT (1.25x when told" in findings.event_camera(oracle).body
    assert "Retrieval keyed" not in findings.event_camera(oracle).body
    oracle["oracle"]["retrieval"] = 2.02
    assert "perfectly, reaches 1.01x" in findings.event_camera(oracle).body
    assert "perceived every clip perfectly" not in findings.event_camera(oracle).body       # recorded pairs: no references
    oracle["oracle"]["perfect_draft"] = 2.06
    assert "would take `draft_retrieval` to 1.03x the prior's validation MAT" in findings.event_camera(oracle).body
    assert "oracle" not in none.body
    md = findings.to_markdown([none])               # the answer first, each piece of evidence a labelled bullet
    assert "**1. What the event camera adds over the best prior.** The best draft reader" in md
    assert "\n\n- *Token trees.* With token trees of 40 nodes" in md and "\n- *Cost.* `draft_copy` costs" in md
    assert "trees" not in md.split("\n")[0] and md.index("- *Cost.*") < md.index("*Recommendation:*")
    agree = {**event_results(0.99, 1.01), "fact_agreement": [
        {"facts": "objects", "named by the draft": 10, "agreement": 0.37, "chance": 0.365, "lift": 1.0137},
        {"facts": "scene", "named by the draft": 3, "agreement": 0.0, "chance": 0.0, "lift": float("nan")}]}
    t = findings.event_camera(agree).body
    assert "the target's answer names 37% of the objects (lift 1.01 over a draft of another clip) on the training" in t
    assert "scene-level" not in t and "Of the facts the draft names" not in none.body
    assert "the content is there" not in findings.event_camera(agree).recommendation      # lift 1.01: not there
    agree["fact_agreement"][0]["lift"] = 3.1
    assert "3.1 times as often as a draft of another clip's: the content is there" in findings.event_camera(agree).recommendation
    online = {**event_results(0.99, 1.01), "online": {
        "every": 8, "prior": "target_prior_suffix", "reader": "draft_retrieval",
        "offline_mat": {"target_prior_suffix": 2.0, "draft_retrieval": 2.0},
        "online_mat": {"target_prior_suffix": 2.5, "draft_retrieval": 2.4},
        "ratio": {"ratio": 0.96, "lo": 0.9, "hi": 1.02, "mat_a": 2.4, "mat_b": 2.5}}}
    assert ("taken in every 8 pairs, as a deployment answering clip after clip has them) lifts `target_prior_suffix` "
            "1.25x; with it the best reader `draft_retrieval` against that prior: 0.960x") in findings.event_camera(online).body
    assert "online datastore" not in none.body
    assert "keep the target's recent answers in its datastore: on these pairs that alone lifts MAT 1.25x" in \
        findings.event_camera(online).recommendation
    small = {**online, "online": {**online["online"], "online_mat": {"target_prior_suffix": 2.02, "draft_retrieval": 2.0}}}
    assert "recent answers" not in findings.event_camera(small).recommendation      # a 1% lift is not worth a line
    r = lambda x, lo, hi, a, b: {"ratio": x, "lo": lo, "hi": hi, "mat_a": a, "mat_b": b}   # noqa: E731
    recent = {**online, "recent": {
        "offline_prior": "target_prior_suffix", "ratio_prior_vs_offline": r(1.5, 1.4, 1.6, 3.0, 2.0),
        "ratio_reader_vs_prior": r(1.001, 0.997, 1.006, 3.003, 3.0),
        "validation_mat": {"offline": 2.4, "prior": 3.4, "reader": 3.4, "store": 2.9},
        "similarity_corr": {"validation": 0.023, "test": float("nan")}}}
    t = findings.event_camera(recent)
    assert ("latest answers to the same question (`target_prior_recent`, content-free): 1.50x `target_prior_suffix`'s "
            "test MAT without a store; weighing those answers by the draft's resemblance (`draft_recent`) against it: "
            "1.001x (95% interval 0.997 to 1.006") in t.body
    assert "consecutive clips: r = 0.02 on the validation pairs." in t.body and "nan" not in t.body
    assert ("draft from the target's latest answers to the same question, each taken into the store before the next "
            "clip (`target_prior_recent`): on these pairs that alone lifts MAT 1.50x (interval 1.40 to 1.60)") in t.recommendation
    assert "keep the target's recent answers" not in t.recommendation                # one store recommended, not two
    assert t.headline.endswith("Content-free, the target's own latest answers (each taken in before the next clip) lift "
                               "`target_prior_suffix`'s MAT 1.50x.")
    unsure = {**recent, "recent": {**recent["recent"], "ratio_prior_vs_offline": r(1.1, 0.98, 1.2, 2.2, 2.0)}}
    assert "latest answers" not in findings.event_camera(unsure).headline           # an interval that holds 1: no headline
    # validation decides: latest answers no better there than the every-8 store -> that store's line instead
    worse = {**recent, "recent": {**recent["recent"], "validation_mat": {"offline": 2.4, "prior": 2.8, "reader": 2.8,
                                                                         "store": 2.9}}}
    assert "target_prior_recent`): on these" not in findings.event_camera(worse).recommendation
    assert "keep the target's recent answers in its datastore" in findings.event_camera(worse).recommendation
    items = findings.findings({"split": {"train": 200}}, {"drafters": {}}, align_results(0.05, 0.3),
                              event=event_results(0.99, 1.01))
    assert items[0].title.startswith("What the event camera adds")        # the comparison with the best prior leads
    heads = findings.headlines(items)
    assert len(heads) == 2 and heads[0] == items[0].headline and not any("content adds" in h for h in heads)
    content = next(f for f in items if f.title == "What the event-camera draft adds")
    assert content.recommendation == "" and "the one the recommendation follows" in content.body   # one voice
