"""The backend on the shipped synthetic models: batched greedy generation through the static-cache
decoder equals the transformers-cache reference loop token for token (fp32, CPU)."""
import numpy as np
import pytest

from helpers.models import vlm
from helpers.models.backend import Backend, generate
from helpers.models.shipped import SHIPPED_DIR
from helpers.world.captions import QUESTIONS

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def inputs(kind, n, seed=0):
    rng = np.random.default_rng(seed)
    shape = (120, 160, 3) if kind == "draft" else (8, 120, 160, 3)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(n)]


@pytest.mark.parametrize("kind", ["draft", "target"])
def test_batched_generation_equals_the_reference_loop(shipped_models, kind):
    draft, target, tok = shipped_models
    model = draft if kind == "draft" else target
    pix, qs = inputs(kind, 3), [QUESTIONS[0], QUESTIONS[3], QUESTIONS[5]]
    backend = Backend(model, tok, batch=4, max_len=420)          # one spare row: a short last batch
    got = generate(backend, pix, qs, max_new_tokens=20)
    for g, p, q in zip(got, pix, qs):
        ids, text, _ = vlm.generate_greedy(model, tok, p, q, max_new_tokens=20)
        assert g.ids == ids and g.text == text
    assert got[0].n_prompt_tokens == len(vlm.prompt_ids(model, tok, qs[0], 8 if kind == "target" else 1))
    assert set(got[0].timings_ms) == {"vision", "prefill", "decode", "decode_per_token", "batch"}


def test_too_many_rows_is_an_error(shipped_models):
    draft, _, tok = shipped_models
    with pytest.raises(ValueError, match="rows for a backend of 2"):
        generate(Backend(draft, tok, batch=2, max_len=200), inputs("draft", 3), [QUESTIONS[0]] * 3)


def test_eventgpt_through_the_backend_equals_its_reference_loop():
    import torch

    from helpers.models import eventgpt
    from helpers.models.backend import eventgpt_adapter
    from helpers.models.tokenizer import load_tokenizer
    tok = load_tokenizer(SHIPPED_DIR / "tokenizer")
    torch.manual_seed(0)
    model = eventgpt.build_eventgpt(eventgpt.EventGPTConfig.tiny(vocab=len(tok)))
    imgs = [np.random.default_rng(i).integers(0, 256, (48, 64, 3), dtype=np.uint8) for i in range(2)]
    qs = ["What is this scene about?", "Describe the following scene."]
    be = Backend(model, tok, batch=2, max_len=700, adapter=eventgpt_adapter(model, tok))
    got = generate(be, imgs, qs, max_new_tokens=12)
    for g, img, q in zip(got, imgs, qs):
        pix = vlm.preprocess_pixels(img[None], model.config.image_size)
        ids, _ = eventgpt.generate_greedy(model, tok, pix, q, max_new_tokens=12, eos_token_id=tok.eos_token_id)
        assert g.ids == ids
    assert got[0].n_prompt_tokens == len(eventgpt.prompt_ids(tok, qs[0])) - 1 + model.config.n_vision_tokens + 1
