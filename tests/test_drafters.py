"""Drafters: the exact-SD shortcut against an explicit propose/verify loop through the online
interface (full and streamed visibility), what each drafter may read, the controls, persistence."""
import dataclasses

import numpy as np
import pytest

from helpers.study import metrics
from helpers.study.drafters import (FULL, AdapterConfig, CrossModalConfig, CrossModalDrafter, DraftContext, NgramPrior,
                                    RawDraft, SeedAdapterDrafter, Visibility, evaluate, stream_timing, with_visibility)
from helpers.study.drafters import zoo
from helpers.study.pairs import RecordedPair
from helpers.training import TrainConfig

TEMPLATES = [  # two registers, as in the recorded pairs: the draft's wording differs from the target's
    ((5, 6, 7, 8, 9, 2), (10, 11, 12, 7, 8, 13, 2)),
    ((5, 6, 7, 14, 9, 2), (10, 11, 12, 7, 14, 13, 2)),
    ((5, 6, 15, 8, 9, 2), (10, 11, 12, 15, 8, 13, 2)),
]


def toy_pairs(n: int, seed: int = 0) -> list[RecordedPair]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        d, t = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
        out.append(RecordedPair(f"c{i}", i, 0, "q?", d, t, "", ""))
    return out


pytestmark = pytest.mark.usefixtures("one_torch_thread")


STREAMED = Visibility("streamed", lead=1.0, rate=1.5)


def check_shortcut(drafter, pairs, gamma, visibility=FULL):
    """The teacher-forced shortcut (evaluate) == an explicit propose/verify loop in which the
    drafter is called online with a DraftContext holding only the draft tokens that exist at
    each verify step and the target's accepted prefix."""
    ev = evaluate(drafter, pairs, gamma, visibility=visibility)
    for p, fast in zip(pairs, ev.traces):
        def propose(step, prefix, n):
            return drafter.propose(DraftContext.of(p, prefix, visibility.visible(step, len(p.draft_ids))), n)
        slow = metrics.simulate_sd_with_proposals(propose, p.target_ids, gamma)
        assert (fast.drafted, fast.accepted, fast.emitted) == (slow.drafted, slow.accepted, slow.emitted), p.key
    return ev


def check_prefix_dependence(drafter, pairs, blind: bool):
    """Changing the target's prefix after position i must not change the proposals for positions
    up to i; a drafter blind to the prefix must not change at all. Proposals are compared on
    prefixes that agree up to i and differ after it."""
    rng = np.random.default_rng(0)
    for p in pairs:
        t = list(p.target_ids)
        for i in range(1, len(t) - 1):
            other = t[: i + 1] + [int(x) for x in rng.integers(3, 16, len(t) - i - 1)]
            a = drafter.predict_topk([p], 1)[0][:, 0]
            b = drafter.predict_topk([dataclasses.replace(p, target_ids=tuple(other))], 1)[0][:, 0]
            assert (a[: i + 1] == b[: i + 1]).all(), (p.key, i)   # proposals for tokens 1..i+1 read t[:i+1]
            if blind:
                assert (a == b).all(), p.key


