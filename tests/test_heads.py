"""draft_features_heads: one network pass per chain, heads per offset mixed with a prior (CPU;
the CUDA graphs path runs where a GPU is)."""
import warnings

import numpy as np
import pytest
import torch

from helpers.study import metrics
from helpers.study.drafters import DraftContext, graphs
from helpers.study.drafters import features as df
from helpers.study.drafters.cross_modal import CrossModalConfig
from helpers.study.drafters.lookup import QuestionPrior
from helpers.study.pairs import RecordedPair
from helpers.training import TrainConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def feature_pairs(n: int, seed: int):
    """One question; the answer's tokens at offsets 1, 2 and 4 are set by three bits that only the
    features carry (the prior, which reads the question and the prefix, cannot know them)."""
    rng = np.random.default_rng(seed)
    pairs, feats = [], {}
    for i in range(n):
        bits = rng.integers(2, size=3)
        p = RecordedPair(f"h{seed}c{i}", i, 0, "what is ahead?", [5, 6],
                         [1, 10 + int(bits[0]), 30 + int(bits[1]), 12, 40 + int(bits[2]), 2], "", "")
        pairs.append(p)
        feats[p.key] = np.stack([np.r_[2.0 * bits - 1, np.zeros(5)], rng.normal(scale=0.1, size=8)]).astype(np.float32)
    return pairs, feats


@pytest.fixture(scope="module")
def heads():
    train, f1 = feature_pairs(80, 0)
    val, f2 = feature_pairs(20, 1)
    test, f3 = feature_pairs(20, 2)
    base = df.FeatureDrafter(CrossModalConfig(d_model=32, n_heads=2, enc_layers=1, dec_layers=1, d_ffn=64, dropout=0.0,
                                              max_len=16), {**f1, **f2, **f3})
    base.fit(train, val, TrainConfig(epochs=40, lr=3e-3, batch_size=16, patience=40, device="cpu", progress=False))
    base.set_prior(QuestionPrior().fit(train), 0.5)
    h = df.FeatureHeadsDrafter(base, n_heads=3)
    return h, train, val, test


def test_heads_start_as_the_next_token_head_and_learn_the_later_offsets(heads):
    h, train, val, test = heads
    probs, rows, target = h._tables(test[0])
    assert probs.shape == (4, len(test[0].target_ids) - 1, h.vocab)
    assert np.allclose(probs[1:], probs[:1])                  # zero-initialised: every head is the backbone's
    before = h.traces(test, 5, [(0.5, 0.5)])[(0.5, 0.5)]
    hist = h.fit(train, val, epochs=60, lr=1e-2, batch_size=32, patience=10, max_minutes=0)
    assert min(hist["val_loss"]) < hist["val_loss"][0]
    scores = h.choose_weights(val, [0.5, 1.0], [0.0, 0.5, 1.0], 5)
    assert set(scores) == {(a, b) for a in (0.5, 1.0) for b in (0.0, 0.5, 1.0)} and h.weights[1] > 0
    # the heads carry what the features say about tokens 2 and 4: chains from the trained heads accept
    # more than chains whose later tokens come from the prior alone, and more than untrained heads
    after = h.traces(test, 5, [h.weights, (h.weights[0], 0.0)])
    mat = {w: metrics.summarize_sd(t).mat for w, t in after.items()}
    assert mat[h.weights] > mat[(h.weights[0], 0.0)] and mat[h.weights] > metrics.summarize_sd(before).mat


def test_chains_drafted_online_are_the_chains_simulated(heads):
    h, _, _, test = heads
    if h.weights == (0.5, 0.0):                                   # the other test trains the heads; run alone, train here
        h.fit(*heads[1:3], epochs=60, lr=1e-2, batch_size=32, patience=10, max_minutes=0)
    for w in ((0.5, 0.0), (0.2, 0.9), (0.8, 0.6)):      # heads off; the next token mostly the prior's, the rest the heads'
        h.weights = w
        sim = h.traces(test, 3)[w]
        for p, fast in zip(test, sim):
            slow = metrics.simulate_sd_with_proposals(lambda s, prefix, n, p=p: h.propose(DraftContext.of(p, prefix), n),
                                                      p.target_ids, 3)
            assert (fast.drafted, fast.accepted, fast.emitted) == (slow.drafted, slow.accepted, slow.emitted), (w, p.key)
    with pytest.raises(KeyError, match="no draft features"):
        h.propose(DraftContext("q", (1,), (1,)), 2)
    assert h.propose(DraftContext.of(test[0], test[0].target_ids[:1]), 0) == []


