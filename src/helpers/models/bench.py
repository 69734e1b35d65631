"""Speed of the backends: per-stage timings, decode and verify steps, throughput, and the roofline.

Timing hygiene (Spec-Bench): warm-up runs first (which also compile and capture CUDA graphs),
CUDA synchronisation around every timed region, greedy decoding, `repeats` repetitions reported
as median (and min/max). Every figure carries the device it was measured on (`device_info`).
"""
from __future__ import annotations

import platform
import statistics
import time
from typing import Callable, Sequence

import numpy as np
import torch

from helpers.models.backend import Backend, generate

# Spec sheet of the card the figures are set against (NVIDIA H200 SXM): HBM3e bandwidth and dense
# bf16 tensor throughput. The suite also reports what it measured (a device-to-device copy).
H200_SPEC = {"bandwidth_gb_s": 4800.0, "bf16_tflops": 989.0}


def device_info(device) -> dict:
    d = torch.device(device)
    out = {"torch": torch.__version__, "python": platform.python_version(), "device": str(d)}
    try:
        import transformers
        out["transformers"] = transformers.__version__
    except ImportError:
        pass
    if d.type == "cuda":
        p = torch.cuda.get_device_properties(d)
        out.update(name=p.name, memory_gb=round(p.total_memory / 2 ** 30, 1), sms=p.multi_processor_count,
                   cuda=torch.version.cuda, driver_gpus=torch.cuda.device_count())
    else:
        out["name"] = platform.processor() or "CPU"
    return out


def _timed(fn: Callable[[], object], device, repeats: int) -> list[float]:
    """Wall-clock ms of fn(), synchronised, `repeats` times."""
    out = []
    for _ in range(repeats):
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize(device)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def summary(ms: Sequence[float]) -> dict:
    return {"median": statistics.median(ms), "min": min(ms), "max": max(ms), "n": len(ms)}


