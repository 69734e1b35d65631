"""One training loop for the neural drafters: validation picks the checkpoint and stops early.

The test split never enters here. Loss: cross-entropy with label smoothing over non-ignored
positions; AdamW; cosine decay per batch; gradient clipping — the seed study's recipe.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

IGNORE = -100  # label value that takes no part in loss or accuracy
MISS = -101    # a label the model cannot output (outside its output vocabulary): no loss, counts as wrong

Batch = tuple[tuple[torch.Tensor, ...], torch.Tensor]  # (model inputs, labels (B, T))


@dataclass
class TrainConfig:
    epochs: int = 50              # upper bound; early stopping usually ends sooner
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.01
    label_smoothing: float = 0.1
    grad_clip: float = 1.0        # max global grad norm
    patience: int = 10            # epochs without a better validation token match before stopping
    seed: int = 0
    device: str = "cpu"           # "cpu", "cuda" or "auto"
    max_minutes: float = 0.0      # wall-clock budget (0 = none); stops after the epoch that crosses it


@dataclass
class History:
    config: dict
    epochs: list[dict] = field(default_factory=list)  # epoch, train_loss, val_loss, val_token_match, seconds
    best_epoch: int = -1
    best_val_token_match: float = float("nan")
    stop_reason: str = ""
    train_seconds: float = 0.0
    n_params: int = 0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _score(model: nn.Module, batches: Iterable[Batch], loss_fn, device) -> tuple[float, float]:
    """(mean loss, top-1 accuracy) over non-ignored label positions."""
    model.eval()
    loss_sum, n_loss, hits, n = 0.0, 0, 0, 0
    with torch.no_grad():
        for inputs, labels in batches:
            inputs = tuple(x.to(device) for x in inputs)
            labels = labels.to(device)
            logits = model(*inputs)                                  # (B, T, V)
            mask = labels != IGNORE
            scorable = labels.masked_fill(labels == MISS, IGNORE)
            n_scorable = int((scorable != IGNORE).sum())
            if n_scorable:
                loss_sum += loss_fn(logits.flatten(0, 1), scorable.flatten()).item() * n_scorable
                n_loss += n_scorable
            hits += int(((logits.argmax(-1) == labels) & mask).sum())
            n += int(mask.sum())
    return loss_sum / max(n_loss, 1), hits / max(n, 1)


def fit(model: nn.Module, make_batches: Callable[[Sequence, bool, np.random.Generator], list[Batch]],
        train: Sequence, val: Sequence, cfg: TrainConfig, desc: str = "train") -> History:
    """Train `model` in place; on return it holds the best-validation weights."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = resolve_device(cfg.device)
    model.to(device)
    hist = History(config=asdict(cfg), n_params=sum(p.numel() for p in model.parameters()))
    val_batches = make_batches(val, False, rng)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total_steps = max(1, cfg.epochs * steps_per_epoch)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))
    loss_fn = nn.CrossEntropyLoss(ignore_index=IGNORE, label_smoothing=cfg.label_smoothing)
    eval_loss = nn.CrossEntropyLoss(ignore_index=IGNORE)
    best_state, bad_epochs, t0 = None, 0, time.perf_counter()
    bar = tqdm(range(cfg.epochs), desc=desc, unit="epoch")
    for epoch in bar:
        te = time.perf_counter()
        model.train()
        losses = []
        for inputs, labels in make_batches(train, True, rng):
            inputs = tuple(x.to(device) for x in inputs)
            logits = model(*inputs)                                   # (B, T, V)
            loss = loss_fn(logits.flatten(0, 1), labels.to(device).flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            losses.append(loss.item())
        val_loss, val_acc = _score(model, val_batches, eval_loss, device)
        hist.epochs.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)),
                            "val_loss": val_loss, "val_token_match": val_acc,
                            "seconds": time.perf_counter() - te})
        bar.set_postfix(train_loss=f"{np.mean(losses):.3f}", val_acc=f"{val_acc:.3f}")
        if not val_acc <= hist.best_val_token_match:  # also true for the first epoch (NaN)
            hist.best_epoch, hist.best_val_token_match = epoch + 1, val_acc
            best_state, bad_epochs = copy.deepcopy(model.state_dict()), 0
        else:
            bad_epochs += 1
        if bad_epochs >= cfg.patience:
            hist.stop_reason = f"no validation improvement for {cfg.patience} epochs"
            break
        if cfg.max_minutes and time.perf_counter() - t0 > 60 * cfg.max_minutes:
            hist.stop_reason = f"time budget of {cfg.max_minutes} min reached"
            break
    else:
        hist.stop_reason = f"all {cfg.epochs} epochs run"
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    hist.train_seconds = time.perf_counter() - t0
    model.eval()
    return hist


def pad_batch(seqs: Sequence[Sequence[int]], pad: int, length: int | None = None) -> torch.Tensor:
    """(B, T) long tensor, right-padded with `pad` (T = longest, or `length`)."""
    T = length or max(len(s) for s in seqs)
    out = torch.full((len(seqs), T), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        s = list(s)[:T]
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def chunks(items: Sequence, size: int, shuffle: bool, rng: np.random.Generator) -> list[list]:
    order = rng.permutation(len(items)) if shuffle else np.arange(len(items))
    return [[items[j] for j in order[i: i + size]] for i in range(0, len(items), size)]