def test_draft_equal_to_target_is_always_accepted():
    t = (3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
    pairs = [RecordedPair("a", 0, 0, "q", t, t)]
    ev = check_shortcut(RawDraft(), pairs, gamma=4)
    assert ev.token_match == 1.0
    assert ev.traces[0].accepted == [4, 4, 2] and ev.sd.mat == pytest.approx(12 / 3)   # 5 + 5 + 2 tokens


def test_streamed_visibility_limits_what_the_raw_draft_can_propose():
    t = (3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
    pairs = [RecordedPair("a", 0, 0, "q", t, t)]
    # step s sees floor(2 + 1 * s) draft tokens; the raw draft proposes target token i from draft token i
    ev = check_shortcut(RawDraft(), pairs, gamma=4, visibility=Visibility("streamed", 2.0, 1.0))
    # step 0: 2 visible -> draft token 1 -> 1 accepted (k 1 -> 3); step 1: 3 visible, k = 3 -> nothing (k 3 -> 4);
    # step 2: 4 visible, k = 4 -> nothing; ... the target outruns the draft by one token per step from then on
    assert ev.traces[0].drafted[:3] == [1, 0, 0] and ev.traces[0].accepted[0] == 1
    assert ev.sd.mat < evaluate(RawDraft(), pairs, 4).sd.mat


def test_raw_draft_in_another_register_gets_nothing():
    ev = check_shortcut(RawDraft(), toy_pairs(6), gamma=3)
    assert ev.token_match == 0.0 and ev.sd.mat == 1.0 and ev.sd.tau == 0.0


def test_stream_timing_from_costs():
    v = stream_timing(draft_prefill_ms=30, draft_decode_ms=20, target_prefill_ms=70, verify_ms=20)
    assert v.lead == pytest.approx(3.0) and v.rate == pytest.approx(1.0)   # tokens at 30, 50, 70 ms exist at 70 ms
    assert [v.visible(s, 6) for s in range(5)] == [3, 4, 5, 6, 6]
    with pytest.raises(ValueError, match="mode"):
        Visibility("sometimes")


def test_ngram_prior_shortcut_is_exact_and_learns_the_register():
    train, test = toy_pairs(30, 1), toy_pairs(8, 2)
    ng = NgramPrior(order=3).fit(train)
    ev = check_shortcut(ng, test, gamma=3)
    check_prefix_dependence(ng, test[:3], blind=False)
    # the target's fixed opening (10, 11, 12) and closing (13, 2) are predictable without the draft;
    # the content word after 12 is not (three templates) -> strictly between 0 and 1
    assert 0.4 < ev.token_match < 1.0


def test_ngram_rejects_bad_order_and_round_trips(tmp_path):
    with pytest.raises(ValueError, match="order"):
        NgramPrior(order=0).fit(toy_pairs(3))
    ng = NgramPrior(order=3).fit(toy_pairs(20))
    ng.save(tmp_path / "ng.json")
    back = NgramPrior.load(tmp_path / "ng.json")
    pairs = toy_pairs(5, 3)
    assert all((a == b).all() for a, b in zip(ng.predict_topk(pairs, 3), back.predict_topk(pairs, 3)))


def test_fit_ngram_picks_order_on_validation():
    model, scores = zoo.fit_ngram(toy_pairs(30, 1), toy_pairs(6, 4), [1, 3])
    assert set(scores) == {1, 3} and model.order == max(scores, key=scores.get)
    assert scores[3] > scores[1]  # a unigram cannot follow the target's phrasing


@pytest.fixture(scope="module")
def cross_modal():
    cfg = CrossModalConfig(d_model=32, n_heads=2, enc_layers=1, dec_layers=1, d_ffn=64, dropout=0.0)
    d = CrossModalDrafter(cfg)
    hist = d.fit(toy_pairs(60, 1), toy_pairs(9, 2), TrainConfig(epochs=40, lr=3e-3, batch_size=16, patience=40, progress=False))
    return d, hist


def test_cross_modal_uses_the_draft_and_shortcut_is_exact(cross_modal):
    d, hist = cross_modal
    assert hist.best_value > 0.95  # the content word is copied from the draft
    ev = check_shortcut(d, toy_pairs(6, 5), gamma=3)
    assert ev.token_match > 0.95
    streamed = check_shortcut(d, toy_pairs(6, 5), gamma=3, visibility=STREAMED)
    assert streamed.sd.mat <= ev.sd.mat + 1e-9   # seeing less of the draft cannot help here
    check_prefix_dependence(d, toy_pairs(3, 5), blind=False)


def test_cross_modal_encodes_once_as_nn_transformer_would(cross_modal):
    import torch
    from helpers.study.drafters.cross_modal import PAD
    d, _ = cross_modal
    m = d.model.eval()
    dev = d.device                                               # a GPU where the fixture trained there
    src, tgt = torch.tensor([[3, 4, 5, PAD]], device=dev), torch.tensor([[2, 3, 4]], device=dev)
    with torch.no_grad():
        s = m.embed(src) + m.src_pos(torch.arange(4, device=dev))
        t = m.embed(tgt) + m.tgt_pos(torch.arange(3, device=dev))
        mask = torch.nn.Transformer.generate_square_subsequent_mask(3, device=dev)
        whole = m.norm(m.net(s, t, tgt_mask=mask, tgt_is_causal=True, src_key_padding_mask=src == PAD,
                             memory_key_padding_mask=src == PAD)) @ m.embed.weight.T
        assert torch.allclose(m(src, tgt), whole, atol=1e-5)
        memory = m.encode(src)                                  # propose encodes the draft once per chain
        assert torch.allclose(m.decode(*memory, tgt[:, :2]), whole[:, :2], atol=1e-5)


def test_cross_modal_reads_the_draft_that_exists():
    """Hiding the draft's content word (visible draft cut before it) must change the proposal that
    copies it: the drafter reads the visible draft, not the recorded one."""
    cfg = CrossModalConfig(d_model=32, n_heads=2, enc_layers=1, dec_layers=1, d_ffn=64, dropout=0.0)
    d = CrossModalDrafter(cfg)
    d.fit(toy_pairs(60, 1), toy_pairs(9, 2), TrainConfig(epochs=40, lr=3e-3, batch_size=16, patience=40, progress=False))
    p = toy_pairs(1, 5)[0]
    full = d.predict_topk([p], 1)[0][:, 0]
    cut = d.predict_topk([p], 1, visible=[2])[0][:, 0]                 # content word (draft index 2 or 3) hidden
    assert full[2] == p.target_ids[3] and (full != cut).any()
    with_visibility(evaluate(d, [p], 3), d, [p], 3, STREAMED)         # re-simulation reuses token metrics


def test_prior_ablation_cannot_see_the_content():
    cfg = CrossModalConfig(d_model=32, n_heads=2, enc_layers=1, dec_layers=1, d_ffn=64, dropout=0.0, use_draft=False)
    d = CrossModalDrafter(cfg)
    assert d.name == "target_prior_neural"
    d.fit(toy_pairs(60, 1), toy_pairs(9, 2), TrainConfig(epochs=25, lr=3e-3, batch_size=16, patience=25, progress=False))
    ev = evaluate(d, toy_pairs(30, 6), 3)
    assert ev.token_match < 0.95  # the word after (10, 11, 12) is a guess among three


def test_cross_modal_save_load_same_predictions(cross_modal, tmp_path):
    d, _ = cross_modal
    d.save(tmp_path / "cm.pt")
    back = CrossModalDrafter.load(tmp_path / "cm.pt")
    pairs = toy_pairs(4, 7)
    assert all((a == b).all() for a, b in zip(d.predict_topk(pairs, 2), back.predict_topk(pairs, 2)))


def test_seed_adapter_trains_and_round_trips(tmp_path):
    cfg = AdapterConfig(text_vocab=20, d_model=32, n_heads=2, n_layers=1, d_ffn=64, dropout=0.0, output_vocab="train")
    d = SeedAdapterDrafter(cfg)
    hist = d.fit(toy_pairs(60, 1), toy_pairs(9, 2), TrainConfig(epochs=30, lr=3e-3, batch_size=16, patience=30, progress=False))
    assert hist.best_value > 0.9  # the position-wise mapping draft[i] -> target[i+1] is learnable here
    pairs = toy_pairs(6, 5)
    check_shortcut(d, pairs, gamma=3)
    # streamed views are the full pass cut at the visible tokens (causal_over_draft), no pass of their
    # own, and still exact against the online propose loop, which runs a pass on what is visible
    calls = []
    predict = d.predict_topk
    d.predict_topk = lambda ps, k, visible=None: calls.append(visible) or predict(ps, k, visible)
    check_shortcut(d, pairs, gamma=3, visibility=STREAMED)
    assert calls == [None]
    del d.predict_topk
    check_prefix_dependence(d, pairs[:3], blind=True)                  # it never reads the target's prefix
    # causal over the draft: with draft tokens 0..v-1 visible it proposes target tokens 1..v and nothing after
    top1 = d.predict_topk(pairs[:1], 1, visible=[3])[0][:, 0]
    assert (top1[:3] == d.predict_topk(pairs[:1], 1)[0][:3, 0]).all() and (top1[3:] == -1).all()
    d.save(tmp_path / "seed.pt")
    back = SeedAdapterDrafter.load(tmp_path / "seed.pt")
    assert all((a == b).all() for a, b in zip(d.predict_topk(pairs, 3), back.predict_topk(pairs, 3)))


def test_seed_adapter_rejects_unknown_output_vocab():
    d = SeedAdapterDrafter(AdapterConfig(text_vocab=20, d_model=16, n_heads=2, n_layers=1, d_ffn=32, output_vocab="nope"))
    with pytest.raises(ValueError, match="output_vocab"):
        d.fit(toy_pairs(4), toy_pairs(2), TrainConfig(epochs=1))


def test_a_network_drafters_device_is_where_its_model_is():
    """Training puts a model where TrainConfig.device says ('auto': a GPU where there is one); the
    drafter's device follows its model, and setting the device moves the model."""
    import torch
    from helpers.study.drafters.features import FeatureDrafter
    from helpers.training import ModelDevice
    assert all(issubclass(c, ModelDevice) for c in (CrossModalDrafter, FeatureDrafter, SeedAdapterDrafter))
    d = CrossModalDrafter(CrossModalConfig(d_model=16, n_heads=2, enc_layers=1, dec_layers=1, d_ffn=32))
    assert d.device == torch.device("cpu")                                  # no model yet: where it will be built
    d.fit(toy_pairs(8, 1), toy_pairs(4, 2), TrainConfig(epochs=1, batch_size=4, device="cpu", progress=False))
    d.model.to("meta")                                                      # moved by someone else (a trainer)
    assert d.device == torch.device("meta")
    seed = SeedAdapterDrafter(AdapterConfig(text_vocab=20, d_model=16, n_heads=2, n_layers=1, d_ffn=32))
    seed.device = "meta"                                                    # setting it moves the model
    assert next(seed.model.parameters()).device == torch.device("meta") == seed.device


def test_zoo_names_and_missing_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="unknown drafter"):
        zoo.check_names(["cross_modal", "eagle"])
    with pytest.raises(FileNotFoundError, match="was not trained"):
        zoo.load(tmp_path, "cross_modal")


def test_prior_mixture_weights_and_persistence(cross_modal, tmp_path):
    d, _ = cross_modal
    prior = NgramPrior(order=3).fit(toy_pairs(30, 1))
    val = toy_pairs(9, 2)
    from helpers.study.drafters.cross_modal import choose_prior_weight
    scores = choose_prior_weight(d, prior, val, [0.0, 1.0])
    assert scores[0.0] == pytest.approx(evaluate(prior, val, 3).token_match)  # weight 0 = the prior alone
    assert scores[1.0] > scores[0.0] and d.prior_weight == 1.0               # the network sees the content word
    d.set_prior(prior, 0.5)
    check_shortcut(d, toy_pairs(5, 8), gamma=3)                               # mixing keeps SD exact
    check_shortcut(d, toy_pairs(5, 8), gamma=3, visibility=STREAMED)
    d.save(tmp_path / "mix.pt")
    back = CrossModalDrafter.load(tmp_path / "mix.pt")
    assert back.prior_weight == 0.5 and back.prior is not None
    pairs = toy_pairs(4, 9)
    assert all((a == b).all() for a, b in zip(d.predict_topk(pairs, 2), back.predict_topk(pairs, 2)))
    with pytest.raises(ValueError, match="weight"):
        d.set_prior(prior, 1.5)
    d.set_prior(None, 1.0)


def test_top5_survives_a_pair_with_a_one_token_target():
    """Regression: a pair whose target has a single token (nothing to rank) used to turn the
    drafter's whole top-5 into NaN."""
    train = toy_pairs(30, 1)
    pairs = toy_pairs(4, 2) + [RecordedPair("short", 99, 0, "q?", (5, 2), (10,))]
    ev = evaluate(NgramPrior(order=3).fit(train), pairs, gamma=3)
    assert 0 < ev.top5 <= 1 and ev.top5 >= ev.token_match
    assert np.isnan(evaluate(RawDraft(), pairs, gamma=3).top5)   # the raw draft has one candidate, no ranking


# --- count and lookup drafters (helpers.study.drafters.lookup) ---------------------------------

from helpers.study.drafters import lookup  # noqa: E402


def lookup_drafters(train):
    return [lookup.KneserNeyPrior(order=3).fit(train), lookup.SuffixPrior(max_ctx=6, weight=0.5, order=3).fit(train),
            lookup.DraftRetrieval(neighbours=5, temperature=0.1, weight=0.6, order=3).fit(train),
            lookup.DraftCopy(boost=3.0, max_doc_share=0.5, order=3).fit(train),
            lookup.SuffixPrior(max_ctx=6, weight=0.5, order=3, coverage=1.0, name="suffix_coverage").fit(train),
            lookup.DraftRetrieval(neighbours=5, temperature=0.1, weight=0.6, order=3, coverage=2.0,
                                  name="retrieval_coverage").fit(train)]


@pytest.mark.parametrize("i", range(6))
def test_lookup_drafters_shortcut_is_exact_full_and_streamed(i):
    d = lookup_drafters(toy_pairs(30, 1))[i]
    pairs = toy_pairs(6, 5)
    check_shortcut(d, pairs, gamma=3)
    check_shortcut(d, pairs, gamma=3, visibility=STREAMED)
    check_prefix_dependence(d, pairs[:3], blind=False)


def test_priors_cannot_see_the_content_and_readers_can():
    """The content word after (10, 11, 12) is one of three and is named in the draft: the priors
    guess, retrieval keyed by the draft and the pointer into the draft get it right."""
    train, test = toy_pairs(60, 1), toy_pairs(30, 6)
    kn, suffix, retrieval, copy, _, _ = lookup_drafters(train)
    prior_tm = evaluate(kn, test, 3).token_match
    assert prior_tm < 0.95 and evaluate(suffix, test, 3).token_match < 0.95
    assert not kn.reads_draft and retrieval.reads_draft and copy.reads_draft
    for reader in (retrieval, copy):
        ev = evaluate(reader, test, 3)
        assert ev.token_match == 1.0 > prior_tm
        blind = evaluate(reader, test, 3, visibility=Visibility("streamed", 0.0, 0.0))   # no draft token ever visible
        assert blind.sd.mat == pytest.approx(evaluate(kn, test, 3).sd.mat)               # = the prior it mixes with


def test_lookup_update_equals_fitting_on_all_pairs():
    """An online store grows by update(): the same counts, discounts, retrieval index and copy
    candidates as a drafter fitted on all the pairs at once, including tokens never seen before."""
    first = toy_pairs(20, 1)
    rng = np.random.default_rng(4)
    more = [RecordedPair(f"n{i}", 50 + i, 0, "q?", (5, int(w), 9, 2), (10, 11, int(w), 7, 15, 13, 2))
            for i, w in enumerate(rng.integers(16, 40, 10))]   # new content words 16..40; 15 becomes common
    seen = RecordedPair("s", 99, 0, "q?", TEMPLATES[2][0], TEMPLATES[2][1])   # its draft names 15
    probes = [p.target_ids[:k] for p in first[:3] + more for k in range(1, len(p.target_ids))] + [(99,), (10, 11, 77)]
    for whole, grown in zip(lookup_drafters(first + more), lookup_drafters(first)):
        grown.update(more[:3]).update([]).update(more[3:])
        assert grown.train_docs == whole.train_docs and grown.train_drafts == whole.train_drafts
        assert grown.index.discount == whole.index.discount and np.array_equal(grown.index.unigram, whole.index.unigram)
        for p in more[:2] + first[:2] + [seen]:
            sw, sg = whole.state(p.draft_ids), grown.state(p.draft_ids)
            if sw is None or isinstance(sw, frozenset):                       # priors; the copy candidates
                assert sw == sg
            else:                                                             # retrieval weights over the answers
                assert np.allclose(sw[0], sg[0])
            for prefix in probes:
                a, b = whole.dist(sw, prefix).topk(6), grown.dist(sg, prefix).topk(6)
                assert [w for w, _ in a] == [w for w, _ in b], (whole.name, prefix)
                assert np.allclose([q for _, q in a], [q for _, q in b]), (whole.name, prefix)


def test_coverage_boosts_what_the_answer_has_yet_to_say_hand_computed():
    from helpers.study.drafters.counts import Dist
    d = Dist({5: 0.5, 6: 0.3, 7: 0.2})
    expected = {5: 1.0, 6: 0.5, 7: 0.0}.get
    out = lookup.covered(d, lambda w: expected(w, 0.0), prefix=(9, 5), boost=2.0)
    # 5 is said as often as expected (r = 0), 7 never expected: only 6, r = 0.5, x (1 + 2 * 0.5)
    assert [w for w, _ in out.topk(3)] == [6, 5, 7]
    assert [q for _, q in out.topk(3)] == pytest.approx([0.6 / 1.3, 0.5 / 1.3, 0.2 / 1.3])
    assert lookup.covered(d, lambda w: 3.0, (5,), boost=0.0) is d                        # no boost: unchanged
    rng = np.random.default_rng(0)                    # the known ranking = the generic top-k of the same Dist
    for trial in range(20):
        base = rng.random(60) ** 4
        base /= base.sum()
        dense = Dist({int(w): float(rng.random() * 0.02) for w in rng.choice(80, 15)},
                     [(0.7, base, np.argsort(-base, kind="stable"))])
        exp = {int(w): float(rng.random() * 2) for w in rng.choice(80, 30)}
        out = lookup.covered(dense, lambda w: exp.get(w, 0.0), tuple(rng.choice(80, 5).tolist()), boost=1.5, top=8)
        for k in (1, 4, 8, 12):
            fast, slow = out.topk(k), Dist._topk(out, k)
            assert [w for w, _ in fast] == [w for w, _ in slow]
            assert [q for _, q in fast] == pytest.approx([q for _, q in slow])
    counts = lookup.TokenCounts([(1, 1, 2)]).add([]).add([(2, 3)])        # grown: as if built on both
    assert counts.expected()(1) == pytest.approx(1.0) and counts.expected()(4) == 0.0
    assert counts.expected(np.array([0.0, 2.0]))(3) == pytest.approx(1.0)                # the second answer only
    assert counts.expected(np.array([1.0, 3.0]))(2) == pytest.approx(1.0)
    assert counts.expected(np.array([1.0, 3.0]))(1) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="coverage"):
        lookup.SuffixPrior(coverage=-1.0)


