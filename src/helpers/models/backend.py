"""One backend interface for every model of the suite: what inference and the SD engine need.

A `Backend` holds one vision-language model (the synthetic world's LLaVA draft or Video-LLaVA
target, the 7B Video-LLaVA checkpoint, EventGPT) and a `StaticDecoder` over its language
model, and offers, batched over B rows:

    encode(pixel_inputs)          vision tower + projector: visual embeddings per input
    prefill(questions, visual)    prompts into the KV cache -> logits of each row's last prompt token (B, V)
    decode(tokens) / verify(tokens) / verify_tree(...) / lengths    see helpers.models.decoder

`generate(backend, inputs, questions, max_new_tokens)` is batched greedy generation on these
primitives (per-row EOS, per-stage timings, CUDA-synchronized); the SD engine (helpers.spec)
uses the same primitives. Model families differ only in an `Adapter`: how pixels are
prepared, how the prompt is written and where the visual features go.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from helpers.models import vlm
from helpers.models.decoder import StaticDecoder


@dataclass
class Adapter:
    """How one model family turns (pixels, question) into the language model's input embeddings."""
    pixels: Callable[[np.ndarray], torch.Tensor]                 # uint8 input -> the vision tower's input for one row
    features: Callable[[torch.Tensor], torch.Tensor]            # rows' pixels stacked (B, ...) -> (B * N, D), rows in order
    prompt_ids: Callable[[str, int], list[int]]                  # question, items -> ids with one placeholder per visual row
    placeholder: int                                             # the id the visual rows replace
    n_items: Callable[[np.ndarray], int]                         # images or frames in one input


def hf_adapter(model, tokenizer, video_processor=None) -> Adapter:
    """LLaVA (the event-image draft) or Video-LLaVA (the video target) from transformers.
    video_processor: the checkpoint's own (VideoLlavaVideoProcessor) for the target's frames; None:
    the same CLIP steps computed by helpers.models.vlm.preprocess_pixels."""
    kind = vlm.model_kind(model)
    c = model.config

    def pixels(x):
        if kind == "target" and video_processor is not None:
            return video_processor(videos=[x], return_tensors="pt")["pixel_values_videos"][0].to(model.device)
        return vlm.pixel_tensor(model, x, model.device)[0] if kind == "target" else vlm.pixel_tensor(model, x, model.device)

    return Adapter(
        pixels=pixels,
        # target rows (B, F, 3, S, S) go in whole; draft rows (B, n, 3, S, S) as B * n images
        features=lambda x: vlm.visual_embeddings(model, x if kind == "target" else x.flatten(0, 1)),
        prompt_ids=lambda q, n: vlm.prompt_ids(model, tokenizer, q, n),
        placeholder=c.video_token_index if kind == "target" else c.image_token_index,
        n_items=lambda x: vlm.n_pixel_items(model, x),
    )


def eventgpt_adapter(model, tokenizer) -> Adapter:
    """EventGPT (helpers.models.eventgpt): event images at 336 px, its own prompt, the pooled
    event features (T + 577 rows) in place of the <event> placeholder."""
    from helpers.models import eventgpt
    device = next(model.parameters()).device
    size, n_vision = model.config.image_size, model.config.n_vision_tokens

    def prompt_ids(question: str, n_items: int) -> list[int]:
        ids = eventgpt.prompt_ids(tokenizer, question)
        k = ids.index(eventgpt.EVENT_TOKEN_INDEX)
        return ids[:k] + [eventgpt.EVENT_TOKEN_INDEX] * (n_items + n_vision) + ids[k + 1:]

    return Adapter(
        pixels=lambda x: vlm.preprocess_pixels(x if x.ndim == 4 else x[None], size, device),   # (T, 3, S, S)
        features=lambda x: torch.cat([eventgpt.get_event_features(model, row) for row in x]),  # rows (B, T, 3, S, S)
        prompt_ids=prompt_ids, placeholder=eventgpt.EVENT_TOKEN_INDEX,
        n_items=lambda x: 1 if x.ndim == 3 else x.shape[0])


