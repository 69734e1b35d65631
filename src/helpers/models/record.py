"""Recording draft/target pairs at scale: batched, sharded over GPUs, resumable.

The work list is questions x clips (`work_from_manifest`). Each process (one per GPU under
`torchrun`, or the notebook's own process) takes the chunks of `chunk` items whose index modulo
the world size is its rank, runs both models' batched greedy generation on each chunk
(helpers.models.backend.generate) and writes the chunk's pairs as one shard, atomically (a
temporary file renamed into place). A run killed at any point and started again with the same
parameters skips the shards that exist and loses nothing. A CUDA out-of-memory error on a batch is
caught and logged, and the batch is split in two and retried. `merge` reads the shards back in
work-list order as `RecordedPair`s; per-pair timings carry each model's batch cost (vision,
prefill, decode, decode_per_token, batch), prefixed draft_ / target_.

    torchrun --nproc_per_node 2 -m helpers.models.record --work work.json --out shards/ ...

With no GPU, `launch(..., cpu_workers=n)` starts n such processes on the CPU (the same rank
split, RANK / WORLD_SIZE set by hand): on the 2-core machine two record the default run's 200
pairs in about half the time, with the same answers token for token, but each model's per-stage
timings are then taken while the other process shares the machine (decode 3.3 -> 4.0 ms per token
there), and the study derives streamed visibility from those timings; so the presets record in
one process and cpu_workers is for answers, not timings.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from helpers.study.pairs import RecordedPair

STUDY_LONGEST_QUESTION = "What do you see happening in this scene and why?"   # sizes the KV caches at least


@dataclass
class WorkItem:
    clip_id: str
    clip_index: int
    question_index: int
    question: str
    event_images: list[str] = field(default_factory=list)   # the draft's input: event image files
    video: str = ""                                          # the target's input: mp4 or frame folder
    seed: int = -1                                           # >= 0: random inputs of the real sizes (7B-shaped runs)
    events: dict = field(default_factory=dict)               # or the draft's events: helpers.models.clips.EventSource fields

    @property
    def key(self) -> str:
        return f"{self.clip_id}/q{self.question_index}"


def work_from_manifest(entries: Sequence[dict], n_questions: int = 10, max_clips: int = 0) -> list[WorkItem]:
    """The synthetic world's manifest entries (helpers.world.dataset.load_manifest) -> work items,
    the first n_questions per clip, the first max_clips clips (0: all), in clip order."""
    clips = sorted({e["sample_idx"] for e in entries})
    keep = set(clips[:max_clips] if max_clips > 0 else clips)
    chosen = sorted((e for e in entries if e["sample_idx"] in keep and e["question_idx"] < n_questions),
                    key=lambda e: (e["sample_idx"], e["question_idx"]))
    return [WorkItem(e["clip_id"], int(e["sample_idx"]), int(e["question_idx"]), e["query"],
                     list(e["event_image_paths"]), e["video_path"]) for e in chosen]


def work_from_clips(items) -> list[WorkItem]:
    """Real clips (helpers.models.clips.work_list: DSEC events.h5 windows or EventGPT .npy events,
    mp4 or frame-folder video) -> work items in the same order; clip_index counts distinct clips."""
    order = {c: i for i, c in enumerate(sorted({it.clip_id for it in items}))}
    return [WorkItem(it.clip_id, order[it.clip_id], it.question_idx, it.question, video=str(it.video),
                     events=asdict(it.events)) for it in items]


def random_work(n_clips: int, questions: Sequence[str]) -> list[WorkItem]:
    """Work for 7B-shaped timing runs: random inputs of the real sizes, clips x questions."""
    return [WorkItem(f"random{c:04d}", c, q, text, seed=c) for c in range(n_clips) for q, text in enumerate(questions)]


def load_inputs(item: WorkItem, n_frames: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(draft input: event image (H, W, 3) or (T, H, W, 3), target input: frames (F, H, W, 3)), uint8."""
    if item.seed >= 0:
        from helpers.models.shapes import random_inputs
        return random_inputs("draft", 1, item.seed)[0], random_inputs("target", 1, item.seed)[0]
    from PIL import Image

    from helpers.models.clips import EventSource, event_images, load_event_source, sample_video
    if item.events:
        return event_images(load_event_source(EventSource(**item.events)))[0], sample_video(item.video, n_frames)
    imgs = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in item.event_images])
    return (imgs[0] if len(imgs) == 1 else imgs), sample_video(item.video, n_frames)


def shard_path(out_dir: str | Path, chunk: int) -> Path:
    return Path(out_dir) / f"shard_{chunk:05d}.json"


