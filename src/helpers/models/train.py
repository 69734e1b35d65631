"""Training and shipping the two small VLMs of `helpers.models.vlm`.

An example is `(pixel_input, question, answer)`: pixel_input is an event image (H, W, 3) /
stack (T, H, W, 3) uint8 for the draft, or frames (F, H, W, 3) uint8 for the target. The loss is
the teacher-forced LM loss on the answer tokens (+ eos) only; the prompt and the visual tokens
are masked with -100.
"""
from __future__ import annotations

import copy
import datetime
import json
import math
import os
import subprocess
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from helpers.models import vlm
from helpers.suite.paths import REPO_ROOT


@dataclass
class TrainConfig:
    lr: float = 2e-3            # tiny models from scratch tolerate a high peak LR
    min_lr_ratio: float = 0.05  # cosine decays to lr * min_lr_ratio
    warmup_frac: float = 0.05   # linear warm-up over this fraction of all steps
    weight_decay: float = 0.01
    batch_size: int = 16
    max_epochs: int = 20
    patience: int = 3           # epochs without a lower validation loss before stopping
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "auto"        # "auto": cuda when available, else cpu
    bf16_autocast: bool = True  # on CUDA only; CPU trains in fp32
    progress: bool = True       # tqdm bars
    cpu_threads: int = 0        # >0: torch.set_num_threads for training (tiny models: 1 is often
                                # fastest; 2 threads collapse when another process holds a core)
    time_budget_s: float = 0.0  # >0: after epoch 0, max_epochs is lowered so that training ends
                                # within this budget; the cosine schedule is stretched to match
    aux_weight: float = 0.0     # >0 (with `labels`): add this times a multi-label loss that predicts
                                # the clip's facts from the mean visual embedding (a direct signal
                                # for the vision tower, which the caption loss alone barely trains)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise KeyError(f"unknown TrainConfig keys: {sorted(unknown)}")
        return cls(**d)


def resolve_device(device: str) -> torch.device:
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)


# ----------------------------------------------------------------------------- data
def load_examples(entries, kind: str, n_frames: int = 8) -> list[tuple[np.ndarray, str, str]]:
    """Manifest entries (helpers.world.dataset.load_manifest) -> (pixel_input, question, answer).

    draft: event image(s) as (H, W, 3) (one chunk) or (T, H, W, 3), answer = draft_answer;
    target: n_frames sampled frames (F, H, W, 3) from the clip's mp4, answer = target_answer.
    Pixels are read once per clip and shared by its questions.
    """
    from PIL import Image

    from helpers.world.video import sample_frames

    cache: dict = {}
    out = []
    for e in entries:
        if e["clip_id"] not in cache:
            if kind == "draft":
                imgs = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in e["event_image_paths"]])
                cache[e["clip_id"]] = imgs[0] if len(imgs) == 1 else imgs
            elif kind == "target":
                cache[e["clip_id"]] = sample_frames(e["video_path"], n_frames)
            else:
                raise KeyError(f"kind must be 'draft' or 'target', not {kind!r}")
        out.append((cache[e["clip_id"]], e["query"], e[f"{kind}_answer"]))
    return out


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
    pixels = torch.stack([pixels_cache[i].float() if pixels_cache else vlm.pixel_tensor(model, examples[i][0])
                          for i in idx])
    if vlm.model_kind(model) == "target":
        pixels = pixels.squeeze(1)  # (B, F, 3, S, S)
    else:
        pixels = pixels.flatten(0, 1)  # (B * n_images, 3, S, S)
    return dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels,
                **vlm.pixel_kwargs(model, pixels))


def _loss(model, batch, device, autocast: bool) -> tuple[torch.Tensor, int]:
    batch = {k: v.to(device) for k, v in batch.items()}
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        loss = model(**batch).loss  # mean over answer tokens
    return loss, int((batch["labels"] != -100).sum())


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
        batch = collate(model, tokenizer, examples, tokenized, idx, pixels_cache)
        loss, n = _loss(model, batch, device, autocast)
        total, n_tokens = total + float(loss) * n, n_tokens + n
    return total / max(n_tokens, 1)


# ----------------------------------------------------------------------------- training
def _aux_loss(model, head, batch, targets, device, autocast: bool) -> torch.Tensor:
    """BCE of head(mean visual embedding per example) against multi-hot targets (B, L)."""
    import torch.nn.functional as F
    pixels = batch["pixel_values_videos" if vlm.model_kind(model) == "target" else "pixel_values"].to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        feats = vlm.visual_embeddings(model, pixels)  # (B * n_visual, D)
        pooled = feats.view(targets.shape[0], -1, feats.shape[-1]).mean(1)  # (B, D)
        logits = head(pooled)  # (B, L)
    return F.binary_cross_entropy_with_logits(logits.float(), targets.to(device))


