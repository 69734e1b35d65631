"""The one training loop of the suite (world VLMs and neural drafters), and the device resolver.

`fit` trains a model in place with AdamW (no weight decay on biases and norms), a linear
warm-up then cosine decay per step, gradient clipping, optional bf16 autocast on CUDA and a
wall-clock budget, and early stopping on a validation metric: the weights of the best
validation epoch are restored before it returns. The caller supplies three functions:

    batches(shuffle, rng) -> iterable of batches      (the training or validation set)
    step_loss(model, batch) -> (loss, n_tokens)       (mean loss of one batch)
    evaluate(model) -> {"val_loss": ..., ...}         (validation metrics, no grad)

so the loop knows nothing of what a batch holds. The test split never enters here.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

IGNORE = -100  # label value that takes no part in loss or accuracy
MISS = -101    # a label the model cannot output (outside its output vocabulary): no loss, counts as wrong


@dataclass
class TrainConfig:
    epochs: int = 50              # upper bound; early stopping usually ends sooner
    batch_size: int = 32
    lr: float = 1e-4              # peak learning rate
    weight_decay: float = 0.01    # AdamW, on weight matrices only
    warmup_frac: float = 0.0      # linear warm-up over this fraction of all steps
    min_lr_ratio: float = 0.0     # the cosine decays to lr * min_lr_ratio
    label_smoothing: float = 0.1  # token-classification losses (the drafters; the seed recipe)
    grad_clip: float = 1.0        # max global grad norm
    patience: int = 10            # epochs without a better validation metric before stopping
    seed: int = 0
    device: str = "auto"          # "auto" (cuda when present), "cpu" or "cuda"
    max_minutes: float = 0.0      # wall-clock budget (0 = none): after epochs 1 and 2 the epoch count is
                                  # re-planned to fit it, and the cosine schedule stretched to match
    bf16_autocast: bool = False   # CUDA only; CPU trains in fp32
    progress: bool = True         # tqdm bars
    cpu_threads: int = 0          # > 0: torch.set_num_threads while training

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise KeyError(f"unknown TrainConfig keys: {sorted(unknown)}")
        return cls(**d)


@dataclass
class History:
    config: dict
    monitor: str                  # the validation metric that chose the epoch
    epochs: list[dict] = field(default_factory=list)  # epoch (1-based), train_loss, validation metrics, lr, seconds
    best_epoch: int = 0           # 1-based; 0 = none
    best_value: float = float("nan")
    stop_reason: str = ""
    train_seconds: float = 0.0
    n_params: int = 0
    planned_epochs: int = 0       # after re-planning for max_minutes

    @property
    def best(self) -> dict:
        """The chosen epoch's row."""
        return self.epochs[self.best_epoch - 1] if self.best_epoch else {}


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else as torch understands it."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class ModelDevice:
    """`device` of an object that owns a torch `model`: where the model's weights are now (training
    puts them where TrainConfig.device says), before the model exists where it will be built.
    Setting it moves the model there."""

    @property
    def device(self) -> torch.device:
        model = self.__dict__.get("model")
        return next(model.parameters()).device if model is not None else self._device

    @device.setter
    def device(self, device: str | torch.device) -> None:
        self._device = resolve_device(device)
        if self.__dict__.get("model") is not None:
            self.model.to(self._device)