def test_coverage_stops_a_prior_repeating_what_the_answer_said():
    """Answers list two of three things, each after the same word; the n-gram sees the same candidates
    at both slots and repeats its favourite, coverage knows the answer holds each at most once."""
    rng = np.random.default_rng(3)
    def pairs(n, start):
        out = []
        for i in range(n):
            a, b = rng.choice([20, 21, 22], 2, replace=False, p=[0.5, 0.3, 0.2])
            out.append(RecordedPair(f"c{start + i}", start + i, 0, "q?", (5, 2), (10, 30, int(a), 30, int(b), 2)))
        return out
    train, test = pairs(200, 0), pairs(60, 500)
    plain = lookup.SuffixPrior(max_ctx=1, weight=0.5, order=2).fit(train)
    cover = lookup.SuffixPrior(max_ctx=1, weight=0.5, order=2, coverage=2.0).fit(train)
    a_said = [p for p in test if p.target_ids[2] == 20]
    second = lambda d: [d.propose(DraftContext.of(p, p.target_ids[:4]), 1)[0] for p in a_said]
    assert set(second(plain)) == {20}                           # the favourite again, never right
    assert 20 not in set(second(cover))                         # something not said yet
    assert evaluate(cover, test, 3).token_match > evaluate(plain, test, 3).token_match


