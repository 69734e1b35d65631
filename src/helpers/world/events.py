"""Event streams: EventGPT's `.npy` format, a contrast-threshold simulator, event images.

Format. An event file is `np.save(path, {"x", "y", "t", "p"})` (a pickled dict of 1-D
arrays): x, y pixel coordinates (uint16), t timestamps in microseconds, p polarity
(1 = brighter / ON, 0 = darker / OFF). Real DSEC windows store t as absolute int64 µs;
EventGPT's own sample stores it as uint16 µs from the window start, where differences
overflow silently, so `load_events` always returns t as int64 and x, y as int32.

Simulator. No maintained library fits: v2e is not on PyPI (a GitHub application with
OpenCV / GUI dependencies), `esim` on PyPI is an unrelated package, and esim_torch needs a
CUDA build. `simulate_events` is the standard DVS model (as in ESIM / v2e), vectorized
over pixels, with a Python loop only over frame intervals and crossing index:
- each pixel keeps a reference log intensity `ref` (initialized from the first frame);
- per-pixel thresholds C+ / C- are drawn once per clip: N(C, sigma) clipped at C_min;
- in the interval (t0, t1] between frames k and k+1, the log intensity is taken to move
  linearly from L0 to L1; a pixel fires ON events at the levels ref + i*C+ for
  i = 1..floor((L1 - ref) / C+) (OFF alike), each stamped at the time the line crosses
  that level: t = t0 + (level - L0) / (L1 - L0) * (t1 - t0);
- refractory period: an event closer than `refractory_us` to the pixel's previous event
  is dropped; the reference still moves past the suppressed level (the pixel is held in
  reset, so that change is lost rather than delayed);
- background activity: Poisson noise events at `noise_rate_hz` per pixel, uniform in
  time and position, random polarity; they do not touch the reference.
Log intensity: log(luma + `log_eps`) with luma in 0..255 (Rec.601 weights).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

EVENT_KEYS = ("x", "y", "t", "p")


@dataclass
class EventSimConfig:
    threshold_pos: float = 0.25      # C+ in log-intensity units (DVS ~0.2-0.3)
    threshold_neg: float = 0.25      # C-
    threshold_sigma: float = 0.03    # per-pixel mismatch (std of C across pixels)
    threshold_min: float = 0.01      # mismatch never yields thresholds below this
    refractory_us: float = 100.0     # dead time after an event at a pixel
    noise_rate_hz: float = 0.02      # background activity per pixel
    log_eps: float = 1.0             # log(luma + eps), luma in 0..255: keeps black finite


def _luma_log(frame: np.ndarray, eps: float) -> np.ndarray:
    f = frame.astype(np.float32)
    luma = f[..., 0] * 0.299 + f[..., 1] * 0.587 + f[..., 2] * 0.114 if f.ndim == 3 else f
    return np.log(luma + eps)                                           # (H, W)


def simulate_events(frames: np.ndarray, fps: float, cfg: EventSimConfig | None = None,
                    seed: int = 0, t0_us: int = 0) -> dict[str, np.ndarray]:
    """Events from frames (T, H, W, 3) or (T, H, W) at times t0 + k/fps; sorted by t."""
    cfg = cfg or EventSimConfig()
    rng = np.random.default_rng(seed)
    n_t, h, w = frames.shape[:3]
    c_pos = np.maximum(rng.normal(cfg.threshold_pos, cfg.threshold_sigma, (h, w)), cfg.threshold_min)
    c_neg = np.maximum(rng.normal(cfg.threshold_neg, cfg.threshold_sigma, (h, w)), cfg.threshold_min)
    ref = _luma_log(frames[0], cfg.log_eps).astype(np.float64)          # (H, W)
    last_t = np.full(h * w, -np.inf)                                    # (H*W,) µs
    dt_us = 1e6 / fps
    prev = ref.copy()
    xs, ys, ts, ps = [], [], [], []
    for k in range(1, n_t):
        cur = _luma_log(frames[k], cfg.log_eps).astype(np.float64)
        ta = t0_us + (k - 1) * dt_us
        diff = cur - ref
        n_pos = np.floor(np.maximum(diff, 0) / c_pos).astype(np.int64)   # (H, W)
        n_neg = np.floor(np.maximum(-diff, 0) / c_neg).astype(np.int64)
        for n, c, sign, pol in ((n_pos, c_pos, 1.0, 1), (n_neg, c_neg, -1.0, 0)):
            idx = np.flatnonzero(n)                                     # firing pixels
            if idx.size == 0:
                continue
            cnt, cc = n.ravel()[idx], c.ravel()[idx]
            r0, l0, l1 = ref.ravel()[idx], prev.ravel()[idx], cur.ravel()[idx]
            slope = np.where(l1 != l0, l1 - l0, np.inf)
            for i in range(1, int(cnt.max()) + 1):                      # i-th crossing
                live = cnt >= i
                level = r0[live] + sign * i * cc[live]
                frac = np.clip((level - l0[live]) / slope[live], 0.0, 1.0)
                t = ta + frac * dt_us
                pix = idx[live]
                keep = t - last_t[pix] >= cfg.refractory_us
                last_t[pix[keep]] = t[keep]
                ys.append(pix[keep] // w)
                xs.append(pix[keep] % w)
                ts.append(t[keep])
                ps.append(np.full(int(keep.sum()), pol, np.uint8))
            ref.ravel()[idx] = r0 + sign * cnt * cc
        prev = cur
    if cfg.noise_rate_hz > 0 and n_t > 1:
        span_us = (n_t - 1) * dt_us
        n_noise = rng.poisson(cfg.noise_rate_hz * h * w * span_us * 1e-6)
        pix = rng.integers(0, h * w, n_noise)
        ys.append(pix // w)
        xs.append(pix % w)
        ts.append(t0_us + rng.uniform(0, span_us, n_noise))
        ps.append(rng.integers(0, 2, n_noise).astype(np.uint8))
    if not ts:
        return _empty()
    t = np.round(np.concatenate(ts)).astype(np.int64)
    order = np.argsort(t, kind="stable")
    return {"x": np.concatenate(xs)[order].astype(np.int32), "y": np.concatenate(ys)[order].astype(np.int32),
            "t": t[order], "p": np.concatenate(ps)[order]}


def _empty() -> dict[str, np.ndarray]:
    return {"x": np.zeros(0, np.int32), "y": np.zeros(0, np.int32), "t": np.zeros(0, np.int64),
            "p": np.zeros(0, np.uint8)}


def validate_events(ev: dict, where: str = "") -> dict[str, np.ndarray]:
    """Check fields, lengths, polarity values and time order; return normalized dtypes.

    `where` (a file, a file and time window) starts every error message, so a bad clip
    among thousands can be found.
    """
    at = f"{where}: " if where else ""
    missing = [k for k in EVENT_KEYS if k not in ev]
    if missing:
        raise ValueError(f"{at}event dict lacks {missing}; has {sorted(ev)}")
    n = {k: len(ev[k]) for k in EVENT_KEYS}
    if len(set(n.values())) != 1:
        raise ValueError(f"{at}event arrays differ in length: {n}")
    p = np.asarray(ev["p"])
    if p.size and not np.isin(p, (0, 1, -1)).all():
        raise ValueError(f"{at}polarity values outside {{0, 1}} (or -1/1): {np.unique(p)[:10]}")
    out = {"x": np.asarray(ev["x"]).astype(np.int32), "y": np.asarray(ev["y"]).astype(np.int32),
           "t": np.asarray(ev["t"]).astype(np.int64),  # cast BEFORE any arithmetic (uint16 files)
           "p": (p > 0).astype(np.uint8)}
    if out["x"].size and (out["x"].min() < 0 or out["y"].min() < 0):
        raise ValueError(f"{at}negative pixel coordinates")
    if out["t"].size > 1:
        back = np.flatnonzero(np.diff(out["t"]) < 0)
        if back.size:
            i = int(back[0])
            raise ValueError(f"{at}timestamps are not sorted ({back.size} backward steps; first at index "
                             f"{i + 1}: t={out['t'][i + 1]} after t={out['t'][i]})")
    return out


def load_events(path: str | Path) -> dict[str, np.ndarray]:
    """Read an EventGPT `.npy` event dict: x, y int32; t int64 µs; p uint8 in {0, 1}.
    Errors (bad fields, unsorted t) name the file."""
    obj = np.load(path, allow_pickle=True)
    ev = obj.item() if isinstance(obj, np.ndarray) and obj.dtype == object else obj
    if not isinstance(ev, dict):
        raise ValueError(f"{path}: expected a pickled dict of arrays, got {type(ev)}")
    return validate_events(ev, where=str(path))


def save_events(path: str | Path, ev: dict) -> None:
    """Write in EventGPT's format: x, y uint16; t int64 µs; p uint8."""
    ev = validate_events(ev)
    if ev["x"].size and max(ev["x"].max(), ev["y"].max()) > 65535:
        raise ValueError("coordinates do not fit uint16")
    np.save(path, {"x": ev["x"].astype(np.uint16), "y": ev["y"].astype(np.uint16),
                   "t": ev["t"], "p": ev["p"]}, allow_pickle=True)


