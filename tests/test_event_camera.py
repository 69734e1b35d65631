"""The event-camera study (helpers.study.event_camera) on toy pairs: roles, choices on validation,
tree SD of a drafter equal to its chain SD when the tree is a chain, where the gain sits, costs,
learning curves."""
import dataclasses

import numpy as np
import pandas as pd
import pytest

from helpers.study import event_camera as ec
from helpers.study import metrics
from helpers.study.data import make_split
from helpers.study.drafters import Visibility, evaluate, lookup
from helpers.study.drafters.base import DraftContext
from helpers.study.pairs import RecordedPair

from test_drafters import toy_pairs


def test_roles_and_best_of_each_role():
    assert not ec.reads_draft("target_prior_kn") and ec.reads_draft("draft_copy") and ec.reads_draft("cross_modal")
    val = {"target_prior_ngram": 2.3, "cross_modal": 2.4, "target_prior_kn": 2.5, "draft_copy": 2.4}
    assert ec.best_of(val, draft_readers=False) == "target_prior_kn"
    assert ec.best_of(val, draft_readers=True) == "cross_modal"        # a tie goes to the first in order
    assert ec.best_of({"target_prior_kn": 1.0}, draft_readers=True) is None


@pytest.mark.parametrize("vis", [Visibility(), Visibility("streamed", 1.0, 1.5)])
def test_tree_traces_of_a_one_branch_tree_equal_the_chain(vis):
    train, test = toy_pairs(40, 1), toy_pairs(8, 3)
    d = lookup.DraftCopy(boost=3.0, order=3).fit(train)
    d.tree_branch = 1                                        # one candidate per node: the greedy chain
    chain = evaluate(d, test, 4, visibility=vis)
    trees = ec.tree_traces(d, test, 4, vis)
    assert [(t.accepted, t.emitted) for t in trees] == [(t.accepted, t.emitted) for t in chain.traces]


def test_where_the_reader_gains_and_which_tokens():
    train, test = toy_pairs(60, 1), toy_pairs(20, 4)
    prior = lookup.KneserNeyPrior(order=3).fit(train)
    reader = lookup.DraftCopy(boost=3.0, order=3).fit(train)
    r, p = evaluate(reader, test, 3), evaluate(prior, test, 3)
    gain = ec.position_gain(r, p, 6)
    assert (gain.loc[[3, 4], "gain"] > 0).all()                  # the content words (target positions 3 and 4)
    assert (gain.drop(index=[3, 4])["gain"] == 0).all()          # the register: the prior knows it as well
    assert (gain["pairs"] == 20).all()
    wins = ec.token_wins(r, p, test, str)
    assert set(wins["token"]) <= {"7", "14", "15"}
    assert wins["reader wins"].sum() == sum(int((a & ~b).sum()) for a, b in zip(r.correct, p.correct)) > 0
    assert (wins["prior wins"] == 0).all()


def test_call_cost_is_measured_on_the_steps_sd_meets():
    train, test = toy_pairs(30, 1), toy_pairs(4, 2)
    d = lookup.KneserNeyPrior(order=3).fit(train)
    ev = evaluate(d, test, 3)
    seen = []
    ms = ec.call_cost_ms(lambda ctx: seen.append(len(ctx.target_prefix)), test, ev.traces, max_calls=1000)
    assert ms >= 0 and len(seen) == sum(t.steps for t in ev.traces) + 3          # every step once, plus 3 warm-ups
    starts = sorted({int(k) for t in ev.traces for k in np.cumsum([1] + t.emitted[:-1])})
    assert sorted(set(seen)) == starts
    # in SD's order: each answer's steps in sequence, the prefix growing within an answer
    keys = []
    ec.call_cost_ms(lambda ctx: keys.append((ctx.key, len(ctx.target_prefix))), test, ev.traces, max_calls=1000, warmup=0)
    runs = [k for i, (k, _) in enumerate(keys) if i == 0 or keys[i - 1][0] != k]
    assert len(runs) == len(test) and all(a[1] < b[1] for a, b in zip(keys, keys[1:]) if a[0] == b[0])
    few = []
    ec.call_cost_ms(lambda ctx: few.append(ctx.key), test, ev.traces, max_calls=5, warmup=0)
    assert len(few) == 5


