"""Event simulator against hand-computed cases; loader on real EventGPT/DSEC files; event images."""
import numpy as np
import pytest

from helpers.world.events import (EventSimConfig, duration_us, event_image, event_rate, load_events, save_events,
                            simulate_events)
from helpers.suite.paths import SHARED_DATA

EXACT = dict(threshold_pos=0.25, threshold_neg=0.25, threshold_sigma=0.0, refractory_us=0.0, noise_rate_hz=0.0)


def _lum(log_level):
    """Luma whose log(luma + 1) equals log_level (the simulator's log_eps = 1)."""
    return np.exp(log_level) - 1.0


def test_single_brightening_pixel_exact_events():
    a = np.log(101.0)
    frames = np.array([_lum(a), _lum(a + 3.5 * 0.25)]).reshape(2, 1, 1)   # (T, H, W) grey
    ev = simulate_events(frames, fps=1000.0, cfg=EventSimConfig(**EXACT))
    # 3.5 thresholds crossed -> 3 ON events at 1/3.5, 2/3.5, 3/3.5 of the 1000 us interval
    assert ev["p"].tolist() == [1, 1, 1]
    assert ev["t"].tolist() == [286, 571, 857]
    assert ev["x"].tolist() == [0, 0, 0] and ev["y"].tolist() == [0, 0, 0]


def test_single_dimming_pixel_and_reference_carry_over():
    a = np.log(101.0)
    # dim by 2.2 C, then stay: the 0.2 C remainder must not fire; then dim by 0.9 C more -> 1 event
    frames = np.array([_lum(a), _lum(a - 2.2 * 0.25), _lum(a - 2.2 * 0.25), _lum(a - 3.1 * 0.25)]).reshape(4, 1, 1)
    ev = simulate_events(frames, fps=1000.0, cfg=EventSimConfig(**EXACT))
    assert ev["p"].tolist() == [0, 0, 0]
    # crossings at -C, -2C in interval 0 (fractions 1/2.2, 2/2.2); -3C in interval 2 at (0.8/0.9)
    assert ev["t"].tolist() == [455, 909, 2000 + 889]


def test_no_change_no_events():
    frames = np.full((5, 8, 8, 3), 120, np.uint8)
    ev = simulate_events(frames, fps=100.0, cfg=EventSimConfig(**EXACT))
    assert len(ev["t"]) == 0


def test_refractory_period_suppresses_close_events():
    a = np.log(101.0)
    frames = np.array([_lum(a), _lum(a + 5.5 * 0.25)]).reshape(2, 1, 1)
    free = simulate_events(frames, 1000.0, EventSimConfig(**EXACT))
    assert free["t"].tolist() == [182, 364, 545, 727, 909]
    cfg = EventSimConfig(**{**EXACT, "refractory_us": 500.0})
    ev = simulate_events(frames, 1000.0, cfg)
    assert ev["t"].tolist() == [182, 727]   # 364, 545 within 500 us of 182; 909 within 500 of 727
    # the suppressed change is absorbed: a still frame afterwards fires nothing more
    frames3 = np.concatenate([frames, frames[-1:]])
    assert len(simulate_events(frames3, 1000.0, cfg)["t"]) == 2


@pytest.mark.parametrize("direction", [1, -1])
def test_moving_edge(direction):
    # a bright half-plane whose edge moves one pixel per frame over a dark background
    w, n_t = 20, 8
    frames = np.full((n_t, 3, w), 20.0)
    start = 6 if direction > 0 else 13
    for k in range(n_t):
        edge = start + direction * k
        if direction > 0:
            frames[k, :, :edge] = 200.0     # bright on the left, edge moving right
        else:
            frames[k, :, edge:] = 200.0     # bright on the right, edge moving left
    ev = simulate_events(frames, 1000.0, EventSimConfig(**EXACT))
    swept = set(range(start, start + n_t - 1)) if direction > 0 else set(range(start - n_t + 1, start))
    assert set(ev["x"].tolist()) == swept                  # events exactly along the edge's path
    assert set(ev["y"].tolist()) == {0, 1, 2}
    assert set(ev["p"].tolist()) == {1}                    # dark -> bright: ON for either direction
    # the edge reaches pixel x during the interval where it is crossed: times increase along the motion
    first_t = {x: ev["t"][ev["x"] == x].min() for x in swept}
    xs = sorted(swept, key=lambda x: direction * x)
    assert all(first_t[a] < first_t[b] for a, b in zip(xs, xs[1:]))
    # reversed in time, the same frames give OFF events
    ev_back = simulate_events(frames[::-1].copy(), 1000.0, EventSimConfig(**EXACT))
    assert set(ev_back["p"].tolist()) == {0}