def test_the_static_pass_drafts_what_the_eager_pass_drafts(heads, monkeypatch):
    h, _, _, test = heads
    ctxs = [DraftContext.of(p, p.target_ids[:k]) for p in test for k in range(1, len(p.target_ids))]
    eager = [h.propose(c, 4) for c in ctxs]
    monkeypatch.setattr(graphs, "wanted", lambda device, enabled=True: bool(enabled))
    with pytest.warns(RuntimeWarning):                           # host tensors: not captured, run eagerly
        static = [h.propose(c, 4) for c in ctxs]
    assert static == eager and not h._captured[1].graphed
    # features replaced under a key already drafted from: the next chain reads the new ones, not a kept encoding
    p, ctx = test[0], ctxs[0]
    old, chains = h.base.features[p.key], []
    try:
        for q in test[1:]:
            h.base.features[p.key] = h.base.features[q.key]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                kept = h.propose(ctx, 4)                               # the static path, as on a GPU
            monkeypatch.setattr(graphs, "wanted", lambda device, enabled=True: False)
            assert kept == h.propose(ctx, 4)                           # the eager path encodes every call
            monkeypatch.setattr(graphs, "wanted", lambda device, enabled=True: bool(enabled))
            chains.append(kept)
    finally:
        h.base.features[p.key] = old
    assert any(c != eager[0] for c in chains)                  # the features matter here: a stale encoding would show


def test_heads_need_a_trained_network_with_a_prior():
    base = df.FeatureDrafter(CrossModalConfig(d_model=16, n_heads=2, enc_layers=1, dec_layers=1, d_ffn=32),
                             {"k": np.zeros((2, 4), np.float32)})
    with pytest.raises(ValueError, match="trained FeatureDrafter"):
        df.FeatureHeadsDrafter(base)


@CUDA
def test_cuda_graphs_of_the_heads_draft_what_the_cpu_drafts(heads):
    h, _, _, test = heads
    ctxs = [DraftContext.of(p, p.target_ids[:k]) for p in test for k in range(1, len(p.target_ids))]
    cpu = [h.propose(c, 4) for c in ctxs]
    h.device = "cuda"
    try:
        graphed = [h.propose(c, 4) for c in ctxs]
    finally:
        h.device = "cpu"
    assert graphed == cpu and h._captured[1].graphed


class SlowPass(df.Pending):
    """A pass that reports itself not ready for `polls` queries (a GPU still running it)."""

    def __init__(self, inner: df.Pending, polls: int):
        super().__init__(inner.result)
        self.polls = polls

    def ready(self) -> bool:
        self.polls -= 1
        return self.polls < 0


def test_rows_computed_while_the_pass_runs_change_no_chain_and_are_reused(heads, monkeypatch):
    h, _, _, test = heads
    ctxs = [DraftContext.of(p, p.target_ids[:k]) for p in test for k in range(1, len(p.target_ids))]
    launch, rows = h._launch, h._row
    reused = 0
    for w in ((0.5, 0.0), (0.9, 0.9), (0.2, 0.6)):              # the pass overrules the prior more or less often
        h.weights = w
        ready = [h.propose(c, 4) for c in ctxs]
        calls = []
        monkeypatch.setattr(h, "_launch", lambda key, prefix: SlowPass(launch(key, prefix), 10))
        monkeypatch.setattr(h, "_row", lambda prefix, q: calls.append(1) or rows(prefix, q))
        for c, chain in zip(ctxs, ready):
            n = min(4, h.base.cfg.max_len + 1 - len(c.target_prefix))
            own = prior_chain(h, c, n)
            calls.clear()
            guess = h.propose(c, 4)
            assert guess == chain, (w, c)
            if chain == own and len(chain) == n:                # the prior's own chain: no row computed twice
                assert len(calls) == n
                reused += 1
            assert len(calls) <= 2 * n
        monkeypatch.undo()
    assert reused > 0


def prior_chain(h, ctx, n):
    out = []
    for _ in range(n):
        row = h._row([*ctx.target_prefix, *out], ctx.question)
        if not row.max() > 0:
            break
        out.append(h.base.itos[int(row.argmax())])
    return out


@torch.no_grad()
def test_a_launch_on_the_same_key_reuses_the_encoding_and_a_new_key_encodes_again(heads):
    h, _, _, test = heads
    b = h.base
    a, c = b._feats_of([test[0].key]), b._feats_of([test[1].key])
    static = df.StaticHeads(h.model, a, b.cfg.max_len, graph=False)
    prefix = b._enc(test[0].target_ids[:2])
    fresh = [static.launch(x, prefix)().copy() for x in (a, c)]          # no key: encoded every time
    assert not np.allclose(fresh[0], fresh[1])                             # the features matter here
    assert np.array_equal(static.launch(a, prefix, "a")().copy(), fresh[0])
    assert np.array_equal(static.launch(c, prefix, "a")().copy(), fresh[0])   # same key: a's encoding kept
    assert np.array_equal(static.launch(c, prefix, "c")().copy(), fresh[1])   # a new key: encoded again