def test_interleaved_costs_call_each_drafter_on_the_same_steps_in_a_rotating_order():
    train, test = toy_pairs(30, 1), toy_pairs(4, 2)
    ev = evaluate(lookup.KneserNeyPrior(order=3).fit(train), test, 3)
    log = []
    calls = {k: (lambda ctx, k=k: log.append((k, ctx.key, len(ctx.target_prefix)))) for k in "abc"}
    ms = ec.interleaved_cost_ms(calls, test, ev.traces, max_calls=7, warmup=0)
    assert set(ms) == set("abc") and all(v >= 0 for v in ms.values())
    assert len(log) == 21
    steps = [log[i:i + 3] for i in range(0, 21, 3)]
    assert [st[0][0] for st in steps] == list("abcabca")                  # who goes first rotates
    assert all(len({(key, n) for _, key, n in st}) == 1 for st in steps)   # one context per step, for all
    assert [st[0][1:] for st in steps] == [(c.key, len(c.target_prefix)) for c in ec.sd_contexts(test, ev.traces, max_calls=7)]


def test_cost_table_times_every_drafter_and_moves_networks_back():
    import torch
    from helpers.study.drafters.cross_modal import CrossModalConfig, CrossModalDrafter
    from helpers.training import TrainConfig
    train, test = toy_pairs(30, 1), toy_pairs(4, 2)
    kn = lookup.KneserNeyPrior(order=3).fit(train)
    net = CrossModalDrafter(CrossModalConfig(d_model=16, n_heads=2, enc_layers=1, dec_layers=1, d_ffn=32))
    net.fit(train, test, TrainConfig(epochs=1, batch_size=8, device="cpu", progress=False))
    ev = evaluate(kn, test, 3)
    # "cpu" stands in for a GPU here: the path that moves the network there and back runs all the same
    table = ec.cost_table({"target_prior_kn": kn, "cross_modal": net}, test, ev.traces, 3, tree_sizes=[4], calls=5,
                          gpu="cpu")
    assert table.loc["target_prior_kn", "runs"] == "host CPU" and table.loc["cross_modal", "runs"] == "network"
    assert table.loc["cross_modal", "chain (GPU)"] > 0 and pd.isna(table.loc["target_prior_kn", "chain (GPU)"])
    assert table.loc["cross_modal", "chain (GPU, eager)"] > 0 and net.cuda_graphs is True   # the setting is restored
    assert table.loc["target_prior_kn", "tree 4"] > 0 and pd.isna(table.loc["cross_modal", "tree 4"])
    assert (table["chain (CPU)"] > 0).all()
    assert net.device == torch.device("cpu") and next(net.model.parameters()).device.type == "cpu"
    assert list(ec.cost_table({"target_prior_kn": kn}, test, ev.traces, 3, calls=2).columns) == ["runs", "chain (CPU)"]
    old = ec.cost_frame({"a": {"tree 10 (CPU)": 2.0, "chain (CPU)": 1.0, "runs": "host CPU (Python)", "tree 5 (CPU)": 1.5}})
    assert list(old.columns) == ["runs", "chain (CPU)", "tree 5", "tree 10"] and old.loc["a", "runs"] == "host CPU"


