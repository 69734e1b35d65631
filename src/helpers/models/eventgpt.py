"""EventGPT-7B of our own, loading the official checkpoint layout (shared/docs/eventgpt_model.md).

Modules (`EventGPT`): `language_model` a transformers LlamaForCausalLM (the decode loop calls
it with inputs_embeds, as it does Video-LLaVA's LM); `vision_tower` a CLIPVisionModel whose
last_hidden_state is used whole (577 tokens, CLS kept, no post-LN); `visual_projector`
Linear(1024->4096), GELU, Linear(4096->4096); `feature_adaptor` Linear(4096->4096).
Event features: tower -> projector -> adaptor, applied EXACTLY ONCE (the study's SD scripts
applied it twice) -> spatio-temporal pooling: T per-frame token means, then N per-token means
over frames, (T + N, D) -- 1 frame 578 rows, 5 frames 582.
Prompt: `{SYS} USER: <ev_start><event><ev_end>\\n{q} ASSISTANT:`, ids [BOS] part0 -200 part1;
the placeholder -200 is replaced by the whole pooled block.
LLM sizes not in the sources (FFN width, eps, RoPE theta, positions) are Vicuna-7B-v1.5's.
"""
from __future__ import annotations

import json
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from helpers.models.prompts import DRAFT_SYSTEM
from helpers.models.vlm import _out_cache, decode_tokens

EVENT_TOKEN_INDEX = -200                     # the <event> placeholder id
EVENT_TOKEN, EV_START, EV_END = "<event>", "<ev_start>", "<ev_end>"