def duration_us(ev: dict) -> int:
    t = np.asarray(ev["t"]).astype(np.int64)
    return int(t[-1] - t[0]) if t.size else 0


def event_image(ev: dict, size: tuple[int, int] | None, n_chunks: int = 1) -> list[np.ndarray]:
    """EventGPT's event images: list of n_chunks uint8 (H, W, 3), size = (W, H).

    size=None sizes each chunk's canvas from that chunk's own events, (max y + 1, max x + 1),
    as EventGPT's `generate_event_image` does; an empty chunk then has no size (ValueError).

    White canvas; red (255, 0, 0) where the last event of the chunk at a pixel was ON,
    blue (0, 0, 255) where it was OFF. Chunks hold equal event counts (len // n), the last
    one takes the remainder, as in EventGPT's `get_event_images_list`. (The study's
    vectorized preprocessor painted all ON then all OFF events, so OFF won every pixel
    with both; we keep the time order: last event wins.) Events outside `size` are dropped.
    """
    x, y, p = (np.asarray(ev[k]).astype(np.int64) for k in ("x", "y", "p"))
    per = len(x) // n_chunks
    palette = np.array([[0, 0, 255], [255, 0, 0]], np.uint8)            # p=0 blue, p=1 red
    out = []
    for i in range(n_chunks):
        sl = slice(i * per, (i + 1) * per if i < n_chunks - 1 else len(x))
        xi, yi, pi = x[sl], y[sl], p[sl]
        if size is None and xi.size == 0:
            raise ValueError(f"event chunk {i} of {n_chunks} is empty ({len(x)} events): its canvas "
                             f"(max y + 1, max x + 1) is undefined; pass fewer chunks or more events")
        w, h = size if size is not None else (int(xi.max()) + 1, int(yi.max()) + 1)
        ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        xi, yi, pi = xi[ok], yi[ok], pi[ok]
        img = np.full((h, w, 3), 255, np.uint8)                         # (H, W, 3)
        flat = yi * w + xi
        # last event wins: take each pixel's final occurrence
        rev_unique, rev_first = np.unique(flat[::-1], return_index=True)
        last = len(flat) - 1 - rev_first
        img.reshape(-1, 3)[rev_unique] = palette[pi[last]]
        out.append(img)
    return out


def event_rate(ev: dict, bin_ms: float = 10.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bin start ms from the first event, ON rate, OFF rate) in events/s per bin."""
    t = np.asarray(ev["t"]).astype(np.int64)
    if t.size == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    rel_ms = (t - t[0]) / 1000.0
    edges = np.arange(0, rel_ms.max() + bin_ms, bin_ms)
    if edges.size < 2:
        edges = np.array([0.0, bin_ms])
    p = np.asarray(ev["p"])
    on, _ = np.histogram(rel_ms[p == 1], edges)
    off, _ = np.histogram(rel_ms[p == 0], edges)
    scale = 1000.0 / bin_ms
    return edges[:-1], on * scale, off * scale
