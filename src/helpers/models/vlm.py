"""The two models: a draft VLM on event images and a target video LLM on RGB frames.

Draft = `LlavaForConditionalGeneration` (EventGPT is LLaVA-style), target =
`VideoLlavaForConditionalGeneration`. The same functions serve the tiny models trained on the
synthetic world and the real 7B checkpoints (loaded from a local folder): pixels are
preprocessed as the CLIP processors do, prompts follow each model's template, and the visual
placeholder is expanded to as many tokens as the vision tower yields.

Inputs are plain arrays: an event image (H, W, 3) uint8 or a stack (T, H, W, 3) for the draft,
and sampled video frames (F, H, W, 3) uint8 for the target.

Notation: `draft_*` is the event model (EventGPT-like), `target_*` the video model.
Training lives in `helpers.models.train`, tokenizers in `helpers.models.tokenizer`.
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F

from helpers.models.prompts import IMAGE_TOKEN, VIDEO_TOKEN, draft_prompt, target_prompt
from helpers.models.tokenizer import load_tokenizer

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP, as CLIPImageProcessor
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# ----------------------------------------------------------------------------- models
@dataclass
class VLMConfig:
    """Size of one tiny VLM. Defaults: < ~1.5 M params (~3 MB fp16), trains in minutes on CPU."""
    image_size_px: int = 96        # event images / frames are resized+cropped to this square
    patch_size_px: int = 16        # 96/16 -> 36 patches (+1 CLS) per image
    vision_hidden: int = 64
    vision_layers: int = 2
    vision_heads: int = 2
    vision_intermediate: int = 256
    text_hidden: int = 128         # both LLMs have the same size, as the two 7B Vicunas do
    text_layers: int = 4
    text_heads: int = 4
    text_intermediate: int = 384
    max_positions: int = 1024      # RoPE: costs no parameters; target prompts are ~330 tokens
    pixel_fit: str = "crop"        # "crop": CLIP's shortest side + centre crop (drops a 4:3 frame's sides);
                                   # "squash": the whole frame resized to the square (kept in the config)

    @classmethod
    def from_dict(cls, d: dict) -> "VLMConfig":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise KeyError(f"unknown VLMConfig keys: {sorted(unknown)}")
        return cls(**d)


def _sub_configs(cfg: VLMConfig, tokenizer):
    from transformers import CLIPVisionConfig, LlamaConfig
    if cfg.pixel_fit not in PIXEL_FITS:
        raise ValueError(f"pixel_fit must be one of {PIXEL_FITS}, not {cfg.pixel_fit!r}")
    vision = CLIPVisionConfig(
        hidden_size=cfg.vision_hidden, intermediate_size=cfg.vision_intermediate,
        num_hidden_layers=cfg.vision_layers, num_attention_heads=cfg.vision_heads,
        image_size=cfg.image_size_px, patch_size=cfg.patch_size_px, projection_dim=cfg.vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.text_hidden, intermediate_size=cfg.text_intermediate,
        num_hidden_layers=cfg.text_layers, num_attention_heads=cfg.text_heads,
        num_key_value_heads=cfg.text_heads, max_position_embeddings=cfg.max_positions,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return vision, text


def _set_generation_ids(model, tokenizer):
    gc = model.generation_config
    gc.bos_token_id, gc.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    gc.pad_token_id = tokenizer.pad_token_id
    return model


def build_draft_model(cfg: VLMConfig, tokenizer):
    """EventGPT-like draft: LLaVA on one event image, all patch tokens + CLS ("full", as
    EventGPT keeps all 577 CLIP tokens); the last vision layer is used (-1: a tiny tower has
    no layer to spare, LLaVA's real -2 is kept by real checkpoints' configs)."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration
    vision, text = _sub_configs(cfg, tokenizer)
    n_tokens = (cfg.image_size_px // cfg.patch_size_px) ** 2 + 1
    config = LlavaConfig(
        vision_config=vision, text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), image_seq_length=n_tokens,
        vision_feature_select_strategy="full", vision_feature_layer=-1,
    )
    config.pixel_fit = cfg.pixel_fit   # saved with the config: pixel_tensor reads it
    return _set_generation_ids(LlavaForConditionalGeneration(config), tokenizer)