@dataclass
class EventGPTConfig:
    """Sizes of EventGPT; the defaults are EventGPT-7B's (Vicuna-7B-v1.5 + CLIP ViT-L/14-336)."""
    hidden: int = 4096
    layers: int = 32
    heads: int = 32
    kv_heads: int = 32
    intermediate: int = 11008
    vocab: int = 32000
    rms_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_positions: int = 4096
    vision_hidden: int = 1024
    vision_layers: int = 24
    vision_heads: int = 16
    vision_intermediate: int = 4096
    image_size: int = 336
    patch_size: int = 14
    bos_id: int = 1
    eos_id: int = 2
    pad_id: int = 0

    @classmethod
    def seven_b(cls) -> EventGPTConfig:
        """EventGPT-7B's real shapes."""
        return cls()

    @classmethod
    def tiny(cls, vocab: int = 32000) -> EventGPTConfig:
        """Narrow and shallow for CPU tests, but with the real 336 px / 14 px patches (577 tokens)."""
        return cls(hidden=64, layers=2, heads=4, kv_heads=4, intermediate=128, vocab=vocab, max_positions=2048,
                   vision_hidden=32, vision_layers=1, vision_heads=2, vision_intermediate=64)

    @property
    def n_vision_tokens(self) -> int:
        """Tokens per image out of the vision tower: patches + CLS (577 for 336 / 14)."""
        return (self.image_size // self.patch_size) ** 2 + 1


class EventGPT(nn.Module):
    """The four modules; use `build_eventgpt` / `load_eventgpt` rather than this constructor."""

    def __init__(self, cfg: EventGPTConfig):
        super().__init__()
        from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM
        self.config = cfg
        self.language_model = LlamaForCausalLM(LlamaConfig(
            vocab_size=cfg.vocab, hidden_size=cfg.hidden, intermediate_size=cfg.intermediate,
            num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.kv_heads,
            rms_norm_eps=cfg.rms_eps, rope_theta=cfg.rope_theta, max_position_embeddings=cfg.max_positions,
            bos_token_id=cfg.bos_id, eos_token_id=cfg.eos_id, pad_token_id=cfg.pad_id, tie_word_embeddings=False))
        self.vision_tower = CLIPVisionModel(CLIPVisionConfig(
            hidden_size=cfg.vision_hidden, num_hidden_layers=cfg.vision_layers, num_attention_heads=cfg.vision_heads,
            intermediate_size=cfg.vision_intermediate, image_size=cfg.image_size, patch_size=cfg.patch_size))
        self.visual_projector = nn.Sequential(nn.Linear(cfg.vision_hidden, cfg.hidden), nn.GELU(),
                                              nn.Linear(cfg.hidden, cfg.hidden))
        self.feature_adaptor = nn.Linear(cfg.hidden, cfg.hidden)


@contextmanager
def _default_dtype(dtype: torch.dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def build_eventgpt(cfg: EventGPTConfig, device="cpu", dtype: torch.dtype = torch.float32,
                   init: bool = True) -> EventGPT:
    """A model built directly on `device` in `dtype` (eval mode), never on the CPU first.
    init=True: random weights (transformers' init, run on the device: use it for 7B-shaped timing
    runs on a GPU; on a CPU it takes minutes at 7B); init=False: parameters left uninitialised,
    to load weights into (may hold NaN); device='meta' gives shapes only.
    Non-persistent buffers (RoPE inv_freq in fp32, CLIP position ids) are always computed."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers
        from transformers.modeling_utils import no_init_weights
    with torch.device(device), _default_dtype(dtype), (nullcontext() if init else no_init_weights()):
        model = EventGPT(cfg)
    return model.eval()


# ----------------------------------------------------------------------------- features
def spatio_temporal_pool(features: torch.Tensor) -> torch.Tensor:
    """(T, N, D) -> (T + N, D): T per-frame means over tokens, then N per-token means over frames."""
    return torch.cat([features.mean(dim=1), features.mean(dim=0)], dim=0)


def get_event_features(model: EventGPT, pixel_values: torch.Tensor) -> torch.Tensor:
    """Event images (T, 3, S, S), CLIP-normalised -> pooled event features (T + N, D)."""
    if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
        raise ValueError(f"pixel_values must be (T, 3, S, S), got {tuple(pixel_values.shape)}")
    p = model.visual_projector[0].weight
    hidden = model.vision_tower(pixel_values=pixel_values.to(p.device, p.dtype)).last_hidden_state  # (T, N, Dv)
    feats = model.feature_adaptor(model.visual_projector(hidden))     # (T, N, D): the adaptor, once
    return spatio_temporal_pool(feats)                                 # (T + N, D)


# ----------------------------------------------------------------------------- prompt
def prompt_ids(tokenizer, question: str) -> list[int]:
    """[BOS] part0 -200 part1 for `{SYS} USER: <ev_start><event><ev_end>\\n{question} ASSISTANT:`;
    each part is tokenized alone (as EventGPT's tokenizer_event_token does)."""
    if EVENT_TOKEN in question:
        raise ValueError(f"the question must not contain {EVENT_TOKEN}: {question!r}")
    text = f"{DRAFT_SYSTEM} USER: {EV_START}{EVENT_TOKEN}{EV_END}\n{question} ASSISTANT:"
    part0, part1 = (tokenizer(s, add_special_tokens=False)["input_ids"] for s in text.split(EVENT_TOKEN))
    return [tokenizer.bos_token_id, *part0, EVENT_TOKEN_INDEX, *part1]


def embed_prompt(model: EventGPT, ids: list[int], event_features: torch.Tensor) -> torch.Tensor:
    """inputs_embeds (1, L, D): the ids' embeddings with the one -200 replaced by all rows of
    event_features (F, D), so L = len(ids) - 1 + F."""
    if list(ids).count(EVENT_TOKEN_INDEX) != 1:
        raise ValueError(f"ids must hold exactly one {EVENT_TOKEN_INDEX} placeholder, found "
                         f"{list(ids).count(EVENT_TOKEN_INDEX)} (build them with prompt_ids)")
    emb = model.language_model.get_input_embeddings()
    if event_features.ndim != 2 or event_features.shape[1] != emb.embedding_dim:
        raise ValueError(f"event_features must be (F, {emb.embedding_dim}), got {tuple(event_features.shape)}")
    k = list(ids).index(EVENT_TOKEN_INDEX)
    ids_t = torch.tensor(list(ids), device=emb.weight.device)
    before, after = emb(ids_t[:k]), emb(ids_t[k + 1:])                 # (k, D), (L0 - k - 1, D)
    return torch.cat([before, event_features.to(before), after]).unsqueeze(0)   # (1, L, D)


@torch.no_grad()
def generate_greedy(model: EventGPT, tokenizer, event_pixels: torch.Tensor, question: str,
                    max_new_tokens: int = 50, eos_token_id: int | None = None) -> tuple[list[int], str]:
    """Greedy reference decode (eager, HF cache) of event_pixels (T, 3, S, S) and a question.
    Returns (ids, text): the generated ids, the eos last when reached (as HF generate returns
    them), at most max_new_tokens; and their text without special tokens."""
    eos = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
    lm = model.language_model
    embeds = embed_prompt(model, prompt_ids(tokenizer, question), get_event_features(model, event_pixels))
    out = lm(inputs_embeds=embeds, use_cache=True, logits_to_keep=1)
    cache, token = _out_cache(out), out.logits[:, -1].argmax(-1)       # (1,)
    ids = [int(token)]
    while ids[-1] != eos and len(ids) < max_new_tokens:
        logits, cache = decode_tokens(lm, token.view(1, 1), cache)
        token = logits[:, -1].argmax(-1)
        ids.append(int(token))
    return ids, tokenizer.decode(ids, skip_special_tokens=True).strip()


# ----------------------------------------------------------------------------- checkpoint
# The official key set (eventgpt_model.md section 2), written out; `.weight` only for the LLM.
LLM_LAYER_KEYS = tuple(f"{m}.weight" for m in (
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "input_layernorm", "post_attention_layernorm"))
CLIP_TOP_KEYS = ("embeddings.class_embedding", "embeddings.patch_embedding.weight",
                 "embeddings.position_embedding.weight", "pre_layrnorm.weight", "pre_layrnorm.bias",
                 "post_layernorm.weight", "post_layernorm.bias")
CLIP_LAYER_KEYS = tuple(f"{m}.{w}" for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                             "self_attn.out_proj", "layer_norm1", "mlp.fc1", "mlp.fc2",
                                             "layer_norm2") for w in ("weight", "bias"))
VISION_PREFIX = "model.visual_tower.visual_tower.vision_model."
IGNORED_SUFFIXES = ("rotary_emb.inv_freq", "embeddings.position_ids")  # buffers older transformers saved


def expected_keys(cfg: EventGPTConfig, vision: bool = True) -> list[str]:
    """The official checkpoint's parameter names for these sizes (vision=False: no tower)."""
    keys = ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"]
    keys += [f"model.layers.{i}.{k}" for i in range(cfg.layers) for k in LLM_LAYER_KEYS]
    keys += [f"model.visual_projector.{i}.{w}" for i in (0, 2) for w in ("weight", "bias")]
    keys += ["model.feature_adaptor.weight", "model.feature_adaptor.bias"]
    if vision:
        keys += [VISION_PREFIX + k for k in CLIP_TOP_KEYS]
        keys += [f"{VISION_PREFIX}encoder.layers.{i}.{k}" for i in range(cfg.vision_layers) for k in CLIP_LAYER_KEYS]
    return keys


def _prefixes(model: EventGPT) -> tuple[tuple[str, str], ...]:
    """Official prefix -> ours, most specific first. CLIPVisionModel nests its modules under
    `vision_model.` in transformers < 5.2x and holds them directly in later versions."""
    tower = "vision_tower.vision_model." if hasattr(model.vision_tower, "vision_model") else "vision_tower."
    return ((VISION_PREFIX, tower), ("model.visual_projector.", "visual_projector."),
            ("model.feature_adaptor.", "feature_adaptor."), ("model.", "language_model.model."),
            ("lm_head.", "language_model.lm_head."))


def _rename(name: str, table) -> str:
    for a, b in table:
        if name.startswith(a):
            return b + name[len(a):]
    return name


def module_key(official: str, model: EventGPT) -> str:
    """Official checkpoint name -> the name in our model's state_dict."""
    return _rename(official, _prefixes(model))


def official_state_dict(model: EventGPT) -> dict[str, torch.Tensor]:
    """Our weights under the official names (to write checkpoints in the official layout)."""
    back = tuple((b, a) for a, b in _prefixes(model))
    return {_rename(k, back): v for k, v in model.state_dict().items()}


def save_eventgpt(model: EventGPT, folder: str | Path, tokenizer=None) -> Path:
    """Write `model` as a checkpoint folder in the official layout that `load_eventgpt` reads:
    model.safetensors under the official key names, config.json (the LLM's sizes at the top
    level as LLaVA writes them, the tower's under vision_config) and, if given, the tokenizer."""
    from safetensors.torch import save_file
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in official_state_dict(model).items()}, str(folder / "model.safetensors"))
    c = model.config
    (folder / "config.json").write_text(json.dumps({
        "model_type": "EventChat_llama", "hidden_size": c.hidden, "num_hidden_layers": c.layers,
        "num_attention_heads": c.heads, "num_key_value_heads": c.kv_heads, "intermediate_size": c.intermediate,
        "vocab_size": c.vocab, "rms_norm_eps": c.rms_eps, "rope_theta": c.rope_theta,
        "max_position_embeddings": c.max_positions,
        "vision_config": {"hidden_size": c.vision_hidden, "num_hidden_layers": c.vision_layers,
                          "num_attention_heads": c.vision_heads, "intermediate_size": c.vision_intermediate,
                          "image_size": c.image_size, "patch_size": c.patch_size}}, indent=1))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))
    return folder


