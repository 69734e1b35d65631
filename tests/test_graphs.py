"""The network drafters' static-shape passes (helpers.study.drafters.graphs): padded to one shape
they draft what their eager passes draft; on CUDA the passes replay captured graphs. The CPU
tests force the static path (on host tensors it is not captured but run eagerly, with a warning);
the CUDA tests run where a GPU is (scripts/gpu_run.sh PHASE=synmeasure runs this file on the H200)."""
import numpy as np
import pytest
import torch

from helpers.study.drafters import AdapterConfig, CrossModalConfig, CrossModalDrafter, DraftContext, NgramPrior, SeedAdapterDrafter
from helpers.study.drafters import graphs
from helpers.study.drafters import features as df
from helpers.study.drafters.cross_modal import PAD, StaticChain
from helpers.training import TrainConfig

from test_drafters import STREAMED, check_shortcut, toy_pairs

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def nets():
    """A trained cross_modal mixed with an n-gram prior, and a trained seed adapter."""
    tcfg = TrainConfig(epochs=25, lr=3e-3, batch_size=16, patience=25, device="cpu", progress=False)
    cm = CrossModalDrafter(CrossModalConfig(d_model=32, n_heads=2, enc_layers=1, dec_layers=1, d_ffn=64,
                                            dropout=0.0, max_len=16))
    cm.fit(toy_pairs(60, 1), toy_pairs(9, 2), tcfg)
    cm.set_prior(NgramPrior(order=3).fit(toy_pairs(60, 1)), 0.5)   # at 0.5 the prior changes 28 of the 72 test chains here (0.7: 6, and on an H200 host sometimes none)
    seed = SeedAdapterDrafter(AdapterConfig(text_vocab=20, d_model=32, n_heads=2, n_layers=1, d_ffn=64, dropout=0.0,
                                            max_len=16, output_vocab="train"))
    seed.fit(toy_pairs(60, 1), toy_pairs(9, 2), tcfg)
    return cm, seed


def same_or_tied(drafter, ctxs, got, want, tol=1e-4):
    """Chains equal, or where they part, the drafter's own eager scores of the two tokens there are
    within tol (padded and unpadded passes sum in different orders: a near tie may break either way)."""
    for ctx, a, b in zip(ctxs, got, want):
        if a == b:
            continue
        i = next(j for j, (x, y) in enumerate(zip(a, b)) if x != y)
        prefix = list(ctx.target_prefix) + a[:i]
        with torch.no_grad():
            if isinstance(drafter, SeedAdapterDrafter):         # one pass: output row k - 1 + i drafts token k + i
                x = torch.tensor([list(ctx.draft_ids)[: drafter.cfg.max_len]])
                row = drafter.model(x)[0, len(ctx.target_prefix) - 1 + i]
                score = {t: float(row[drafter._to_out[t]]) for t in (a[i], b[i])}
            elif isinstance(drafter, df.FeatureDrafter):            # from the pair's features (and prior, if mixed)
                row = drafter._probs_of(drafter._feats_of([ctx.key]), prefix, ctx.question)[-1]
                score = {t: float(row[drafter.stoi[t]]) for t in (a[i], b[i])}
            else:
                row = drafter._probs(ctx.draft_ids, prefix, ctx.question)[-1]
                score = {t: float(row[drafter.stoi[t]]) for t in (a[i], b[i])}
        assert abs(score[a[i]] - score[b[i]]) < tol, (ctx.target_prefix, a, b, score)


def contexts(pairs):
    return [DraftContext.of(p, p.target_ids[:k], v) for p in pairs for k in range(1, len(p.target_ids))
            for v in (2, len(p.draft_ids))]


def test_replay_runs_its_function_on_static_buffers():
    r = graphs.Replay(lambda a, b: (a * 2 + b, a.sum()), [torch.zeros(3), torch.ones(3)], graph=False)
    out, total = r(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.5, 0.5, 0.5]))
    assert out.tolist() == [2.5, 4.5, 6.5] and total.item() == 6.0 and r.graph is None
    assert r.inputs[0].tolist() == [1.0, 2.0, 3.0]                    # the inputs were copied in, not aliased
    assert not graphs.wanted("cpu") and not graphs.wanted("cuda", enabled=False)


