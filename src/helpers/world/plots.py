"""Figures of the synthetic-world chapters (01_world, 02_models, 03_inference)."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from helpers.world.events import event_rate, load_events
from helpers.world.grounding import CATEGORIES
from helpers.world.video import sample_frames

FRAMES_SHOWN = (0, 4, 7)  # of the 8 frames the target samples


def pick_clips(entries, n: int) -> list[str]:
    """Clips to show: prefer a still camera, a fast one and an intersection, then clip order."""
    scenes = {e["clip_id"]: json.loads(Path(e["scene_path"]).read_text()) for e in entries}
    order = list(scenes)
    chosen: list[str] = []
    for want in (lambda s: s["ego_motion"] == "stopped", lambda s: s["ego_motion"] == "fast",
                 lambda s: s["road"]["layout"] == "intersection"):
        c = next((c for c in order if want(scenes[c]) and c not in chosen), None)
        if c and len(chosen) < n:
            chosen.append(c)
    chosen += [c for c in order if c not in chosen][: max(0, n - len(chosen))]
    return chosen


def clip_scene_line(scene: dict) -> str:
    agents = ", ".join(f"{a['colour']} {a['kind']} ({a['state']})" for a in scene["agents"]) or "no agents"
    return (f"{scene['road']['layout']} road, {scene['background']}, {scene['time_of_day']}, "
            f"ego {scene['ego_motion']} ({scene['ego_speed_mps']:.0f} m/s); {agents}")


def sensor_panel(entries, clip_ids, answers: dict | None = None, bin_ms: float = 10.0, wrap: int = 70):
    """One row per clip: three of the target's 8 video frames, the draft's event image and the
    event rate over the clip. answers: {clip_id: (draft_text, target_text)} printed below."""
    by_clip = {e["clip_id"]: e for e in entries}
    n = len(clip_ids)
    fig, axes = plt.subplots(n, 5, figsize=(16, 3.3 * n + (1.6 * n if answers else 0)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1, 1, 1, 1.3]})
    for r, cid in enumerate(clip_ids):
        e = by_clip[cid]
        frames = sample_frames(e["video_path"], 8)
        for c, k in enumerate(FRAMES_SHOWN):
            axes[r, c].imshow(frames[k])
            axes[r, c].set_title(f"{cid}: frame {k + 1}/8", fontsize=9)
        axes[r, 3].imshow(np.asarray(Image.open(e["event_image_paths"][0])))
        axes[r, 3].set_title("event image (draft input)", fontsize=9)
        for ax in axes[r, :4]:
            ax.set_xticks([]), ax.set_yticks([])
        t, on, off = event_rate(load_events(e["event_path"]), bin_ms)
        axes[r, 4].plot(t, on / 1e6, color="tab:red", label="ON")
        axes[r, 4].plot(t, off / 1e6, color="tab:blue", label="OFF")
        axes[r, 4].set_xlabel("time (ms)")
        axes[r, 4].set_title("event rate (million events/s)", fontsize=9), axes[r, 4].legend(fontsize=8)
        scene = json.loads(Path(e["scene_path"]).read_text())
        text = "scene graph: " + clip_scene_line(scene)
        if answers and cid in answers:
            d, tg = answers[cid]
            text += f"\ndraft (events): {d}\ntarget (video): {tg}"
        lines = "\n".join(textwrap.fill(line, wrap * 3) for line in text.split("\n"))
        axes[r, 0].text(0, -0.12, lines, transform=axes[r, 0].transAxes, va="top", fontsize=8.5)
    fig.tight_layout(h_pad=3.0)
    return fig


def input_panel(rows, wrap: int = 70):
    """One row per clip of real (or any) inputs: three of the target's 8 frames and the draft's
    event image, the two answers below. rows: (clip_id, event_image (H, W, 3), frames (8, H, W, 3),
    draft_text, target_text)."""
    fig, axes = plt.subplots(len(rows), 4, figsize=(13, 4.6 * len(rows)), squeeze=False)
    for r, (cid, ev, frames, d, tg) in enumerate(rows):
        for c, k in enumerate(FRAMES_SHOWN):
            axes[r, c].imshow(frames[k])
            axes[r, c].set_title(f"{cid}: frame {k + 1}/8", fontsize=9)
        axes[r, 3].imshow(ev)
        axes[r, 3].set_title("event image (draft input)", fontsize=9)
        for ax in axes[r]:
            ax.set_xticks([]), ax.set_yticks([])
        text = "\n".join(textwrap.fill(line, wrap * 2) for line in (f"draft (events): {d}", f"target (video): {tg}"))
        axes[r, 0].text(0, -0.08, text, transform=axes[r, 0].transAxes, va="top", fontsize=8.5)
    fig.tight_layout(h_pad=3.0)
    return fig


def variety_bars(scenes: list[dict]):
    """Counts of layouts, backgrounds, times of day, ego motion and agent kinds."""
    from collections import Counter
    groups = {
        "road layout": Counter(s["road"]["layout"] for s in scenes),
        "background": Counter(s["background"] for s in scenes),
        "time of day": Counter(s["time_of_day"] for s in scenes),
        "ego motion": Counter(s["ego_motion"] for s in scenes),
        "agents": Counter(a["kind"] for s in scenes for a in s["agents"]),
        "roadside": Counter(r["kind"] for s in scenes for r in s["roadside"]),
    }
    fig, axes = plt.subplots(1, len(groups), figsize=(16, 2.8))
    for ax, (name, cnt) in zip(axes, groups.items()):
        keys = sorted(cnt)
        ax.bar(keys, [cnt[k] for k in keys], color="tab:gray")
        ax.set_title(name, fontsize=10), ax.tick_params(axis="x", rotation=60, labelsize=8)
    fig.tight_layout()
    return fig


def loss_curves(manifests: dict):
    """Per-epoch train/validation loss per model from the shipped manifests."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for kind, colour in (("draft", "tab:red"), ("target", "tab:blue")):
        ep = manifests[kind]["history"]["epochs"]
        x = [r["epoch"] for r in ep]
        ax.plot(x, [r["train_loss"] for r in ep], "--", color=colour, label=f"{kind} train")
        ax.plot(x, [r["val_loss"] for r in ep], "-o", color=colour, label=f"{kind} validation", ms=3)
    ax.set_yscale("log"), ax.set_xlabel("epoch"), ax.set_ylabel("answer-token loss (nats)")
    ax.legend(), ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def grounding_bars(tables: dict, title: str = ""):
    """tables: {kind: grounding_table}. Recall per category: model vs reference vs chance."""
    fig, axes = plt.subplots(1, len(tables), figsize=(6 * len(tables), 3.3), squeeze=False)
    for ax, (kind, t) in zip(axes[0], tables.items()):
        x = np.arange(len(CATEGORIES))
        for i, (src, colour) in enumerate((("reference", "lightgray"), ("model", "tab:green"), ("chance", "tab:orange"))):
            ax.bar(x + (i - 1) * 0.27, [np.nan_to_num(t[src].get(c, {}).get("recall", np.nan)) for c in CATEGORIES], 0.27,
                   color=colour, label=src if src != "chance" else "model vs another clip (chance)")
        ax.set_xticks(x, CATEGORIES), ax.set_ylim(0, 1), ax.set_ylabel("recall vs scene graph")
        ax.set_title(f"{kind} {title}".strip(), fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def recall_by_size_lines(tables: dict):
    """tables: {kind: grounding.recall_by_size frame}. Object recall per apparent-width bin: the
    model's answers, the reference captions and chance, with each bin's number of objects."""
    fig, axes = plt.subplots(1, len(tables), figsize=(5 * len(tables), 3.4), squeeze=False, sharey=True)
    for ax, (kind, t) in zip(axes[0], tables.items()):
        x = np.arange(len(t))
        for src, colour in (("reference", "grey"), ("model", "tab:green"), ("chance", "tab:orange")):
            ax.plot(x, t[src], marker="o", color=colour,
                    label=src if src != "chance" else "model vs another clip (chance)")
        ax.set_xticks(x, [f"{w}\n({n})" for w, n in zip(t["apparent width"], t["objects"])], fontsize=8)
        ax.set(ylim=(0, 1.05), xlabel="widest object of the kind, pixels of the model's input (objects)",
               ylabel="object recall")
        ax.set_title(kind, fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def stage_cost_bars(summary: dict, stages=("vision", "prefill", "decode_per_token")):
    """Median ms per stage, draft vs target (summary: helpers.models.record.timing_summary)."""
    fig, ax = plt.subplots(figsize=(7, 3.3))
    x = np.arange(len(stages))
    for i, (kind, colour) in enumerate((("draft", "tab:red"), ("target", "tab:blue"))):
        v = [summary[f"{kind}_{s}"]["median"] for s in stages]
        ax.bar(x + (i - 0.5) * 0.4, v, 0.4, color=colour, label=kind)
    ax.set_xticks(x, [s.replace("_", " ") for s in stages]), ax.set_ylabel("median ms (batch 1)")
    ax.legend(), ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