def test_count_index_grown_one_answer_at_a_time_equals_one_built_at_once():
    """Every entry's arrays, small ones (rebuilt) and frequent ones (grown in array operations)."""
    from helpers.study.drafters.counts import CountIndex
    docs = [p.target_ids for p in toy_pairs(60, 1)] + [(10, 11, 99, 98, 15, 2), (77, 10, 11, 12)]
    whole, grown = CountIndex(docs, 3), CountIndex(docs[:5], 3)
    for d in docs[5:]:
        grown.add([d])
    assert max(len(e.occ_tok) for e in whole.entries.values()) > 200           # the array path ran
    assert whole.entries.keys() == grown.entries.keys()
    for k, a in whole.entries.items():
        b = grown.entries[k]
        for f in ("toks", "occ_tok", "occ_doc", "count", "cont", "occ_left"):
            assert np.array_equal(getattr(a, f), getattr(b, f)), (k, f)
    assert np.array_equal(whole._n12, grown._n12) and np.array_equal(whole.unigram, grown.unigram)


def test_kneser_ney_is_a_distribution_and_orders_matter():
    from helpers.study.drafters.counts import CountIndex
    idx = CountIndex([p.target_ids for p in toy_pairs(30, 1)], max_ctx=2)
    for prefix in ((10,), (10, 11, 12), (99, 98)):
        d = idx.kneser_ney(prefix)
        total = sum(d.explicit.values()) + sum(c * b.sum() for c, b, _ in d.bases)
        assert total == pytest.approx(1.0)
    assert idx.kneser_ney((10, 11)).topk(1)[0][0] == 12
    with pytest.raises(ValueError, match="order"):
        lookup.KneserNeyPrior(order=0)