def test_static_chain_steps_equal_the_unpadded_decoder(nets):
    cm, _ = nets
    m = cm.model.eval()
    src = torch.tensor([[3, 4, 5, 6]])
    static = StaticChain(m, torch.full((1, 16), PAD, dtype=torch.long), 16, graph=False)
    with torch.no_grad():
        static.encode(torch.nn.functional.pad(src, (0, 12), value=PAD))
        memory = m.encode(src)
        for prefix in ([2], [2, 3], [2, 3, 4, 5, 6, 7, 8]):
            eager, got = m.decode(*memory, torch.tensor([prefix]))[0, -1, 2:].softmax(-1), static.step(prefix)
            assert torch.allclose(got[2:], eager, atol=1e-6) and (got[:2] == 0).all(), prefix   # PAD, UNK masked
        seq = [2, 3]
        for _ in range(4):                                                   # greedy, PAD and UNK excluded
            seq.append(int(m.decode(*memory, torch.tensor([seq]))[0, -1, 2:].argmax()) + 2)
        assert static.greedy([2, 3], 4) == seq[2:]
        assert static.greedy([2, 3], 0) == []


def test_static_path_drafts_what_the_eager_path_drafts(nets, monkeypatch):
    """Forcing the static path on the CPU: nothing is captured (host tensors), the padded passes run
    eagerly, and every chain equals the eager chain, with the prior mixed in (logits per step) and
    without it (argmax written into the buffers), up to and past the network's last position; SD
    over it stays exact (full and streamed drafts)."""
    cm, seed = nets
    pairs = toy_pairs(6, 5)
    long = [DraftContext.of(pairs[0], (list(pairs[0].target_ids) * 3)[:k]) for k in (14, 15, 16, 17)]  # max_len 16
    prior = (cm.prior, cm.prior_weight)

    def chains():
        out = {"seed": [seed.propose(c, 3) for c in contexts(pairs)]}
        for label, mix in (("cm prior", prior), ("cm alone", (None, 1.0))):
            cm.set_prior(*mix)
            out[label] = [cm.propose(c, 3) for c in contexts(pairs) + long]
        cm.set_prior(*prior)
        return out
    eager = chains()
    assert [len(x) for x in eager["cm alone"][-4:]] == [3, 2, 1, 0]          # no position beyond max_len
    assert eager["cm prior"] != eager["cm alone"]                            # the two paths differ here
    monkeypatch.setattr(graphs, "wanted", lambda device, enabled=True: bool(enabled))
    with pytest.warns(RuntimeWarning, match="CUDA graph capture skipped"):
        static = chains()
    assert static.keys() == eager.keys()
    ctxs = {"seed": contexts(pairs), "cm prior": contexts(pairs) + long, "cm alone": contexts(pairs) + long}
    for label, d in (("seed", seed), ("cm prior", cm), ("cm alone", cm)):
        cm.set_prior(*(prior if label == "cm prior" else (None, 1.0)))
        same_or_tied(d, ctxs[label], static[label], eager[label])
    cm.set_prior(*prior)
    assert not cm._captured[1].graphed
    for d in (cm, seed):
        check_shortcut(d, pairs, gamma=3)
        check_shortcut(d, pairs, gamma=3, visibility=STREAMED)
    cm.cuda_graphs = False                                      # the setting turns the static path off
    try:
        assert [cm.propose(c, 3) for c in contexts(pairs) + long] == eager["cm prior"]   # the eager path itself
    finally:
        cm.cuda_graphs = True


def test_feature_drafter_static_path(monkeypatch):
    pairs = toy_pairs(12, 3)
    rng = np.random.default_rng(0)
    feats = {p.key: rng.normal(size=(2, 8)).astype(np.float32) for p in pairs}
    d = df.FeatureDrafter(CrossModalConfig(d_model=16, n_heads=2, enc_layers=1, dec_layers=1, d_ffn=32, max_len=16), feats)
    d.fit(pairs[:9], pairs[9:], TrainConfig(epochs=2, batch_size=4, device="cpu", progress=False))
    eager = [d.propose(c, 3) for c in contexts(pairs)]
    monkeypatch.setattr(graphs, "wanted", lambda device, enabled=True: bool(enabled))
    with pytest.warns(RuntimeWarning):
        same_or_tied(d, contexts(pairs), [d.propose(c, 3) for c in contexts(pairs)], eager)


@pytest.fixture(scope="module")
def feature_mix():
    """A feature network mixed with a question-bound count prior (chapter 35's draft_features_mix)."""
    from helpers.study.drafters.lookup import QuestionPrior
    from test_drafters import question_pairs
    train, test = question_pairs(24, 0), question_pairs(6, 2)
    rng = np.random.default_rng(1)
    feats = {p.key: rng.normal(size=(2, 8)).astype(np.float32) for p in train + test}
    d = df.FeatureDrafter(CrossModalConfig(d_model=16, n_heads=2, enc_layers=1, dec_layers=1, d_ffn=32, max_len=16), feats)
    d.fit(train, test, TrainConfig(epochs=2, batch_size=8, device="cpu", progress=False))
    d.set_prior(QuestionPrior().fit(train), 0.4)
    return d, test