def test_network_cost_text_follows_the_table():
    table = ec.cost_frame({"cross_modal": {"runs": "network", "chain (CPU)": 14.9, "chain (GPU)": 10.9},
                           "seed_token_adapter": {"runs": "network", "chain (CPU)": 11.7, "chain (GPU)": 1.8},
                           "draft_features": {"runs": "network", "chain (CPU)": 6.9, "chain (GPU)": 7.3},
                           "target_prior_kn": {"runs": "host CPU", "chain (CPU)": 0.06}})
    text = ec.network_cost_text(table, 5.8, "NVIDIA H200")
    assert text.startswith("On the NVIDIA H200 the networks cost 1.8 to 10.9 ms per chain (on that machine's CPU 6.9 "
                           "to 14.9 ms): `cross_modal`, `draft_features` cost at least a 5.8 ms target step.")
    assert "Run eagerly, `draft_features` is at most a fifth faster" in text and "`seed_token_adapter` is" not in text
    assert ec.network_cost_text(table.drop(columns="chain (GPU)"), 5.8, "x").startswith("No GPU measurement")
    graphed = ec.cost_frame({"cross_modal": {"runs": "network", "chain (CPU)": 14.9, "chain (GPU)": 1.2,
                                             "chain (GPU, eager)": 10.9},
                             "draft_features": {"runs": "network", "chain (CPU)": 6.9, "chain (GPU)": 0.9,
                                                "chain (GPU, eager)": 7.3}})
    assert list(graphed.columns) == ["runs", "chain (CPU)", "chain (GPU)", "chain (GPU, eager)"]
    text = ec.network_cost_text(graphed, 5.8, "NVIDIA H200")
    assert "all below a 5.8 ms target step" in text                      # judged by the graphed figures
    assert "run eagerly, the same chains cost 7.3 to 10.9 ms, 8.1 to 9.1 times as much" in text
    assert "Run eagerly, `draft_features` is at most a fifth faster" in text and "`cross_modal` is" not in text
    assert ec.cost_records(table)["target_prior_kn"] == {"runs": "host CPU", "chain (CPU)": 0.06}   # no empty cells


def test_online_store_takes_in_earlier_answers_only():
    from helpers.study.pairs import RecordedPair
    train = toy_pairs(30, 1)
    kn = lookup.SuffixPrior(order=3, max_ctx=8, weight=0.6).fit(train)
    # a recording whose target keeps saying one long sentence the training answers never contain
    new = [1, *range(500, 530), 2]
    pairs = [RecordedPair(f"r{i}", 100 + i, 0, "q?", [5, 6], new, "", "") for i in range(6)]
    off = evaluate(kn, pairs, 4).traces
    on = ec.online_traces(kn, train, pairs, 4, every=2)
    assert [t.emitted for t in on[:2]] == [t.emitted for t in off[:2]]      # the first block: nothing said yet
    assert all(sum(t.emitted) == sum(o.emitted) for t, o in zip(on, off))   # the same answers, fewer steps
    assert all(t.steps < o.steps for t, o in zip(on[2:], off[2:]))           # later blocks copy the earlier answers
    assert ec.refittable(kn) and not ec.refittable(object())
    assert len(kn.train_docs) == len(train)                                   # the drafter passed in is left as it was
    with pytest.raises(ValueError, match="every"):
        ec.online_traces(kn, train, pairs, 4, every=0)


def test_learning_curve_refits_at_each_size_and_reports_the_ratio():
    pairs = toy_pairs(60, 1)
    split = make_split(pairs, 0.6, 0.2)
    fitted = []

    def fit(name, train, val, done):
        fitted.append((name, len(train)))
        return (lookup.KneserNeyPrior(order=3) if name == "target_prior_kn" else lookup.DraftCopy(boost=3.0, order=3)).fit(train)

    curve = ec.learning_curve(["target_prior_kn", "draft_copy"], split, [6, 0], fit, 3)
    assert fitted == [("target_prior_kn", 6), ("draft_copy", 6), ("target_prior_kn", 36), ("draft_copy", 36)]
    ratio = curve[curve["drafter"] == "ratio best reader / best prior"]
    assert list(ratio["train pairs"]) == [6, 36] and (ratio["MAT test"] >= 1.0).all()
    both = curve[curve["drafter"] != "ratio best reader / best prior"]
    assert both["best prior"].sum() == 2 and both["best reader"].sum() == 2
    line = pd.DataFrame({"drafter": ["ratio best reader / best prior"] * 3, "train pairs": [100, 200, 400],
                         "MAT test": [1.0, 1.1, 1.2]})
    assert ec.slope_per_doubling(line) == pytest.approx(0.1)
    assert np.isnan(ec.slope_per_doubling(line.head(1)))
    assert ec.ratio_line_at(line, 800) == pytest.approx(1.3) and ec.ratio_line_at(line, 100) == pytest.approx(1.0)
    assert ec.ratio_line_at(line, 50) == pytest.approx(0.9) and np.isnan(ec.ratio_line_at(line.head(1), 800))