def test_noise_rate_and_mismatch_seeded():
    frames = np.full((101, 30, 40), 100.0)
    cfg = EventSimConfig(**{**EXACT, "noise_rate_hz": 2.0})
    ev = simulate_events(frames, 100.0, cfg, seed=3)
    expected = 2.0 * 30 * 40 * 1.0
    assert abs(len(ev["t"]) - expected) < 5 * np.sqrt(expected)
    assert np.all(np.diff(ev["t"]) >= 0)
    again = simulate_events(frames, 100.0, cfg, seed=3)
    assert all(np.array_equal(ev[k], again[k]) for k in ev)
    other = simulate_events(frames, 100.0, cfg, seed=4)
    assert not np.array_equal(ev["t"][:50], other["t"][:50])


def test_save_load_roundtrip(tmp_path):
    ev = {"x": np.array([1, 5]), "y": np.array([2, 3]), "t": np.array([10, 20]), "p": np.array([1, 0])}
    save_events(tmp_path / "e.npy", ev)
    raw = np.load(tmp_path / "e.npy", allow_pickle=True).item()
    assert raw["x"].dtype == np.uint16 and raw["t"].dtype == np.int64 and raw["p"].dtype == np.uint8
    back = load_events(tmp_path / "e.npy")
    assert back["t"].dtype == np.int64 and back["x"].tolist() == [1, 5] and back["p"].tolist() == [1, 0]
    with pytest.raises(ValueError):
        save_events(tmp_path / "bad.npy", {"x": [1], "y": [1], "t": [1]})


def test_event_image_colours_last_wins_and_chunks():
    ev = {"x": np.array([0, 0, 1, 2, 2, 3]), "y": np.array([0, 0, 0, 1, 1, 1]),
          "t": np.arange(6), "p": np.array([1, 0, 1, 0, 1, 0])}
    (img,) = event_image(ev, size=(4, 2), n_chunks=1)
    assert img.shape == (2, 4, 3) and img.dtype == np.uint8
    assert img[0, 0].tolist() == [0, 0, 255]      # ON then OFF at (0,0): last (OFF, blue) wins
    assert img[0, 1].tolist() == [255, 0, 0]      # ON: red
    assert img[1, 2].tolist() == [255, 0, 0]      # OFF then ON: red
    assert img[1, 3].tolist() == [0, 0, 255]
    assert img[1, 0].tolist() == [255, 255, 255]  # no event: white
    chunks = event_image(ev, size=(4, 2), n_chunks=4)   # 6 // 4 = 1 per chunk, last takes 3
    assert len(chunks) == 4
    assert [(c != 255).any(axis=2).sum() for c in chunks] == [1, 1, 1, 2]


def test_event_rate():
    ev = {"t": np.array([0, 1000, 2000, 15000]), "p": np.array([1, 1, 0, 1])}
    start_ms, on, off = event_rate(ev, bin_ms=10)
    assert start_ms.tolist() == [0, 10] and on.tolist() == [200, 100] and off.tolist() == [100, 0]


REAL = SHARED_DATA / "dsec_events"


@pytest.mark.skipif(not REAL.exists(), reason=f"real event samples absent: {REAL}")
@pytest.mark.parametrize("name,expect_us", [("sample1", 49595), ("interlaken_00_d_000089", 49999),
                                            ("interlaken_00_d_000099", 49999)])
def test_real_event_files(name, expect_us):
    ev = load_events(REAL / f"{name}.npy")
    assert ev["t"].dtype == np.int64
    assert duration_us(ev) == expect_us                 # sample1's uint16 t must not wrap: ~49.6 ms
    assert ev["x"].max() < 640 and ev["y"].max() < 480 and set(np.unique(ev["p"]).tolist()) <= {0, 1}
    imgs = event_image(ev, size=(640, 480), n_chunks=5)
    assert len(imgs) == 5 and all(i.shape == (480, 640, 3) for i in imgs)
    colours = {tuple(c) for c in np.unique(imgs[0].reshape(-1, 3), axis=0)}
    assert colours <= {(255, 255, 255), (255, 0, 0), (0, 0, 255)} and len(colours) == 3
