"""The procedural driving world's scene graph: 1 s clips with ground truth.

A `Scene` is plain dataclasses, JSON-serializable through `scene_to_dict` / `scene_from_dict`.
`helpers.world.sample.sample_scene(rng)` draws one; `helpers.world.render.render_clip` renders
it (frames uint8 (T, H, W, 3)). This module holds only the dataclasses and the geometry that
sampler, renderer and captions share, so none of them imports another.

Geometry (shared by sampler, renderer and captions). The camera sits `CAMERA_HEIGHT_M`
above a flat road, looks along the road tangent, and drives along the road centreline
arc length `s_m` at `ego_speed_mps`. Lateral offsets `lat_m` are measured from the road
centreline, positive to the right; traffic keeps right, so the ego lane centre is
`+lane_width/2` and oncoming traffic uses negative offsets. A point at road position
(s, lat) seen at time t has camera depth d = s - s_cam(t) and camera lateral position
lat + bend(d) - ego_lat, where bend(d) is the centreline's offset from the camera's line
of sight (`road_bend_m`). Focal length is `FOCAL_FRAC * width` pixels, so what is in view
does not depend on the rendered resolution (aspect 4:3 assumed for the vertical).

What each sensor can and cannot show (the study's subject, for the book):
- Events (the draft's input) report only brightness *changes*. They carry no colour, and
  under a still camera static objects (parked cars, buildings, signs, the road itself)
  emit no events at all; only moving things and flickering lights appear. Once the ego
  moves, every edge (lane markings, curbs, object outlines) fires, but still without
  colour or absolute brightness, so "a red car in the evening light" becomes "a vehicle".
- Eight RGB frames (the target's input) show colour, lighting and the static layout well,
  but sample 1 s at ~8 Hz: fast motion between frames (a crossing cyclist, the ego's own
  speed, a flashing light) is aliased or missed, while events resolve it at microseconds.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

CAMERA_HEIGHT_M = 1.4
FOCAL_FRAC = 0.8          # focal length in units of image width (horizontal FOV ~64 deg)
HORIZON_FRAC = 0.42       # horizon row as a fraction of image height
LANE_WIDTH_M = 3.5
MIN_DEPTH_M = 1.5         # nearer than this an object is behind the image plane for us

LAYOUTS = ("straight", "curving", "winding", "intersection")
BACKGROUNDS = ("mountains", "sea", "city")
TIMES_OF_DAY = ("day", "dusk", "night")
VEHICLE_KINDS = ("car", "truck", "bus", "cyclist")
VEHICLE_STATES = ("parked", "ahead", "oncoming", "crossing")
COLOURS = {  # name -> RGB in 0..1 (day albedo)
    "red": (0.75, 0.1, 0.1), "blue": (0.1, 0.2, 0.7), "white": (0.92, 0.92, 0.92),
    "black": (0.08, 0.08, 0.08), "silver": (0.65, 0.67, 0.7), "grey": (0.45, 0.45, 0.47),
    "yellow": (0.9, 0.78, 0.1), "green": (0.1, 0.5, 0.2), "orange": (0.9, 0.45, 0.1),
}
ROADSIDE_KINDS = ("tree", "building", "street_light", "traffic_light", "sign")
SIZES_M = {  # kind -> (width, height, length) of its box
    "car": (1.8, 1.5, 4.2), "truck": (2.5, 3.2, 8.0), "bus": (2.6, 3.1, 11.0),
    "cyclist": (0.6, 1.7, 1.7), "pedestrian": (0.5, 1.75, 0.4), "tree": (3.0, 6.0, 3.0),
    "building": (9.0, 12.0, 12.0), "street_light": (0.25, 7.0, 0.25),
    "traffic_light": (0.5, 4.5, 0.5), "sign": (0.9, 2.6, 0.1),
}
EGO_SPEED_BANDS_MPS = {"stopped": (0.0, 0.0), "slow": (2.0, 7.0),
                       "moderate": (8.0, 15.0), "fast": (16.0, 28.0)}


@dataclass
class Road:
    layout: str                 # one of LAYOUTS
    n_lanes: int                # 2 (one each way) or 4
    lane_markings: str          # "dashed", "solid" or "none" (centre line)
    edge_lines: bool            # white lines along both edges
    curbs: bool
    barrier: str                # "none", "wall" or "guardrail" (both sides)
    curvature_per_m: float      # constant-curvature layouts; >0 bends right
    wind_amplitude_m: float     # winding layouts: centreline = A sin(2 pi s / period + phase)
    wind_period_m: float
    wind_phase_rad: float
    intersection_s_m: float     # road position of the near edge of the cross street (or -1)
    sidewalks: bool

    @property
    def half_width_m(self) -> float:
        return self.n_lanes * LANE_WIDTH_M / 2


@dataclass
class Agent:                    # vehicles and pedestrians
    kind: str                   # VEHICLE_KINDS or "pedestrian"
    colour: str                 # key of COLOURS (clothing for pedestrians)
    state: str                  # VEHICLE_STATES, or for pedestrians: standing/walking/crossing
    side: str                   # "left", "right" or "center" (where it is, seen from the ego)
    s_m: float                  # road position at t=0
    lat_m: float                # lateral offset at t=0
    speed_mps: float            # along the road (+ away from ego) ...
    lat_speed_mps: float = 0.0  # ... and across it (crossing)
    lights_on: bool = False


@dataclass
class Roadside:
    kind: str                   # one of ROADSIDE_KINDS
    side: str                   # "left" / "right"
    s_m: float
    lat_m: float
    colour: str = "grey"
    signal: str = ""            # traffic lights: "red" / "green"


@dataclass
class Scene:
    seed: int
    road: Road
    background: str             # one of BACKGROUNDS
    time_of_day: str            # one of TIMES_OF_DAY
    ego_motion: str             # key of EGO_SPEED_BANDS_MPS
    ego_speed_mps: float
    ego_lat_m: float
    agents: list[Agent] = field(default_factory=list)
    roadside: list[Roadside] = field(default_factory=list)
    duration_s: float = 1.0


def centreline_m(road: Road, s_m: np.ndarray | float) -> np.ndarray | float:
    """Lateral position of the road centreline at arc length s (world frame)."""
    if road.layout == "curving":
        return 0.5 * road.curvature_per_m * np.square(s_m)
    if road.layout == "winding":
        return road.wind_amplitude_m * np.sin(2 * np.pi * np.asarray(s_m) / road.wind_period_m
                                              + road.wind_phase_rad)
    return np.zeros_like(np.asarray(s_m, dtype=float))


def road_bend_m(road: Road, s_cam_m: float, depth_m):
    """Centreline offset from the camera's line of sight, `depth_m` ahead of the camera."""
    eps = 1e-3
    slope = (centreline_m(road, s_cam_m + eps) - centreline_m(road, s_cam_m - eps)) / (2 * eps)
    return centreline_m(road, s_cam_m + depth_m) - centreline_m(road, s_cam_m) - slope * depth_m


