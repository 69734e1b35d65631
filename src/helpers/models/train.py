"""Training and shipping the two small VLMs of `helpers.models.vlm`.

An example is `(pixel_input, question, answer)`: pixel_input is an event image (H, W, 3) /
stack (T, H, W, 3) uint8 for the draft, or frames (F, H, W, 3) uint8 for the target. The loss is
the teacher-forced LM loss on the answer tokens (+ eos) only; the prompt and the visual tokens
are masked with -100.

Trained on captions alone, a tiny VLM learns the captions' language and barely trains its vision
tower, so it names objects near chance. `pretrain_vision` is an optional first stage: the tower and
projector learn to tell the facts the clip's captions name (a multi-label loss through a per-fact
attention head) before the caption stage starts; the shipped world models were made this way.
"""
from __future__ import annotations

import copy
import datetime
import json
from pathlib import Path

import numpy as np
import torch

from helpers.models import vlm
from helpers.suite.provenance import git_info
from helpers.training import History, TrainConfig, fit, resolve_device


# Defaults of the world VLMs' recipe (helpers.training.TrainConfig holds every field): tiny models
# trained from scratch tolerate a high peak learning rate; early stopping on validation loss.
VLM_DEFAULTS = dict(lr=2e-3, min_lr_ratio=0.05, warmup_frac=0.05, weight_decay=0.01, batch_size=16, epochs=20,
                    patience=3, label_smoothing=0.0, bf16_autocast=True)


def vlm_train_config(**overrides) -> TrainConfig:
    """helpers.training.TrainConfig with the VLM recipe's defaults, `overrides` on top."""
    return TrainConfig.from_dict({**VLM_DEFAULTS, **overrides})


