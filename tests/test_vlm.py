"""The two small VLMs (helpers.models.vlm, helpers.models.train): CPU, offline, a few seconds each."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np
import pytest
import torch

from helpers.models import vlm
from helpers.models import train as vlm_train
from helpers.models.prompts import target_prompt
from helpers.models.tokenizer import load_tokenizer, train_tokenizer

QUESTIONS = ["What are the key elements in this scene?", "What is this scene about?",
             "Describe the following scene."]
ANSWERS = ["In the scene, there is a red car parked on the side of a road.",
           "The key elements in this scene include a bus driving down a winding road.",
           "A cyclist is crossing the street near a tall building."]
TINY = vlm.VLMConfig(text_layers=2, vision_layers=1)
# fewer visual tokens (48/16 -> 9 + CLS) so that memorisation runs in seconds
TINY_FAST = vlm.VLMConfig(text_layers=2, vision_layers=1, image_size_px=48, text_hidden=96, text_intermediate=256)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(QUESTIONS + ANSWERS * 3, vocab_size=400)


def _pixels(kind, seed):
    rng = np.random.default_rng(seed)
    shape = (60, 80, 3) if kind == "draft" else (8, 60, 80, 3)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def _build(kind, tokenizer, cfg=TINY):
    torch.manual_seed(0)
    build = vlm.build_draft_model if kind == "draft" else vlm.build_target_model
    return build(cfg, tokenizer).eval()


def test_tokenizer_specials_and_round_trip(tokenizer, tmp_path):
    assert tokenizer.convert_tokens_to_ids(["<unk>", "<s>", "</s>", "<pad>", "<image>", "<video>"]) == list(range(6))
    ids = tokenizer(target_prompt(QUESTIONS[0]), add_special_tokens=False)["input_ids"]
    assert ids.count(5) == 1  # <video> is one token
    tokenizer.save_pretrained(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again(ANSWERS[0])["input_ids"] == tokenizer(ANSWERS[0])["input_ids"]
    assert again.decode(tokenizer(ANSWERS[0], add_special_tokens=False)["input_ids"]) == ANSWERS[0]


@pytest.mark.parametrize("kind,n_visual", [("draft", 37), ("target", 8 * 37)])
def test_forward_substitutes_visual_tokens(tokenizer, kind, n_visual):
    model = _build(kind, tokenizer)
    pixel_input = _pixels(kind, 0)
    ids = vlm.prompt_ids(model, tokenizer, QUESTIONS[0], vlm.n_pixel_items(model, pixel_input))
    placeholder = model.config.video_token_index if kind == "target" else model.config.image_token_index
    assert ids.count(placeholder) == n_visual
    pixels = vlm.pixel_tensor(model, pixel_input)
    visual = vlm.encode_visual(model, pixels)
    assert visual.shape == (n_visual, TINY.text_hidden)
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), **vlm.pixel_kwargs(model, pixels))
    assert out.logits.shape == (1, len(ids), len(tokenizer))
    # the stage-by-stage path (encode_visual + prefill) gives the model's own last logits
    last, _ = vlm.prefill(model, torch.tensor([ids]), visual)
    torch.testing.assert_close(last, out.logits[:, -1], atol=1e-4, rtol=1e-4)


def test_target_sees_many_more_visual_tokens(tokenizer):
    draft, target = _build("draft", tokenizer), _build("target", tokenizer)
    n_draft = len(vlm.prompt_ids(draft, tokenizer, QUESTIONS[0]))
    n_target = len(vlm.prompt_ids(target, tokenizer, QUESTIONS[0], 8))
    assert n_target > 3 * (n_draft - 40)  # vs. the draft's visual + question tokens


@pytest.mark.parametrize("kind", ["draft", "target"])
def test_training_memorises_toy_answers(tokenizer, kind):
    model = _build(kind, tokenizer, TINY_FAST)
    examples = [(_pixels(kind, i), QUESTIONS[i], ANSWERS[i]) for i in range(3)]
    cfg = vlm_train.vlm_train_config(lr=5e-3, batch_size=3, epochs=40, patience=40, device="cpu",
                                     progress=False, warmup_frac=0.1)
    history = vlm_train.train_vlm(model, tokenizer, examples, examples, cfg)
    losses = [r["train_loss"] for r in history.epochs]
    assert losses[-1] < 0.2 * losses[0]
    for pixel_input, question, answer in examples:
        ids, text, _ = vlm.generate_greedy(model, tokenizer, pixel_input, question, max_new_tokens=40)
        assert text == answer
        assert ids[-1] == tokenizer.eos_token_id


def _constant_head(model, token_id, bias):
    """An lm_head whose logits are 0 except `bias` at token_id (argmax ties -> id 0 = <unk>)."""
    head = torch.nn.Linear(model.lm_head.in_features, model.lm_head.out_features, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[token_id] = bias
    return head


@pytest.mark.parametrize("kind", ["draft", "target"])
def test_generate_greedy_timings_and_eos(tokenizer, kind):
    model = _build(kind, tokenizer)
    eos = tokenizer.eos_token_id
    model.lm_head = _constant_head(model, tokenizer.eos_token_id, 1.0)  # eos is always the argmax
    ids, text, t = vlm.generate_greedy(model, tokenizer, _pixels(kind, 0), QUESTIONS[0], max_new_tokens=10)
    assert ids == [eos] and text == ""
    assert set(t) == {"preprocess_ms", "vision_ms", "prefill_ms", "decode_ms", "total_ms",
                      "n_prompt_tokens", "n_visual_tokens"}
    assert t["decode_ms"] == [] and t["n_visual_tokens"] == (37 if kind == "draft" else 296)


def test_generate_greedy_max_new_tokens(tokenizer):
    model = _build("draft", tokenizer)
    model.lm_head = _constant_head(model, tokenizer.eos_token_id, -1e4)  # never emits eos
    ids, _, t = vlm.generate_greedy(model, tokenizer, _pixels("draft", 0), QUESTIONS[0], max_new_tokens=7)
    assert len(ids) == 7 and len(t["decode_ms"]) == 6
    assert all(v > 0 for v in t["decode_ms"]) and t["vision_ms"] > 0 and t["prefill_ms"] > 0


@pytest.mark.parametrize("kind", ["draft", "target"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_save_load_round_trip(tokenizer, tmp_path, kind, dtype):
    model = _build(kind, tokenizer)
    if dtype != torch.float32:  # shipped in fp16: compare with the fp16-rounded weights
        with torch.no_grad():  # (parameters only: RoPE's inv_freq buffer is not saved, stays fp32)
            for p in model.parameters():
                p.copy_(p.to(dtype).float())
    out = vlm_train.save_shipped(model, tokenizer, tmp_path, {"seed": 0, "epochs": 0}, dtype=dtype)
    manifest = vlm_train.read_manifest(out)
    assert manifest["seed"] == 0 and manifest["kind"] == kind
    assert manifest["param_counts"]["total"] == sum(p.numel() for p in model.parameters())
    loaded, tok2 = vlm.load_pretrained(out, kind, dtype=torch.float32, device="cpu")
    assert type(loaded) is type(model) and len(tok2) == len(tokenizer)
    pixel_input = _pixels(kind, 1)
    ids = torch.tensor([vlm.prompt_ids(model, tokenizer, QUESTIONS[1], vlm.n_pixel_items(model, pixel_input))])
    pixels = vlm.pixel_kwargs(model, vlm.pixel_tensor(model, pixel_input))
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids, **pixels).logits, loaded(input_ids=ids, **pixels).logits)


def test_load_pretrained_is_offline(tmp_path):
    with pytest.raises(OSError):
        vlm.load_pretrained(tmp_path / "missing", "draft")  # a hub id would need the network
    with pytest.raises(KeyError):
        vlm.load_pretrained(tmp_path, "eventgpt")


def test_configs_reject_unknown_keys():
    with pytest.raises(KeyError):
        vlm.VLMConfig.from_dict({"text_hiden": 64})
    with pytest.raises(KeyError):
        vlm_train.vlm_train_config(max_epochs=3)  # the one TrainConfig calls it `epochs`
