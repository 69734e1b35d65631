"""The study's two 7B models at their real architecture and sizes, with random weights.

Timings do not depend on weight values, so speed is measured on these where the checkpoints
are not available (no hub here). `video_llava_7b()` is transformers' VideoLlavaForConditionalGeneration
configured as LanguageBind/Video-LLaVA-7B-hf (Vicuna-7B, CLIP ViT-L/14 at 224 px, 8 frames x 257
tokens); `eventgpt_7b()` is helpers.models.eventgpt's EventGPT-7B (Vicuna-7B, CLIP ViT-L/14-336,
one event image -> 578 pooled tokens). Prompts are built with the suite's own tokenizer for the
text (ids below 32000) and the real placeholder expansion, so prompt lengths match the real
models' to within the question's few tokens. `adapter(kind, model, tokenizer)` gives the Backend
adapter of each.
"""
from __future__ import annotations

import numpy as np
import torch

from helpers.models.backend import Adapter
from helpers.models.prompts import IMAGE_TOKEN, VIDEO_TOKEN, draft_prompt, target_prompt

VOCAB, IMAGE_ID, VIDEO_ID = 32064, 32000, 32001     # Video-LLaVA-7B-hf: text 32000 padded to 32064


def _llama(vocab: int = VOCAB):
    from transformers import LlamaConfig
    return LlamaConfig(vocab_size=vocab, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                       rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def _clip(image_size: int):
    from transformers import CLIPVisionConfig
    return CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                            image_size=image_size, patch_size=14, projection_dim=768)


def _build(cls, config, device, dtype):
    """Random init directly on `device` in `dtype` (seconds on a GPU, not minutes on a CPU)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = cls(config)
    finally:
        torch.set_default_dtype(old)
    return model.eval()


def video_llava_7b(device="cuda", dtype=torch.bfloat16, image_id: int = IMAGE_ID, video_id: int = VIDEO_ID):
    """image_id / video_id: the placeholders' token ids (the real checkpoint's by default)."""
    from transformers import VideoLlavaConfig, VideoLlavaForConditionalGeneration
    cfg = VideoLlavaConfig(vision_config=_clip(224), text_config=_llama(), image_token_index=image_id,
                           video_token_index=video_id, image_seq_length=256, video_seq_length=8 * 257,
                           vision_feature_layer=-2, vision_feature_select_strategy="default")
    return _build(VideoLlavaForConditionalGeneration, cfg, device, dtype)


def eventgpt_7b(device="cuda", dtype=torch.bfloat16):
    from helpers.models.eventgpt import EventGPTConfig, build_eventgpt
    return build_eventgpt(EventGPTConfig.seven_b(), device, dtype, init=True)


def adapter(kind: str, model, tokenizer) -> Adapter:
    """The Backend adapter of the 7B-shaped target ('target') or draft ('draft')."""
    if kind == "draft":
        from helpers.models.backend import eventgpt_adapter
        return eventgpt_adapter(model, tokenizer)
    return shaped_adapter(model, tokenizer)


def shaped_adapter(model, tokenizer) -> Adapter:
    """An Adapter for a 7B-shaped LLaVA / Video-LLaVA whose text comes from `tokenizer` (any
    tokenizer whose ids lie below 32000) and whose placeholders are the real ones."""
    from helpers.models import vlm
    kind = vlm.model_kind(model)
    per_item = vlm.visual_tokens_per_image(model)
    placeholder = VIDEO_ID if kind == "target" else IMAGE_ID

    def prompt_ids(question: str, n_items: int) -> list[int]:
        text, marker = (target_prompt(question), VIDEO_TOKEN) if kind == "target" else (draft_prompt(question), IMAGE_TOKEN)
        before, after = text.split(marker)
        n = per_item * (n_items if kind == "target" else 1)
        enc = lambda t: tokenizer(t, add_special_tokens=False)["input_ids"]
        return [1] + enc(before) + [placeholder] * n + enc(after)

    return Adapter(
        pixels=lambda x: (vlm.pixel_tensor(model, x, model.device)[0] if kind == "target"
                          else vlm.pixel_tensor(model, x, model.device)),
        features=lambda pixels: vlm.visual_embeddings(model, pixels),
        prompt_ids=prompt_ids, placeholder=placeholder, n_items=lambda x: vlm.n_pixel_items(model, x))


def random_inputs(kind: str, n: int, seed: int = 0) -> list[np.ndarray]:
    """uint8 inputs of the real sizes: an event image (480, 640, 3) for the draft, 8 frames
    (8, 480, 640, 3) for the target (DSEC's 640 x 480 sensor)."""
    rng = np.random.default_rng(seed)
    shape = (480, 640, 3) if kind == "draft" else (8, 480, 640, 3)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(n)]
