"""Random scenes: `sample_scene(rng)` draws one `Scene` of helpers.world.scene.

Deterministic given the generator's state; the distributions below set the world's variety
(layouts, traffic, roadside objects, lighting, ego motion). Where the objects stand and how often
each kind occurs are a `SceneDistribution` (`PROFILES`):

- "driving" (`sample_scene`'s default; the world of the pair in assets/synthetic_vlm, which
  synthetic_study and synthetic_scale run on): up to four agents 9-45 m
  ahead, most of them cars, and roadside objects up to 60 m ahead, trees or buildings in nearly
  every scene. Most objects span a few pixels of a 96-pixel model input, and the kinds are so
  predictable from their base rates that the reference captions themselves name objects only about
  twice as often as fluent text about another clip would (`helpers.world.grounding.chance_multiples`).
- "legible": fewer, nearer objects (agents 7-24 m, roadside 8-28 m) whose kinds are drawn evenly, so
  that what a clip holds is both visible and not guessable: a world in which a caption's content
  can carry information about the scene. The default run's world (pair in assets/synthetic_vlm_legible).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from helpers.world.scene import (BACKGROUNDS, COLOURS, EGO_SPEED_BANDS_MPS, LANE_WIDTH_M, LAYOUTS, ROADSIDE_KINDS,
                                 TIMES_OF_DAY, VEHICLE_KINDS, Agent, Road, Roadside, Scene, agent_position, in_view)


@dataclass(frozen=True)
class SceneDistribution:
    """How many objects a scene holds, which kinds and how far ahead (road positions in metres)."""
    n_agents_p: tuple[float, ...] = (0.05, 0.35, 0.3, 0.2, 0.1)   # P(0, 1, 2, ... agents attempted)
    pedestrian_p: float = 0.25
    vehicle_kind_p: tuple[float, ...] = (0.55, 0.15, 0.12, 0.18)  # over VEHICLE_KINDS
    agent_s_m: tuple[float, float] = (9.0, 45.0)
    roadside_s_m: tuple[float, float] = (8.0, 60.0)
    roadside_max: int = 4                 # trees, buildings and street lights come 1..roadside_max at a time
    roadside_flat_p: float = 0.0          # > 0: every roadside kind occurs with this probability
                                          # (traffic lights at intersections only); 0: the driving mix

    def __post_init__(self):
        for name in ("n_agents_p", "vehicle_kind_p"):
            p = np.asarray(getattr(self, name), float)
            if (p < 0).any() or abs(p.sum() - 1) > 1e-6:
                raise ValueError(f"{name} must be probabilities summing to 1, got {getattr(self, name)}")
        if len(self.vehicle_kind_p) != len(VEHICLE_KINDS):
            raise ValueError(f"vehicle_kind_p needs one probability per kind of {VEHICLE_KINDS}")
        for name in ("agent_s_m", "roadside_s_m"):
            lo, hi = getattr(self, name)
            if not 0 < lo < hi:
                raise ValueError(f"{name} must be (near, far) with 0 < near < far, got {getattr(self, name)}")
        if not 0 <= self.pedestrian_p <= 1 or not 0 <= self.roadside_flat_p <= 1 or self.roadside_max < 1:
            raise ValueError("pedestrian_p and roadside_flat_p must lie in [0, 1] and roadside_max be >= 1")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


PROFILES = {
    "driving": SceneDistribution(),
    "legible": SceneDistribution(n_agents_p=(0.1, 0.5, 0.3, 0.1, 0.0), pedestrian_p=0.2,
                                 vehicle_kind_p=(0.25, 0.25, 0.25, 0.25), agent_s_m=(7.0, 24.0),
                                 roadside_s_m=(8.0, 28.0), roadside_max=2, roadside_flat_p=0.2),
}


def profile(name: str) -> SceneDistribution:
    """The named scene distribution of PROFILES, with a clear error for an unknown name."""
    if name not in PROFILES:
        raise ValueError(f"unknown world profile {name!r}; choose one of {sorted(PROFILES)}")
    return PROFILES[name]


def _sample_road(rng: np.random.Generator) -> Road:
    layout = str(rng.choice(LAYOUTS, p=[0.3, 0.25, 0.25, 0.2]))
    return Road(
        layout=layout, n_lanes=int(rng.choice([2, 4], p=[0.75, 0.25])),
        lane_markings=str(rng.choice(["dashed", "solid", "none"], p=[0.6, 0.25, 0.15])),
        edge_lines=bool(rng.random() < 0.7), curbs=bool(rng.random() < 0.6),
        barrier=str(rng.choice(["none", "wall", "guardrail"], p=[0.5, 0.25, 0.25])),
        curvature_per_m=float(rng.choice([-1, 1]) * rng.uniform(0.008, 0.02)) if layout == "curving" else 0.0,
        wind_amplitude_m=float(rng.uniform(3, 7)) if layout == "winding" else 0.0,
        wind_period_m=float(rng.uniform(60, 110)),
        wind_phase_rad=float(rng.uniform(0, 2 * np.pi)),
        intersection_s_m=float(rng.uniform(18, 35)) if layout == "intersection" else -1.0,
        sidewalks=bool(rng.random() < 0.5),
    )


def _sample_agent(rng, scene: Scene, dist: SceneDistribution) -> Agent | None:
    road, half = scene.road, scene.road.half_width_m
    is_ped = rng.random() < dist.pedestrian_p
    kind = "pedestrian" if is_ped else str(rng.choice(VEHICLE_KINDS, p=list(dist.vehicle_kind_p)))
    colour = str(rng.choice(list(COLOURS)))
    lights = scene.time_of_day != "day" and not is_ped and rng.random() < 0.9
    v = scene.ego_speed_mps
    for _ in range(6):  # retry until the agent is in view
        s = float(rng.uniform(*dist.agent_s_m))
        if is_ped:
            state = str(rng.choice(["standing", "walking", "crossing"], p=[0.4, 0.35, 0.25]))
            sgn = float(rng.choice([-1, 1]))
            lat = sgn * (half + rng.uniform(0.8, 2.5))
            a = Agent(kind, colour, state, "left" if sgn < 0 else "right", s, lat, 0.0)
            if state == "walking":
                a.speed_mps = float(rng.choice([-1, 1]) * rng.uniform(1.0, 1.8))
            elif state == "crossing":
                a.lat_m, a.side = -sgn * 0.5 * half, "center"
                a.lat_speed_mps = float(sgn * rng.uniform(1.0, 1.8))
        else:
            states = ["parked", "ahead", "oncoming"] + (["crossing"] if road.layout == "intersection" else [])
            state = str(rng.choice(states))
            cyc = 1.0 if kind != "cyclist" else 0.35
            if state == "parked":
                sgn = float(rng.choice([-1, 1]))
                a = Agent(kind, colour, state, "left" if sgn < 0 else "right", s, sgn * (half + 1.2), 0.0)
                lights = False
            elif state == "ahead":
                lat = scene.ego_lat_m if kind != "cyclist" else half - 0.7
                spd = max(0.0, v + rng.uniform(-3, 4)) * cyc if v > 0 else float(rng.choice([0.0, rng.uniform(2, 8) * cyc]))
                a = Agent(kind, colour, state, "center", s, lat, float(spd))
            elif state == "oncoming":
                lat = -LANE_WIDTH_M / 2 if kind != "cyclist" else -half + 0.7
                a = Agent(kind, colour, state, "left", s + 10, lat, -float(rng.uniform(7, 15) * cyc))
            else:  # crossing, on the cross street of an intersection
                sgn = float(rng.choice([-1, 1]))
                s = road.intersection_s_m + rng.uniform(2, 6)
                a = Agent(kind, colour, state, "center", s, sgn * rng.uniform(4, 10), 0.0,
                          -sgn * float(rng.uniform(5, 10) * cyc))
        a.lights_on = bool(lights)
        mid_s, mid_lat = agent_position(a, 0.5)
        if in_view(scene, mid_s, mid_lat):
            return a
    return None


def _sample_roadside(rng, scene: Scene, dist: SceneDistribution) -> list[Roadside]:
    half = scene.road.half_width_m + (2.5 if scene.road.sidewalks else 0.5)
    city = scene.background == "city"
    crossing = scene.road.layout == "intersection"
    if dist.roadside_flat_p > 0:
        p = {k: dist.roadside_flat_p if k != "traffic_light" or crossing else 0.0 for k in ROADSIDE_KINDS}
    else:
        weights = {"tree": 0.35 if not city else 0.15, "building": 0.35 if city else 0.1,
                   "street_light": 0.2, "traffic_light": 0.15 if crossing else 0.02, "sign": 0.12}
        p = {k: w * 3 for k, w in weights.items()}
    kinds = [k for k in ROADSIDE_KINDS if rng.random() < p[k]]
    out = []
    for kind in kinds:
        n = 1 if kind in ("traffic_light", "sign") else int(rng.integers(1, dist.roadside_max + 1))
        sgn0 = float(rng.choice([-1, 1]))
        for i in range(n):
            sgn = sgn0 if rng.random() < 0.7 else -sgn0
            s = float(rng.uniform(*dist.roadside_s_m))
            if kind == "traffic_light" and scene.road.intersection_s_m > 0:
                s = scene.road.intersection_s_m - 1.0
            extra = 5.0 if kind == "building" else (1.5 if kind == "tree" else 0.3)
            r = Roadside(kind, "left" if sgn < 0 else "right", s, sgn * (half + extra),
                         colour=str(rng.choice(["grey", "white", "orange", "silver"])) if kind == "building" else "grey",
                         signal=str(rng.choice(["red", "green"])) if kind == "traffic_light" else "")
            if in_view(scene, r.s_m, r.lat_m, t_s=0.0):
                out.append(r)
    return out


def sample_scene(rng: np.random.Generator, seed: int = -1, dist: SceneDistribution = PROFILES["driving"]) -> Scene:
    """Draw one random scene from `dist`; deterministic given the generator's state."""
    road = _sample_road(rng)
    background = str(rng.choice(BACKGROUNDS))
    tod = str(rng.choice(TIMES_OF_DAY, p=[0.55, 0.2, 0.25]))
    motion = str(rng.choice(list(EGO_SPEED_BANDS_MPS), p=[0.2, 0.2, 0.35, 0.25]))
    speed = float(rng.uniform(*EGO_SPEED_BANDS_MPS[motion]))
    ego_lat = LANE_WIDTH_M / 2 if road.n_lanes == 2 else LANE_WIDTH_M * float(rng.choice([0.5, 1.5]))
    scene = Scene(seed, road, background, tod, motion, speed, ego_lat)
    n_agents = int(rng.choice(len(dist.n_agents_p), p=list(dist.n_agents_p)))
    scene.agents = [a for a in (_sample_agent(rng, scene, dist) for _ in range(n_agents)) if a is not None]
    scene.roadside = _sample_roadside(rng, scene, dist)
    return scene