def test_ratio_uses_clips():
    test = toy_pairs(6, 2)
    t = [metrics.simulate_sd([True, False, True], 2) for _ in test]
    r = ec.ratio(t, t, test, n_boot=50)
    assert r["ratio"] == 1.0 and r["n_clips"] == 6


def test_refit_keeps_the_settings_and_uses_the_new_pairs():
    d = lookup.DraftRetrieval(neighbours=3, temperature=0.1, weight=0.6, order=3).fit(toy_pairs(40, 1))
    d.tree_branch = 2
    small = ec.refit(d, toy_pairs(5, 2))
    assert small.settings() == d.settings() and small.tree_branch == 2 and small.name == d.name
    assert len(small.train_docs) == 5 and len(d.train_docs) == 40


def test_oracle_content_bounds_what_the_bag_of_words_can_add():
    train, val = toy_pairs(60, 1), toy_pairs(30, 6)
    kn = lookup.KneserNeyPrior(order=3).fit(train)
    plain = evaluate(kn, val, 5).sd.mat
    bag = ec.oracle_content_mat(kn, val, 5)
    assert bag > plain                                                    # knowing the content word helps the prior
    assert ec.oracle_content_mat(kn, val, 5, boost=1.0) == pytest.approx(plain)   # no boost: the prior itself
    assert ec.oracle_content_mat(kn, val, 5, remaining=True) >= bag - 1e-12


def test_retrieval_oracle_is_keyed_by_the_target_answer():
    """With drafts that say nothing (all alike), draft-keyed retrieval cannot tell the clips apart;
    the same retrieval keyed by the target's own answer finds the clips that share its content word."""
    import dataclasses
    blank = lambda ps: [dataclasses.replace(p, draft_ids=(5, 2)) for p in ps]
    train, val = blank(toy_pairs(60, 1)), blank(toy_pairs(30, 6))
    d = lookup.DraftRetrieval(neighbours=3, temperature=0.05, weight=0.9, order=3).fit(train)
    blind = evaluate(d, val, 5).sd.mat
    oracle = ec.retrieval_oracle_mat(d, val, 5, weights=(0.9,))
    assert oracle > blind
    assert ec.retrieval_oracle_mat(d, val, 5, weights=(0.0,)) == pytest.approx(
        evaluate(lookup.KneserNeyPrior(order=3).fit(train), val, 5).sd.mat)        # weight 0: Kneser-Ney alone
    assert d.train_drafts[0] == (5, 2) and d.weight == 0.9                           # the drafter itself untouched
    keyed = d.keyed_by_targets()
    assert keyed.train_drafts == d.train_docs and keyed.settings() == d.settings()


