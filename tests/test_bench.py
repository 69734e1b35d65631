"""The benchmark functions on the synthetic models (CPU), and the 7B-shaped models' prompt layout on a
miniature with the real vocabulary and placeholder ids: what the GPU run executes, checked here first."""
import numpy as np
import pytest
import torch

from helpers.models import bench, shapes, vlm
from helpers.models.backend import Backend, generate
from helpers.models.shipped import SHIPPED_DIR
from helpers.models.tokenizer import load_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def target():
    model, tok = vlm.load_pretrained(SHIPPED_DIR / "target", "target")
    return model, tok


def test_bench_functions_run_and_report(target):
    model, tok = target
    pix = [np.random.default_rng(0).integers(0, 256, (8, 60, 80, 3), dtype=np.uint8)]
    be = Backend(model, tok, batch=1, max_len=420)
    d = bench.decode_steps(be, pix, ["What is this scene about?"], n_steps=5, repeats=2)
    assert d["n"] == 2 and 0 < d["min"] <= d["median"] <= d["max"]
    v = bench.verify_widths(be, pix, ["What is this scene about?"], [1, 4], repeats=2)
    assert set(v) == {1, 4}
    t = bench.throughput(be, pix, ["What is this scene about?"], max_new_tokens=6, repeats=2)
    assert t["samples_per_s"] > 0 and t["new_tokens"] <= 6 and t["prompt_tokens"] > 300
    h = bench.hf_generate_ms_per_token(model, be, pix[0], "What is this scene about?", max_new_tokens=4, repeats=1)
    assert h["median"] > 0
    assert bench.weight_bytes(model) < sum(p.numel() * 4 for p in model.parameters())   # no vision tower


def test_shaped_prompt_has_the_real_placeholders_and_lengths():
    from transformers import CLIPVisionConfig, LlamaConfig, VideoLlavaConfig, VideoLlavaForConditionalGeneration
    text = LlamaConfig(vocab_size=shapes.VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2, eos_token_id=2)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=28, patch_size=14)
    cfg = VideoLlavaConfig(vision_config=vision, text_config=text, image_token_index=shapes.IMAGE_ID,
                           video_token_index=shapes.VIDEO_ID, image_seq_length=4, video_seq_length=8 * 5)
    model = shapes._build(VideoLlavaForConditionalGeneration, cfg, "cpu", torch.float32)
    tok = load_tokenizer(SHIPPED_DIR / "tokenizer")
    ad = shapes.shaped_adapter(model, tok)
    ids = ad.prompt_ids("What is this scene about?", 8)
    assert ids[0] == 1 and ids.count(shapes.VIDEO_ID) == 8 * 5 and max(i for i in ids if i != shapes.VIDEO_ID) < 32000
    be = Backend(model, tok, batch=2, max_len=len(ids) + 8, adapter=ad)
    out = generate(be, shapes.random_inputs("target", 2), ["What is this scene about?"] * 2, max_new_tokens=3)
    assert [g.n_prompt_tokens for g in out] == [len(ids)] * 2
