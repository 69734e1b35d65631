"""Train, evaluate and ship the synthetic world's two VLMs (draft on events, target on video).

The shipped models live in `SHIPPED_DIR` (draft/, target/, tokenizer/, manifest.json). They
were made on the GPU machine with this module's command line (scripts/train_world_gpu.sh runs it
there in one command), in three steps:

    python -m helpers.models.shipped data  --data /tmp/w --n-clips 3000 --seed 1000
    python -m helpers.models.shipped train --data /tmp/w --kind draft  --out /tmp/ship &
    python -m helpers.models.shipped train --data /tmp/w --kind target --out /tmp/ship & wait
    python -m helpers.models.shipped ship  --data /tmp/w --out /tmp/ship

(`all` runs the three in one process: notebook 02 uses it when `retrain_models` is true.)
A pair trained but not shipped is kept as a row of the manifest's recipe search, graded next to the
shipped pair on the same unseen clips:

    python -m helpers.models.shipped record --pair /tmp/ship_NAME --name "r6 ..." --command "..." --compare-clips 60
`train --vision-s S` first spends S seconds on the vision stage (helpers.models.train.pretrain_vision);
the shipped pair had 140 s, with `pixel_fit: squash` in its VLM config (manifest.json says how).
The training world's seed differs from the book's default world, so every clip of the book is
unseen by the shipped models. Grounding (helpers.world.grounding) is measured on the training
world's test split and written to the manifest.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from helpers.models import train as vlm_train
from helpers.models import vlm
from helpers.models.tokenizer import load_tokenizer, train_tokenizer
from helpers.training import TrainConfig, resolve_device
from helpers.world import grounding
from helpers.world.captions import QUESTIONS

SHIPPED_DIR = Path(__file__).resolve().parents[1] / "assets" / "synthetic_vlm"
KINDS = ("draft", "target")


def device_name(device) -> str:
    d = torch.device(device)
    return torch.cuda.get_device_name(d) if d.type == "cuda" else "cpu"


def weights_id(models_dir: str | Path = SHIPPED_DIR) -> str | None:
    """A short fingerprint of a synthetic model pair's weights (both safetensors files): measurements
    made elsewhere carry it, so a book can tell whether they were made with the models it ships."""
    h = hashlib.sha256()
    for kind in KINDS:
        f = Path(models_dir) / kind / "model.safetensors"
        if not f.exists():
            return None
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def shipped_pairs() -> dict[str, Path]:
    """{weights_id: folder} of every model pair this repository ships (the driving world's and the
    legible world's), so that a measurement carrying a fingerprint can name the pair it was made with."""
    return {wid: d for d in sorted(SHIPPED_DIR.parent.iterdir()) if d.is_dir() and (wid := weights_id(d))}


def world_tokenizer(entries, vocab_size: int = 1024):
    """Byte-level BPE on the questions and both registers' answers of `entries`."""
    texts = list(QUESTIONS) + [e["draft_answer"] for e in entries] + [e["target_answer"] for e in entries]
    return train_tokenizer(texts, vocab_size=vocab_size)


def split_entries(entries) -> dict[str, list[dict]]:
    """Manifest entries per split (the dataset's own split by clip), in clip order."""
    out = {s: [] for s in ("train", "val", "test")}
    for e in sorted(entries, key=lambda e: (e["sample_idx"], e["question_idx"])):
        out[e["split"]].append(e)
    return out


def first_clips(entries, n_clips: int) -> list[dict]:
    """Entries of the first n_clips distinct clips (in the entries' order); n_clips <= 0: all."""
    clips = list(dict.fromkeys(e["clip_id"] for e in entries))
    keep = set(clips[:n_clips] if n_clips > 0 else clips)
    return [e for e in entries if e["clip_id"] in keep]


def answer_entries(model, tokenizer, entries, max_new_tokens: int = 50, progress: bool = True) -> list[dict]:
    """Greedy answers of `model` (kind from its class) for manifest entries:
    [{clip_id, question_idx, ids, text, timings_ms}] (pixels read once per clip)."""
    from tqdm.auto import tqdm
    kind = vlm.model_kind(model)
    examples = vlm_train.load_examples(entries, kind)
    out = []
    for e, (pixels, question, _) in zip(entries, tqdm(examples, desc=f"{kind} answers", disable=not progress)):
        ids, text, timings = vlm.generate_greedy(model, tokenizer, pixels, question, max_new_tokens)
        out.append({"clip_id": e["clip_id"], "question_idx": e["question_idx"], "ids": ids, "text": text,
                    "timings_ms": timings})
    return out


def read_scenes(entries) -> dict[str, dict]:
    return {e["clip_id"]: json.loads(Path(e["scene_path"]).read_text()) for e in entries}


def grounding_of(kind: str, entries, answers: list[str]) -> dict:
    """helpers.world.grounding.grounding_table for one model's answers to `entries`."""
    scenes = read_scenes(entries)
    return grounding.grounding_table(answers, [e[f"{kind}_answer"] for e in entries],
                                     [scenes[e["clip_id"]] for e in entries], [e["clip_id"] for e in entries])


def per_clip(entries, kind: str, pixels) -> tuple[list, np.ndarray]:
    """(one pixel tensor per distinct clip, the multi-hot facts its `kind` captions name)."""
    first, texts = {}, {}
    for e, px in zip(entries, pixels):
        first.setdefault(e["clip_id"], px)
        texts.setdefault(e["clip_id"], []).append(e[f"{kind}_answer"])
    return list(first.values()), grounding.caption_fact_matrix(list(texts.values()))


def train_one(kind: str, data_dir, tokenizer, vlm_cfg: vlm.VLMConfig, train_cfg: TrainConfig,
              n_eval_clips: int = 40, max_new_tokens: int = 50, aux_weight: float = 0.0,
              vision_s: float = 0.0, freeze_vision: bool = False):
    """Train one model on the dataset's train split (val split: early stopping), then measure
    its test loss and grounding on the first n_eval_clips test clips. Returns (model, info).

    vision_s > 0: first `vision_s` seconds of vision pretraining (train.pretrain_vision: the tower
    and projector learn the facts the clip's captions name); freeze_vision: the caption stage then
    trains the projector and the language model only, so that what stage 1 taught is kept."""
    from helpers.world.dataset import load_manifest

    data_dir = Path(data_dir)
    parts = split_entries(load_manifest(data_dir))
    t0 = time.perf_counter()
    train_ex = vlm_train.load_examples(parts["train"], kind)
    val_ex = vlm_train.load_examples(parts["val"], kind)
    load_s = time.perf_counter() - t0
    torch.manual_seed(train_cfg.seed)
    build = vlm.build_draft_model if kind == "draft" else vlm.build_target_model
    model = build(vlm_cfg, tokenizer)
    labels = None
    if aux_weight > 0:
        scenes = read_scenes(parts["train"])
        labels = grounding.fact_matrix([scenes[e["clip_id"]] for e in parts["train"]])
    pixels, val_pixels = vlm_train.prepare_pixels(model, train_ex), vlm_train.prepare_pixels(model, val_ex)
    vision = None
    if vision_s > 0:
        clip_px, clip_y = per_clip(parts["train"], kind, pixels)
        val_px, val_y = per_clip(parts["val"], kind, val_pixels)
        vcfg = dataclasses.replace(train_cfg, max_minutes=vision_s / 60, epochs=max(train_cfg.epochs, 200),
                                   patience=max(train_cfg.patience, 8))
        vhist, vfinal = vlm_train.pretrain_vision(model, clip_px, clip_y, val_px, val_y, vcfg, grounding.FACTS)
        vision = {"seconds": vhist.train_seconds, "epochs_run": len(vhist.epochs), "best_epoch": vhist.best_epoch,
                  "val": vfinal, "val_base_rates": vlm_train.base_rate_scores(clip_y, val_y, grounding.FACTS),
                  "n_train_clips": len(clip_px), "history": asdict(vhist)}
    if freeze_vision:
        for m in vlm_train.vision_modules(model):
            m.requires_grad_(False)
    hist = vlm_train.train_vlm(model, tokenizer, train_ex, val_ex, train_cfg, labels=labels, aux_weight=aux_weight,
                               pixels=pixels, val_pixels=val_pixels)
    for m in vlm_train.vision_modules(model):
        m.requires_grad_(True)
    test_entries = first_clips(parts["test"], n_eval_clips)
    test_loss = vlm_train.evaluate_loss(model, tokenizer, vlm_train.load_examples(test_entries, kind), train_cfg)
    t1 = time.perf_counter()
    answers = answer_entries(model, tokenizer, test_entries, max_new_tokens, progress=train_cfg.progress)
    eval_s = time.perf_counter() - t1
    summary = json.loads((data_dir / "dataset_summary.json").read_text())
    info = {
        "data": {"seed": summary["params"]["seed"], "n_clips": summary["n_clips"],
                 "n_train_examples": len(train_ex), "n_val_examples": len(val_ex),
                 "n_test_eval_examples": len(test_entries), "generator": "helpers.world.dataset.generate_dataset",
                 "params": summary["params"]},
        "vlm_config": asdict(vlm_cfg), "train_config": asdict(train_cfg), "aux_weight": aux_weight,
        "vision_pretraining": vision, "freeze_vision": freeze_vision,
        "device": device_name(resolve_device(train_cfg.device)),
        "history": asdict(hist), "epochs_run": len(hist.epochs), "best_epoch": hist.best_epoch,
        "final_train_loss": hist.best["train_loss"],
        "best_val_loss": hist.best_value, "test_loss": test_loss,
        "train_s": hist.train_seconds, "load_s": load_s, "eval_s": eval_s,
        "grounding": grounding_of(kind, test_entries, [a["text"] for a in answers]),
        "eval_max_new_tokens": max_new_tokens,
        "mean_answer_tokens": float(np.mean([len(a["ids"]) for a in answers])),
        "samples": [{"clip_id": e["clip_id"], "question": e["query"], "answer": a["text"],
                     "reference": e[f"{kind}_answer"]} for e, a in list(zip(test_entries, answers))[:6]],
    }
    return model, info


def make_data(out_dir, n_clips: int, seed: int, vocab_size: int = 1024, n_workers: int | None = None,
              progress: bool = True, world_profile: str = "driving"):
    """The training world (helpers.world.dataset layout) and its tokenizer in out_dir/tokenizer."""
    from helpers.world.dataset import generate_dataset, load_manifest
    out = Path(out_dir)
    summary = generate_dataset(out, n_clips=n_clips, seed=seed, n_workers=n_workers, progress=progress,
                               world_profile=world_profile)
    train = split_entries(load_manifest(out))["train"]
    world_tokenizer(train, vocab_size).save_pretrained(out / "tokenizer")
    return summary


def ship(data_dir, out_dir, extra: dict | None = None, tokenizer_dir=None) -> Path:
    """Copy the tokenizer (default: data_dir/tokenizer) next to the trained draft/ and target/
    folders and write the top-level manifest.json (both models' manifests, the data summary)."""
    data_dir, out = Path(data_dir), Path(out_dir)
    tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir else data_dir / "tokenizer"
    if (out / "tokenizer").exists():
        shutil.rmtree(out / "tokenizer")
    shutil.copytree(tokenizer_dir, out / "tokenizer")
    manifest = {"made_by": "python -m helpers.models.shipped (see its docstring)",
                "dataset_summary": json.loads((data_dir / "dataset_summary.json").read_text())}
    for kind in KINDS:
        manifest[kind] = vlm_train.read_manifest(out / kind)
    manifest.update(extra or {})
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
    return out


def add_base_rates(models_dir=SHIPPED_DIR) -> dict[str, dict]:
    """Record, for a pair trained before train_one kept them, what base rates alone score on the vision
    stage's validation facts (train.base_rate_scores): the labels are the facts the captions of the
    manifest's training world name, recomputed from its scene graphs (dataset.world_captions, no
    rendering). Updates both manifests of each kind that had a vision stage; returns {kind: scores}."""
    from helpers.world.dataset import world_captions
    d = Path(models_dir)
    top = json.loads((d / "manifest.json").read_text())
    summary = top["dataset_summary"]
    clips = world_captions(summary["n_clips"], summary["params"]["seed"], tuple(summary["params"]["splits"]))
    out = {}
    for kind in KINDS:
        if not top[kind].get("vision_pretraining"):
            continue
        y = {s: grounding.caption_fact_matrix([c["captions"][kind] for c in clips if c["split"] == s])
             for s in ("train", "val")}
        out[kind] = vlm_train.base_rate_scores(y["train"], y["val"], grounding.FACTS)
        top[kind]["vision_pretraining"]["val_base_rates"] = out[kind]
        own = vlm_train.read_manifest(d / kind)                        # the kind's own copy of its manifest
        own["vision_pretraining"]["val_base_rates"] = out[kind]
        (d / kind / "manifest.json").write_text(json.dumps(own, indent=2, sort_keys=True, default=str))
    (d / "manifest.json").write_text(json.dumps(top, indent=2, sort_keys=True, default=str))
    return out


def recipe_entry(manifest: dict) -> dict:
    """One kind's manifest (train_one's info) -> its row in the shipped manifest's `recipe_search`:
    losses, epochs, seconds, input geometry, the vision stage's validation object F1 and held-out
    recall of model, chance and reference per category."""
    cfg, vision = manifest["vlm_config"], manifest.get("vision_pretraining") or {}
    return {"best_val_loss": manifest["best_val_loss"], "test_loss": manifest["test_loss"],
            "epochs_run": manifest["epochs_run"], "train_s": manifest["train_s"],
            "n_clips": manifest["data"]["n_clips"], "image_size_px": cfg["image_size_px"],
            "patch_size_px": cfg["patch_size_px"], "pixel_fit": cfg["pixel_fit"],
            "vision_pretraining_s": vision.get("seconds", 0.0),
            "vision_stage_val_f1_objects": vision.get("val", {}).get("val_f1_objects", float("nan")),
            "grounding_recall": {c: {src: manifest["grounding"][src][c]["recall"] for src in ("model", "chance", "reference")}
                                 for c in grounding.CATEGORIES}}


def same_clip_grounding(pairs: dict[str, str | Path], entries, max_new_tokens: int = 50,
                        progress: bool = True) -> dict[str, dict]:
    """{pair name: {kind: grounding_table}} of several shipped-layout model pairs (folders with draft/,
    target/, tokenizer/) answering the same manifest entries: recipes trained on different worlds
    have their held-out grounding measured on different clips, which this puts on the same ones."""
    out = {}
    for name, folder in pairs.items():
        tokenizer, out[name] = load_tokenizer(Path(folder) / "tokenizer"), {}
        for kind in KINDS:
            model, _ = vlm.load_pretrained(Path(folder) / kind, kind)
            answers = [a["text"] for a in answer_entries(model, tokenizer, entries, max_new_tokens, progress)]
            out[name][kind] = grounding_of(kind, entries, answers)
    return out


def record_recipe(pair_dir, name: str, command: str, compare_clips: int = 0, compare_seed: int = 4242,
                  models_dir=SHIPPED_DIR, workers: int | None = None, progress: bool = True) -> dict:
    """Add a trained but not shipped pair (a train_world_gpu.sh tarball, unpacked) to the shipped
    manifest's `recipe_search` under `name`, with the command that made it; compare_clips > 0 also
    answers that many clips of an unseen world (seed `compare_seed`) with the shipped pair and this
    one and keeps both grounding tables (`same_clip_grounding`) under the entry's "same_clips"."""
    d, pair = Path(models_dir), Path(pair_dir)
    top = json.loads((d / "manifest.json").read_text())
    cand = json.loads((pair / "manifest.json").read_text())
    entry = {kind: recipe_entry(cand[kind]) for kind in KINDS}
    entry["command"] = command
    if compare_clips > 0:
        import tempfile

        from helpers.world.dataset import generate_dataset, load_manifest
        with tempfile.TemporaryDirectory() as tmp:
            profile = top["dataset_summary"]["params"].get("world_profile", "driving")   # the shipped pair's world
            generate_dataset(tmp, n_clips=compare_clips, seed=compare_seed, progress=False, n_workers=workers,
                             world_profile=profile)
            tables = same_clip_grounding({"shipped": d, name: pair}, load_manifest(tmp), progress=progress)
        entry["same_clips"] = {"n_clips": compare_clips, "seed": compare_seed,
                               "shipped_weights": weights_id(d), "grounding": tables}
    top.setdefault("recipe_search", {})[name] = entry
    (d / "manifest.json").write_text(json.dumps(top, indent=2, sort_keys=True, default=str))
    return entry


def train_and_ship(data_dir, out_dir, vlm_cfg: vlm.VLMConfig, train_cfg: TrainConfig,
                   n_eval_clips: int = 40, max_new_tokens: int = 50, kinds=KINDS, tokenizer_dir=None,
                   aux_weight: float = 0.0, vision_s: float = 0.0, freeze_vision: bool = False) -> dict:
    """train_one + save_shipped for each kind, then ship. tokenizer_dir: an existing tokenizer
    (default: data_dir/tokenizer, written by make_data). Returns {kind: info}."""
    tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir else Path(data_dir) / "tokenizer"
    tokenizer = load_tokenizer(tokenizer_dir)
    infos = {}
    for kind in kinds:
        model, info = train_one(kind, data_dir, tokenizer, vlm_cfg, train_cfg, n_eval_clips, max_new_tokens, aux_weight,
                                vision_s, freeze_vision)
        vlm_train.save_shipped(model, tokenizer, Path(out_dir) / kind, info)
        infos[kind] = info
    ship(data_dir, out_dir, tokenizer_dir=tokenizer_dir)
    return infos


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m helpers.models.shipped", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["data", "train", "ship", "all", "base-rates", "record"],
                    help="base-rates: add the vision stage's base-rate scores to the pair in --out (add_base_rates); "
                         "record: add the pair in --pair to the shipped manifest's recipe search (record_recipe)")
    ap.add_argument("--data", help="dataset folder (step data/all: where to write it)")
    ap.add_argument("--out", help="shipping folder (draft/, target/, tokenizer/, manifest.json)")
    ap.add_argument("--kind", choices=KINDS)
    ap.add_argument("--n-clips", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--vocab-size", type=int, default=1024)
    ap.add_argument("--world-profile", default="driving", help="scene distribution (helpers.world.sample.PROFILES)")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--time-budget-s", type=float, default=0.0)
    ap.add_argument("--n-eval-clips", type=int, default=40)
    ap.add_argument("--max-new-tokens", type=int, default=50)
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--aux-weight", type=float, default=0.0, help="vision fact loss weight (helpers.models.train.train_vlm)")
    ap.add_argument("--vision-s", type=float, default=0.0,
                    help="seconds of vision pretraining on the facts the captions name, before the caption stage")
    ap.add_argument("--freeze-vision", action="store_true", help="the caption stage leaves the vision tower as stage 1 left it")
    ap.add_argument("--vlm-config", default="{}", help="JSON of helpers.models.vlm.VLMConfig fields")
    ap.add_argument("--pair", help="record: a trained pair's folder (draft/, target/, tokenizer/, manifest.json)")
    ap.add_argument("--name", help="record: the recipe's name in the manifest")
    ap.add_argument("--command", default="", help="record: the command that trained the pair")
    ap.add_argument("--compare-clips", type=int, default=0,
                    help="record: answer this many unseen clips with the shipped pair and this one (same_clip_grounding)")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    train_cfg = vlm_train.vlm_train_config(epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
                                           max_minutes=a.time_budget_s / 60, patience=a.patience, progress=not a.quiet)
    vlm_cfg = vlm.VLMConfig.from_dict(json.loads(a.vlm_config))
    if a.step in ("data", "all"):
        s = make_data(a.data, a.n_clips, a.seed, a.vocab_size, a.workers, progress=not a.quiet,
                      world_profile=a.world_profile)
        print(f"data: {s.n_clips} clips in {s.wall_s:.1f} s ({s.clips_per_s:.1f} clips/s), "
              f"{s.n_distinct_scenes} distinct scenes, captions {s.n_distinct_captions}", flush=True)
    if a.step == "train":
        tokenizer = load_tokenizer(Path(a.data) / "tokenizer")
        model, info = train_one(a.kind, a.data, tokenizer, vlm_cfg, train_cfg, a.n_eval_clips, a.max_new_tokens,
                                a.aux_weight, a.vision_s, a.freeze_vision)
        vlm_train.save_shipped(model, tokenizer, Path(a.out) / a.kind, info)
        if info["vision_pretraining"]:
            print(f"{a.kind} vision: {json.dumps(info['vision_pretraining']['val'])}", flush=True)
        print(f"{a.kind}: {info['epochs_run']} epochs, {info['train_s']:.0f} s, val {info['best_val_loss']:.4f}, "
              f"test {info['test_loss']:.4f}, grounding {json.dumps(grounding.flat_scores(info['grounding']))}",
              flush=True)
    if a.step == "all":
        train_and_ship(a.data, a.out, vlm_cfg, train_cfg, a.n_eval_clips, a.max_new_tokens, aux_weight=a.aux_weight,
                       vision_s=a.vision_s, freeze_vision=a.freeze_vision)
    if a.step == "ship":
        ship(a.data, a.out)
    if a.step == "record":
        if not (a.pair and a.name):
            ap.error("record needs --pair and --name")
        entry = record_recipe(a.pair, a.name, a.command, a.compare_clips, workers=a.workers, progress=not a.quiet)
        for pair, kinds in entry.get("same_clips", {}).get("grounding", {}).items():
            for kind, t in kinds.items():
                print(pair, kind, {c: f"{t['model'][c]['recall']:.3f} vs chance {t['chance'][c]['recall']:.3f}"
                                   for c in ("objects", "motion")}, flush=True)
    if a.step == "base-rates":
        print(json.dumps(add_base_rates(a.out or SHIPPED_DIR)), flush=True)
    print(f"{a.step} done in {time.perf_counter() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