def test_perfect_draft_oracle_reads_reference_captions_instead_of_the_draft():
    """A draft model that sees nothing (every draft alike) gives retrieval nothing to go on; the same
    reader refitted on reference drafts (the clip's own draft-register answer) finds the clips that
    share the content word, and the drafter it started from is left as it was."""
    import dataclasses
    train_true = toy_pairs(60, 1)
    val_true = [dataclasses.replace(p, clip_id=f"v{p.clip_id}") for p in toy_pairs(30, 6)]   # clips of their own
    refs = {(p.clip_id, 0): " ".join(map(str, p.draft_ids[:-1])) for p in train_true + val_true}
    blank = lambda ps: [dataclasses.replace(p, draft_ids=(5, 2)) for p in ps]
    train, val = blank(train_true), blank(val_true)
    encode = lambda text: [int(w) for w in text.split()] + [2]
    ref_train, ref_val = ec.reference_drafts(train, refs, encode), ec.reference_drafts(val, refs, encode)
    assert [p.draft_ids for p in ref_val] == [t.draft_ids for t in val_true]
    assert [p.target_ids for p in ref_val] == [p.target_ids for p in val] and ref_val[0].draft_text == refs[(val[0].clip_id, 0)]
    d = lookup.DraftRetrieval(neighbours=3, temperature=0.05, weight=0.3, order=3).fit(train)
    blind = evaluate(d, val, 5).sd.mat
    assert ec.perfect_draft_mat(d, ref_train, ref_val, 5) > blind
    assert ec.perfect_draft_mat(d, ref_train, ref_val, 5, weights=(0.0,)) == pytest.approx(
        evaluate(lookup.KneserNeyPrior(order=3).fit(train), val, 5).sd.mat)        # weight 0: Kneser-Ney alone
    assert d.train_drafts[0] == (5, 2) and d.weight == 0.3 and d.neighbours == 3     # the drafter itself untouched
    with pytest.raises(ValueError, match="no reference answer"):
        ec.reference_drafts(val, {k: v for k, v in refs.items() if k != (val[0].clip_id, 0)}, encode)


def test_learning_curve_plot_draws_the_line_to_the_study_sizes():
    import matplotlib
    matplotlib.use("Agg")
    from helpers.study import plots
    curve = pd.DataFrame({"drafter": ["a"] * 3 + ["ratio best reader / best prior"] * 3, "train pairs": [100, 200, 400] * 2,
                          "MAT test": [2.0, 2.1, 2.2, 1.0, 1.1, 1.2], "MAT validation": [2.0, 2.1, 2.2, 1.0, 1.1, 1.2]})
    at = {n: ec.ratio_line_at(curve, n) for n in (300, 3200)}
    right = plots.learning_curves(curve, at).axes[1]
    dashed = [ln for ln in right.get_lines() if ln.get_linestyle() == "--"]
    assert len(dashed) == 1 and dashed[0].get_xdata()[-1] == 3200 and dashed[0].get_ydata()[-1] == pytest.approx(1.5)
    (marks,) = [ln for ln in right.get_lines() if ln.get_marker() == "D"]
    assert list(marks.get_xdata()) == [300, 3200] and list(marks.get_ydata()) == pytest.approx([at[300], 1.5])
    plain = plots.learning_curves(curve).axes[1]
    assert len(plain.get_lines()) == 3                 # test, validation, the 1.0 line
    matplotlib.pyplot.close("all")


def test_mixture_weight_plot_rings_each_networks_chosen_weight():
    import matplotlib
    matplotlib.use("Agg")
    from helpers.study import plots
    scores = {"with": {0.0: 3.70, 0.5: 3.79, 1.0: 3.57}, "zeroed": {0.0: 3.70, 0.35: 3.77, 1.0: 3.43}}
    chosen = {"with": 0.5, "zeroed": 0.35}
    ax = plots.mixture_weights(scores, chosen, 3.70, "target_prior_question", "t").axes[0]
    rings = [(ln.get_xdata()[0], ln.get_ydata()[0]) for ln in ax.get_lines() if ln.get_markersize() == 12]
    assert rings == [(0.5, 3.79), (0.35, 3.77)]
    assert [ln.get_ydata()[0] for ln in ax.get_lines() if ln.get_linestyle() == ":"] == [3.70]   # the prior alone
    assert len(plots.mixture_weights(scores, chosen, float("nan"), "p", "t").axes[0].get_lines()) == 4   # no NaN line
    matplotlib.pyplot.close("all")


def _pair(i, clip, question, draft, target):
    return RecordedPair(clip, i, 0, question, (1,), (1, 2), draft_text=draft, target_text=target)