def train_vlm(model, tokenizer, examples, val_examples, cfg: TrainConfig, labels=None) -> dict:
    """AdamW + warm-up/cosine per step, early stopping on validation loss; the best epoch's
    weights are restored into `model`. Returns the history (per-epoch losses, throughput).
    labels: optional (N, L) multi-hot facts per training example, used when cfg.aux_weight > 0
    by a linear head that is discarded after training."""
    from tqdm.auto import tqdm

    device = resolve_device(cfg.device)
    if cfg.cpu_threads > 0:
        torch.set_num_threads(cfg.cpu_threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model.to(device)
    tokenized = tokenize_examples(model, tokenizer, examples)
    val_tokenized = tokenize_examples(model, tokenizer, val_examples)
    pixels, val_pixels = prepare_pixels(model, examples), prepare_pixels(model, val_examples)
    steps_per_epoch = math.ceil(len(examples) / cfg.batch_size)
    max_epochs = cfg.max_epochs  # may be lowered after epoch 0 by cfg.time_budget_s
    warmup = max(1, int(cfg.warmup_frac * steps_per_epoch * cfg.max_epochs))

    def lr_factor(step: int) -> float:
        total_steps = steps_per_epoch * max_epochs
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    aux_head, aux_targets = None, None
    if cfg.aux_weight > 0 and labels is not None:
        aux_targets = torch.as_tensor(np.asarray(labels), dtype=torch.float32)  # (N, L)
        aux_head = torch.nn.Linear(model.config.text_config.hidden_size, aux_targets.shape[1]).to(device)
    params = list(model.named_parameters()) + (list(aux_head.named_parameters()) if aux_head else [])
    decay = [p for n, p in params if p.ndim >= 2]
    no_decay = [p for n, p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    autocast = cfg.bf16_autocast and device.type == "cuda"

    history = {"epochs": [], "best_epoch": None, "best_val_loss": float("inf"), "device": str(device),
               "n_train": len(examples), "n_val": len(val_examples), "config": asdict(cfg)}
    best_state, bad_epochs, t_start = None, 0, time.perf_counter()
    epoch = 0
    while epoch < max_epochs:
        model.train()
        order = rng.permutation(len(examples))
        t0, total, n_tokens, aux_total = time.perf_counter(), 0.0, 0, 0.0
        bar = tqdm(range(steps_per_epoch), desc=f"{vlm.model_kind(model)} epoch {epoch}",
                   disable=not cfg.progress, leave=False)
        for s in bar:
            idx = order[s * cfg.batch_size:(s + 1) * cfg.batch_size].tolist()
            batch = collate(model, tokenizer, examples, tokenized, idx, pixels)
            loss, n = _loss(model, batch, device, autocast)
            lm_loss = loss
            if aux_head is not None:
                aux = _aux_loss(model, aux_head, batch, aux_targets[idx], device, autocast)
                loss = loss + cfg.aux_weight * aux
                aux_total += float(aux.detach()) * len(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for _, p in params], cfg.grad_clip)
            opt.step()
            sched.step()
            total, n_tokens = total + float(lm_loss.detach()) * n, n_tokens + n
            bar.set_postfix(loss=f"{float(lm_loss.detach()):.3f}")
        train_s = time.perf_counter() - t0
        val_loss = evaluate_loss(model, tokenizer, val_examples, cfg, val_tokenized, val_pixels) if val_examples else float("nan")
        row = {"epoch": epoch, "train_loss": total / max(n_tokens, 1), "val_loss": val_loss,
               "lr": opt.param_groups[0]["lr"], "train_s": train_s,
               "examples_per_s": len(examples) / train_s}
        if aux_head is not None:
            row["aux_loss"] = aux_total / len(examples)
        history["epochs"].append(row)
        if epoch <= 1 and cfg.time_budget_s > 0:  # epoch 0 runs slow (warm-up): look again after epoch 1
            elapsed_s = time.perf_counter() - t_start
            last_epoch_s = time.perf_counter() - t0  # train + validation
            more = int(max(0.0, cfg.time_budget_s - elapsed_s) // last_epoch_s)
            max_epochs = max(epoch + 1, min(cfg.max_epochs, epoch + 1 + more))
            history["max_epochs_in_budget"] = max_epochs
        if cfg.progress:
            print(f"{vlm.model_kind(model)} epoch {epoch}: train {row['train_loss']:.4f} "
                  f"val {val_loss:.4f} ({row['examples_per_s']:.1f} ex/s)")
        if not val_examples or val_loss < history["best_val_loss"]:
            history["best_epoch"], history["best_val_loss"] = epoch, val_loss
            best_state, bad_epochs = copy.deepcopy(model.state_dict()), 0
        else:
            bad_epochs += 1
            if bad_epochs >= cfg.patience:
                break
        epoch += 1
    model.load_state_dict(best_state)
    model.eval()
    history["train_s"] = time.perf_counter() - t_start
    return history


# ----------------------------------------------------------------------------- shipping
def param_counts(model) -> dict:
    """Parameters per component (Video-LLaVA carries an unused image tower too)."""
    counts = {name: sum(p.numel() for p in mod.parameters()) for name, mod in model.model.named_children()}
    counts["lm_head"] = sum(p.numel() for p in model.lm_head.parameters())
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        # a copy of the tree without .git (the GPU machine): the caller may pass the commit
        return os.environ.get("HELPERS_GIT_COMMIT", "unknown")


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
        git_commit=git_commit(), date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        versions={"torch": torch.__version__, "transformers": transformers.__version__},
    )
    (out / "manifest.json").write_text(json.dumps(full, indent=2, sort_keys=True, default=str))
    return out


def read_manifest(path) -> dict:
    return json.loads((Path(path) / "manifest.json").read_text())
