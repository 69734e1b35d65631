"""draft_features: the draft model's hidden states as a drafter's input (shipped synthetic models, CPU)."""
import numpy as np
import pytest
import torch

from helpers.models import record as rec
from helpers.study.drafters import DraftContext, evaluate
from helpers.study.drafters import features as df
from helpers.study.drafters.cross_modal import CrossModalConfig
from helpers.study.pairs import RecordedPair
from helpers.training import TrainConfig
from helpers.world.dataset import generate_dataset, load_manifest

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from helpers.models.shipped import SHIPPED_DIR
    d = tmp_path_factory.mktemp("world") / "data"
    generate_dataset(d, n_clips=4, seed=3, n_workers=1, progress=False)
    work = rec.work_from_manifest(load_manifest(d), n_questions=2)
    lm = rec.load_models("synthetic", SHIPPED_DIR, "cpu")
    return work, lm


def test_features_are_the_draft_models_own_hidden_states(setup):
    work, lm = setup
    be = lm.backend("draft", 1, 400)
    feats = df.extract(be, work[:2], rec.load_inputs)
    assert set(feats) == {w.key for w in work[:2]} and feats[work[0].key].shape == (2, lm.draft.config.text_config.hidden_size)
    # the last prompt position's state is what the draft model's own first answer token is read from
    ev, _ = rec.load_inputs(work[0])
    logits = be.prefill([work[0].question], be.encode([ev]), [1])
    head = lm.draft.lm_head.weight.float()
    last = torch.tensor(feats[work[0].key][1])
    # taken after the final norm (last_hidden_state): the output head on it gives the prefill's logits
    assert torch.allclose(last @ head.T, logits[0], atol=1e-3)
    assert not np.allclose(feats[work[0].key], feats[work[1].key])       # another question: other states
    batched = df.extract(lm.backend("draft", 3, 400), work[:5], rec.load_inputs)   # padded rows, a short last batch
    for w in work[:2]:
        assert np.allclose(batched[w.key], feats[w.key], atol=1e-4)


def test_feature_drafter_trains_and_its_ablation_sees_zeros(setup):
    work, _ = setup
    rng = np.random.default_rng(0)
    pairs = [RecordedPair(w.clip_id, w.clip_index, w.question_index, w.question, [5, 6, 7], [1, 8 + k % 3, 9, 2])
             for k, w in enumerate(work)]
    feats = {w.key: rng.normal(size=(2, 16)).astype(np.float32) for w in work}
    cfg = CrossModalConfig(d_model=32, n_heads=2, enc_layers=1, dec_layers=1, d_ffn=64)
    tcfg = TrainConfig(epochs=3, lr=1e-3, batch_size=4, device="cpu", progress=False)
    on, off = df.FeatureDrafter(cfg, feats, True), df.FeatureDrafter(cfg, feats, False)
    for d in (on, off):
        d.fit(pairs[:6], pairs[6:], tcfg)
        assert evaluate(d, pairs[6:], 3).sd.mat >= 1
    assert on.name == "draft_features" and not on.reads_draft
    assert torch.count_nonzero(off._feats(pairs[:2])) == 0 and torch.count_nonzero(on._feats(pairs[:2])) > 0
    with pytest.raises(KeyError, match="no draft features"):
        on._feats([RecordedPair("x", 99, 0, "q", [1], [1, 2])])
    # online: a chain proposed from a context's pair key is the teacher-forced argmax while it follows the answer
    p = pairs[6]
    top1 = [int(t) for t in on.predict_topk([p], 1)[0][:, 0]]
    chain = on.propose(DraftContext.of(p, p.target_ids[:1]), 3)
    assert chain[0] == top1[0] and len(chain) == 3
    if chain[0] == p.target_ids[1]:
        assert chain[1] == top1[1]
    with pytest.raises(KeyError, match="no draft features for pair"):
        on.propose(DraftContext("q", (1,), (1,)), 2)
