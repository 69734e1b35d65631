"""Captions from the scene graph, in two registers, for the study's 10 questions.

- draft register ("draft", EventGPT-like): "In the scene, there is a car parked on the side
  of a road. ..." Only what events can show: moving things and, while the ego moves, edges
  (road edges, markings, outlines of static objects). No colours, no lighting, no distant
  background; large vehicles are often just "a large vehicle"; lit lamps at night show up
  ("with its headlights on"). Under a still camera static objects are not mentioned.
- target register ("target", Video-LLaVA-like): "The key elements in this scene include a
  red car driving down a winding road, ..., and a beautiful view of the mountains in the
  background." Colours, lighting, time of day and background.

Both registers answer the asked question (road layout -> the road; vehicles -> vehicles
and positions; ...). Wording varies through synonyms and ordering drawn from a generator
seeded by (scene seed, question, register), so captions are deterministic per clip.
"""
from __future__ import annotations

import zlib

import numpy as np

from helpers.world.scene import Agent, Scene

QUESTIONS = (
    "What are the key elements in this scene?",
    "Can you elaborate on the elements of the scene provided?",
    "What is this scene about?",
    "What is the layout of the road in the scene?",
    "What type of vehicles are present in the scene and how are they positioned?",
    "What do you think is going on in this scene?",
    "What elements are present in the scene?",
    "What do you see happening in this scene?",
    "Describe the following scene.",
    "What types of vehicles are present in the scene?",
)
REGISTERS = ("draft", "target")
FAR_FOR_EVENTS_M = 40.0   # beyond this the draft misses small things (few events)


def _pick(rng, options):
    return options[int(rng.integers(len(options)))]


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + (", and " if len(items) > 2 else " and ") + items[-1]


def _moving(a: Agent) -> bool:
    return a.speed_mps != 0 or a.lat_speed_mps != 0


def event_visible(scene: Scene) -> tuple[list[Agent], list]:
    """Agents and roadside objects that produce events: everything moving relative to the
    camera that is near enough; with a still camera only moving agents."""
    still = scene.ego_speed_mps == 0
    agents = [a for a in scene.agents if (_moving(a) or not still)
              and (a.s_m < FAR_FOR_EVENTS_M or a.kind in ("truck", "bus"))]
    roadside = [] if still else [r for r in scene.roadside if r.s_m < FAR_FOR_EVENTS_M + 15]
    return agents, roadside


def _road_name(scene: Scene, rng, register: str) -> str:
    lay = scene.road.layout
    if lay == "intersection":
        return _pick(rng, ["an intersection", "a road leading to an intersection", "a crossroads"])
    adj = {"straight": ["straight"], "curving": ["curving", "curved"], "winding": ["winding"]}[lay]
    noun = "street" if scene.background == "city" and register == "target" else "road"
    if register == "draft":
        adj = adj + [""]  # events often miss the shape
    a = _pick(rng, adj)
    return _a(f"{a} {noun}".strip())


def _agent_phrase(a: Agent, rng, register: str, scene: Scene) -> str:
    kind = a.kind
    if register == "draft":
        kind = {"car": _pick(rng, ["car", "car", "vehicle"]), "truck": _pick(rng, ["truck", "large vehicle"]),
                "bus": _pick(rng, ["bus", "large vehicle"]), "cyclist": _pick(rng, ["cyclist", "person on a bicycle"]),
                "pedestrian": "person"}[kind]
        head = _a(kind)
    else:
        kind = {"pedestrian": _pick(rng, ["person", "pedestrian"]), "cyclist": "cyclist"}.get(kind, kind)
        head = _a(f"{a.colour} {kind}") if a.kind != "pedestrian" else _a(kind) + f" in {a.colour}"
    side = a.side if a.side != "center" else "near"
    if a.kind == "pedestrian":
        where = {"standing": f"standing on the {side} side of the road",
                 "walking": _pick(rng, [f"walking along the {side} side of the road"]
                                 + ([f"walking on the {side} sidewalk"] if scene.road.sidewalks else [])),
                 "crossing": _pick(rng, ["crossing the street", "crossing the road"])}[a.state]
    else:
        where = {"parked": _pick(rng, [f"parked on the {side} side of the road", "parked on the side of the road"]),
                 "ahead": (_pick(rng, ["driving down the road ahead", "driving ahead in the same lane"])
                           if a.speed_mps > 0 else "stopped ahead in the same lane"),
                 "oncoming": _pick(rng, ["coming from the opposite direction", "driving in the opposite lane"]),
                 "crossing": _pick(rng, ["crossing the intersection", "crossing in front of the camera"])}[a.state]
    extra = ""
    if register == "draft":
        if a.lights_on and a.state in ("ahead", "parked"):
            extra = " with its rear lights on"
        elif a.lights_on:
            extra = " with its headlights on"
        if a.state == "oncoming" and rng.random() < 0.5:
            where = "moving towards the viewer"
        elif a.state == "ahead" and a.speed_mps > scene.ego_speed_mps + 1 and rng.random() < 0.5:
            where = "moving away from the viewer"
    elif a.lights_on and scene.time_of_day == "night":
        extra = " with its headlights on" if a.state == "oncoming" else ""
    return f"{head} {where}{extra}" if register == "target" else f"{head}{extra} {where}" if extra and "lights" in extra and rng.random() < 0.5 else f"{head} {where}{extra}"


