"""The benchmark functions on the synthetic models (CPU), and the 7B-shaped models' prompt layout on a
miniature with the real vocabulary and placeholder ids: what the GPU run executes, checked here first."""
import numpy as np
import pytest
import torch

from helpers.models import bench, shapes, vlm
from helpers.models.backend import Backend, generate
from helpers.models.shipped import SHIPPED_DIR
from helpers.models.tokenizer import load_tokenizer

from _tiny import run_7b_tiny

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


def test_run_7b_structure_and_tables(monkeypatch):
    perf = run_7b_tiny(monkeypatch)
    assert set(perf["models"]) == {"target", "draft"} and perf["bandwidth_gb_s"] > 0
    t = bench.tables(perf)
    assert list(t["steps"].index) == ["target", "draft"] and (t["steps"]["compiled / bound"] > 0).all()
    assert set(t["throughput"].index) == {(k, b) for k in ("target", "draft") for b in (1, 2)}
    assert list(t["verify"].index) == [1, 3]


@pytest.mark.slow
def test_recording_scales_over_processes_with_torchrun(tmp_path):
    """The multi-GPU path (torchrun, one process per device) on the CPU with the small models:
    two processes split the work and the merged result equals one process's."""
    from helpers.models import record
    sc = bench.scaling(str(SHIPPED_DIR), tmp_path, n_clips=4, batch=2, gpus=[1, 2], max_new_tokens=4,
                       log=lambda m: None, kind="synthetic")
    assert sc[2]["written"] == 2 and sc[1]["written"] == 2 and sc[2]["pairs_per_s"] > 0
    work = record.random_work(4, ["What are the key elements in this scene?"])
    one, _ = record.merge(tmp_path / "gpus1", work, 2)
    two, _ = record.merge(tmp_path / "gpus2", work, 2)
    assert [p.target_ids for p in one] == [p.target_ids for p in two]