def test_lookup_trees_chain_and_round_trip(tmp_path):
    train, pairs = toy_pairs(30, 1), toy_pairs(5, 7)
    for d in lookup_drafters(train):
        for p in pairs:
            ctx = DraftContext.of(p, p.target_ids[:2])
            d.tree_branch = 1
            assert d.propose_tree(ctx, 4) == metrics.chain_tree(d.propose(ctx, 4))   # one candidate per node: the chain
            d.tree_branch = 3
            tree = d.propose_tree(ctx, 6)
            metrics.check_tree(tree)
            assert len(tree) == 6 and tree[0] == (-1, d.propose(ctx, 1)[0])          # the best node first
            assert len({(a, t) for a, t in tree}) == len(tree)                        # siblings differ
        d.save(tmp_path / f"{d.name}.json")
        back = lookup.load(tmp_path / f"{d.name}.json")
        assert back.tree_branch == 3 and back.settings() == d.settings()
        assert all((a == b).all() for a, b in zip(d.predict_topk(pairs, 3), back.predict_topk(pairs, 3)))


def test_tree_sd_of_lookup_drafters_beats_their_chain():
    train, test = toy_pairs(60, 1), toy_pairs(12, 8)
    kn = lookup.KneserNeyPrior(order=3).fit(train)
    chain = evaluate(kn, test, 3).sd.mat
    kn.tree_branch = 3
    traces = [metrics.simulate_tree_sd(lambda s, pre, n, p=p: kn.propose_tree(DraftContext.of(p, pre), n), p.target_ids, 9)
              for p in test]
    assert metrics.summarize_sd(traces).mat > chain        # the three content words fit side by side in the tree


