"""The draft model running concurrently with the target: what the drafter can see, and when.

`DraftStream` runs the draft model's batched greedy generation in a background thread, on its own
GPU (a second card) or its own CUDA stream of the target's card, and publishes every row's tokens
as they come out, with timestamps. The SD engine's `visible_draft(row)` reads what exists at that
moment: the availability timeline is measured, not assumed. Waiting for the GPU is done through
stream synchronisation, which releases Python's lock, so the two loops do not serialise.
"""
from __future__ import annotations

import threading
import time
from contextlib import nullcontext
from typing import Sequence

import torch

from helpers.models.backend import Backend


class DraftStream:
    def __init__(self, backend: Backend, pixel_inputs: Sequence, questions: Sequence[str], max_new_tokens: int = 50,
                 stream: torch.cuda.Stream | None = None):
        self.backend, self.pixels, self.questions = backend, list(pixel_inputs), list(questions)
        self.max_new_tokens = max_new_tokens
        self.stream = stream if stream is not None or backend.device.type != "cuda" else torch.cuda.Stream(backend.device)
        self.tokens: list[list[int]] = [[] for _ in questions]
        self.times_ms: list[float] = []            # when each decode step's tokens became visible (from start)
        self.error: BaseException | None = None
        self._t0 = 0.0
        self._thread: threading.Thread | None = None

    def _sync(self) -> None:
        if self.backend.device.type == "cuda":
            torch.cuda.current_stream(self.backend.device).synchronize()   # releases the GIL while waiting

    def _run(self) -> None:
        try:
            ctx = torch.cuda.stream(self.stream) if self.stream is not None else nullcontext()
            dev = torch.cuda.device(self.backend.device) if self.backend.device.type == "cuda" else nullcontext()
            with dev, ctx, torch.no_grad():
                be, n = self.backend, len(self.questions)
                visual = be.encode(self.pixels)
                tok = be.prefill(self.questions, visual, [be.adapter.n_items(p) for p in self.pixels]).argmax(-1)
                done = [False] * n
                while True:
                    self._sync()
                    now = tok[:n].tolist()
                    for b in range(n):
                        if not done[b]:
                            self.tokens[b].append(now[b])          # list.append is atomic: readers see a prefix
                            done[b] = now[b] == be.eos or len(self.tokens[b]) >= self.max_new_tokens
                    self.times_ms.append((time.perf_counter() - self._t0) * 1e3)
                    if all(done):
                        break
                    tok = be.decoder.decode(tok).argmax(-1)
        except BaseException as e:                                 # re-raised by join()
            self.error = e

    def start(self) -> "DraftStream":
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def visible(self, row: int) -> list[int]:
        """The row's draft tokens that exist now (a snapshot)."""
        return list(self.tokens[row])

    def join(self) -> "DraftStream":
        if self._thread is not None:
            self._thread.join()
        if self.error is not None:
            raise self.error
        return self
