"""Drafters: the exact-SD shortcut against explicit propose/verify, the controls, persistence."""
import numpy as np
import pytest

from helpers.study import metrics
from helpers.study.drafters import (AdapterConfig, CrossModalConfig, CrossModalDrafter, NgramPrior, RawDraft,
                              SeedAdapterDrafter, TrainConfig, evaluate, zoo)
from helpers.study.pairs import RecordedPair

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


def check_shortcut(drafter, pairs, gamma):
    """simulate_sd on teacher-forced correctness == an explicit propose/verify loop."""
    ev = evaluate(drafter, pairs, gamma)
    for p, c in zip(pairs, ev.correct):
        fast = metrics.simulate_sd(c, gamma)
        slow = metrics.simulate_sd_with_proposals(lambda prefix, n: drafter.propose(p, prefix, n), p.target_ids, gamma)
        assert fast.accepted == slow.accepted and fast.emitted == slow.emitted, p.key
    return ev


def test_draft_equal_to_target_is_always_accepted():
    t = (3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13)
    pairs = [RecordedPair("a", 0, 0, "q", t, t)]
    ev = check_shortcut(RawDraft(), pairs, gamma=4)
    assert ev.token_match == 1.0
    assert ev.sd.accept_hist[-1] == ev.sd.steps  # every step accepted all gamma drafts
    assert ev.sd.mat == pytest.approx((len(t) - 1) / ev.sd.steps)


def test_raw_draft_in_another_register_gets_nothing():
    ev = check_shortcut(RawDraft(), toy_pairs(6), gamma=3)
    assert ev.token_match == 0.0 and ev.sd.mat == 1.0 and ev.sd.tau == 0.0


def test_ngram_prior_shortcut_is_exact_and_learns_the_register():
    train, test = toy_pairs(30, 1), toy_pairs(8, 2)
    ng = NgramPrior(order=3).fit(train)
    ev = check_shortcut(ng, test, gamma=3)
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
    hist = d.fit(toy_pairs(60, 1), toy_pairs(9, 2), TrainConfig(epochs=40, lr=3e-3, batch_size=16, patience=40))
    return d, hist


def test_cross_modal_uses_the_draft_and_shortcut_is_exact(cross_modal):
    d, hist = cross_modal
    assert hist.best_val_token_match > 0.95  # the content word is copied from the draft
    ev = check_shortcut(d, toy_pairs(6, 5), gamma=3)
    assert ev.token_match > 0.95


def test_prior_ablation_cannot_see_the_content():
    cfg = CrossModalConfig(d_model=32, n_heads=2, enc_layers=1, dec_layers=1, d_ffn=64, dropout=0.0, use_draft=False)
    d = CrossModalDrafter(cfg)
    assert d.name == "target_prior_neural"
    d.fit(toy_pairs(60, 1), toy_pairs(9, 2), TrainConfig(epochs=25, lr=3e-3, batch_size=16, patience=25))
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
    hist = d.fit(toy_pairs(60, 1), toy_pairs(9, 2), TrainConfig(epochs=30, lr=3e-3, batch_size=16, patience=30))
    assert hist.best_val_token_match > 0.9  # the position-wise mapping draft[i] -> target[i+1] is learnable here
    pairs = toy_pairs(6, 5)
    check_shortcut(d, pairs, gamma=3)
    d.save(tmp_path / "seed.pt")
    back = SeedAdapterDrafter.load(tmp_path / "seed.pt")
    assert all((a == b).all() for a, b in zip(d.predict_topk(pairs, 3), back.predict_topk(pairs, 3)))


def test_seed_adapter_rejects_unknown_output_vocab():
    d = SeedAdapterDrafter(AdapterConfig(text_vocab=20, d_model=16, n_heads=2, n_layers=1, d_ffn=32, output_vocab="nope"))
    with pytest.raises(ValueError, match="output_vocab"):
        d.fit(toy_pairs(4), toy_pairs(2), TrainConfig(epochs=1))


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
    d.save(tmp_path / "mix.pt")
    back = CrossModalDrafter.load(tmp_path / "mix.pt")
    assert back.prior_weight == 0.5 and back.prior is not None
    pairs = toy_pairs(4, 9)
    assert all((a == b).all() for a, b in zip(d.predict_topk(pairs, 2), back.predict_topk(pairs, 2)))
    with pytest.raises(ValueError, match="weight"):
        d.set_prior(prior, 1.5)
    d.set_prior(None, 1.0)