def ego_yaw_rad(road: Road, s_cam_m: float) -> float:
    """Heading of the road tangent at the camera, relative to the world x axis."""
    eps = 1e-3
    return float(math.atan((centreline_m(road, s_cam_m + eps) - centreline_m(road, s_cam_m - eps))
                           / (2 * eps)))


def agent_position(a: Agent, t_s: float) -> tuple[float, float]:
    """(s_m, lat_m) of an agent at time t."""
    return a.s_m + a.speed_mps * t_s, a.lat_m + a.lat_speed_mps * t_s


def in_view(scene: Scene, s_m: float, lat_m: float, t_s: float = 0.5) -> bool:
    """Whether a ground point is in the camera's horizontal field of view at time t."""
    s_cam = scene.ego_speed_mps * t_s
    d = s_m - s_cam
    if d < MIN_DEPTH_M + 2:
        return False
    x = lat_m + road_bend_m(scene.road, s_cam, d) - scene.ego_lat_m
    return abs(FOCAL_FRAC * x / d) < 0.47


def scene_to_dict(scene: Scene) -> dict:
    return dataclasses.asdict(scene)


def scene_from_dict(d: dict) -> Scene:
    d = dict(d)
    d["road"] = Road(**d["road"])
    d["agents"] = [Agent(**a) for a in d["agents"]]
    d["roadside"] = [Roadside(**r) for r in d["roadside"]]
    return Scene(**d)