def _roadside_phrases(items, rng, register: str) -> list[str]:
    counts: dict[str, int] = {}
    for r in items:
        counts[r.kind] = counts.get(r.kind, 0) + 1
    names = {"tree": ("a tree", "trees"), "building": ("a building", "buildings"),
             "street_light": ("a streetlight", "streetlights"), "traffic_light": ("a traffic light", "traffic lights"),
             "sign": ("a road sign", "road signs")}
    out = []
    for kind, n in counts.items():
        one, many = names[kind]
        p = one if n == 1 else (_pick(rng, ["some ", "several ", ""]) + many)
        if register == "target" and kind == "traffic_light":
            sig = next(r.signal for r in items if r.kind == kind)
            p += f" showing {sig}"
        out.append(p)
    rng.shuffle(out)
    return out


def _road_details(scene: Scene, rng, register: str) -> list[str]:
    r = scene.road
    d = []
    if register == "target":
        d.append(f"{'two' if r.n_lanes == 2 else 'four'} lanes")
    if r.lane_markings == "dashed":
        d.append(_pick(rng, ["a dashed line down the middle", "dashed lane markings"]))
    elif r.lane_markings == "solid":
        d.append(_pick(rng, ["a solid line down the middle", "a solid centre line"]))
    if r.edge_lines:
        d.append(_pick(rng, ["a white line marking the edge", "white lines along the edges"]))
    if r.curbs:
        d.append("curbs on both sides")
    if r.sidewalks:
        d.append("sidewalks on both sides")
    if r.barrier != "none":
        d.append({"wall": _pick(rng, ["a stone wall on the side", "a wall along the road"]),
                  "guardrail": _pick(rng, ["a guardrail on the side", "guardrails along the road"])}[r.barrier])
    if register == "draft":
        d = d[: 1 + int(rng.integers(2))]   # events outline only a few edges clearly
    return d


BACKGROUND_TEXT = {
    "mountains": ["a beautiful view of the mountains in the background", "mountains in the background",
                  "a beautiful mountain view in the background"],
    "sea": ["a beautiful view of the ocean in the background", "the sea in the background", "a view of the water"],
    "city": ["a city skyline in the background", "tall buildings in the background", "a row of buildings in the distance"],
}
TIME_TEXT = {"day": ["on a clear day", "in daylight", "under a bright sky"],
             "dusk": ["at dusk, with the sky glowing orange", "in the evening light", "at sunset"],
             "night": ["at night", "at night, with the street lit by lights", "in the dark"]}
EGO_TEXT = {"stopped": ["The camera is stationary", "The vehicle with the camera is stopped"],
            "slow": ["The camera is moving slowly along the road", "The vehicle is moving slowly"],
            "moderate": ["The camera is moving along the road", "The vehicle is driving at a moderate speed"],
            "fast": ["The camera is moving quickly along the road", "The vehicle is driving fast"]}