def test_fact_agreement_counts_shared_facts_against_another_clips_draft():
    """Four clips, one question: clips 0 and 1 hold a bus, 2 and 3 a tree. Each draft names its own
    clip's object, each target the same: agreement 1; the draft half the recording away (clip 0 <-> 2,
    1 <-> 3) names the other object: chance 0. The motion facts agree at chance by construction."""
    q = "What is in the scene?"
    pairs = [_pair(0, "a", q, "a bus parked", "a bus parked"), _pair(1, "b", q, "a bus parked", "a bus parked"),
             _pair(2, "c", q, "a tree, a car parked", "a tree, a car parked"),
             _pair(3, "d", q, "a tree, a car parked", "a tree, a car parked")]
    t = ec.fact_agreement(pairs).set_index("facts")
    assert list(t.index) == ["objects", "motion"]            # no scene-level fact named: left out
    assert t.loc["objects", "named by the draft"] == 6
    assert t.loc["objects", "agreement"] == 1.0
    # half-way partners: a<->c, b<->d; a bus draft against a (tree, car) target and back: no object shared
    assert t.loc["objects", "chance"] == 0.0 and np.isnan(t.loc["objects", "lift"])
    assert t.loc["motion", "agreement"] == 1.0 and t.loc["motion", "chance"] == 1.0 and t.loc["motion", "lift"] == 1.0


def test_fact_agreement_pairs_only_answers_to_the_same_question():
    pairs = [_pair(0, "a", "q1", "a bus", "a bus"), _pair(0, "a", "q2", "a tree", "a tree"),
             _pair(1, "b", "q1", "a tree", "a bus"), _pair(1, "b", "q2", "a bus", "a tree")]
    t = ec.fact_agreement(pairs).set_index("facts")
    # agreement: a/q1 bus-bus, a/q2 tree-tree, b/q1 tree-bus (no), b/q2 bus-tree (no): 2 of 4
    assert t.loc["objects", "agreement"] == 0.5
    # chance, same question only: a/q1 target bus vs b/q1 draft tree (no); b/q1 target bus vs a/q1 draft bus (yes);
    # a/q2 target tree vs b/q2 draft bus (no); b/q2 target tree vs a/q2 draft tree (yes): 2 of 4
    assert t.loc["objects", "chance"] == 0.5 and t.loc["objects", "lift"] == 1.0


def _stream(answers, drafts, question="q?", start=100):
    return [RecordedPair(f"s{i}", start + i, 0, question, list(d), list(t), "", "") for i, (d, t) in
            enumerate(zip(drafts, answers))]


def test_latest_answers_weigh_the_stream_by_recency_and_question():
    train = toy_pairs(30, 1)
    kn = lookup.KneserNeyPrior(order=3).fit(train)
    recent = lookup.RecentAnswers(tau=1.0, horizon=2, weight=0.9, order=3).fit(train)
    assert not recent.reads_draft and "draft" not in recent.needs
    ctx = DraftContext("q?", (5, 6), (1,))
    assert recent.propose(ctx, 4) == kn.propose(ctx, 4)              # nothing in the stream yet: Kneser-Ney alone
    a, b, c = [1, *range(500, 510), 2], [1, *range(600, 610), 2], [1, *range(700, 710), 2]
    recent.update(_stream([a], [[5]]))
    assert recent.propose(ctx, 4) == a[1:5]                           # the latest answer is followed
    recent.update(_stream([b], [[5]], start=200))
    assert recent.propose(ctx, 4) == b[1:5]                           # the newer one weighs more
    w, _ = recent.state_for("k", "q?", (5,))
    assert w[-1] == 1.0 and w[-2] == pytest.approx(np.exp(-1.0)) and not w[:30].any()   # training answers: Kneser-Ney only
    recent.update(_stream([c], [[5]], "another question?", start=300))
    assert recent.propose(ctx, 4) == b[1:5]                           # another question's answer is not this one's
    recent.update(_stream([c, c], [[5], [5]], start=400))
    w, _ = recent.state_for("k", "q?", (5,))
    assert np.count_nonzero(w) == 2                                   # the horizon: the last 2 answers to the question
    assert len(kn.train_docs) == 30 and recent.n_offline == 30
    with pytest.raises(ValueError, match="tau"):
        lookup.RecentAnswers(tau=0.0)
    with pytest.raises(TypeError, match="state_for"):
        recent.state((5,))