def checkpoint_files(path: str | Path) -> list[Path]:
    """Weight files of a LOCAL checkpoint folder: the shards an index json names, else every
    *.safetensors, else pytorch_model*.bin (safetensors preferred)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"EventGPT checkpoint folder not found: {path} (pass a local folder with "
                                f"*.safetensors or pytorch_model*.bin; nothing is downloaded)")
    for index, pattern in (("model.safetensors.index.json", "*.safetensors"),
                           ("pytorch_model.bin.index.json", "pytorch_model*.bin")):
        if (path / index).exists():
            files = sorted({path / f for f in json.loads((path / index).read_text())["weight_map"].values()})
            missing = [f.name for f in files if not f.exists()]
            if missing:
                raise FileNotFoundError(f"{path / index} names shards that are absent: {missing}")
            return files
        if files := sorted(path.glob(pattern)):
            return files
    raise FileNotFoundError(f"no *.safetensors or pytorch_model*.bin in {path}; it holds "
                            f"{sorted(p.name for p in path.iterdir())[:20]}")


def _read(file: Path, shapes_only: bool = False) -> dict:
    if file.suffix == ".safetensors":
        from safetensors import safe_open
        with safe_open(str(file), "pt") as f:
            return {k: (tuple(f.get_slice(k).get_shape()) if shapes_only else f.get_tensor(k)) for k in f.keys()}
    sd = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    return {k: tuple(v.shape) for k, v in sd.items()} if shapes_only else sd


def _check_keys(path, shapes: dict, model: EventGPT, vision: bool) -> None:
    shapes = {k: s for k, s in shapes.items() if not k.endswith(IGNORED_SUFFIXES)}
    want = expected_keys(model.config, vision)
    missing, extra = sorted(set(want) - set(shapes)), sorted(set(shapes) - set(want))
    ours = {k: tuple(v.shape) for k, v in official_state_dict(model).items()}
    wrong = [f"{k}: file {shapes[k]} vs model {ours[k]}" for k in sorted(set(want) & set(shapes)) if ours[k] != shapes[k]]
    if not (missing or extra or wrong):
        return
    hint = ("clip_path=<local CLIP ViT-L/14-336 folder> (the checkpoint has no vision tower)"
            if vision and all(k.startswith(VISION_PREFIX) for k in missing) else
            "cfg=EventGPTConfig(...) with this checkpoint's sizes (layers, vocab, ...), or the complete folder")
    raise KeyError(f"{path} does not match EventGPT's official layout (eventgpt_model.md section 2):\n"
                   f"  missing {len(missing)}: {missing[:20]}\n  unexpected {len(extra)}: {extra[:20]}\n"
                   f"  shape mismatches {len(wrong)}: {wrong[:20]}\nPass {hint}.")


def config_from_checkpoint(path: str | Path) -> EventGPTConfig:
    """EventGPTConfig.seven_b() with the sizes of the folder's config.json, when it has one: the
    LLM's from its top level (LLaVA's layout), the vision tower's from a `vision_config` dict
    when present (else CLIP ViT-L/14-336's)."""
    cfg, file = EventGPTConfig.seven_b(), Path(path) / "config.json"
    if file.exists():
        llm = {"hidden_size": "hidden", "num_hidden_layers": "layers", "num_attention_heads": "heads",
               "num_key_value_heads": "kv_heads", "intermediate_size": "intermediate", "vocab_size": "vocab",
               "rms_norm_eps": "rms_eps", "rope_theta": "rope_theta", "max_position_embeddings": "max_positions"}
        vision = {"hidden_size": "vision_hidden", "num_hidden_layers": "vision_layers",
                  "num_attention_heads": "vision_heads", "intermediate_size": "vision_intermediate",
                  "image_size": "image_size", "patch_size": "patch_size"}
        hf = json.loads(file.read_text())
        for d, names in ((hf, llm), (hf.get("vision_config") or {}, vision)):
            for hf_name, ours in names.items():
                if d.get(hf_name) is not None:
                    setattr(cfg, ours, type(getattr(cfg, ours))(d[hf_name]))
    return cfg


def load_eventgpt(path: str | Path, cfg: EventGPTConfig | None = None, device="cpu",
                  dtype: torch.dtype = torch.bfloat16, clip_path: str | Path | None = None) -> EventGPT:
    """EventGPT from a LOCAL folder in the official layout (never a hub), built on `device` in
    `dtype` and filled shard by shard. cfg: default `config_from_checkpoint(path)`. clip_path: a
    local CLIPVisionModel folder for the tower when the checkpoint does not carry it.
    Mismatched keys or shapes raise KeyError listing them."""
    files = checkpoint_files(path)
    cfg = cfg or config_from_checkpoint(path)
    model = build_eventgpt(cfg, device=device, dtype=dtype, init=False)
    shapes = {k: s for f in files for k, s in _read(f, shapes_only=True).items()}
    _check_keys(path, shapes, model, vision=clip_path is None)
    for f in files:
        sd = {module_key(k, model): v for k, v in _read(f).items() if not k.endswith(IGNORED_SUFFIXES)}
        model.load_state_dict(sd, strict=False)                        # completeness checked above
        del sd
    if clip_path is not None:
        from transformers import CLIPVisionModel
        if not Path(clip_path).is_dir():
            raise FileNotFoundError(f"CLIP vision folder not found: {clip_path}")
        tower = CLIPVisionModel.from_pretrained(str(clip_path), local_files_only=True)
        model.vision_tower.load_state_dict(tower.state_dict())
    return model.eval()