def _param_groups(params: Sequence[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict]:
    decay = [p for _, p in params if p.requires_grad and p.ndim >= 2]
    no_decay = [p for _, p in params if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def fit(model: nn.Module, batches: Callable[[bool, np.random.Generator], Iterable[Any]],
        step_loss: Callable[[nn.Module, Any], tuple[torch.Tensor, int]],
        evaluate: Callable[[nn.Module], dict[str, float]], cfg: TrainConfig, n_train: int,
        monitor: str = "val_loss", maximize: bool = False, desc: str = "train",
        extra_modules: Sequence[nn.Module] = ()) -> History:
    """Train `model` in place; on return it holds the best-validation weights (see module doc).

    n_train: training items (sets the steps per epoch for the schedule). extra_modules: trained
    alongside the model but not saved with it (an auxiliary head)."""
    device = resolve_device(cfg.device)
    threads = torch.get_num_threads()
    if cfg.cpu_threads > 0:
        torch.set_num_threads(cfg.cpu_threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model.to(device)
    for m in extra_modules:
        m.to(device)
    params = list(model.named_parameters()) + [p for m in extra_modules for p in m.named_parameters()]
    hist = History(config=asdict(cfg), monitor=monitor, n_params=sum(p.numel() for p in model.parameters()),
                   planned_epochs=cfg.epochs)
    steps_per_epoch = max(1, math.ceil(n_train / cfg.batch_size))
    warmup = int(cfg.warmup_frac * steps_per_epoch * cfg.epochs)

    def lr_factor(step: int) -> float:
        total = max(1, steps_per_epoch * hist.planned_epochs)
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    opt = torch.optim.AdamW(_param_groups(params, cfg.weight_decay), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    autocast = cfg.bf16_autocast and device.type == "cuda"
    better = (lambda a, b: a > b) if maximize else (lambda a, b: a < b)
    best_state, bad_epochs, t_start = None, 0, time.perf_counter()
    bar = tqdm(total=cfg.epochs, desc=desc, unit="epoch", disable=not cfg.progress)
    epoch = 0
    while epoch < hist.planned_epochs:
        t0 = time.perf_counter()
        model.train()
        for m in extra_modules:
            m.train()
        loss_sum, n_sum = 0.0, 0
        for batch in batches(True, rng):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                loss, n = step_loss(model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_([p for _, p in params], cfg.grad_clip)
            opt.step()
            sched.step()
            loss_sum, n_sum = loss_sum + float(loss.detach()) * n, n_sum + n
        train_s = time.perf_counter() - t0
        model.eval()
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            metrics = evaluate(model)
        epoch += 1
        row = {"epoch": epoch, "train_loss": loss_sum / max(n_sum, 1), **metrics,
               "lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t0,
               "items_per_s": n_train / max(train_s, 1e-9)}
        hist.epochs.append(row)
        value = metrics[monitor]
        if not hist.best_epoch or better(value, hist.best_value):
            hist.best_epoch, hist.best_value = epoch, value
            best_state, bad_epochs = copy.deepcopy(model.state_dict()), 0
        else:
            bad_epochs += 1
        bar.update(1)
        bar.set_postfix(train_loss=f"{row['train_loss']:.3f}", **{monitor: f"{value:.3f}"})
        if bad_epochs >= cfg.patience:
            hist.stop_reason = f"no validation improvement for {cfg.patience} epochs"
            break
        if cfg.max_minutes and epoch <= 2:  # epoch 1 runs slow (warm-up): plan again after epoch 2
            left_s = 60 * cfg.max_minutes - (time.perf_counter() - t_start)
            fits = int(max(0.0, left_s) // row["seconds"])
            hist.planned_epochs = max(epoch, min(cfg.epochs, epoch + fits))
    else:
        hist.stop_reason = (f"all {cfg.epochs} epochs run" if hist.planned_epochs == cfg.epochs else
                            f"time budget of {cfg.max_minutes:g} min: {hist.planned_epochs} epochs")
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    hist.train_seconds = time.perf_counter() - t_start
    torch.set_num_threads(threads)
    return hist


# --- token-classification helpers (the drafters) --------------------------------------------

def token_metrics(model: nn.Module, batches: Iterable, device: torch.device) -> dict[str, float]:
    """Validation loss (no smoothing) and top-1 accuracy over non-ignored label positions, for
    batches of ((inputs...), labels (B, T)) and a model returning logits (B, T, V)."""
    loss_fn = nn.CrossEntropyLoss(ignore_index=IGNORE)
    loss_sum, n_loss, hits, n = 0.0, 0, 0, 0
    for inputs, labels in batches:
        logits = model(*(x.to(device) for x in inputs)).float()            # (B, T, V)
        labels = labels.to(device)
        scorable = labels.masked_fill(labels == MISS, IGNORE)
        n_scorable = int((scorable != IGNORE).sum())
        if n_scorable:
            loss_sum += loss_fn(logits.flatten(0, 1), scorable.flatten()).item() * n_scorable
            n_loss += n_scorable
        mask = labels != IGNORE
        hits += int(((logits.argmax(-1) == labels) & mask).sum())
        n += int(mask.sum())
    return {"val_loss": loss_sum / max(n_loss, 1), "val_token_match": hits / max(n, 1)}


def fit_token_model(model: nn.Module, make_batches: Callable[[Sequence, bool, np.random.Generator], list],
                    train: Sequence, val: Sequence, cfg: TrainConfig, desc: str = "train") -> History:
    """`fit` for next-token drafters: cross-entropy with label smoothing, validation token match
    chooses the epoch. make_batches(items, shuffle, rng) -> [((inputs...), labels (B, T))]."""
    device = resolve_device(cfg.device)
    loss_fn = nn.CrossEntropyLoss(ignore_index=IGNORE, label_smoothing=cfg.label_smoothing)
    val_batches = make_batches(val, False, np.random.default_rng(0))

    def step_loss(m, batch):
        inputs, labels = batch
        logits = m(*(x.to(device) for x in inputs))                         # (B, T, V)
        labels = labels.to(device).masked_fill(labels.to(device) == MISS, IGNORE)
        return loss_fn(logits.flatten(0, 1).float(), labels.flatten()), int((labels != IGNORE).sum())

    return fit(model, lambda shuffle, rng: make_batches(train, shuffle, rng), step_loss,
               lambda m: token_metrics(m, val_batches, device), cfg, len(train),
               monitor="val_token_match", maximize=True, desc=desc)


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