def test_draft_keyed_latest_answers_follow_the_clip_whose_draft_resembles(tmp_path):
    train = toy_pairs(30, 1)
    a, b = [1, *range(500, 510), 2], [1, *range(600, 610), 2]
    drafts = [[40, 41, 42, 43], [50, 51, 52, 53]]
    stream = _stream([a, b], drafts)
    prior = lookup.RecentAnswers(tau=1.0, horizon=4, weight=0.9, order=3).fit(train).update(stream)
    reader = lookup.RecentAnswers(tau=1.0, horizon=4, weight=0.9, temperature=0.05, order=3,
                                  name="draft_recent").fit(train).update(stream)
    assert reader.reads_draft and "draft token" in reader.needs
    looks_like_a = DraftContext("q?", (40, 41, 42, 43), (1,))
    assert prior.propose(looks_like_a, 3) == b[1:4]                   # the latest answer, whatever the draft says
    assert reader.propose(looks_like_a, 3) == a[1:4]                  # the clip the draft resembles
    assert reader.propose(DraftContext("q?", (50, 51, 52, 53), (1,)), 3) == b[1:4]
    reader.fit(train).update(_stream([a, b], drafts[::-1]))         # fitted anew, as many drafts, the keys swapped
    assert reader.propose(looks_like_a, 3) == b[1:4]                  # its draft keys were built again
    reader.fit(train).update(stream)
    again = ec.refit(reader, train)                                   # settings kept, stream dropped
    assert again.settings() == reader.settings() and again.reads_draft and len(again.train_docs) == 30
    reader.save(tmp_path / "r.json")
    loaded = lookup.load(tmp_path / "r.json")
    assert loaded.settings() == reader.settings() and loaded.n_offline == 32   # all it holds counts as offline


def test_choose_recent_picks_the_prior_on_validation_then_the_readers_temperature():
    pairs = toy_pairs(40, 3)
    train, val = pairs[:30], pairs[30:]
    prior, reader, scores = ec.choose_recent(train, val, 3, 3, [1.0, 4.0], [2], [0.3, 0.9], [0.1, 1.0])
    assert len(scores) == 4 + 2
    priors = {k: v for k, v in scores.items() if k.startswith("target_prior_recent")}
    best = max(priors, key=priors.get)
    assert best == ec.recent_label(prior) == (f"target_prior_recent: tau={prior.tau}, horizon=2, weight={prior.weight}, "
                                              "temperature=0.0")
    assert reader.name == "draft_recent" and reader.temperature in (0.1, 1.0)
    assert (reader.tau, reader.horizon, reader.weight) == (prior.tau, prior.horizon, prior.weight)
    assert len(prior.train_docs) == 30                               # selection ran on refitted copies
    with pytest.raises(ValueError, match="grid"):
        ec.choose_recent(train, val, 3, 3, [], [2], [0.3], [0.1])


def test_consecutive_similarity_pairs_each_answer_with_the_last_to_its_question():
    a, b = [1, 7, 8, 9, 2], [1, 3, 4, 5, 2]
    pairs = [RecordedPair("p0", 0, 0, "q1", [5, 6], a, "", ""), RecordedPair("p1", 0, 1, "q2", [5, 6], b, "", ""),
             RecordedPair("p2", 1, 0, "q1", [5, 6], a, "", ""), RecordedPair("p3", 1, 1, "q2", [9, 9], a, "", "")]
    sims = ec.consecutive_similarity(pairs)
    assert list(sims["key"]) == ["p2/q0", "p3/q1"]                        # each against the last pair asked its question
    assert sims.loc[0, "draft similarity"] == pytest.approx(1.0) and sims.loc[0, "target similarity"] == pytest.approx(1.0)
    assert sims.loc[1, "draft similarity"] == pytest.approx(0.0) and sims.loc[1, "target similarity"] < 0.5
    assert ec.consecutive_similarity(pairs[:1]).empty