def test_a_feature_network_mixed_with_a_question_prior_drafts_the_same_on_its_static_path(feature_mix, monkeypatch):
    d, pairs = feature_mix
    eager = [d.propose(c, 3) for c in contexts(pairs)]
    assert {tuple(e) for e in eager} >= {(10, 11, 12), (20, 21, 22)}     # each question's own answer after token 0
    check_shortcut(d, pairs, gamma=3)
    monkeypatch.setattr(graphs, "wanted", lambda device, enabled=True: bool(enabled))
    with pytest.warns(RuntimeWarning):
        same_or_tied(d, contexts(pairs), [d.propose(c, 3) for c in contexts(pairs)], eager)


@CUDA
def test_cuda_graphs_of_a_feature_network_mixed_with_a_question_prior(feature_mix):
    d, pairs = feature_mix
    cpu = [d.propose(c, 3) for c in contexts(pairs)]
    d.model.to("cuda")
    d.device = torch.device("cuda")
    try:
        graphed = [d.propose(c, 3) for c in contexts(pairs)]
    finally:
        d.model.to("cpu")
        d.device = torch.device("cpu")
    same_or_tied(d, contexts(pairs), graphed, cpu)
    assert d._captured[1].graphed


@CUDA
def test_cuda_graphs_draft_what_the_cpu_drafts(nets):
    cm, seed = nets
    pairs = toy_pairs(6, 5)
    alone = CrossModalDrafter(cm.cfg, name="cross_modal_alone")              # the same network, no prior: argmax in the graph
    alone.itos, alone.stoi, alone.model = cm.itos, cm.stoi, cm.model
    for d in (cm, alone, seed):
        cpu = [d.propose(c, 3) for c in contexts(pairs)]
        d.model.to("cuda")
        d.device = torch.device("cuda")
        try:
            graphed = [d.propose(c, 3) for c in contexts(pairs)]
            d.cuda_graphs = False
            eager = [d.propose(c, 3) for c in contexts(pairs)]
        finally:
            d.cuda_graphs = True
            d.model.to("cpu")
            d.device = torch.device("cpu")
        same_or_tied(d, contexts(pairs), graphed, cpu)
        same_or_tied(d, contexts(pairs), eager, cpu)
    assert cm._captured[1].graphed and alone._captured[1].graphed and seed._captured[1].graph is not None


@CUDA
def test_graphs_follow_the_weights_after_the_network_moves(nets):
    """Captured, moved to the CPU, changed there and moved back: the drafts are the changed
    network's (a graph of the old weights' places would draft the old network's or garbage)."""
    cm, _ = nets
    ctxs = contexts(toy_pairs(4, 5))
    state = {k: v.clone() for k, v in cm.model.state_dict().items()}
    try:
        for step in range(2):
            if step:
                with torch.no_grad():
                    cm.model.embed.weight[2:] = cm.model.embed.weight[2:].flip(0)   # another network
            cpu = [cm.propose(c, 3) for c in ctxs]
            cm.model.to("cuda")
            cm.device = torch.device("cuda")
            same_or_tied(cm, ctxs, [cm.propose(c, 3) for c in ctxs], cpu)
            cm.model.to("cpu")
            cm.device = torch.device("cpu")
        assert cm._captured[1].graphed
    finally:
        cm.model.load_state_dict(state)


def test_captured_is_kept_until_the_model_or_its_storage_changes():
    class Owner:
        model = torch.nn.Linear(3, 2)
    owner, built = Owner(), []

    def build():
        built.append(1)
        return len(built)
    assert graphs.captured(owner, build, (1, 3)) == 1 and graphs.captured(owner, build, (1, 3)) == 1
    with torch.no_grad():
        owner.model.weight.mul_(2)                                 # changed in place: the graph reads it there
    assert graphs.captured(owner, build, (1, 3)) == 1
    assert graphs.captured(owner, build, (2, 3)) == 2              # another input shape
    owner.model.to(torch.float64)                                  # moved: new storage
    assert graphs.captured(owner, build, (2, 3)) == 3
    owner.model = torch.nn.Linear(3, 2)                            # another model
    assert graphs.captured(owner, build, (2, 3)) == 4 and graphs.captured(owner, build, (2, 3)) == 4