# ----------------------------------------------------------------------------- data
def load_examples(entries, kind: str, n_frames: int = 8, workers: int = 0) -> list[tuple[np.ndarray, str, str]]:
    """Manifest entries (helpers.world.dataset.load_manifest) -> (pixel_input, question, answer).

    draft: event image(s) as (H, W, 3) (one chunk) or (T, H, W, 3), answer = draft_answer;
    target: n_frames sampled frames (F, H, W, 3) from the clip's mp4, answer = target_answer.
    Pixels are read once per clip and shared by its questions, by `workers` threads (0: one per
    core, at most 16; PNG and H.264 decoding release the GIL). On the GPU machine (32 cores) the
    target's training and validation clips loaded in 21 ms per clip in one thread (3,150 clips,
    67 s) and in 7 ms with threads (4,950 clips, 36 s).
    """
    from concurrent.futures import ThreadPoolExecutor
    import os

    from PIL import Image

    from helpers.world.video import sample_frames

    if kind not in ("draft", "target"):
        raise KeyError(f"kind must be 'draft' or 'target', not {kind!r}")

    def read(e) -> np.ndarray:
        if kind == "target":
            return sample_frames(e["video_path"], n_frames)
        imgs = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in e["event_image_paths"]])
        return imgs[0] if len(imgs) == 1 else imgs

    first: dict = {}                                                      # one entry per clip
    for e in entries:
        first.setdefault(e["clip_id"], e)
    workers = workers or min(16, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        cache = dict(zip(first, pool.map(read, first.values())))
    return [(cache[e["clip_id"]], e["query"], e[f"{kind}_answer"]) for e in entries]


# ----------------------------------------------------------------------------- batches
def tokenize_examples(model, tokenizer, examples) -> list[tuple[list[int], list[int]]]:
    """(prompt ids with expanded placeholders, answer ids + eos) per example."""
    cache: dict = {}
    out = []
    for pixel_input, question, answer in examples:
        key = (question, vlm.n_pixel_items(model, pixel_input))
        if key not in cache:
            cache[key] = vlm.prompt_ids(model, tokenizer, question, key[1])
        out.append((cache[key], vlm.answer_ids(tokenizer, answer)))
    return out


def prepare_pixels(model, examples) -> list[torch.Tensor]:
    """Preprocessed pixel tensor per example, computed once per distinct input array (the
    questions of a clip share one, see load_examples) and kept in fp16 to halve memory."""
    done: dict[int, torch.Tensor] = {}
    for pixel_input, _, _ in examples:
        if id(pixel_input) not in done:
            done[id(pixel_input)] = vlm.pixel_tensor(model, pixel_input).half()
    return [done[id(x)] for x, _, _ in examples]


def pixel_batch(model, tensors: list[torch.Tensor]) -> torch.Tensor:
    """Per-example pixel tensors (pixel_tensor's shapes) -> the batch the model's vision path takes:
    target (B, F, 3, S, S), draft (B * n_images, 3, S, S)."""
    pixels = torch.stack([t.float() for t in tensors])
    return pixels.squeeze(1) if vlm.model_kind(model) == "target" else pixels.flatten(0, 1)


def collate(model, tokenizer, examples, tokenized, idx, pixels_cache=None) -> dict:
    """Right-padded batch: input_ids/attention_mask/labels (B, T) and the pixel tensor."""
    seqs = [tokenized[i][0] + tokenized[i][1] for i in idx]
    T = max(map(len, seqs))
    input_ids = torch.full((len(idx), T), tokenizer.pad_token_id, dtype=torch.long)  # (B, T)
    labels = torch.full((len(idx), T), -100, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((len(idx), T), dtype=torch.long)  # (B, T)
    for b, i in enumerate(idx):
        p, a = tokenized[i]
        input_ids[b, :len(p) + len(a)] = torch.tensor(p + a)
        labels[b, len(p):len(p) + len(a)] = torch.tensor(a)
        attention_mask[b, :len(p) + len(a)] = 1
    pixels = pixel_batch(model, [pixels_cache[i] if pixels_cache else vlm.pixel_tensor(model, examples[i][0])
                                 for i in idx])
    return dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels,
                **vlm.pixel_kwargs(model, pixels))


def _loss(model, batch, device) -> tuple[torch.Tensor, int]:
    batch = {k: v.to(device) for k, v in batch.items()}
    return model(**batch).loss, int((batch["labels"] != -100).sum())  # mean over answer tokens


@torch.no_grad()
def evaluate_loss(model, tokenizer, examples, cfg: TrainConfig, tokenized=None, pixels_cache=None) -> float:
    """Token-weighted mean answer loss over `examples`."""
    device = resolve_device(cfg.device)
    tokenized = tokenized or tokenize_examples(model, tokenizer, examples)
    model.eval()
    total, n_tokens = 0.0, 0
    autocast = cfg.bf16_autocast and device.type == "cuda"
    for s in range(0, len(examples), cfg.batch_size):
        idx = list(range(s, min(s + cfg.batch_size, len(examples))))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss, n = _loss(model, collate(model, tokenizer, examples, tokenized, idx, pixels_cache), device)
        total, n_tokens = total + float(loss) * n, n_tokens + n
    return total / max(n_tokens, 1)


# ----------------------------------------------------------------------------- training
def _aux_loss(model, head, batch, targets, device) -> torch.Tensor:
    """BCE of head(mean visual embedding per example) against multi-hot targets (B, L)."""
    import torch.nn.functional as F
    pixels = batch["pixel_values_videos" if vlm.model_kind(model) == "target" else "pixel_values"].to(device)
    feats = vlm.visual_embeddings(model, pixels)  # (B * n_visual, D)
    pooled = feats.view(targets.shape[0], -1, feats.shape[-1]).mean(1)  # (B, D)
    return F.binary_cross_entropy_with_logits(head(pooled).float(), targets.to(device))  # head: (B, L)


class FactHead(torch.nn.Module):
    """One logit per fact from a clip's visual tokens (B, N, D): each fact attends over the tokens
    with its own query and reads them with its own direction, so a small object seen in one patch
    of one frame is not averaged away as in a mean-pooled probe."""

    def __init__(self, d: int, n_facts: int):
        super().__init__()
        self.norm = torch.nn.LayerNorm(d)
        self.query = torch.nn.Parameter(torch.randn(n_facts, d) * d ** -0.5)
        self.value = torch.nn.Parameter(torch.randn(n_facts, d) * d ** -0.5)
        self.bias = torch.nn.Parameter(torch.zeros(n_facts))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:   # (B, N, D) -> (B, L)
        x = self.norm(feats)
        att = torch.softmax(x @ self.query.T * x.shape[-1] ** -0.5, dim=1)   # (B, N, L), over tokens
        return (att * (x @ self.value.T)).sum(1) + self.bias


def fact_scores(logits: np.ndarray, labels: np.ndarray, names) -> dict[str, float]:
    """Micro F1 at p > 0.5 per fact category ('objects:car' -> 'objects') over clips."""
    pred, out = logits > 0, {}
    for cat in dict.fromkeys(n.split(":")[0] for n in names):
        cols = [i for i, n in enumerate(names) if n.startswith(cat + ":")]
        tp = float((pred[:, cols] & (labels[:, cols] > 0)).sum())
        denom = float(pred[:, cols].sum() + (labels[:, cols] > 0).sum())
        out[f"val_f1_{cat}"] = 2 * tp / denom if denom else float("nan")
    return out


def base_rate_scores(labels: np.ndarray, val_labels: np.ndarray, names) -> dict[str, float]:
    """fact_scores of a head that ignores the pixels: every validation clip gets the logit of each fact's
    training base rate, so a fact is predicted for all clips when most training clips have it and for
    none otherwise. What the vision stage's F1 must beat to show that the tower sees anything."""
    rate = np.clip(np.asarray(labels, np.float64).mean(0), 1e-6, 1 - 1e-6)           # (L,)
    logits = np.broadcast_to(np.log(rate / (1 - rate)), np.shape(val_labels))        # (C, L)
    return fact_scores(logits, np.asarray(val_labels), names)


def pretrain_vision(model, clip_pixels: list[torch.Tensor], labels: np.ndarray, val_pixels: list[torch.Tensor],
                    val_labels: np.ndarray, cfg: TrainConfig, fact_names=None) -> tuple[History, dict]:
    """Stage 1: the vision tower and projector learn to tell the clip's facts (multi-label BCE of a
    FactHead on the visual tokens the language model will read), before any caption is seen.

    clip_pixels: one pixel_tensor per training clip; labels (C, L) multi-hot (e.g. the facts its
    reference captions name: helpers.world.grounding.caption_fact_matrix). The language model's
    weights get no gradient. Returns (history, final validation scores per fact category)."""
    import torch.nn.functional as F
    device = resolve_device(cfg.device)
    y, val_y = torch.as_tensor(labels, dtype=torch.float32), torch.as_tensor(val_labels, dtype=torch.float32)
    head = FactHead(model.config.text_config.hidden_size, y.shape[1])
    names = list(fact_names) if fact_names is not None else [f"fact:{i}" for i in range(y.shape[1])]

    def logits_of(m, idx, pix):
        feats = vlm.visual_embeddings(m, pixel_batch(m, [pix[i] for i in idx]).to(device))   # (B * N, D)
        return head(feats.view(len(idx), -1, feats.shape[-1]))

    def batches(shuffle, rng):
        order = rng.permutation(len(clip_pixels)) if shuffle else np.arange(len(clip_pixels))
        for s in range(0, len(order), cfg.batch_size):
            yield order[s:s + cfg.batch_size].tolist()

    def step_loss(m, idx):
        return F.binary_cross_entropy_with_logits(logits_of(m, idx, clip_pixels).float(), y[idx].to(device)), len(idx)

    def val_logits(m):
        return torch.cat([logits_of(m, list(range(s, min(s + cfg.batch_size, len(val_pixels)))), val_pixels).float().cpu()
                          for s in range(0, len(val_pixels), cfg.batch_size)])

    def evaluate(m):
        z = val_logits(m)
        return {"val_loss": float(F.binary_cross_entropy_with_logits(z, val_y)),
                **fact_scores(z.numpy(), val_y.numpy(), names)}

    hist = fit(model, batches, step_loss, evaluate, cfg, len(clip_pixels), monitor="val_loss",
               desc=f"{vlm.model_kind(model)} vision", extra_modules=[head])
    # fit left the model at its best epoch, whose validation scores it has already computed
    return hist, {k: v for k, v in hist.best.items() if k.startswith("val_")}


def vision_modules(model) -> list[torch.nn.Module]:
    """The vision tower(s) of a draft or target model (Video-LLaVA carries an unused image tower)."""
    inner = model.model
    return [getattr(inner, n) for n in ("vision_tower", "video_tower", "image_tower") if hasattr(inner, n)]


def train_vlm(model, tokenizer, examples, val_examples, cfg: TrainConfig, labels=None,
              aux_weight: float = 0.0, pixels=None, val_pixels=None) -> History:
    """helpers.training.fit on the answer loss; validation loss chooses the epoch and stops early.
    labels: optional (N, L) multi-hot facts per training example; with aux_weight > 0 a linear head
    (discarded after training) adds aux_weight times a multi-label loss that predicts them from the
    mean visual embedding: a direct signal for the vision tower, which the caption loss barely trains."""
    device = resolve_device(cfg.device)
    tokenized = tokenize_examples(model, tokenizer, examples)
    val_tokenized = tokenize_examples(model, tokenizer, val_examples)
    pixels = pixels if pixels is not None else prepare_pixels(model, examples)
    val_pixels = val_pixels if val_pixels is not None else prepare_pixels(model, val_examples)
    head, targets = None, None
    if aux_weight > 0 and labels is not None:
        targets = torch.as_tensor(np.asarray(labels), dtype=torch.float32)  # (N, L)
        head = torch.nn.Linear(model.config.text_config.hidden_size, targets.shape[1])

    def batches(shuffle, rng):
        order = rng.permutation(len(examples)) if shuffle else np.arange(len(examples))
        for s in range(0, len(examples), cfg.batch_size):
            idx = order[s:s + cfg.batch_size].tolist()
            yield idx, collate(model, tokenizer, examples, tokenized, idx, pixels)

    def step_loss(m, item):
        idx, batch = item
        loss, n = _loss(m, batch, device)
        if head is not None:
            loss = loss + aux_weight * _aux_loss(m, head, batch, targets[idx], device)
        return loss, n

    def evaluate(m):
        if not val_examples:
            return {"val_loss": float("nan")}
        return {"val_loss": evaluate_loss(m, tokenizer, val_examples, cfg, val_tokenized, val_pixels)}

    return fit(model, batches, step_loss, evaluate, cfg, len(examples), monitor="val_loss",
               desc=f"{vlm.model_kind(model)}", extra_modules=[head] if head is not None else [])


# ----------------------------------------------------------------------------- shipping
def param_counts(model) -> dict:
    """Parameters per component (Video-LLaVA carries an unused image tower too)."""
    counts = {name: sum(p.numel() for p in mod.parameters()) for name, mod in model.model.named_children()}
    counts["lm_head"] = sum(p.numel() for p in model.lm_head.parameters())
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts


def save_shipped(model, tokenizer, out_dir, manifest: dict | None = None, dtype=torch.float16) -> Path:
    """Weights (safetensors, `dtype`), config, tokenizer and manifest.json in one folder that
    `vlm.load_pretrained(out_dir, kind)` reads back. `manifest`: how the model was made
    (seed, data parameters, epochs, losses...); sizes, versions, commit and date are added."""
    import transformers

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    copy.deepcopy(model).to("cpu", dtype).save_pretrained(out)
    tokenizer.save_pretrained(out)
    files = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.name != "manifest.json"}
    full = dict(manifest or {})
    full.update(
        kind=vlm.model_kind(model), model_class=type(model).__name__, dtype=str(dtype).replace("torch.", ""),
        param_counts=param_counts(model), n_visual_tokens_per_item=vlm.visual_tokens_per_image(model),
        vocab_size=len(tokenizer), files_bytes=files, size_on_disk_bytes=sum(files.values()),
        git_commit=git_info().get("commit") or "unknown", date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        versions={"torch": torch.__version__, "transformers": transformers.__version__},
    )
    (out / "manifest.json").write_text(json.dumps(full, indent=2, sort_keys=True, default=str))
    return out


def read_manifest(path) -> dict:
    return json.loads((Path(path) / "manifest.json").read_text())
