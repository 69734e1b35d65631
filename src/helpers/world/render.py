"""A small 2.5D perspective renderer for `helpers.world.scene` scenes (numpy, CPU).

Per frame: a sky gradient and a background band (mountains / sea / city skyline) that
pans with the ego's yaw; a flat ground plane computed per pixel row (road following the
centreline's bend, lane and edge markings, curbs, sidewalks or textured verge, a cross
street at intersections) that moves with the ego; then walls / guardrails as vertical
quads along the road edge and every object as shaded boxes (a darker far face behind a
lit near face, which reads as a box side), painted far to near and scaled by 1/depth.
Time of day scales and tints all albedos; lights (head/tail lights, street lamps,
traffic lights, lit windows) are emissive and keep their brightness at night, when the
ego's own headlights also light the near road. Geometry conventions: see `helpers.world.scene`.
"""
from __future__ import annotations

import numpy as np

from helpers.world.scene import (CAMERA_HEIGHT_M, COLOURS, FOCAL_FRAC, HORIZON_FRAC, LANE_WIDTH_M,
                           MIN_DEPTH_M, SIZES_M, Scene, agent_position, ego_yaw_rad, road_bend_m)

AMBIENT = {"day": (1.0, 1.0, 1.0), "dusk": (0.75, 0.6, 0.5), "night": (0.18, 0.2, 0.28)}
SKY = {"day": ((0.35, 0.55, 0.9), (0.78, 0.86, 0.95)), "dusk": ((0.3, 0.25, 0.45), (0.95, 0.55, 0.3)),
       "night": ((0.01, 0.01, 0.04), (0.06, 0.06, 0.12))}
ASPHALT, GRASS, PAVEMENT, CURB, PAINT = (0.3, 0.3, 0.32), (0.3, 0.45, 0.2), (0.58, 0.58, 0.55), (0.75, 0.75, 0.72), (0.95, 0.95, 0.9)
DARK, GLASS, SKIN, TRUNK, LEAVES = (0.08, 0.08, 0.09), (0.15, 0.18, 0.22), (0.85, 0.7, 0.55), (0.35, 0.22, 0.1), (0.15, 0.4, 0.12)
HEAD, TAIL, LAMP = (1.0, 1.0, 0.85), (0.95, 0.05, 0.05), (1.0, 0.9, 0.6)
MAX_DEPTH_M = 120.0


class _Cam:
    """Per-clip camera constants (pixels)."""
    def __init__(self, w: int, h: int):
        self.w, self.h, self.f = w, h, FOCAL_FRAC * w
        self.cx, self.vh = w / 2, HORIZON_FRAC * h

    def u(self, x_m, d_m):
        return self.cx + self.f * x_m / d_m

    def v(self, y_m, d_m):
        return self.vh + self.f * (CAMERA_HEIGHT_M - y_m) / d_m


