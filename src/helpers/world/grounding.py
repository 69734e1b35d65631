"""How grounded a model's answers are: objects, colours and motion checked against the scene graph.

An answer is reduced to three sets of facts by word patterns over the world's closed vocabulary
(the captions of `helpers.world.captions` use it, so the models do too):
- objects: vehicle kinds, pedestrians and roadside kinds (`OBJECT_PATTERNS`);
- colours: the world's colour names (`world.COLOURS`), after removing phrases where a colour
  word is not an object's colour (white lane lines, a traffic light "showing red", an orange sky);
- motion: agent states (parked, ahead, oncoming, crossing, walking, standing);
- scene: the clip's global facts (road layout, background, time of day, ego motion).
The scene graph gives the true sets. Per category, pooled over answers (micro average):
    recall    = |answer ∩ scene| / |scene|    (how much of what is there the answer names)
    precision = |answer ∩ scene| / |answer|   (1 - precision = hallucinated facts)
Two references frame a model's figures: the reference captions of its own register (the
ceiling: the draft register never names colours, and names static objects only when the
camera moves) and the model's answers scored against another clip's scene graph (chance:
what a fluent answer that ignores the pixels would score).
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np
import pandas as pd

from helpers.world.scene import COLOURS, FOCAL_FRAC, SIZES_M, agent_position, in_view, scene_from_dict

CATEGORIES = ("objects", "colours", "motion", "scene")
OBJECT_PATTERNS = {
    "car": r"\bcars?\b", "truck": r"\btrucks?\b", "bus": r"\bbus(es)?\b",
    "cyclist": r"\bcyclists?\b|\bbicycles?\b", "pedestrian": r"\bpedestrians?\b|\bperson\b(?! on a bicycle)|\bpeople\b",
    "tree": r"\btrees?\b", "building": r"\bbuildings?\b", "street_light": r"\bstreetlights?\b",
    "traffic_light": r"\btraffic lights?\b", "sign": r"\bsigns?\b",
}
MOTION_PATTERNS = {
    "parked": r"\bparked\b",
    "ahead": r"driving (down the road )?ahead|stopped ahead|moving away from the viewer",
    "oncoming": r"opposite (direction|lane)|towards the viewer",
    "crossing": r"\bcrossing\b",
    "walking": r"\bwalking\b",
    "standing": r"\bstanding\b",
}
# scene-level facts: road layout, background, time of day, ego motion (one true value each)
SCENE_PATTERNS = {
    "layout:straight": r"\bstraight\b", "layout:curving": r"\bcurv(ing|ed)\b", "layout:winding": r"\bwinding\b",
    "layout:intersection": r"\bintersection\b|\bcrossroads\b",
    "background:mountains": r"\bmountains?\b", "background:sea": r"\bocean\b|\bsea\b|\bwater\b",
    "background:city": r"\bskyline\b|buildings in the (background|distance)",
    "time:day": r"clear day|daylight|bright sky", "time:dusk": r"\bdusk\b|evening light|\bsunset\b",
    "time:night": r"\bat night\b|\bin the dark\b",
    "ego:stopped": r"camera is stationary|camera is stopped|camera appears to be still",
    "ego:slow": r"moving slowly", "ego:moderate": r"camera is moving along|moderate speed",
    "ego:fast": r"moving quickly|driving fast",
}
# colour words that do not name an object's colour
NOT_OBJECT_COLOUR = r"white lines?|showing (red|green)|glowing orange"


def answer_facts(text: str) -> dict[str, set[str]]:
    """{category: facts named in the text}."""
    t = text.lower()
    colour_text = re.sub(NOT_OBJECT_COLOUR, " ", t)
    return {
        "objects": {k for k, pat in OBJECT_PATTERNS.items() if re.search(pat, t)},
        "colours": {c for c in COLOURS if re.search(rf"\b{c}\b", colour_text)},
        "motion": {k for k, pat in MOTION_PATTERNS.items() if re.search(pat, t)},
        "scene": {k for k, pat in SCENE_PATTERNS.items() if re.search(pat, t)},
    }


def scene_facts(scene: dict) -> dict[str, set[str]]:
    """{category: true facts} from a scene graph (`world.scene_to_dict` form). A city
    background counts as buildings (the captions mention the skyline's buildings)."""
    objects = {a["kind"] for a in scene["agents"]} | {r["kind"] for r in scene["roadside"]}
    if scene["background"] == "city":
        objects.add("building")
    return {"objects": objects, "colours": {a["colour"] for a in scene["agents"]},
            "motion": {a["state"] for a in scene["agents"]},
            "scene": {f"layout:{scene['road']['layout']}", f"background:{scene['background']}",
                      f"time:{scene['time_of_day']}", f"ego:{scene['ego_motion']}"}}


FACTS = ([f"objects:{k}" for k in OBJECT_PATTERNS] + [f"colours:{c}" for c in COLOURS]
         + [f"motion:{k}" for k in MOTION_PATTERNS] + [f"scene:{k}" for k in SCENE_PATTERNS])


def _multi_hot(rows: Sequence[Sequence[dict[str, set[str]]]]) -> np.ndarray:
    """(N, len(FACTS)): row r has a 1 for every fact of any {category: facts} dict in rows[r]."""
    index = {f: i for i, f in enumerate(FACTS)}
    out = np.zeros((len(rows), len(FACTS)), np.float32)
    for r, fact_sets in enumerate(rows):
        for facts_by_category in fact_sets:
            for c, facts in facts_by_category.items():
                for f in facts:
                    out[r, index[f"{c}:{f}"]] = 1.0
    return out


def fact_matrix(scenes: Sequence[dict]) -> np.ndarray:
    """Multi-hot (N, len(FACTS)) of each scene graph's true facts: training targets for the
    vision towers (helpers.models.train's aux loss)."""
    return _multi_hot([[scene_facts(scene)] for scene in scenes])


def caption_fact_matrix(captions_per_clip: Sequence[Sequence[str]]) -> np.ndarray:
    """Multi-hot (N, len(FACTS)) of the facts a clip's captions name (the union over its answers):
    what a model of that register is asked to say about the clip, so a vision tower trained on it
    learns the visible facts only (the draft register names no colours, no static objects under a
    still camera), not every object of the scene graph, far or out of view."""
    return _multi_hot([[answer_facts(t) for t in texts] for texts in captions_per_clip])


def grounding_scores(answers: Sequence[str], scenes: Sequence[dict]) -> dict[str, dict[str, float]]:
    """{category: {recall, precision, n_true, n_named}} pooled over (answer, scene) pairs."""
    out = {}
    per = [(answer_facts(a), scene_facts(s)) for a, s in zip(answers, scenes, strict=True)]
    for c in CATEGORIES:
        hit = sum(len(a[c] & s[c]) for a, s in per)
        n_true = sum(len(s[c]) for _, s in per)
        n_named = sum(len(a[c]) for a, _ in per)
        out[c] = {"recall": hit / n_true if n_true else float("nan"),
                  "precision": hit / n_named if n_named else float("nan"),
                  "n_true": n_true, "n_named": n_named}
    return out


def shifted(items: Sequence, clip_ids: Sequence[str]) -> list:
    """items re-paired with the next clip's (cyclic over distinct clips, in order): the
    chance reference. Needs at least two clips."""
    clips = list(dict.fromkeys(clip_ids))
    if len(clips) < 2:
        raise ValueError("the chance reference needs answers from at least two clips")
    nxt = {c: clips[(i + 1) % len(clips)] for i, c in enumerate(clips)}
    first = {}
    for it, c in zip(items, clip_ids):
        first.setdefault(c, it)
    return [first[nxt[c]] for c in clip_ids]


def grounding_table(answers: Sequence[str], references: Sequence[str], scenes: Sequence[dict],
                    clip_ids: Sequence[str]) -> dict[str, dict[str, dict[str, float]]]:
    """{'model', 'reference', 'chance', 'reference_chance'}: scores of the model's answers, of the
    reference captions (same register), of the model's answers against the next clip's scene, and of
    the reference captions against the next clip's scene (the ceiling's own chance)."""
    nan = {c: {"recall": float("nan"), "precision": float("nan"), "n_true": 0, "n_named": 0} for c in CATEGORIES}
    other = shifted(scenes, clip_ids) if len(set(clip_ids)) > 1 else None
    return {"model": grounding_scores(answers, scenes),
            "reference": grounding_scores(references, scenes),
            "chance": grounding_scores(answers, other) if other else nan,
            "reference_chance": grounding_scores(references, other) if other else nan}


def chance_multiples(tables: dict[str, dict]) -> pd.DataFrame:
    """Per (model kind, category) the register names: recall as a multiple of chance for the model's
    answers and for the reference captions (each scored against the next clip's scene too). The
    reference's multiple is what a model that says exactly what the reference says would reach: the
    yardstick for a target such as "twice chance" in that category."""
    rows = []
    for kind, t in tables.items():
        for c in CATEGORIES:
            ref = t["reference"].get(c, {}).get("recall", np.nan)
            if "reference_chance" not in t or not ref > 0:          # older tables; facts the register never names
                continue
            m, ch, rch = t["model"][c]["recall"], t["chance"][c]["recall"], t["reference_chance"][c]["recall"]
            rows.append({"model": kind, "facts": c, "model recall": m, "chance": ch,
                         "model x chance": m / ch if ch > 0 else np.nan, "reference recall": ref,
                         "reference chance": rch, "reference x chance": ref / rch if rch > 0 else np.nan})
    return pd.DataFrame(rows)


def caption_multiples(captions: dict[str, Sequence[str]], scenes: Sequence[dict], clip_ids: Sequence[str]) -> pd.DataFrame:
    """How much the reference captions themselves say about their clip: per register (captions:
    {register: one caption per entry}) and category the register names, their recall against their
    own clip's scene graph and against the next clip's (chance), and the ratio. A world whose
    captions name facts hardly more often than captions of another clip would (ratio near 1) leaves a
    model's answers little content to carry, however well it sees."""
    other = shifted(scenes, clip_ids)
    rows = []
    for register, texts in captions.items():
        own, chance = grounding_scores(texts, scenes), grounding_scores(texts, other)
        for c in CATEGORIES:
            if own[c]["recall"] > 0:
                rows.append({"register": register, "facts": c, "recall": own[c]["recall"],
                             "chance": chance[c]["recall"],
                             "x chance": own[c]["recall"] / chance[c]["recall"] if chance[c]["recall"] > 0 else np.nan})
    return pd.DataFrame(rows)


def flat_scores(table: dict, prefix: str = "") -> dict[str, float]:
    """{'<prefix><source>_<category>_<recall|precision>': value}: for results.json and glue."""
    return {f"{prefix}{src}_{c}_{m}": v[c][m] for src, v in table.items() for c in CATEGORIES if c in v
            for m in ("recall", "precision")}


def recall_frame(tables: dict[str, dict]) -> pd.DataFrame:
    """Recall per category (columns) for each (model kind, source) row: source = model, reference
    caption (the ceiling) and chance (the model's answers against another clip's scene)."""
    return pd.DataFrame({(kind, src): {c: t[src].get(c, {}).get("recall", np.nan) for c in CATEGORIES}
                         for kind, t in tables.items() for src in ("model", "reference", "chance")}).T


def named_facts(texts: Sequence[str], category: str) -> set[str]:
    """The facts of one category that any of the texts (a clip's answers) names."""
    return set().union(*(answer_facts(t)[category] for t in texts))


def rank_auc(truth: Sequence[bool], score: Sequence[float]) -> float:
    """ROC AUC: the chance that a random positive scores above a random negative (ties count half);
    0.5 is a coin, NaN when either class is empty."""
    t, r = np.asarray(truth, bool), pd.Series(np.asarray(score, float)).rank().to_numpy()
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((r[t].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def palette_shares(frames: np.ndarray, radius: float = 0.15) -> dict[str, float]:
    """{colour: share of the pixels of uint8 frames (..., H, W, 3) within `radius` (RGB distance on a
    0-1 scale) of the colour's day albedo}: a colour detector that learns nothing."""
    x = np.asarray(frames, np.float32).reshape(-1, 3) / 255.0                # (N, 3)
    palette = np.asarray(list(COLOURS.values()), np.float32)                 # (C, 3)
    d2 = (x * x).sum(1, keepdims=True) - 2 * x @ palette.T + (palette * palette).sum(1)   # (N, C) squared distances
    near = (d2 < radius * radius).mean(0)                                    # (C,)
    return dict(zip(COLOURS, map(float, near)))


def colour_evidence(frames: Sequence[np.ndarray], scenes: Sequence[dict], answers: Sequence[Sequence[str]],
                    references: Sequence[Sequence[str]] | None = None) -> pd.DataFrame:
    """Per agent colour, over clips (one entry per clip: its frames, its scene graph, the model's
    answers about it): the clips whose scene has an agent of that colour, and how well two things
    tell those clips from the others (ROC AUC): the share of that colour's pixels in the frames
    (`palette_shares`: what a detector with no training finds in the pixels) and whether any of the
    model's answers names the colour; with `references` (the reference captions per clip), whether
    any of those names it too. Colours that every clip or none has are left out."""
    truth = [scene_facts(s)["colours"] for s in scenes]
    said = [named_facts(texts, "colours") for texts in answers]
    ref = [named_facts(texts, "colours") for texts in references] if references is not None else None
    shares = [palette_shares(f) for f in frames]
    rows = []
    for c in COLOURS:
        has = [c in t for t in truth]
        if 0 < sum(has) < len(has):
            rows.append({"colour": c, "clips with it": sum(has), "clips": len(has),
                         "pixels (AUC)": rank_auc(has, [sh[c] for sh in shares]),
                         "answers (AUC)": rank_auc(has, [c in n for n in said]),
                         **({"reference captions (AUC)": rank_auc(has, [c in n for n in ref])} if ref else {})})
    return pd.DataFrame(rows)


SIZE_BINS_PX = (0.0, 2.0, 4.0, 8.0, 16.0, float("inf"))


def object_sizes(scene: dict, input_px: int, t_s: float = 0.5) -> dict[str, float]:
    """{object kind: the widest on-screen width, in pixels of a model input `input_px` wide, of the
    scene's objects of that kind} at time t_s (mid-clip). Objects out of the camera's view then
    (behind it, or to the side: `scene.in_view`) are left out, and so is a city background's
    skyline, which has no place (scene_facts counts it a building)."""
    sc = scene_from_dict(scene)
    places = [(a.kind, *agent_position(a, t_s)) for a in sc.agents] + [(r.kind, r.s_m, r.lat_m) for r in sc.roadside]
    s_cam = sc.ego_speed_mps * t_s
    out: dict[str, float] = {}
    for kind, s_m, lat_m in places:
        if in_view(sc, s_m, lat_m, t_s):
            out[kind] = max(out.get(kind, 0.0), FOCAL_FRAC * input_px * SIZES_M[kind][0] / (s_m - s_cam))
    return out


def recall_by_size(scenes: Sequence[dict], answers: Sequence[Sequence[str]], references: Sequence[Sequence[str]],
                   input_px: int, bins: Sequence[float] = SIZE_BINS_PX) -> pd.DataFrame:
    """Object recall by how large the object appears: one entry per clip (its scene graph, the
    model's answers about it, the reference captions of the model's register). A (clip, kind) is
    binned by the widest object of that kind (`object_sizes`) and counts as named when any answer
    names the kind. Rows per size bin: the (clip, kind)s in it and the recall of the model's answers,
    of the reference captions and of chance (the answers about the next clip, cyclically)."""
    if len(scenes) < 2:
        raise ValueError("recall by size needs at least two clips (chance pairs each clip with the next)")
    said, ref = [named_facts(a, "objects") for a in answers], [named_facts(r, "objects") for r in references]
    chance = shifted(said, list(range(len(said))))                 # each clip judged by the next clip's answers
    widths = [object_sizes(scene, input_px) for scene in scenes]   # once per clip, not once per bin
    rows = []
    for lo, hi in zip(bins[:-1], bins[1:]):
        hits = {"model": 0, "reference": 0, "chance": 0}
        n = 0
        for w, m, r, c in zip(widths, said, ref, chance, strict=True):
            for kind, px in w.items():
                if lo <= px < hi:
                    n += 1
                    hits["model"] += kind in m
                    hits["reference"] += kind in r
                    hits["chance"] += kind in c
        label = f"{lo:g}-{hi:g} px" if np.isfinite(hi) else f">= {lo:g} px"
        rows.append({"apparent width": label, "objects": n,
                     **{k: v / n if n else float("nan") for k, v in hits.items()}})
    return pd.DataFrame(rows)


def verdict(tables: dict[str, dict], margin: float = 0.05) -> dict[str, list[str]]:
    """Which (kind, category) recalls lie more than `margin` above chance and which do not;
    categories the reference never names (the draft register has no colours) are skipped.
    Returns {"above": [...], "at": [...]} of "kind category (model vs chance)" strings."""
    out = {"above": [], "at": []}
    for kind, t in tables.items():
        for c in CATEGORIES:
            if c not in t["model"]:
                continue
            m, ch = t["model"][c]["recall"], t["chance"][c]["recall"]
            if np.isnan(m) or np.isnan(ch) or t["reference"][c]["recall"] == 0:
                continue
            out["above" if m - ch > margin else "at"].append(f"{kind} {c} ({m:.2f} vs {ch:.2f})")
    return out


def verdict_text(tables: dict[str, dict], margin: float = 0.05) -> str:
    v = verdict(tables, margin)
    return (f"above chance: {', '.join(v['above']) or 'none'}; within {margin:.2f} of chance: "
            f"{', '.join(v['at']) or 'none'}")