def test_zoo_selects_lookup_settings_on_validation(tmp_path):
    recipe = zoo.Recipe(kn_orders=[1, 3], suffix_max_ctx=[4], suffix_weights=[0.0, 1.0], retrieval_neighbours=[3],
                        retrieval_temperatures=[0.1], retrieval_weights=[0.0, 0.6], copy_boosts=[0.0, 3.0],
                        coverage_boosts=[0.0, 1.0],
                        copy_doc_shares=[0.5], select_gamma=5, progress=False)
    train, val = toy_pairs(40, 1), toy_pairs(30, 6)
    trained = {}
    for name in zoo.LOOKUP:
        trained[name], summary = zoo.train(name, train, val, recipe, trained)
        assert summary["val_mat"] == max(summary["val_mat_by_setting"].values())
        zoo.save(trained[name], tmp_path, name)
        assert zoo.load(tmp_path, name).settings() == trained[name].settings()
    assert trained["target_prior_kn"].order == 3                     # a unigram cannot follow the register
    assert trained["draft_retrieval"].weight == 0.6 and trained["draft_copy"].boost == 3.0   # the draft names the word


def test_priors_declare_that_they_never_read_the_draft():
    """Streamed SD reuses a prior's full-visibility predictions (reads_draft False): the explicit
    online loop, which hands the prior only the visible draft, must agree."""
    train, pairs = toy_pairs(30, 1), toy_pairs(6, 5)
    ng = NgramPrior(order=3).fit(train)
    kn = lookup.KneserNeyPrior(order=3).fit(train)
    for d in (ng, kn):
        assert d.reads_draft is False
        check_shortcut(d, pairs, gamma=3, visibility=Visibility("streamed", 0.0, 0.5))
    assert CrossModalDrafter(CrossModalConfig(use_draft=False)).reads_draft is False
    assert CrossModalDrafter(CrossModalConfig()).reads_draft is True and lookup.DraftCopy().reads_draft is True


def two_question_pairs(n: int, seed: int = 0) -> list[RecordedPair]:
    """Answers to question qa say 22 where answers to qb say 23, after the same two tokens; then the
    content word the draft names (15 or 16). The question decides one token, the draft another."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        qi, w = int(rng.integers(2)), int(rng.integers(15, 17))
        out.append(RecordedPair(f"c{seed}_{i}", i, qi, ("qa?", "qb?")[qi], (5, w, 9, 2), (20, 21, 22 + qi, w, 2)))
    return out


def rare_question_pairs(n: int, seed: int = 0, p_rare: float = 0.15) -> list[RecordedPair]:
    """two_question_pairs with question qa asked in a share p_rare only: Kneser-Ney, blind to the
    question, then guesses qb's word (23) for qa's answers too."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        qi, w = int(rng.random() >= p_rare), int(rng.integers(15, 17))
        out.append(RecordedPair(f"r{seed}_{i}", i, qi, ("qa?", "qb?")[qi], (5, w, 9, 2), (20, 21, 22 + qi, w, 2)))
    return out


def test_question_backoff_lets_the_question_decide_where_retrieval_is_weak(tmp_path):
    """Same-question retrieval with a small weight: what the neighbours leave goes to Kneser-Ney, which
    names the common question's word for the rare question too; backing off to the question's
    answers first puts it right, and the draft's content word stays right either way."""
    train, test = rare_question_pairs(200, 1), [p for p in rare_question_pairs(200, 2) if p.question == "qa?"][:20]
    kw = dict(neighbours=5, temperature=0.1, weight=0.3, order=3, same_question=True)
    plain = lookup.DraftRetrieval(**kw).fit(train)
    backed = lookup.DraftRetrieval(**kw, question_backoff=0.6).fit(train)
    at = lambda d, i: np.mean([d.predict_topk([p], 1)[0][i, 0] == p.target_ids[i + 1] for p in test])  # noqa: E731
    assert at(plain, 1) < 0.5 and at(backed, 1) == 1.0          # the question's word (22 for qa)
    assert at(plain, 2) == 1.0 and at(backed, 2) == 1.0         # the draft's word
    assert evaluate(backed, test, 3).sd.mat > evaluate(plain, test, 3).sd.mat
    check_shortcut(backed, test[:6], gamma=3)
    backed.save(tmp_path / "b.json")
    again = lookup.load(tmp_path / "b.json")
    assert again.settings() == backed.settings() and again.question_backoff == 0.6
    assert all((a == b).all() for a, b in zip(again.predict_topk(test, 3), backed.predict_topk(test, 3)))
    with pytest.raises(ValueError, match="question_backoff"):
        lookup.DraftRetrieval(question_backoff=1.5)
    recipe = zoo.Recipe(kn_orders=[3], retrieval_neighbours=[5], retrieval_temperatures=[0.1], retrieval_weights=[0.3],
                        coverage_boosts=[0.0], select_gamma=3, progress=False)
    chosen, summary = zoo.train("draft_retrieval", train, rare_question_pairs(100, 3), recipe, {})
    assert chosen.same_question and chosen.question_backoff > 0
    assert any("question_backoff=" in k for k in summary["val_mat_by_setting"])
    off, _ = zoo.train("draft_retrieval", train, rare_question_pairs(100, 3),
                       dataclasses.replace(recipe, question_backoffs=[]), {})
    assert off.question_backoff == 0.0