def test_online_sweep_equals_a_store_per_setting():
    pairs = toy_pairs(40, 5)
    train, val = pairs[:28], pairs[28:]
    d = lookup.RecentAnswers(tau=1.0, horizon=3, weight=0.5, order=3)
    settings = [{"tau": 1.0, "weight": 0.9, "temperature": 0.0}, {"tau": 4.0, "weight": 0.3, "temperature": 0.2},
                {"tau": 2.0, "weight": 0.6, "temperature": 0.0}]            # the draft's keys needed, then not, then again
    swept = ec.online_sweep(d, train, val, 3, settings)
    for s, traces in zip(settings, swept):
        one = lookup.RecentAnswers(**{"horizon": 3, "order": 3, **s})
        assert [t.emitted for t in traces] == [t.emitted for t in ec.online_traces(one, train, val, 3, 1)], s
    assert len({tuple(tuple(t.emitted) for t in traces) for traces in swept}) > 1  # the settings do differ here
    assert d.settings()["tau"] == 1.0 and not hasattr(d, "train_docs")       # the drafter passed in is left as it was


def test_far_partners_pair_each_clip_with_one_half_the_recording_away_asked_the_same_question():
    pairs = [RecordedPair(f"c{i}", i, q, f"q{q}", (1,), (1, 2)) for i in range(6) for q in (0, 1)]
    pairs.append(RecordedPair("c9", 9, 2, "asked once", (1,), (1, 2)))
    other = ec.far_partners(pairs)
    assert len(pairs) - 1 not in other                          # no other clip was asked that question
    assert sorted(other.values()) == sorted(other)               # a permutation: every draft used once
    for i, j in other.items():
        assert pairs[i].question == pairs[j].question and abs(pairs[i].clip_index - pairs[j].clip_index) == 3
    kept, swapped = ec.swapped_drafts([dataclasses.replace(p, draft_ids=(int(p.clip_id[1:]),)) for p in pairs])
    assert kept == sorted(other)
    for i, s in zip(kept, swapped):
        j = other[i]
        assert s.target_ids == pairs[i].target_ids and s.clip_index == pairs[i].clip_index
        assert s.question == pairs[i].question and s.clip_id == pairs[j].clip_id     # the key a feature drafter reads
        assert s.draft_ids == (int(pairs[j].clip_id[1:]),)
    assert len({s.key for s in swapped}) == len(swapped)


def test_content_control_credits_a_reader_with_its_own_clips_draft_and_a_prior_with_nothing():
    train, test = toy_pairs(60, 1), toy_pairs(24, 4)
    prior = lookup.KneserNeyPrior(order=3).fit(train)
    reader = lookup.DraftCopy(boost=3.0, order=3).fit(train)
    gamma = 6                                                     # a whole toy answer fits in one verify step
    own = {n: evaluate(d, test, gamma).traces for n, d in (("prior", prior), ("reader", reader))}
    out = ec.content_control({"prior": prior, "reader": reader}, test, own, gamma, n_boot=500)
    assert out["prior"]["ratio"] == 1.0 and out["prior"]["lo"] == out["prior"]["hi"] == 1.0   # reads no draft
    assert out["reader"]["lo"] > 1 and out["reader"]["n_pairs"] == len(test)   # the toy draft names the target's words
    kept, swapped = ec.swapped_drafts(test)
    assert out["reader"]["mat_b"] == pytest.approx(metrics.summarize_sd(evaluate(reader, swapped, gamma).traces).mat)
    with pytest.raises(ValueError, match="rows of its own SD"):
        ec.content_control({"reader": reader}, test, {"reader": own["reader"][:-1]}, gamma, n_boot=10)
