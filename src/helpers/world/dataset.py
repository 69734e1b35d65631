"""Generate the synthetic world's dataset in the study's DSEC-derived layout.

Layout (folder names as in the research repo's `my_egpt_dsec_*` datasets, built by its
`generate_json.py` / `preprocess_event_images.py`; paths in the manifest are relative to
the folder that holds the file, as there):

    out_dir/
      event_npy/<clip>.npy          events, EventGPT dict format (x, y uint16; t int64 µs; p uint8)
      mp4/<clip>.mp4                RGB video at video_fps (Video-LLaVA samples 8 frames)
      event_image/<clip>_<k>.png    k = 0..n_event_chunks-1, EventGPT event images
      scenes/<clip>.json            the scene graph (ground truth)
      EventGPT_Instruction_Subset.json   the manifest: one entry per clip x question
      dataset_summary.json          DatasetSummary + generation parameters

Manifest entry (the study's fields first, then ours):
    id, split, event_data, video_data, mp4_data, event_image, conversations
      ([{"from": "human", "value": "<event>\\n" + question}, {"from": "gpt", "value": draft answer}]),
    sample_idx, question_idx, sample_id, query   (as in the recorded-pair files),
    clip_id, scene_json, draft_answer, target_answer.
`video_data` equals `mp4_data` here (we never store frame folders). Splits are by clip
(all questions of a clip share its split), drawn by a seeded permutation of clip ids.
"""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from helpers.world.captions import QUESTIONS, REGISTERS, captions_for_scene
from helpers.world.events import EventSimConfig, event_image, save_events, simulate_events
from helpers.world.video import write_video
from helpers.world.render import render_clip
from helpers.world.sample import PROFILES, SceneDistribution, profile, sample_scene
from helpers.world.scene import scene_to_dict

MANIFEST_NAME = "EventGPT_Instruction_Subset.json"
SPLITS = ("train", "val", "test")


@dataclass
class DatasetSummary:
    n_clips: int
    n_entries: int                       # clips x questions
    n_distinct_scenes: int               # distinct scene graphs (seed field excluded)
    n_distinct_captions: dict[str, int]  # per register, over all questions
    split_clips: dict[str, int]
    n_events: int
    wall_s: float
    render_s: float                      # summed over workers
    simulate_s: float                    # summed over workers
    clips_per_s: float                   # end to end, wall clock
    render_clips_per_s: float            # per worker
    events_per_s: float                  # simulation, per worker
    params: dict = field(default_factory=dict)


def _clip_seed(seed: int, i: int) -> int:
    return int(np.random.default_rng([seed, i]).integers(2**31 - 1))


def _scene(clip_seed: int, dist: SceneDistribution = PROFILES["driving"]):
    return sample_scene(np.random.default_rng(clip_seed), seed=clip_seed, dist=dist)


def world_captions(n_clips: int, seed: int, splits: tuple[float, float, float] = (0.8, 0.1, 0.1),
                   world_profile: str = "driving") -> list[dict]:
    """{clip_id, split, captions: {register: one caption per question}} of every clip that
    `generate_dataset(n_clips=n_clips, seed=seed, splits=splits, world_profile=world_profile)` would
    write, without rendering or simulating anything: the captions come from the scene graphs alone
    (3,500 clips in about 20 s)."""
    split_of, dist = split_clips(n_clips, splits, seed), profile(world_profile)
    return [{"clip_id": f"clip_{i:06d}", "split": split_of[i],
             "captions": captions_for_scene(_scene(_clip_seed(seed, i), dist))} for i in range(n_clips)]


def _make_clip(args) -> dict:
    """Render, simulate and write one clip; returns its record (run in worker processes)."""
    out_dir, clip_id, clip_seed, size, fps_internal, video_fps, n_chunks, sim, world_profile = args
    out = Path(out_dir)
    scene = _scene(clip_seed, profile(world_profile))
    t0 = time.perf_counter()
    frames = render_clip(scene, fps_internal, size)                   # (T, H, W, 3)
    t1 = time.perf_counter()
    ev = simulate_events(frames, fps_internal, EventSimConfig(**sim), seed=clip_seed)
    t2 = time.perf_counter()
    save_events(out / "event_npy" / f"{clip_id}.npy", ev)
    write_video(out / "mp4" / f"{clip_id}.mp4", frames, video_fps, fps_internal)
    images = []
    for k, img in enumerate(event_image(ev, size, n_chunks)):
        Image.fromarray(img).save(out / "event_image" / f"{clip_id}_{k}.png")
        images.append(f"{clip_id}_{k}.png")
    sd = scene_to_dict(scene)
    (out / "scenes" / f"{clip_id}.json").write_text(json.dumps(sd, indent=1))
    return {"clip_id": clip_id, "scene": sd, "captions": captions_for_scene(scene), "event_image": images,
            "n_events": int(len(ev["t"])), "render_s": t1 - t0, "simulate_s": t2 - t1}