def build_target_model(cfg: VLMConfig, tokenizer, num_frames: int = 8):
    """Video-LLaVA-like target: 8 frames x (patches + CLS) video tokens (real: 8 x 257)."""
    from transformers import VideoLlavaConfig, VideoLlavaForConditionalGeneration
    vision, text = _sub_configs(cfg, tokenizer)
    per_frame = (cfg.image_size_px // cfg.patch_size_px) ** 2 + 1
    config = VideoLlavaConfig(
        vision_config=vision, text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        video_token_index=tokenizer.convert_tokens_to_ids(VIDEO_TOKEN),
        image_seq_length=per_frame - 1, video_seq_length=num_frames * per_frame,
        vision_feature_layer=-1,
    )
    config.pixel_fit = cfg.pixel_fit   # saved with the config: pixel_tensor reads it
    return _set_generation_ids(VideoLlavaForConditionalGeneration(config), tokenizer)


def model_kind(model) -> str:
    """'target' for Video-LLaVA, 'draft' for LLaVA."""
    return "target" if model.config.model_type == "video_llava" else "draft"


def load_pretrained(path, kind: str, dtype=torch.float32, device="cpu", load_in_4bit: bool = False):
    """(model, tokenizer) from a LOCAL folder (ours or a real HF checkpoint); never downloads.

    kind: 'draft' (LlavaForConditionalGeneration) or 'target' (VideoLlavaForConditionalGeneration).
    load_in_4bit: NF4 via bitsandbytes, as the study ran the 7B pair (CUDA only).
    """
    from transformers import LlavaForConditionalGeneration, VideoLlavaForConditionalGeneration
    cls = {"draft": LlavaForConditionalGeneration, "target": VideoLlavaForConditionalGeneration}[kind]
    kwargs = dict(local_files_only=True, dtype=dtype)
    if load_in_4bit:
        from transformers import BitsAndBytesConfig
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
        kwargs["device_map"] = {"": device}
    model = cls.from_pretrained(str(path), **kwargs)
    if not load_in_4bit:
        model = model.to(device)
    return model.eval(), load_tokenizer(path)


# ----------------------------------------------------------------------------- inputs
PIXEL_FITS = ("crop", "squash")


def preprocess_pixels(images: np.ndarray, image_size_px: int, device=None, fit: str = "crop") -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, S, S): CLIP processor steps (shortest side to S,
    bicubic; centre crop; /255; normalise with CLIP mean/std), computed on `device` (default CPU).
    fit="squash" resizes the whole frame to S x S instead (no crop: nothing at the sides is lost)."""
    if fit not in PIXEL_FITS:
        raise ValueError(f"fit must be one of {PIXEL_FITS}, not {fit!r}")
    x = torch.as_tensor(np.ascontiguousarray(images)).to(device)
    lead = x.shape[:-3]
    x = x.reshape(-1, *x.shape[-3:]).permute(0, 3, 1, 2).float() / 255.0  # (N, 3, H, W)
    h, w = x.shape[-2:]
    scale = image_size_px / min(h, w)
    nh, nw = max(image_size_px, round(h * scale)), max(image_size_px, round(w * scale))
    if fit == "squash":
        nh = nw = image_size_px
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
    top, left = (nh - image_size_px) // 2, (nw - image_size_px) // 2
    x = x[..., top:top + image_size_px, left:left + image_size_px].clamp(0, 1)
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).reshape(*lead, 3, image_size_px, image_size_px)


def visual_tokens_per_image(model) -> int:
    """Tokens one image (draft) or one frame (target) puts into the LLM's sequence."""
    c = model.config
    n = (c.vision_config.image_size // c.vision_config.patch_size) ** 2
    if model_kind(model) == "target":
        return n + 1  # Video-LLaVA keeps CLS for video frames
    return n + (c.vision_feature_select_strategy == "full")


def pixel_tensor(model, pixel_input: np.ndarray, device=None) -> torch.Tensor:
    """uint8 input -> batch-1 pixel tensor: draft (n_images, 3, S, S), target (1, F, 3, S, S)."""
    x = preprocess_pixels(pixel_input, model.config.vision_config.image_size, device,
                          getattr(model.config, "pixel_fit", "crop"))
    if model_kind(model) == "target":
        return x.unsqueeze(0)  # (1, F, 3, S, S)
    return x.reshape(-1, *x.shape[-3:])  # (n_images, 3, S, S)


def prompt_ids(model, tokenizer, question: str, n_images: int = 1) -> list[int]:
    """bos + templated prompt, with the placeholder expanded to the visual token count."""
    if model_kind(model) == "target":
        text, token = target_prompt(question), VIDEO_TOKEN
        n = n_images * visual_tokens_per_image(model)  # n_images = frames
    else:
        text, token = draft_prompt(question, n_images), IMAGE_TOKEN
        n = visual_tokens_per_image(model)
    token_id = tokenizer.convert_tokens_to_ids(token)
    out = [tokenizer.bos_token_id]
    for t in tokenizer(text, add_special_tokens=False)["input_ids"]:
        out.extend([token_id] * n if t == token_id else [t])
    return out


def answer_ids(tokenizer, answer: str) -> list[int]:
    """The answer as the model should emit it: ' ' + answer + eos."""
    return tokenizer(" " + answer.strip(), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def n_pixel_items(model, pixel_input: np.ndarray) -> int:
    """Images (draft) or frames (target) in one input array."""
    return 1 if pixel_input.ndim == 3 else pixel_input.shape[0]


def pixel_kwargs(model, pixels: torch.Tensor) -> dict:
    return {("pixel_values_videos" if model_kind(model) == "target" else "pixel_values"): pixels}


# ----------------------------------------------------------------------------- generation
def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _cache_kw(model) -> str:
    """transformers >= 5.2x names the KV cache argument `cache`, earlier ones `past_key_values`."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _out_cache(out):
    return out.cache if getattr(out, "cache", None) is not None else out.past_key_values


def _flat(features) -> torch.Tensor:
    """pooler_output as a tensor (..., N, D) or a list of them -> (N_total, D)."""
    if isinstance(features, (list, tuple)):
        return torch.cat([f.reshape(-1, f.shape[-1]) for f in features])
    return features.reshape(-1, features.shape[-1])


@torch.no_grad()
def encode_visual(model, pixels: torch.Tensor) -> torch.Tensor:
    """Vision tower + projector: visual embeddings (N_visual, D) in the LLM's input space."""
    return visual_embeddings(model, pixels)


def visual_embeddings(model, pixels: torch.Tensor) -> torch.Tensor:
    """encode_visual with autograd (training): (N_visual_total, D) over the whole batch."""
    c, inner = model.config, model.model
    if model_kind(model) == "target":
        out = inner.get_video_features(pixel_values_videos=pixels, vision_feature_layer=c.vision_feature_layer)
    else:
        out = inner.get_image_features(
            pixel_values=pixels, vision_feature_layer=c.vision_feature_layer,
            vision_feature_select_strategy=c.vision_feature_select_strategy)
    return _flat(getattr(out, "pooler_output", out))


@torch.no_grad()
def prefill(model, input_ids: torch.Tensor, visual: torch.Tensor):
    """Prompt (1, T) with visual embeddings scattered at the placeholders -> (last logits (1, V), cache)."""
    c = model.config
    placeholder = c.video_token_index if model_kind(model) == "target" else c.image_token_index
    embeds = model.get_input_embeddings()(input_ids)  # (1, T, D)
    mask = (input_ids == placeholder).unsqueeze(-1).expand_as(embeds)
    embeds = embeds.masked_scatter(mask, visual.to(embeds.dtype))
    out = model(inputs_embeds=embeds, use_cache=True, logits_to_keep=1)
    return out.logits[:, -1], _out_cache(out)


@torch.no_grad()
def decode_tokens(model, token_ids: torch.Tensor, cache):
    """Feed (1, k) tokens after the cached prefix -> (logits (1, k, V), cache). k=1: one decode step."""
    out = model(input_ids=token_ids, use_cache=True, **{_cache_kw(model): cache})
    return out.logits, _out_cache(out)


@torch.no_grad()
def generate_greedy(model, tokenizer, pixel_input: np.ndarray, question: str, max_new_tokens: int = 50):
    """Greedy generation with per-stage timings.

    Returns (token_ids, text, timings_ms): generated ids only (the eos, when reached, is the last
    id, as HF `generate` returns it); text without special tokens; timings_ms with
    preprocess_ms, vision_ms, prefill_ms (prompt forward up to the first token's logits),
    decode_ms (one entry per later token), total_ms, n_prompt_tokens, n_visual_tokens.
    """
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    _sync(device); t0 = time.perf_counter()
    pixels = pixel_tensor(model, pixel_input).to(device, dtype)
    ids = torch.tensor([prompt_ids(model, tokenizer, question, n_pixel_items(model, pixel_input))], device=device)
    _sync(device); t1 = time.perf_counter()
    visual = encode_visual(model, pixels)  # (N_visual, D)
    _sync(device); t2 = time.perf_counter()
    logits, cache = prefill(model, ids, visual)
    token = logits.argmax(-1)  # (1,)
    _sync(device); t3 = time.perf_counter()
    out_ids, decode_ms = [int(token)], []
    while out_ids[-1] != tokenizer.eos_token_id and len(out_ids) < max_new_tokens:
        ts = time.perf_counter()
        logits, cache = decode_tokens(model, token.view(1, 1), cache)
        token = logits[:, -1].argmax(-1)
        out_ids.append(int(token))  # int() synchronises on CUDA
        decode_ms.append((time.perf_counter() - ts) * 1e3)
    t4 = time.perf_counter()
    timings_ms = {
        "preprocess_ms": (t1 - t0) * 1e3, "vision_ms": (t2 - t1) * 1e3, "prefill_ms": (t3 - t2) * 1e3,
        "decode_ms": decode_ms, "total_ms": (t4 - t0) * 1e3,
        "n_prompt_tokens": ids.shape[1], "n_visual_tokens": visual.shape[0],
    }
    return out_ids, tokenizer.decode(out_ids, skip_special_tokens=True).strip(), timings_ms