def test_question_prior_reads_the_question_and_never_the_draft(tmp_path):
    train, test = two_question_pairs(60, 1), two_question_pairs(30, 2)
    kn = lookup.KneserNeyPrior(order=3).fit(train)
    qp = lookup.QuestionPrior(weight=0.6, order=3).fit(train)
    assert qp.reads_draft is False and not qp.name.startswith("draft")
    right = lambda d: np.mean([d.predict_topk([p], 1)[0][1, 0] == p.target_ids[2] for p in test])  # the question's word
    assert right(qp) == 1.0 and right(kn) < 0.8
    assert evaluate(qp, test, 3).sd.mat > evaluate(kn, test, 3).sd.mat
    other_drafts = [dataclasses.replace(p, draft_ids=(5, 31 - p.draft_ids[1], 9, 2)) for p in test]
    assert all((a == b).all() for a, b in zip(qp.predict_topk(test, 3), qp.predict_topk(other_drafts, 3)))
    check_shortcut(qp, test[:6], gamma=3)
    check_shortcut(qp, test[:6], gamma=3, visibility=STREAMED)
    # a question never asked in training: Kneser-Ney's proposals (no coverage)
    unseen = [dataclasses.replace(p, question="qz?") for p in test[:4]]
    assert all((a == b).all() for a, b in zip(qp.predict_topk(unseen, 3), kn.predict_topk(unseen, 3)))
    qp.save(tmp_path / "q.json")
    back = lookup.load(tmp_path / "q.json")
    assert back.settings() == qp.settings() and back.train_questions == qp.train_questions
    assert all((a == b).all() for a, b in zip(back.predict_topk(test, 3), qp.predict_topk(test, 3)))
    with pytest.raises(TypeError, match="question"):
        qp.state((5, 15))


def test_retrieval_among_the_same_question_and_its_fallback():
    train, test = two_question_pairs(80, 1), two_question_pairs(30, 3)
    loose = lookup.DraftRetrieval(neighbours=10, temperature=0.1, weight=0.9, order=3).fit(train)
    same = lookup.DraftRetrieval(neighbours=10, temperature=0.1, weight=0.9, order=3, same_question=True).fit(train)
    assert same.settings()["same_question"] is True
    assert evaluate(same, test, 4).token_match == 1.0 > evaluate(loose, test, 4).token_match
    check_shortcut(same, test[:6], gamma=3)
    check_shortcut(same, test[:6], gamma=3, visibility=STREAMED)
    # before any draft token: every training answer to the question, alike: the question prior
    qp = lookup.QuestionPrior(weight=0.9, order=3).fit(train)
    blind = Visibility("streamed", 0.0, 0.0)
    assert evaluate(same, test, 3, visibility=blind).sd.mat == pytest.approx(evaluate(qp, test, 3).sd.mat)
    # an online store: growing by update equals fitting on all the pairs
    grown = lookup.DraftRetrieval(neighbours=10, temperature=0.1, weight=0.9, order=3, same_question=True).fit(train[:50])
    grown.update(train[50:])
    for p in test[:5]:
        a, b = grown.state_for(p.key, p.question, p.draft_ids), same.state_for(p.key, p.question, p.draft_ids)
        assert np.allclose(a[0], b[0])


def test_feature_retrieval_is_keyed_by_features_and_pays_no_streaming_penalty():
    train, test = two_question_pairs(80, 1), two_question_pairs(20, 4)
    rng = np.random.default_rng(0)
    # a (2, 4) "hidden state" per pair: the content word as a direction, plus noise; the question is not in it
    feats = {p.key: np.stack([np.eye(4)[p.draft_ids[1] - 15] + 0.1 * rng.normal(size=4), rng.normal(size=4)])
             for p in train + test}
    f = lookup.FeatureRetrieval(feats, neighbours=10, temperature=0.1, weight=0.9, order=3, same_question=True).fit(train)
    assert f.reads_draft is False
    assert evaluate(f, test, 4).token_match == 1.0
    full = evaluate(f, test, 3)
    assert evaluate(f, test, 3, visibility=Visibility("streamed", 0.0, 0.0)).sd.mat == full.sd.mat
    check_shortcut(f, test[:5], gamma=3, visibility=Visibility("streamed", 0.0, 0.0))   # propose sees no draft token
    shuffled = dict(zip(feats, rng.permutation(list(feats.values()))))                  # features of other pairs
    g = lookup.FeatureRetrieval(shuffled, neighbours=10, temperature=0.1, weight=0.9, order=3, same_question=True).fit(train)
    assert evaluate(g, test, 4).token_match < 1.0
    with pytest.raises(KeyError, match="no draft features"):
        f.predict_topk([dataclasses.replace(test[0], clip_id="unknown")], 1)
    grown = lookup.FeatureRetrieval(feats, neighbours=10, temperature=0.1, weight=0.9, order=3, same_question=True).fit(train[:40])
    grown.update(train[40:])
    assert np.allclose(grown.keys_matrix, f.keys_matrix)