class Backend:
    def __init__(self, model, tokenizer, batch: int, max_len: int, adapter: Adapter | None = None,
                 compile: bool = False, attention: str = "auto"):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.adapter = adapter or hf_adapter(model, tokenizer)
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.decoder = StaticDecoder.for_model(model, batch, max_len, attention=attention)
        if compile:
            self.decoder.compile()
        self.eos = tokenizer.eos_token_id

    @property
    def batch(self) -> int:
        return self.decoder.batch

    def sync(self) -> None:
        """Wait for this thread's stream on the model's device (releases Python's lock while waiting,
        and leaves other streams, e.g. a concurrent draft model's, running)."""
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()

    @torch.no_grad()
    def encode(self, pixel_inputs: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Visual embeddings (N_i, D) for each uint8 input (the rows of one batch)."""
        x = torch.stack([self.adapter.pixels(p) for p in pixel_inputs]).to(self.device, self.dtype)
        flat = self.adapter.features(x)                                      # (B * N, D)
        return list(flat.view(len(pixel_inputs), -1, flat.shape[-1]).unbind(0))

    def prompt(self, questions: Sequence[str], visual: Sequence[torch.Tensor],
               n_items: Sequence[int]) -> tuple[torch.Tensor, list[int]]:
        """Right-padded prompt embeddings (B, T, D) with the visual rows at the placeholders, and
        each row's real length. Rows beyond len(questions) (a short last batch) get a copy of row 0."""
        ids = [self.adapter.prompt_ids(q, n) for q, n in zip(questions, n_items)]
        ids += [ids[0]] * (self.batch - len(ids))
        visual = list(visual) + [visual[0]] * (self.batch - len(visual))
        T = max(map(len, ids))
        tok = torch.tensor([r + [self.eos] * (T - len(r)) for r in ids], device=self.device)   # (B, T)
        emb = self.decoder.embed(tok.clamp(min=0))                                            # (B, T, D)
        for b, (r, v) in enumerate(zip(ids, visual)):
            where = torch.tensor(r, device=self.device) == self.adapter.placeholder
            if int(where.sum()) != v.shape[0]:
                raise ValueError(f"row {b}: {int(where.sum())} placeholder positions for {v.shape[0]} visual rows")
            emb[b, :len(r)][where] = v.to(emb.dtype)
        return emb, [len(r) for r in ids]

    @torch.no_grad()
    def prefill(self, questions: Sequence[str], visual: Sequence[torch.Tensor], n_items: Sequence[int]) -> torch.Tensor:
        emb, n = self.prompt(questions, visual, n_items)
        return self.decoder.prefill(emb, n)


@dataclass
class Generation:
    """One row's greedy answer and what its batch cost (ms, CUDA-synchronized)."""
    ids: list[int]
    text: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    n_prompt_tokens: int = 0


def _now(backend: Backend) -> float:
    backend.sync()
    return time.perf_counter()


@torch.no_grad()
def generate(backend: Backend, pixel_inputs: Sequence[np.ndarray], questions: Sequence[str],
             max_new_tokens: int = 50) -> list[Generation]:
    """Batched greedy answers for up to `backend.batch` rows. Each row stops at its own EOS (the
    EOS is the last id, as transformers' generate returns it) or after max_new_tokens; the batch
    stops when every row has. timings_ms per row (the batch's cost, shared by its rows): vision,
    prefill (prompt forward up to the first token), decode (all later steps), decode_per_token,
    batch (rows in the batch)."""
    n = len(questions)
    if not 0 < n <= backend.batch:
        raise ValueError(f"{n} rows for a backend of {backend.batch}")
    t0 = _now(backend)
    visual = backend.encode(pixel_inputs)
    t1 = _now(backend)
    n_items = [backend.adapter.n_items(p) for p in pixel_inputs]
    logits = backend.prefill(questions, visual, n_items)
    token = logits.argmax(-1)                                                        # (B,)
    t2 = _now(backend)
    out = [[int(t)] for t in token[:n].tolist()]
    done = [r[-1] == backend.eos or max_new_tokens <= 1 for r in out]
    steps = 0
    while not all(done):
        token = backend.decoder.decode(token).argmax(-1)
        steps += 1
        for b, t in enumerate(token[:n].tolist()):
            if not done[b]:
                out[b].append(int(t))
                done[b] = t == backend.eos or len(out[b]) >= max_new_tokens
    t3 = _now(backend)
    timings = {"vision": (t1 - t0) * 1e3, "prefill": (t2 - t1) * 1e3, "decode": (t3 - t2) * 1e3,
               "decode_per_token": (t3 - t2) * 1e3 / steps if steps else float("nan"), "batch": float(n)}
    prompt_len = backend.decoder.lengths.tolist()
    return [Generation(ids, backend.tokenizer.decode(ids, skip_special_tokens=True).strip(), dict(timings),
                       int(prompt_len[b]) - steps) for b, ids in enumerate(out)]