def split_clips(n_clips: int, fractions: tuple[float, float, float], seed: int) -> list[str]:
    """Split name per clip index: a seeded permutation cut by the fractions (train, val, test)."""
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"splits must be 3 fractions summing to 1, got {fractions}")
    perm = np.random.default_rng([seed, 1234]).permutation(n_clips)
    n_train = int(round(fractions[0] * n_clips))
    n_val = int(round(fractions[1] * n_clips))
    names = np.empty(n_clips, dtype=object)
    names[perm[:n_train]] = "train"
    names[perm[n_train:n_train + n_val]] = "val"
    names[perm[n_train + n_val:]] = "test"
    return list(names)


def generate_dataset(out_dir: str | Path, n_clips: int = 300, seed: int = 0, size: tuple[int, int] = (160, 120),
                     fps_internal: float = 100.0, video_fps: float = 10.0, n_event_chunks: int = 1,
                     splits: tuple[float, float, float] = (0.8, 0.1, 0.1), progress: bool = True,
                     n_workers: int | None = None, sim: EventSimConfig | None = None,
                     world_profile: str = "driving") -> DatasetSummary:
    """Write n_clips clips x 10 questions to out_dir (layout: module docstring). size = (W, H);
    world_profile names the scene distribution (helpers.world.sample.PROFILES)."""
    dist = profile(world_profile)           # an unknown name fails here, before any folder is made
    out = Path(out_dir)
    for sub in ("event_npy", "mp4", "event_image", "scenes"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    sim = sim or EventSimConfig()
    split_of = split_clips(n_clips, splits, seed)
    ids = [f"clip_{i:06d}" for i in range(n_clips)]
    jobs = [(str(out), ids[i], _clip_seed(seed, i), tuple(size), fps_internal, video_fps, n_event_chunks, asdict(sim),
             world_profile) for i in range(n_clips)]
    n_workers = n_workers or min(os.cpu_count() or 1, 8)
    t0 = time.perf_counter()
    bar = tqdm(total=n_clips, desc="clips", disable=not progress)
    if n_workers > 1 and n_clips > 1:
        with ProcessPoolExecutor(n_workers) as pool:
            records = []
            for r in pool.map(_make_clip, jobs, chunksize=4):
                records.append(r)
                bar.update()
    else:
        records = []
        for j in jobs:
            records.append(_make_clip(j))
            bar.update()
    bar.close()
    wall = time.perf_counter() - t0
    entries = []
    for i, r in enumerate(records):
        for q, question in enumerate(QUESTIONS):
            draft, target = r["captions"]["draft"][q], r["captions"]["target"][q]
            entries.append({
                "id": f"{r['clip_id']}_q{q}", "split": split_of[i],
                "event_data": f"{r['clip_id']}.npy", "video_data": f"{r['clip_id']}.mp4",
                "mp4_data": f"{r['clip_id']}.mp4", "event_image": r["event_image"],
                "conversations": [{"from": "human", "value": "<event>\n" + question},
                                  {"from": "gpt", "value": draft}],
                "sample_idx": i, "question_idx": q, "sample_id": r["clip_id"], "query": question,
                "clip_id": r["clip_id"], "scene_json": f"{r['clip_id']}.json",
                "draft_answer": draft, "target_answer": target,
            })
    (out / MANIFEST_NAME).write_text(json.dumps(entries, indent=1))
    scene_keys = {json.dumps({k: v for k, v in r["scene"].items() if k != "seed"}, sort_keys=True) for r in records}
    n_events = sum(r["n_events"] for r in records)
    render_s = sum(r["render_s"] for r in records)
    sim_s = sum(r["simulate_s"] for r in records)
    summary = DatasetSummary(
        n_clips=n_clips, n_entries=len(entries), n_distinct_scenes=len(scene_keys),
        n_distinct_captions={reg: len({c for r in records for c in r["captions"][reg]}) for reg in REGISTERS},
        split_clips={s: split_of.count(s) for s in SPLITS}, n_events=n_events, wall_s=wall,
        render_s=render_s, simulate_s=sim_s, clips_per_s=n_clips / wall,
        render_clips_per_s=n_clips / max(render_s, 1e-9), events_per_s=n_events / max(sim_s, 1e-9),
        params={"seed": seed, "size": list(size), "fps_internal": fps_internal, "video_fps": video_fps,
                "n_event_chunks": n_event_chunks, "splits": list(splits), "sim": asdict(sim), "n_workers": n_workers,
                "world_profile": world_profile, "scene_distribution": dist.to_dict()})
    (out / "dataset_summary.json").write_text(json.dumps(asdict(summary), indent=1))
    return summary


def load_manifest(data_dir: str | Path) -> list[dict]:
    """The manifest entries, with absolute paths added under `*_path` keys."""
    d = Path(data_dir)
    entries = json.loads((d / MANIFEST_NAME).read_text())
    for e in entries:
        e["event_path"] = str(d / "event_npy" / e["event_data"])
        e["video_path"] = str(d / "mp4" / e["mp4_data"])
        e["event_image_paths"] = [str(d / "event_image" / p) for p in e["event_image"]]
        if "scene_json" in e:
            e["scene_path"] = str(d / "scenes" / e["scene_json"])
    return entries