def test_zoo_keeps_same_question_retrieval_only_where_validation_says_so():
    recipe = zoo.Recipe(kn_orders=[3], retrieval_neighbours=[10], retrieval_temperatures=[0.1], retrieval_weights=[0.9],
                        coverage_boosts=[0.0], select_gamma=4, progress=False)
    two, _ = zoo.train("draft_retrieval", two_question_pairs(80, 1), two_question_pairs(30, 5), recipe, {})
    one, summary = zoo.train("draft_retrieval", toy_pairs(40, 1), toy_pairs(30, 6), recipe, {})
    assert two.same_question is True and one.same_question is False      # one question: nothing to gain
    assert "same_question=True" in " ".join(summary["val_mat_by_setting"])
    no, _ = zoo.train("draft_retrieval", two_question_pairs(80, 1), two_question_pairs(30, 5),
                      dataclasses.replace(recipe, retrieval_same_question=False), {})
    assert no.same_question is False
    qp, s = zoo.train("target_prior_question", two_question_pairs(80, 1), two_question_pairs(30, 5), recipe, {})
    assert isinstance(qp, lookup.QuestionPrior) and s["chosen"]["weight"] == 0.9


def question_pairs(n: int, seed: int = 0) -> list[RecordedPair]:
    """The same drafts under two questions whose answers differ only by the question asked."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        q = int(rng.integers(2))
        tail = [10, 11, 12, 13] if q == 0 else [20, 21, 22, 23]
        out.append(RecordedPair(f"s{seed}c{i}", i, q, ("what is ahead?", "how does it move?")[q], [5, 6], [1, *tail, 2],
                                "", ""))
    return out


def test_a_count_prior_mixed_into_a_network_is_bound_to_each_pairs_question(tmp_path):
    from helpers.study.drafters.cross_modal import choose_prior_weight, prior_distribution
    from helpers.study.drafters.lookup import DraftRetrieval, QuestionPrior
    train, val, test = question_pairs(24, 0), question_pairs(8, 1), question_pairs(8, 2)
    assert {p.question_index for p in test} == {0, 1}
    prior = QuestionPrior().fit(train)
    q0, q1 = (next(p for p in test if p.question_index == k) for k in (0, 1))
    # the prior's own distribution, once bound to a question, continues that question's answers
    assert max(prior_distribution(prior, q0.question, [1]).items(), key=lambda kv: kv[1])[0] == 10
    assert max(prior_distribution(prior, q1.question, [1]).items(), key=lambda kv: kv[1])[0] == 20
    d = CrossModalDrafter(CrossModalConfig(d_model=16, n_heads=2, enc_layers=1, dec_layers=1, d_ffn=32))
    d.fit(train, val, TrainConfig(epochs=1, batch_size=8, progress=False))    # barely trained: the prior must carry it
    scores = choose_prior_weight(d, prior, val, [0.0, 1.0], gamma=3, by="mat")
    assert scores[0.0] == pytest.approx(evaluate(prior, val, 3).sd.mat) and d.prior_weight == 0.0
    mixed, alone = evaluate(d, test, 3), evaluate(prior, test, 3)
    assert [t.accepted for t in mixed.traces] == [t.accepted for t in alone.traces]
    assert mixed.sd.mat == pytest.approx(alone.sd.mat) and alone.token_match == 1.0    # both questions followed
    d.set_prior(prior, 0.5)
    check_shortcut(d, test, gamma=3)                   # online (propose with the context's question) == offline
    d.save(tmp_path / "qmix.pt")
    back = CrossModalDrafter.load(tmp_path / "qmix.pt")
    assert type(back.prior) is QuestionPrior and back.prior_weight == 0.5
    assert all((a == b).all() for a, b in zip(d.predict_topk(test, 2), back.predict_topk(test, 2)))
    with pytest.raises(ValueError, match="cannot be mixed in"):
        d.set_prior(DraftRetrieval().fit(train), 0.5)                 # reads the draft
    with pytest.raises(ValueError, match="cannot be mixed in"):
        d.set_prior(CrossModalDrafter(CrossModalConfig(use_draft=False)), 0.5)   # content-free, but a network
    with pytest.raises(ValueError, match="by must be"):
        choose_prior_weight(d, prior, val, [0.5], by="loss")


@pytest.mark.parametrize("name", ["seed_token_adapter", "target_prior_neural"])
def test_network_drafters_train_the_same_whatever_ran_before(name):
    """A network's initial weights come from the recipe's seed, not from the global RNG state that
    earlier drafters left: the default preset trains by epochs so that one command gives one book."""
    import torch
    recipe = zoo.Recipe(adapter_epochs=2, cm_epochs=2, cm_d_model=32, text_vocab=32, progress=False)
    states = []
    for before in (1, 2):
        torch.manual_seed(before)
        torch.rand(before * 7)                           # whatever ran before left the generator elsewhere
        d, _ = zoo.train(name, toy_pairs(24, 1), toy_pairs(8, 2), recipe, {})
        states.append({k: v.clone() for k, v in d.model.state_dict().items()})
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
