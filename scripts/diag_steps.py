"""Where a 7B-shaped target's decode and verify steps spend their time (GPU diagnostic).

The trace-driven replay measured a verify step of gamma + 1 = 5 tokens at ~8.5 ms inside the SD loop
against ~5.6 ms for the same forward timed alone (50_performance) and 5.3 ms per decode step. This
times, on one model and cache: the decode loop; one verify forward alone; verify forwards in a
loop with the rollback's host sync after each (as the replay and the engine do); that loop with a
CPU pause between steps (a drafter's cost, GPU idle); for the cache attention as matmuls and as
PyTorch's fused SDPA with a mask; and the CUDA kernels of one compiled (not graphed) verify and
decode forward under the profiler. Writes $OUT/diag_steps.json.

    PYTHONPATH=src python scripts/diag_steps.py
"""
import json
import os
import statistics
import sys
import time

import torch

from helpers.models import bench, shapes
from helpers.models.backend import Backend
from helpers.models.tokenizer import load_tokenizer

OUT = os.environ.get("OUT", "/tmp")
T0 = time.perf_counter()
res: dict = {"device": bench.device_info("cuda")}


def save():
    with open(os.path.join(OUT, "diag_steps.json"), "w") as f:
        json.dump(res, f, indent=1)


def sync_ms(fn, n=1):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e3 / n


def busy(ms):
    t = time.perf_counter() + ms / 1e3
    while time.perf_counter() < t:
        pass


def measure(be, tag):
    dec = be.decoder
    pix = shapes.random_inputs("target", 1)[0]
    q = "What are the key elements in this scene?"
    visual = be.encode([pix])
    first = be.prefill([q], visual, [8]).argmax(-1)
    start = dec.lengths.clone()
    toks = torch.full((1, 5), 3, dtype=torch.long, device="cuda")
    out = {}

    def decode_loop():
        dec.set_lengths(start)
        t = first
        for _ in range(50):
            t = dec.decode(t).argmax(-1)
    decode_loop()
    out["decode_step_ms"] = statistics.median(sync_ms(decode_loop) / 50 for _ in range(3))
    dec.verify(toks)
    out["verify5_alone_ms"] = statistics.median(sync_ms(lambda: dec.verify(toks)) for _ in range(20))

    def verify_loop(pause_ms=0.0, host_sync=True):
        dec.set_lengths(start)
        for _ in range(20):
            if pause_ms:
                busy(pause_ms)
            dec.verify(toks)
            if host_sync:
                dec.set_lengths(dec.lengths + 2)           # reads lengths.max() on the host: a sync
            else:
                dec.lengths += 2
    verify_loop()
    out["verify5_loop_sync_ms"] = statistics.median(sync_ms(verify_loop) / 20 for _ in range(3))
    out["verify5_loop_nosync_ms"] = statistics.median(sync_ms(lambda: verify_loop(host_sync=False)) / 20 for _ in range(3))
    out["verify5_loop_pause0.7_ms_minus_pause"] = statistics.median(
        sync_ms(lambda: verify_loop(0.7)) / 20 - 0.7 for _ in range(3))
    dec.set_lengths(start)
    res[tag] = out
    print(tag, json.dumps(out), flush=True)
    save()
    return first, start


def profile(be, first, start, tag):
    from torch.profiler import ProfilerActivity, profile as prof
    dec = be.decoder
    toks = torch.full((1, 5), 3, dtype=torch.long, device="cuda")
    rows = {}
    for name, fn in (("verify5", lambda: dec._verify_logits(toks)), ("decode", lambda: dec._decode_logits(first))):
        dec.set_lengths(start)
        fn(), fn()
        torch.cuda.synchronize()
        with prof(activities=[ProfilerActivity.CUDA]) as p:
            for _ in range(3):
                fn()
            torch.cuda.synchronize()
        ev = sorted(p.key_averages(), key=lambda e: -e.device_time_total)[:12]
        rows[name] = [{"kernel": e.key[:90], "ms_per_forward": e.device_time_total / 3 / 1e3, "calls": e.count // 3}
                      for e in ev]
        rows[name + "_total_ms"] = sum(e.device_time_total for e in p.key_averages()) / 3 / 1e3
    dec.set_lengths(start)
    res[tag + "_kernels"] = rows
    save()


tok = load_tokenizer("src/helpers/assets/synthetic_vlm/tokenizer")
model = shapes.video_llava_7b("cuda")
ad = shapes.adapter("target", model, tok)
max_len = len(ad.prompt_ids("What are the key elements in this scene?", 8)) + 50 + 16
for attention in ("matmul", "sdpa"):
    be = Backend(model, tok, 1, max_len, ad, compile=True, attention=attention)
    first, start = measure(be, attention)
    profile(be, first, start, attention)
    del be
    torch.cuda.empty_cache()
    print(f"{attention} done at {time.perf_counter() - T0:.0f} s", flush=True)
if time.perf_counter() - T0 < 300 and "--autotune" in sys.argv:
    import torch._inductor.config as ic
    ic.coordinate_descent_tuning = True
    torch._dynamo.reset()
    be = Backend(model, tok, 1, max_len, ad, compile=True, attention="matmul")
    measure(be, "matmul_coordinate_descent")
print(f"total {time.perf_counter() - T0:.0f} s", flush=True)