def caption(scene: Scene, question_idx: int, register: str) -> str:
    """The answer to QUESTIONS[question_idx] about `scene` in the given register."""
    if register not in REGISTERS:
        raise ValueError(f"register must be one of {REGISTERS}, got {register!r}")
    rng = np.random.default_rng([scene.seed & 0xFFFFFFFF, question_idx, zlib.crc32(register.encode())])
    draft = register == "draft"
    agents, roadside = event_visible(scene) if draft else (list(scene.agents), list(scene.roadside))
    rng.shuffle(agents)
    road = _road_name(scene, rng, register)
    ags = [_agent_phrase(a, rng, register, scene) for a in agents]
    vehicles = [p for a, p in zip(agents, ags) if a.kind != "pedestrian"]
    side = _roadside_phrases(roadside, rng, register)
    details = _road_details(scene, rng, register) if (not draft or scene.ego_speed_mps > 0) else []
    bg = _pick(rng, BACKGROUND_TEXT[scene.background])
    tod = _pick(rng, TIME_TEXT[scene.time_of_day])
    ego = _pick(rng, EGO_TEXT[scene.ego_motion])
    still_note = "The camera appears to be still, so only moving objects stand out."
    q = question_idx
    if q == 3:  # road layout
        if draft:
            if scene.ego_speed_mps == 0:
                return "The layout of the road is hard to make out; " + (
                    f"there is {ags[0]}, which suggests a road." if ags else "the scene shows very little activity.")
            return f"The scene shows {road}." + (f" The road has {_join(details)}." if details else "")
        return f"The road in the scene is {road} with {_join(details)}. " + (
            f"It is lined with {_join(side)}." if side else f"There is {bg}.")
    if q in (4, 9):  # vehicles
        if not vehicles:
            return ("In the scene, there are no vehicles visible." if draft
                    else "There are no vehicles present in the scene; " + f"it shows {road} {tod}.")
        if q == 9:
            kinds = sorted({a.kind for a in agents if a.kind != "pedestrian"})
            if draft:
                kinds = sorted({"vehicle" if k in ("truck", "bus") and rng.random() < 0.5 else k for k in kinds})
            lead = "In the scene, there" if draft else "The types of vehicles present in the scene"
            return f"{lead} {'is' if draft and len(kinds) == 1 else 'are' if draft else 'include'} " + \
                _join([_a(k) if len(kinds) == 1 or draft else k + "s" for k in kinds]) + "."
        lead = "In the scene, there is" if draft else "The vehicles in the scene include"
        return f"{lead} {_join(vehicles)}."
    if draft:
        main = ags[0] if ags else (f"{road}" if scene.ego_speed_mps > 0 else "a road with little visible activity")
        first = f"In the scene, there is {main}" + (f" on {road}" if ags and not main.endswith(" on") and rng.random() < 0.5 else "") + "."
        rest = []
        if len(ags) > 1:
            rest.append(f"There is also {_join(ags[1:])}.")
        if details:
            rest.append(f"The road has {_join(details)}.")
        if side:
            rest.append(f"There {'are' if len(side) > 1 or side[0].endswith('s') else 'is'} {_join(side)} "
                        f"{_pick(rng, ['along the road', 'on the side', 'in the background'])}.")
        if scene.ego_speed_mps == 0 and q in (2, 5, 7, 8):
            rest.append(still_note)
        if q in (2, 5, 7):
            first = (f"The scene shows {main}." if q == 2 else first)
        return " ".join([first] + rest[: 2 + (q in (1, 8))])
    # target register
    elems = ags + side
    if q in (0, 6):
        items = ([f"{ags[0]} on {road}"] if ags else [road]) + elems[1:] + [bg]
        lead = "The key elements in this scene include" if q == 0 else "The elements present in the scene are"
        tail = f" {ego}, {tod}." if q == 0 else ""
        return f"{lead} {_join(items)}.{tail}"
    if q in (2, 5, 7):
        lead = {2: "The scene is about", 5: "In this scene,", 7: "In this scene, I see"}[q]
        act = _join(ags) if ags else "an empty road"
        body = f"{lead} {act} on {road} {tod}." if q != 5 else f"{lead} {act} {'are' if len(ags) > 1 else 'is'} on {road} {tod}."
        return f"{body} {ego}, with {bg}."
    # 1 and 8: longer descriptions
    first = f"The scene shows {road} {tod}"
    s = [first + (f", with {_join(details)}." if details else ".")]
    if ags:
        s.append(f"There is {_join(ags)}.")
    if side:
        s.append(f"The road is lined with {_join(side)}.")
    s.append(f"{ego}, with {bg}.")
    return " ".join(s)


def captions_for_scene(scene: Scene) -> dict[str, list[str]]:
    """{register: [answer to each of the 10 QUESTIONS]}."""
    return {r: [caption(scene, q, r) for q in range(len(QUESTIONS))] for r in REGISTERS}