def _background(scene: Scene, cam: _Cam, margin: int) -> np.ndarray:
    """Sky + background band, wider than the image by `margin` on each side: (H, W+2M, 3)."""
    rng = np.random.default_rng(abs(scene.seed) + 7)
    wide = cam.w + 2 * margin
    rows = np.arange(cam.h)[:, None] / max(cam.vh, 1)          # (H, 1), 1 at the horizon
    top, hor = (np.array(c) for c in SKY[scene.time_of_day])
    img = np.broadcast_to(top + (hor - top) * np.clip(rows, 0, 1)[..., None], (cam.h, 1, 3))
    img = np.repeat(img, wide, axis=1).copy()                   # (H, W+2M, 3)
    amb = np.array(AMBIENT[scene.time_of_day])
    u = np.arange(wide)
    v = np.arange(cam.h)[:, None]
    vh = int(np.ceil(cam.vh))
    if scene.background == "mountains":
        prof = sum(rng.uniform(0.3, 1) * np.sin(2 * np.pi * u / rng.uniform(40, 200) * cam.w / 160
                                                 + rng.uniform(0, 6)) for _ in range(3))
        top_row = cam.vh - cam.h * (0.08 + 0.05 * (prof + 2.2) / 2.2)
        m = v >= top_row[None, :]
        snow = v < top_row[None, :] + cam.h * 0.025
        img[m] = np.array((0.38, 0.42, 0.52)) * amb
        img[m & snow] = np.array((0.9, 0.9, 0.95)) * amb
    elif scene.background == "sea":
        band = (v >= cam.vh - cam.h * 0.05) & (v < vh)
        img[np.broadcast_to(band, (cam.h, wide))] = np.array((0.12, 0.35, 0.62)) * amb
    else:  # city skyline
        x = 0
        while x < wide:
            bw = int(rng.integers(max(2, cam.w // 20), max(3, cam.w // 7)))
            top_row = int(cam.vh - cam.h * rng.uniform(0.06, 0.25))
            img[top_row:vh, x:x + bw] = np.array((0.42, 0.42, 0.46)) * rng.uniform(0.7, 1.1) * amb
            if scene.time_of_day == "night":
                win = rng.random((vh - top_row, min(bw, wide - x))) < 0.15
                img[top_row:vh, x:x + bw][win] = LAMP
            x += bw
    return img


def _ground(scene: Scene, cam: _Cam, t_s: float, img: np.ndarray) -> None:
    """Paint the ground plane (rows below the horizon) in place."""
    road, s_cam = scene.road, scene.ego_speed_mps * t_s
    v0 = int(np.ceil(cam.vh))
    d = cam.f * CAMERA_HEIGHT_M / (np.arange(v0, cam.h) + 0.5 - cam.vh)   # (Hg,) depth per row
    x_cam = (np.arange(cam.w) + 0.5 - cam.cx)[None, :] * d[:, None] / cam.f  # (Hg, W) metres
    lat = x_cam + scene.ego_lat_m - road_bend_m(road, s_cam, d)[:, None]    # (Hg, W)
    s = (s_cam + d)[:, None]                                              # (Hg, 1)
    alat, half = np.abs(lat), road.half_width_m
    city = scene.background == "city"
    tex = 1 + 0.12 * np.sin(2 * np.pi * s / 2.3) * np.sin(2 * np.pi * lat / 1.7)
    out = np.where((alat < half)[..., None], np.array(ASPHALT), (np.array(PAVEMENT if city else GRASS) * tex[..., None]))
    if road.sidewalks:
        out[(alat >= half) & (alat < half + 2.5)] = PAVEMENT
    if road.curbs:
        out[(alat >= half) & (alat < half + 0.25)] = CURB
    if road.layout == "intersection":
        cross = (s >= road.intersection_s_m) & (s < road.intersection_s_m + 10)
        out[np.broadcast_to(cross, lat.shape)] = ASPHALT
        stop = (s >= road.intersection_s_m - 1.0) & (s < road.intersection_s_m - 0.6) & (lat > 0) & (lat < half)
        out[stop] = PAINT
    else:
        cross = np.zeros_like(s, dtype=bool)
    dash = (np.mod(s, 9.0) < 3.0) & ~cross
    if road.edge_lines:
        out[(alat > half - 0.35) & (alat < half - 0.2) & ~cross] = PAINT
    if road.lane_markings != "none":
        centre = alat < 0.08
        out[centre & (dash if road.lane_markings == "dashed" else ~cross)] = PAINT
    if road.n_lanes == 4:
        out[(np.abs(alat - LANE_WIDTH_M) < 0.07) & dash] = PAINT
    light = np.array(AMBIENT[scene.time_of_day])
    if scene.time_of_day != "day":  # the ego's headlights on the near road
        beam = 0.9 * np.exp(-d / 18)[:, None] * (np.abs(x_cam) < 3 + 0.15 * d[:, None])
        out = out * (light + beam[..., None] * np.array(HEAD))
    else:
        out = out * light
    img[v0:] = out


def _box(img, cam, x0, x1, y0, y1, d, rgb, amb, shade=1.0, emissive=False, windows=False):
    """Fill the screen rectangle of a camera-facing face: lateral [x0,x1], height [y0,y1] m at depth d."""
    if d < MIN_DEPTH_M or d > MAX_DEPTH_M:
        return
    u0, u1 = int(round(cam.u(x0, d))), int(round(cam.u(x1, d)))
    v0, v1 = int(round(cam.v(y1, d))), int(round(cam.v(y0, d)))
    u0, u1, v0, v1 = max(u0, 0), min(u1, cam.w), max(v0, 0), min(v1, cam.h)
    if u1 <= u0 or v1 <= v0:
        return
    col = np.array(rgb) * (1.0 if emissive else shade * amb)
    img[v0:v1, u0:u1] = col
    if windows:  # a grid of windows, lit at night
        per = max(2.0, cam.f * 2.5 / d)
        uu, vv = np.arange(u0, u1)[None, :], np.arange(v0, v1)[:, None]
        win = (np.mod(uu - cam.u(x0, d), per) < 0.55 * per) & (np.mod(vv - cam.v(y1, d), per) < 0.5 * per)
        lit = LAMP if amb[0] < 0.3 else GLASS
        img[v0:v1, u0:u1][win] = np.array(lit) * (1.0 if amb[0] < 0.3 else shade * amb)


def _wall(img, cam, side_x, s_cam, scene, s0, s1, y0, y1, rgb, amb):
    """A vertical quad along the road edge between road positions s0 and s1 (perspective-correct)."""
    d0, d1 = max(s0 - s_cam, MIN_DEPTH_M), s1 - s_cam
    if d1 <= d0:
        return
    ds = np.array([d0, d1])
    xs = side_x + road_bend_m(scene.road, s_cam, ds) - scene.ego_lat_m
    us = cam.u(xs, ds)
    ua, ub = int(np.floor(min(us))), int(np.ceil(max(us)))
    ua, ub = max(ua, 0), min(ub, cam.w)
    if ub <= ua:
        return
    alpha = np.clip((np.arange(ua, ub) + 0.5 - us[0]) / (us[1] - us[0] + 1e-9), 0, 1)
    inv_d = (1 - alpha) / ds[0] + alpha / ds[1]                 # (n,) perspective-correct
    vt, vb = cam.v(y1, 1 / inv_d), cam.v(y0, 1 / inv_d)
    ra, rb = max(int(vt.min()), 0), min(int(np.ceil(vb.max())), cam.h)
    if rb <= ra:
        return
    rows = np.arange(ra, rb)[:, None] + 0.5
    m = (rows >= vt[None, :]) & (rows < vb[None, :])             # (rows, n)
    img[ra:rb, ua:ub][m] = np.array(rgb) * amb


def _agent(img, cam, scene, a, t_s, amb):
    s, lat = agent_position(a, t_s)
    s_cam = scene.ego_speed_mps * t_s
    d = s - s_cam
    if d < MIN_DEPTH_M:
        return
    x = lat + road_bend_m(scene.road, s_cam, d) - scene.ego_lat_m
    w, h, length = SIZES_M[a.kind]
    rgb = COLOURS[a.colour]
    if a.kind == "pedestrian":
        swing = 0.1 * np.sin(2 * np.pi * 2 * t_s) if a.state != "standing" else 0.0
        _box(img, cam, x - 0.15 - swing, x + 0.15 + swing, 0, 0.85, d, DARK, amb)
        _box(img, cam, x - w / 2, x + w / 2, 0.85, 1.5, d, rgb, amb)
        _box(img, cam, x - 0.11, x + 0.11, 1.5, h, d, SKIN, amb)
        return
    side_on = a.state == "crossing"
    if side_on:
        w, length = length, w
    _box(img, cam, x - w / 2, x + w / 2, 0.3, h, d + length, rgb, amb, shade=0.55)  # far face
    if a.kind == "cyclist":
        wx = (x - w / 2, x + w / 2) if side_on else (x - 0.05, x + 0.05)
        _box(img, cam, wx[0], wx[1], 0, 0.7, d, DARK, amb)
        _box(img, cam, x - 0.22, x + 0.22, 0.7, 1.45, d, rgb, amb)
        _box(img, cam, x - 0.1, x + 0.1, 1.45, h, d, SKIN, amb)
        return
    body_top = 0.6 * h if a.kind == "car" else h
    _box(img, cam, x - w / 2, x + w / 2, 0.3, body_top, d, rgb, amb)
    if a.kind == "car":
        _box(img, cam, x - 0.4 * w, x + 0.4 * w, body_top, h, d, rgb, amb, shade=0.9)
        _box(img, cam, x - 0.35 * w, x + 0.35 * w, body_top + 0.05, h - 0.1, d, GLASS, amb)
    else:
        _box(img, cam, x - 0.45 * w, x + 0.45 * w, 0.6 * h, 0.85 * h, d, GLASS, amb)
    for sgn in (-1, 1):  # wheels
        _box(img, cam, x + sgn * 0.35 * w - 0.1 * w, x + sgn * 0.35 * w + 0.1 * w, 0, 0.35, d, DARK, amb)
    if not side_on:
        lamp = HEAD if a.state == "oncoming" else TAIL
        for sgn in (-1, 1):
            cx = x + sgn * 0.4 * w
            if a.lights_on and amb[0] < 0.8:  # glow around lit lamps
                _box(img, cam, cx - 0.2, cx + 0.2, 0.35, 0.85, d, np.array(lamp) * 0.6, amb, emissive=True)
            _box(img, cam, cx - 0.08, cx + 0.08, 0.5, 0.7, d, lamp, amb, shade=0.6, emissive=a.lights_on)


def _roadside(img, cam, scene, r, t_s, amb):
    s_cam = scene.ego_speed_mps * t_s
    d = r.s_m - s_cam
    if d < MIN_DEPTH_M:
        return
    x = r.lat_m + road_bend_m(scene.road, s_cam, d) - scene.ego_lat_m
    w, h, length = SIZES_M[r.kind]
    night = scene.time_of_day != "day"
    if r.kind == "tree":
        _box(img, cam, x - w / 2, x + w / 2, 2.0, h, d + length, LEAVES, amb, shade=0.6)
        _box(img, cam, x - 0.18, x + 0.18, 0, 2.2, d, TRUNK, amb)
        _box(img, cam, x - w / 2, x + w / 2, 2.2, h, d, LEAVES, amb)
    elif r.kind == "building":
        _box(img, cam, x - w / 2, x + w / 2, 0, h, d + length, COLOURS[r.colour], amb, shade=0.55)
        _box(img, cam, x - w / 2, x + w / 2, 0, h, d, COLOURS[r.colour], amb, shade=0.85, windows=True)
    elif r.kind == "street_light":
        toward = -np.sign(r.lat_m)
        _box(img, cam, x - 0.09, x + 0.09, 0, h, d, DARK, amb)
        lo, hi = sorted((x, x + toward * 1.0))
        _box(img, cam, lo, hi, h - 0.25, h, d, LAMP if night else (0.5, 0.5, 0.5), amb, emissive=night)
    elif r.kind == "traffic_light":
        _box(img, cam, x - 0.06, x + 0.06, 0, 3.3, d, DARK, amb)
        _box(img, cam, x - 0.25, x + 0.25, 3.3, h, d, DARK, amb)
        y = 4.1 if r.signal == "red" else 3.45
        _box(img, cam, x - 0.15, x + 0.15, y, y + 0.3, d, COLOURS[r.signal], amb, emissive=True)
    else:  # sign
        _box(img, cam, x - 0.04, x + 0.04, 0, 1.9, d, (0.5, 0.5, 0.5), amb)
        _box(img, cam, x - w / 2, x + w / 2, 1.9, h, d, (0.1, 0.3, 0.75), amb)


def render_frame(scene: Scene, t_s: float, cam: _Cam, bg: np.ndarray, margin: int) -> np.ndarray:
    """One frame at time t: float32 (H, W, 3) in 0..1."""
    s_cam = scene.ego_speed_mps * t_s
    shift = int(round(cam.f * (ego_yaw_rad(scene.road, s_cam) - ego_yaw_rad(scene.road, 0.0))))
    shift = int(np.clip(shift, -margin, margin))
    img = bg[:, margin + shift: margin + shift + cam.w].copy()   # (H, W, 3)
    _ground(scene, cam, t_s, img)
    amb = np.array(AMBIENT[scene.time_of_day])
    items = []  # (depth, draw thunk)
    road = scene.road
    if road.barrier != "none":
        edge = road.half_width_m + (2.6 if road.sidewalks else 0.4)
        y0, y1, rgb = (0.0, 1.1, (0.55, 0.5, 0.45)) if road.barrier == "wall" else (0.45, 0.8, (0.72, 0.72, 0.75))
        seg0 = np.floor(s_cam / 6) * 6
        for s0 in seg0 + 6 * np.arange(12):
            for side in (-edge, edge):
                if road.layout == "intersection" and road.intersection_s_m - 2 < s0 < road.intersection_s_m + 10:
                    continue
                items.append((s0 + 3 - s_cam, lambda s0=s0, side=side: _wall(
                    img, cam, side, s_cam, scene, s0, s0 + 6, y0, y1, rgb, amb)))
    for a in scene.agents:
        items.append((agent_position(a, t_s)[0] - s_cam, lambda a=a: _agent(img, cam, scene, a, t_s, amb)))
    for r in scene.roadside:
        items.append((r.s_m - s_cam, lambda r=r: _roadside(img, cam, scene, r, t_s, amb)))
    for _, draw in sorted(items, key=lambda it: -it[0]):
        draw()
    return img


def render_clip(scene: Scene, fps_internal: float = 100.0, size: tuple[int, int] = (160, 120)) -> np.ndarray:
    """Frames at t = k / fps_internal for k = 0 .. duration*fps: uint8 (T, H, W, 3); size = (W, H)."""
    w, h = size
    cam = _Cam(w, h)
    margin = w // 2
    bg = _background(scene, cam, margin)
    n = int(round(scene.duration_s * fps_internal)) + 1
    frames = np.empty((n, h, w, 3), dtype=np.uint8)              # (T, H, W, 3)
    for k in range(n):
        frames[k] = np.clip(render_frame(scene, k / fps_internal, cam, bg, margin) * 255 + 0.5, 0, 255)
    return frames
