"""CUDA graphs for the network drafters' calls at batch 1.

A small drafter network at batch 1 is launch bound: a pass of two Transformer layers is a row of
some hundred short kernels, each waiting on the host to launch it, so on a GPU it costs about what
it costs on the CPU (measured in chapter 35). Captured once as a CUDA graph at a static shape, the
same pass is one launch. `Replay` does that for one function of tensors: its inputs are copied
into static buffers, the graph replays, and its outputs are the same static tensors every call
(read them before the next replay). Callers pad their inputs to one shape, which a
causal network allows without changing its outputs at the real positions.

Graphs exist only on CUDA; elsewhere `Replay` runs the function eagerly on the same static
buffers, so the padded path is tested on the CPU and the capture on a GPU
(tests/test_graphs.py runs both where it can).
"""
from __future__ import annotations

import warnings
from typing import Callable, Sequence

import torch


def wanted(device: torch.device | str, enabled: bool = True) -> bool:
    """Whether a drafter on `device` replays its calls as CUDA graphs."""
    return bool(enabled) and torch.device(device).type == "cuda" and torch.cuda.is_available()


class Replay:
    """fn(*inputs) -> tensor or tuple of tensors, at the shapes of `examples`, replayed as a CUDA
    graph when `graph` is set (the inputs must then live on one CUDA device), else run eagerly on
    the same static buffers. A capture that fails, or inputs off the GPU, fall back to eager with a
    warning (`error`). Called with no inputs, it runs again on what its buffers hold (fn may write
    into them: a decode loop's next token). `outputs`: the last call's result."""

    def __init__(self, fn: Callable, examples: Sequence[torch.Tensor], graph: bool = True, warmup: int = 2):
        self.fn, self.inputs = fn, [x.clone() for x in examples]
        self.graph, self.error, self.outputs = None, None, None
        if not graph:
            return
        if not all(x.is_cuda for x in self.inputs):   # captured from host tensors, a graph is empty: it would replay nothing
            self.error = "inputs not on a CUDA device"
            warnings.warn(f"CUDA graph capture skipped, running eagerly: {self.error}", RuntimeWarning)
            return
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):        # first calls outside the graph: lazy inits, autotuning
                for _ in range(warmup):
                    fn(*self.inputs)
            torch.cuda.current_stream().wait_stream(side)
            g = torch.cuda.CUDAGraph()
            # thread_local: other threads (the engine's concurrently generating draft model) keep launching
            with torch.cuda.graph(g, capture_error_mode="thread_local"):
                self.outputs = fn(*self.inputs)
            self.graph = g
        except Exception as e:                   # e.g. an op that synchronises with the host
            self.error = f"{type(e).__name__}: {e}"
            warnings.warn(f"CUDA graph capture failed, running eagerly: {self.error}", RuntimeWarning)

    def __call__(self, *inputs: torch.Tensor):
        for buf, x in zip(self.inputs, inputs):
            buf.copy_(x, non_blocking=True)
        if self.graph is None:
            self.outputs = self.fn(*self.inputs)
        else:
            self.graph.replay()
        return self.outputs


def captured(owner, build: Callable[[], object], *key):
    """`build()` (graphs captured for `owner.model` where its weights are now), kept on the owner and
    built again when the model is another, when its weights or buffers move or are replaced in their
    storage (a graph reads them at the addresses it was captured with: weights changed in place, or
    moved away and back to the same addresses, need no new capture), or when `key` (e.g. an input
    shape) changes. The model's tensors are listed once per model (walking the module tree costs
    more than a small network's pass); a parameter *object* swapped in by assignment after the
    capture is not seen: assign the model anew (or move it) instead."""
    model, kept = owner.model, owner.__dict__.get("_captured")
    if kept is not None and kept[3] is model and kept[0] == (tuple(t.data_ptr() for t in kept[2]), *key):
        return kept[1]
    tensors = [*model.parameters(), *model.buffers()]     # listed anew: moving a module replaces its buffers' objects
    owner._captured = ((tuple(t.data_ptr() for t in tensors), *key), build(), tensors, model)
    return owner._captured[1]