def _write_atomic(path: Path, records: list[dict]) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(records))
    os.replace(tmp, path)                                     # atomic on POSIX: a shard exists whole or not at all


def _generate_split(backend, inputs, questions, max_new_tokens, log) -> list:
    """backend.generate, halving the batch on CUDA out-of-memory (logged) until it fits."""
    import torch

    from helpers.models.backend import generate
    try:
        return generate(backend, inputs, questions, max_new_tokens)
    except torch.cuda.OutOfMemoryError:
        if len(questions) == 1:
            raise
        torch.cuda.empty_cache()
        half = len(questions) // 2
        log(f"CUDA out of memory on a batch of {len(questions)}: retrying as {half} + {len(questions) - half}")
        return (_generate_split(backend, inputs[:half], questions[:half], max_new_tokens, log)
                + _generate_split(backend, inputs[half:], questions[half:], max_new_tokens, log))


def record(draft, target, work: Sequence[WorkItem], out_dir: str | Path, chunk: int, max_new_tokens: int = 50,
           rank: int = 0, world: int = 1, progress: bool = True, log: Callable = print) -> dict:
    """Generate this rank's missing shards. draft / target: Backends with batch >= chunk.
    Returns {"written": n, "skipped": n, "seconds": s}."""
    from tqdm.auto import tqdm
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mine = [c for c in range(0, (len(work) + chunk - 1) // chunk) if c % world == rank]
    todo = [c for c in mine if not shard_path(out, c).exists()]
    t0, n_items = time.perf_counter(), sum(len(work[c * chunk:(c + 1) * chunk]) for c in todo)
    if todo and any(b.decoder._compiled and b.device.type == "cuda" for b in (draft, target)):
        # compiling and capturing the step graphs takes seconds per shape: do it on the first batch,
        # untimed and unsaved, so that every recorded timing is a steady-state one
        items = work[todo[0] * chunk:(todo[0] + 1) * chunk]
        ins = [load_inputs(it) for it in items]
        for backend, k in ((draft, 0), (target, 1)):
            _generate_split(backend, [x[k] for x in ins], [it.question for it in items], max_new_tokens, log)
        log(f"warm-up batch (compile, capture) done in {time.perf_counter() - t0:.1f} s")
    bar = tqdm(total=n_items, desc=f"pairs (rank {rank}/{world})", unit="pair", disable=not progress)
    for c in todo:
        items = work[c * chunk:(c + 1) * chunk]
        ins = [load_inputs(it) for it in items]
        qs = [it.question for it in items]
        d = _generate_split(draft, [x[0] for x in ins], qs, max_new_tokens, log)
        t = _generate_split(target, [x[1] for x in ins], qs, max_new_tokens, log)
        recs = [{**asdict(it), "draft_ids": dg.ids, "target_ids": tg.ids, "draft_text": dg.text,
                 "target_text": tg.text, "draft_prompt_tokens": dg.n_prompt_tokens,
                 "target_prompt_tokens": tg.n_prompt_tokens,
                 "timings_ms": {**{f"draft_{k}": v for k, v in dg.timings_ms.items()},
                                **{f"target_{k}": v for k, v in tg.timings_ms.items()}}}
                for it, dg, tg in zip(items, d, t)]
        _write_atomic(shard_path(out, c), recs)
        bar.update(len(items))
    bar.close()
    return {"written": len(todo), "skipped": len(mine) - len(todo), "seconds": time.perf_counter() - t0}


def merge(out_dir: str | Path, work: Sequence[WorkItem], chunk: int) -> tuple[list[RecordedPair], list[dict]]:
    """All shards read back in work-list order -> (pairs, the raw records); a missing shard is an
    error naming it and the command that makes it."""
    recs = []
    for c in range((len(work) + chunk - 1) // chunk):
        p = shard_path(out_dir, c)
        if not p.exists():
            raise FileNotFoundError(f"{p} is missing: run the recording again with the same parameters "
                                    f"(it resumes and writes only the missing shards)")
        recs.extend(json.loads(p.read_text()))
    keys = [r["clip_id"] + f"/q{r['question_index']}" for r in recs]
    if keys != [w.key for w in work]:
        raise ValueError(f"the shards in {out_dir} were written for another work list (chunk size or parameters differ)")
    pairs = [RecordedPair(r["clip_id"], r["clip_index"], r["question_index"], r["question"], tuple(r["draft_ids"]),
                          tuple(r["target_ids"]), r["draft_text"], r["target_text"], r["timings_ms"]) for r in recs]
    return pairs, recs


def timing_summary(pairs) -> dict[str, dict[str, float]]:
    """{stage: {median, mean, p90}} over pairs for every timing key."""
    keys = sorted({k for p in pairs for k in p.timings_ms})
    out = {}
    for k in keys:
        v = np.array([p.timings_ms[k] for p in pairs if k in p.timings_ms], dtype=float)
        out[k] = {"median": float(np.median(v)), "mean": float(np.mean(v)), "p90": float(np.percentile(v, 90))}
    return out


# ----------------------------------------------------------------------------- the models
@dataclass
class Checkpoints:
    """Local folders of the study's real models (nothing is ever downloaded).

    draft: EventGPT-7B in the official layout (helpers.models.eventgpt: *.safetensors or
    pytorch_model*.bin, config.json, and its LLaMA tokenizer unless draft_tokenizer is given);
    target: Video-LLaVA-7B-hf in transformers' layout, with its tokenizer (<video> added);
    draft_vision: a CLIP ViT-L/14-336 folder, when the EventGPT folder carries no vision tower."""
    draft: str
    target: str
    draft_vision: str = ""
    draft_tokenizer: str = ""

    @classmethod
    def parse(cls, spec) -> "Checkpoints":
        """From a Checkpoints, a dict of its fields, or that dict as JSON (the command line's form)."""
        if isinstance(spec, cls):
            return spec
        d = json.loads(spec) if isinstance(spec, str) else dict(spec)
        unknown = sorted(set(d) - {"draft", "target", "draft_vision", "draft_tokenizer"})
        if unknown:
            raise ValueError(f"unknown checkpoint fields {unknown}: pass draft, target, draft_vision, draft_tokenizer")
        return cls(**{k: str(v or "") for k, v in d.items()})

    def vocab_size(self) -> int:
        """The larger output vocabulary of the two models, from their config.json files (Video-LLaVA's
        lm_head has 32064 rows for a 32002-token tokenizer): every recorded id lies below it."""
        sizes = []
        for folder in (self.draft, self.target):
            cfg = json.loads((Path(folder) / "config.json").read_text())
            sizes.append(int(cfg.get("vocab_size") or (cfg.get("text_config") or {}).get("vocab_size") or 0))
        return max(sizes)

    def check(self) -> "Checkpoints":
        """Every named folder exists, or a ValueError / FileNotFoundError saying what to pass."""
        what = {"draft": "the EventGPT-7B checkpoint folder (draft_checkpoint)",
                "target": "the Video-LLaVA-7B-hf checkpoint folder (target_checkpoint)",
                "draft_vision": "a CLIP ViT-L/14-336 folder (draft_vision_checkpoint)",
                "draft_tokenizer": "a LLaMA tokenizer folder or tokenizer.json (draft_tokenizer)"}
        for name in ("draft", "target"):
            if not getattr(self, name):
                raise ValueError(f"no {name} checkpoint given: pass {what[name]}, a local folder; nothing is downloaded")
        for name, text in what.items():
            p = getattr(self, name)
            if p and not Path(p).exists():
                raise FileNotFoundError(f"{name} checkpoint not found: {p} (expected {text})")
        return self


@dataclass
class Models:
    """A loaded (draft, target) pair with what a Backend needs of each: tokenizer and adapter."""
    draft: Any
    draft_tokenizer: Any
    draft_adapter: Any
    target: Any
    target_tokenizer: Any
    target_adapter: Any

    def prompt_len(self, which: str, question: str) -> int:
        """Tokens in `which` model's prompt for `question` (the target sees 8 frames)."""
        return len(getattr(self, f"{which}_adapter").prompt_ids(question, 8 if which == "target" else 1))

    def backend(self, which: str, batch: int, max_len: int, compile: bool = False):
        from helpers.models.backend import Backend
        return Backend(getattr(self, which), getattr(self, f"{which}_tokenizer"), batch, max_len,
                       getattr(self, f"{which}_adapter"), compile)


def video_processor(folder):
    """The checkpoint's own VideoLlavaVideoProcessor when its folder has a processor configuration
    (Video-LLaVA-7B-hf does), else None (the suite's identical CLIP steps are used)."""
    names = ("processor_config.json", "preprocessor_config.json", "video_preprocessor_config.json")
    if not any((Path(folder) / n).exists() for n in names):
        return None
    from transformers import VideoLlavaVideoProcessor
    return VideoLlavaVideoProcessor.from_pretrained(str(folder), local_files_only=True)


def load_models(kind: str, models, device) -> Models:
    """The (draft, target) pair of one kind, on `device` (bf16 on a GPU, fp32 on a CPU):
    'synthetic': models = a shipped-models folder (draft/, target/: the world's LLaVA pair);
    '7b': 7B-shaped random weights (models = a tokenizer folder for the prompts' text);
    'real': models = Checkpoints (or its dict / JSON): EventGPT-7B and Video-LLaVA-7B-hf from
    local folders."""
    import torch

    from helpers.models import shapes, vlm
    from helpers.models.backend import eventgpt_adapter, hf_adapter
    from helpers.models.tokenizer import load_tokenizer
    if kind == "7b":
        tok = load_tokenizer(models)
        d, t = shapes.eventgpt_7b(device), shapes.video_llava_7b(device)
        return Models(d, tok, shapes.adapter("draft", d, tok), t, tok, shapes.adapter("target", t, tok))
    dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if kind == "real":
        from helpers.models import eventgpt
        ck = Checkpoints.parse(models).check()
        d = eventgpt.load_eventgpt(ck.draft, device=device, dtype=dtype, clip_path=ck.draft_vision or None)
        dtok = load_tokenizer(ck.draft_tokenizer or ck.draft)
        t, ttok = vlm.load_pretrained(ck.target, "target", dtype=dtype, device=device)
        return Models(d, dtok, eventgpt_adapter(d, dtok), t, ttok, hf_adapter(t, ttok, video_processor(ck.target)))
    if kind != "synthetic":
        raise ValueError(f"unknown backend kind {kind!r}: 'synthetic', '7b' or 'real'")
    d, tok = vlm.load_pretrained(Path(models) / "draft", "draft", dtype=dtype, device=device)
    t, _ = vlm.load_pretrained(Path(models) / "target", "target", dtype=dtype, device=device)
    return Models(d, tok, hf_adapter(d, tok), t, tok, hf_adapter(t, tok))


def backends_for(kind: str, models, batch: int, max_new_tokens: int, device, compile: bool,
                 longest_question: str = ""):
    """(draft, target) Backends of `load_models(kind, models, device)`; each KV cache holds the
    target's prompt for longest_question (the longer of the two), max_new_tokens and a margin."""
    m = load_models(kind, models, device)
    max_len = m.prompt_len("target", longest_question or STUDY_LONGEST_QUESTION) + max_new_tokens + 32
    if kind == "7b" or kind == "real":       # the draft's prompt is its own length (EventGPT: 578 visual rows)
        d_len = m.prompt_len("draft", longest_question or STUDY_LONGEST_QUESTION) + max_new_tokens + 32
    else:
        d_len = max_len
    return m.backend("draft", batch, d_len, compile), m.backend("target", batch, max_len, compile)


def longest(work: Sequence[WorkItem]) -> str:
    """The longest question (by characters) of the work and the study's, which sizes the KV caches."""
    return max([w.question for w in work] + [STUDY_LONGEST_QUESTION], key=len)


# ----------------------------------------------------------------------------- command line
def main(argv=None) -> int:
    import argparse

    import torch
    ap = argparse.ArgumentParser(prog="python -m helpers.models.record", description=__doc__.split("\n")[0])
    ap.add_argument("--work", required=True, help="work list JSON (a list of WorkItem fields)")
    ap.add_argument("--out", required=True, help="shard folder")
    ap.add_argument("--kind", choices=["synthetic", "7b", "real"], default="synthetic")
    ap.add_argument("--models", required=True, help="synthetic: the models folder; 7b: a tokenizer folder; "
                    "real: JSON of Checkpoints' fields, e.g. '{\"draft\": \"/ckpt/EventGPT-7b\", \"target\": ...}'")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=50)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--cpu", action="store_true", help="record on the CPU even where CUDA is visible")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    a = ap.parse_args(argv)
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device(f"cuda:{local}") if torch.cuda.is_available() and not a.cpu else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    work = [WorkItem(**w) for w in json.loads(Path(a.work).read_text())]
    draft, target = backends_for(a.kind, a.models, a.batch, a.max_new_tokens, device, a.compile, longest(work))
    log = lambda m: print(f"[rank {rank}] {m}", file=sys.stderr, flush=True)
    res = record(draft, target, work, a.out, a.batch, a.max_new_tokens, rank, world, not a.quiet, log)
    log(f"{res['written']} shards written, {res['skipped']} already there, {res['seconds']:.1f} s on {device}")
    (Path(a.out) / f"rank_{rank}.json").write_text(json.dumps({**res, "device": str(device)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())


def _worker_args(out: Path, kind: str, models, batch: int, max_new_tokens: int, progress: bool) -> list[str]:
    """`python -m helpers.models.record` and its arguments, for the processes launch starts."""
    return (["-m", "helpers.models.record", "--work", str(out / "work.json"), "--out", str(out), "--kind", kind,
             "--models", json.dumps(asdict(models)) if isinstance(models, Checkpoints) else str(models),
             "--batch", str(batch), "--max-new-tokens", str(max_new_tokens)] + ([] if progress else ["--quiet"]))


def _ranks_summary(out: Path, n: int, t0: float) -> dict:
    """What the n worker processes wrote (their rank_<r>.json), summed; seconds include their start."""
    ranks = [json.loads((out / f"rank_{r}.json").read_text()) for r in range(n)]
    return {"seconds": time.perf_counter() - t0,
            "recording_seconds": max(r["seconds"] for r in ranks),         # the slowest rank's generation
            "written": sum(r["written"] for r in ranks), "skipped": sum(r["skipped"] for r in ranks)}


def _cpu_workers(n: int, out: Path, kind: str, models, batch: int, max_new_tokens: int, threads: int,
                 progress: bool, log: Callable) -> dict:
    """Record on the CPU in n processes at once (rank r takes chunks r, r + n, ...; each process has
    `threads` torch threads): greedy answers at batch 1 are the same token for token as one process
    records them; the timings are taken while the workers share the machine."""
    import subprocess
    cmd = [sys.executable] + _worker_args(out, kind, models, batch, max_new_tokens, progress) + [
        "--cpu", "--threads", str(threads)]
    log(f"recording in {n} CPU processes: {' '.join(cmd[2:])}")
    t0 = time.perf_counter()
    quiet = {} if progress else {"HF_HUB_DISABLE_PROGRESS_BARS": "1"}     # transformers' weight-loading bars too
    procs = [subprocess.Popen(cmd, env={**os.environ, **quiet, "RANK": str(r), "WORLD_SIZE": str(n),
                                        "LOCAL_RANK": str(r), "OMP_NUM_THREADS": str(threads)}) for r in range(n)]
    try:
        failed = [r for r, p in enumerate(procs) if p.wait() != 0]
    finally:                        # interrupted (or failed) here: stop the workers too, not leave them running
        for p in procs:
            if p.poll() is None:
                p.terminate()
    if failed:      # the shards the other workers wrote stay: the same call again records only what is missing
        raise RuntimeError(f"recording workers {failed} of {n} failed (their messages are above); "
                           f"finished shards are kept in {out} and a rerun resumes there")
    return {"gpus": 0, "cpu_workers": n, **_ranks_summary(out, n, t0)}


def launch(work: Sequence[WorkItem], out_dir: str | Path, kind: str, models, batch: int, max_new_tokens: int = 50,
           gpus: int = 1, compile: bool = False, progress: bool = True, log: Callable = print,
           cpu_workers: int = 1, cpu_threads: int = 1) -> dict:
    """Record `work` into out_dir's shards: in this process on one device (or the CPU), over `gpus`
    GPUs with torchrun (one process and one replica of each model per GPU), or, with no GPU and
    cpu_workers > 1, in that many CPU processes of cpu_threads threads each. Resumes.
    models: as backends_for takes it (a folder, or Checkpoints for kind 'real')."""
    import subprocess

    import torch
    if kind == "real":                 # fail here, with what to pass, not inside a launched process
        models = Checkpoints.parse(models).check()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "work.json").write_text(json.dumps([asdict(w) for w in work]))
    t0 = time.perf_counter()
    if gpus > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}"]
        cmd += _worker_args(out, kind, models, batch, max_new_tokens, progress) + (["--compile"] if compile else [])
        log(f"launching: {' '.join(cmd[2:])}")
        subprocess.run(cmd, check=True)
        return {"gpus": gpus, **_ranks_summary(out, gpus, t0)}
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cpu" and cpu_workers > 1:
        return _cpu_workers(cpu_workers, out, kind, models, batch, max_new_tokens, cpu_threads, progress, log)
    draft, target = backends_for(kind, models, batch, max_new_tokens, device, compile, longest(work))
    res = record(draft, target, work, out, batch, max_new_tokens, progress=progress, log=log)
    del draft, target
    import gc
    gc.collect()                       # give the models' memory back before the caller goes on
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {**res, "recording_seconds": res["seconds"], "gpus": 1 if device.type == "cuda" else 0,
            "seconds": time.perf_counter() - t0}