def measured_bandwidth_gb_s(device, n_bytes: int = 2 * 2 ** 30) -> float:
    """Device-to-device copy rate, bytes read + written per second (the roofline's measured ceiling)."""
    a = torch.empty(n_bytes // 2, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    ms = statistics.median(_timed(lambda: b.copy_(a), device, 10))
    return 2 * a.numel() / (ms / 1e3) / 1e9


def weight_bytes(model) -> int:
    """Bytes of the language model's weights read by one decode step (embeddings excluded: one row is read)."""
    from helpers.models.decoder import language_model_of
    llama, head = language_model_of(model)
    n = sum(p.numel() * p.element_size() for name, p in llama.named_parameters() if "embed_tokens" not in name)
    return n + sum(p.numel() * p.element_size() for p in head.parameters())


def decode_steps(backend: Backend, pixel_inputs, questions, n_steps: int = 50, repeats: int = 3) -> dict:
    """ms per decode step at the backend's batch, after one prefill (steps fed their own argmax)."""
    visual = backend.encode(pixel_inputs)
    n_items = [backend.adapter.n_items(p) for p in pixel_inputs]
    start_token = backend.prefill(questions, visual, n_items).argmax(-1)
    start = backend.decoder.lengths.clone()

    def run():
        backend.decoder.set_lengths(start)
        tok = start_token
        for _ in range(n_steps):
            tok = backend.decoder.decode(tok).argmax(-1)

    run()                                                                         # warm-up (compile, capture)
    ms = _timed(run, backend.device, repeats)
    backend.decoder.set_lengths(start)
    return summary([m / n_steps for m in ms])


def verify_widths(backend: Backend, pixel_inputs, questions, widths: Sequence[int], repeats: int = 5) -> dict:
    """ms of one verify forward of k tokens per row, for each k, at the prompt's length."""
    visual = backend.encode(pixel_inputs)
    backend.prefill(questions, visual, [backend.adapter.n_items(p) for p in pixel_inputs])
    start = backend.decoder.lengths.clone()
    out = {}
    for k in widths:
        vocab = backend.decoder.lm_head.out_features
        tokens = torch.randint(3, min(1000, vocab), (backend.batch, k), device=backend.device)
        backend.decoder.verify(tokens)                                           # warm-up (compile, capture)
        out[int(k)] = summary(_timed(lambda: backend.decoder.verify(tokens), backend.device, repeats))
        backend.decoder.set_lengths(start)
    return out


def throughput(backend: Backend, pixel_inputs, questions, max_new_tokens: int = 50, repeats: int = 3) -> dict:
    """Batched greedy generation of one full batch: samples/s and the per-stage ms (medians)."""
    generate(backend, pixel_inputs, questions, max_new_tokens)                    # warm-up
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        g = generate(backend, pixel_inputs, questions, max_new_tokens)
        runs.append({"wall_ms": (time.perf_counter() - t0) * 1e3, **g[0].timings_ms,
                     "new_tokens": float(np.mean([len(x.ids) for x in g]))})
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    med["samples_per_s"] = len(questions) / (med["wall_ms"] / 1e3)
    med["prompt_tokens"] = float(g[0].n_prompt_tokens)
    return med


def hf_generate_ms_per_token(model, backend: Backend, pixel_input, question: str, max_new_tokens: int = 50,
                             repeats: int = 3) -> dict:
    """transformers' own `generate` (eager, its dynamic cache) at batch 1: ms per new token, the
    baseline users get out of the box. Prompt embeddings are built the suite's way."""
    return summary([m / max_new_tokens for m in hf_generate_ms(model, backend, pixel_input, question,
                                                               max_new_tokens, repeats)])


def hf_generate_ms(model, backend: Backend, pixel_input, question: str, new_tokens: int, repeats: int = 3) -> list[float]:
    """Wall-clock ms of transformers' `generate` (greedy, eager, batch 1) making exactly new_tokens
    tokens after the prompt's forward (min = max new tokens), after one warm-up; `repeats` runs."""
    visual = backend.encode([pixel_input])
    emb, n = backend.prompt([question], visual, [backend.adapter.n_items(pixel_input)])
    emb = emb[:1, : n[0]]
    kw = dict(inputs_embeds=emb, attention_mask=torch.ones(emb.shape[:2], dtype=torch.long, device=emb.device),
              max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    gen = model if hasattr(model, "generate") else model.language_model     # EventGPT: its LlamaForCausalLM
    with torch.no_grad():
        gen.generate(**kw)
        return _timed(lambda: gen.generate(**kw), backend.device, repeats)


def run_7b(tokenizer, device="cuda", batches: Sequence[int] = (1, 8, 32), widths: Sequence[int] = (1, 2, 4, 6, 8, 16),
           max_new_tokens: int = 50, repeats: int = 3, kinds: Sequence[str] = ("target", "draft"),
           log=print, build=None) -> dict:
    """Everything the performance chapter shows, on the 7B-shaped models (random weights, bf16):
    per model: compiled and eager batch-1 decode steps, verify widths, transformers' generate at
    batch 1, and batched greedy throughput at each batch size. `tokenizer` only writes the text
    of the prompts (see helpers.models.shapes). build(kind, device) -> (model, adapter, inputs(n, seed))
    replaces the 7B-shaped models (tests)."""
    from helpers.models import shapes
    out = {"device": device_info(device), "bandwidth_gb_s": measured_bandwidth_gb_s(device, 2 ** 27 if build else 2 * 2 ** 30),
           "spec": H200_SPEC, "max_new_tokens": max_new_tokens, "repeats": repeats, "models": {}}
    question = "What are the key elements in this scene?"
    for kind in kinds:
        t0 = time.perf_counter()
        if build is None:
            model = (shapes.video_llava_7b if kind == "target" else shapes.eventgpt_7b)(device)
            adapter = shapes.adapter(kind, model, tokenizer)
            inputs = lambda n, seed=0, kind=kind: shapes.random_inputs(kind, n, seed)
        else:
            model, adapter, inputs = build(kind, device)
        res = {"build_s": time.perf_counter() - t0, "weight_bytes": weight_bytes(model),
               "params": sum(p.numel() for p in model.parameters())}
        one = inputs(1)
        max_len = len(adapter.prompt_ids(question, adapter.n_items(one[0]))) + max(max(widths), max_new_tokens) + 8
        for compiled in (False, True):
            be = Backend(model, tokenizer, 1, max_len, adapter, compile=compiled)
            res["decode_ms_" + ("compiled" if compiled else "eager")] = decode_steps(be, one, [question], max_new_tokens, repeats)
            res["verify_ms_" + ("compiled" if compiled else "eager")] = verify_widths(be, one, [question], widths, repeats)
            log(f"{kind} batch 1 {'compiled' if compiled else 'eager'}: decode "
                f"{res['decode_ms_' + ('compiled' if compiled else 'eager')]['median']:.2f} ms/step")
            del be
            _free()
        be = Backend(model, tokenizer, 1, max_len, adapter)
        res["hf_generate_ms_per_token"] = hf_generate_ms_per_token(model, be, one[0], question, max_new_tokens, repeats)
        del be
        res["throughput"] = {}
        for b in batches:
            be = Backend(model, tokenizer, b, max_len, adapter, compile=True)
            res["throughput"][int(b)] = throughput(be, inputs(b, b), [question] * b,
                                                   max_new_tokens, repeats)
            log(f"{kind} batch {b}: {res['throughput'][int(b)]['samples_per_s']:.1f} samples/s")
            del be
            _free()
        out["models"][kind] = res
        del model
        _free()
    return out


def _free() -> None:
    import gc
    gc.collect()                       # backends hold their decoder's graphs and cache in cycles
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main(argv=None) -> None:
    """python -m helpers.models.bench --out FILE.json [--batches 1 8 32]: the 7B-shaped benchmark."""
    import argparse
    import json
    from helpers.models.tokenizer import load_tokenizer
    from helpers.models.shipped import SHIPPED_DIR
    ap = argparse.ArgumentParser(prog="python -m helpers.models.bench", description=main.__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--widths", type=int, nargs="+", default=[1, 2, 4, 6, 8, 16])
    ap.add_argument("--kinds", nargs="+", default=["target", "draft"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tokenizer", default=str(SHIPPED_DIR / "tokenizer"))
    a = ap.parse_args(argv)
    res = run_7b(load_tokenizer(a.tokenizer), batches=a.batches, widths=a.widths, kinds=a.kinds, repeats=a.repeats)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1, default=str)


if __name__ == "__main__":
    main()


def scaling(tokenizer_dir: str, out_dir, n_clips: int = 64, batch: int = 32, gpus: Sequence[int] = (1, 2),
            max_new_tokens: int = 50, log=print, kind: str = "7b") -> dict:
    """Samples/s of recording 7B-shaped pairs (both models, random inputs) on 1 and on several GPUs
    (torchrun, one replica of each model per GPU); the time counted is the slowest rank's
    generation, model building excluded. kind 'synthetic' (tokenizer_dir: a models folder) runs
    the same path with the small models (tests, CPU)."""
    from pathlib import Path

    from helpers.models import record
    work = record.random_work(n_clips, ["What are the key elements in this scene?"])
    out = {}
    for g in gpus:
        res = record.launch(work, Path(out_dir) / f"gpus{g}", kind, tokenizer_dir, batch, max_new_tokens, gpus=g,
                            progress=False, log=log)
        out[int(g)] = {**res, "pairs": len(work), "pairs_per_s": len(work) / res["recording_seconds"]}
        log(f"{g} GPU(s): {out[int(g)]['pairs_per_s']:.1f} pairs/s")
    return out


def tables(perf: dict) -> dict:
    """The performance chapter's tables from run_7b's results (see its docstring)."""
    import pandas as pd
    bw, spec = perf["bandwidth_gb_s"], perf["spec"]
    steps, widths, tput = [], {}, []
    for kind, r in perf["models"].items():
        bound = r["weight_bytes"] / (spec["bandwidth_gb_s"] * 1e9) * 1e3
        steps.append({"model": kind, "eager (ms)": r["decode_ms_eager"]["median"],
                      "compiled (ms)": r["decode_ms_compiled"]["median"],
                      "transformers generate (ms)": r["hf_generate_ms_per_token"]["median"],
                      "bandwidth bound, spec (ms)": bound,
                      "bandwidth bound, measured copy (ms)": r["weight_bytes"] / (bw * 1e9) * 1e3,
                      "compiled / bound": r["decode_ms_compiled"]["median"] / bound})
        for mode in ("eager", "compiled"):
            widths[(kind, mode)] = {int(k): v["median"] for k, v in r[f"verify_ms_{mode}"].items()}
        for b, t in r["throughput"].items():
            tput.append({"model": kind, "batch": int(b), "samples/s": t["samples_per_s"], "vision (ms)": t["vision"],
                         "prefill (ms)": t["prefill"], "decode step (ms)": t["decode_per_token"],
                         "prompt tokens": t["prompt_tokens"], "new tokens": t["new_tokens"]})
    verify = pd.DataFrame(widths).rename_axis("k")
    return {"steps": pd.DataFrame(steps).set_index("model"), "verify": verify,
            "throughput": pd.DataFrame(tput).set_index(["model", "batch"])}
