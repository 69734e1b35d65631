"""Clip loading for the real DSEC study (helpers.models.clips): event windows of a DSEC-layout
events.h5 written here, EventGPT .npy files (real ones when ../shared/data is present), frame
sampling from folders and mp4, the work list, EventGPT event images and pixels."""
import json

import numpy as np
import pytest
from PIL import Image

from helpers.models.clips import (ClipItem, EventSource, dsec_windows, event_images, event_pixels,
                                  load_dsec_window, load_event_source, sample_video, work_list)
from helpers.models.vlm import CLIP_MEAN, CLIP_STD
from helpers.world.captions import QUESTIONS
from helpers.world.dataset import generate_dataset
from helpers.world.events import save_events
from helpers.world.video import write_video
from helpers.suite.paths import SHARED_DATA
from conftest import require_shared

T_OFFSET = 51_836_000_000          # µs, about what DSEC sequences carry (> uint32)


def _write_dsec_h5(path, t_raw, seed=0):
    """A DSEC-layout events.h5: events/{x,y,t,p} blosc-zstd compressed (needs hdf5plugin),
    ms_to_idx[m] = first event with t >= m ms, scalar t_offset."""
    h5py = pytest.importorskip("h5py", reason="h5py not installed (pip install h5py)")
    hdf5plugin = pytest.importorskip("hdf5plugin", reason="hdf5plugin not installed: DSEC's blosc/zstd "
                                                          "filter cannot be written or read")
    rng = np.random.default_rng(seed)
    n = len(t_raw)
    cols = {"x": rng.integers(0, 640, n).astype(np.uint16), "y": rng.integers(0, 480, n).astype(np.uint16),
            "t": np.asarray(t_raw, np.uint32), "p": rng.integers(0, 2, n).astype(np.uint8)}
    n_ms = int(cols["t"].max()) // 1000 + 2
    ms_to_idx = np.searchsorted(cols["t"].astype(np.int64), np.arange(n_ms) * 1000, side="left")
    with h5py.File(path, "w") as f:
        for k, v in cols.items():
            f.create_dataset(f"events/{k}", data=v, chunks=True, **hdf5plugin.Blosc(cname="zstd"))
        f.create_dataset("ms_to_idx", data=ms_to_idx.astype(np.uint64))
        f.create_dataset("t_offset", data=np.int64(T_OFFSET))
    with h5py.File(path, "r") as f:                 # the plugin path really is exercised
        assert 32001 in f["events/t"]._filters or "32001" in f["events/t"]._filters   # blosc filter id
    return cols


@pytest.fixture
def dsec_h5(tmp_path):
    rng = np.random.default_rng(1)
    t = np.sort(np.concatenate([rng.integers(0, 3_000_000, 30_000), [1_234_567, 2_234_567, 2_234_566]]))
    path = tmp_path / "events.h5"
    return path, _write_dsec_h5(path, t)


def test_dsec_window_is_exact_half_open_and_on_image_clock(dsec_h5):
    path, cols = dsec_h5
    start, dur = T_OFFSET + 1_234_567, 1_000_000
    ev = load_dsec_window(path, start, dur)
    t_abs = cols["t"].astype(np.int64) + T_OFFSET
    mask = (t_abs >= start) & (t_abs < start + dur)
    assert ev["t"].dtype == np.int64 and ev["x"].dtype == np.int32 and ev["p"].dtype == np.uint8
    assert np.array_equal(ev["t"], t_abs[mask])                    # t_offset added back, exact cut
    assert np.array_equal(ev["x"], cols["x"][mask]) and np.array_equal(ev["p"], cols["p"][mask])
    assert ev["t"][0] == start and ev["t"][-1] == start + dur - 1  # event at s kept, at s + D dropped
    # a window reaching past the recording's start is clipped to it
    early = load_dsec_window(path, T_OFFSET - 500_000, 1_000_000)
    assert np.array_equal(early["t"], t_abs[t_abs < T_OFFSET + 500_000])


def test_dsec_windows_stride_half(dsec_h5):
    path, _ = dsec_h5
    wins = dsec_windows(path, T_OFFSET + np.arange(0, 3_000_001, 50_000), duration_us=1_000_000)
    assert [w.start_us - T_OFFSET for w in wins] == [0, 500_000, 1_000_000, 1_500_000, 2_000_000]
    assert all(w.duration_us == 1_000_000 and w.path == str(path) for w in wins)


def test_dsec_empty_window_names_file_and_window(dsec_h5):
    path, _ = dsec_h5
    start = T_OFFSET + 10_000_000                                   # after the last event
    with pytest.raises(ValueError, match=rf"events\.h5 window \[{start}, {start + 50_000}\) us: no events"):
        load_event_source(EventSource(str(path), start, 50_000))


def test_dsec_unsorted_window_names_file_and_window(tmp_path):
    t = np.arange(0, 200_000, 100)
    t[1500] = 10                                                    # a timestamp that goes back
    path = tmp_path / "bad.h5"
    _write_dsec_h5(path, t)
    with pytest.raises(ValueError, match=r"bad\.h5 window \[\d+, \d+\) us: timestamps are not sorted"):
        load_dsec_window(path, T_OFFSET + 100_000, 100_000)


def test_npy_errors_name_the_file(tmp_path):
    np.save(tmp_path / "back.npy", {"x": [1, 2], "y": [1, 2], "t": [20, 10], "p": [1, 0]}, allow_pickle=True)
    with pytest.raises(ValueError, match=r"back\.npy: timestamps are not sorted"):
        load_event_source(EventSource(str(tmp_path / "back.npy")))
    save_events(tmp_path / "empty.npy", {"x": [], "y": [], "t": [], "p": []})
    with pytest.raises(ValueError, match=r"empty\.npy: no events"):
        load_event_source(EventSource(str(tmp_path / "empty.npy")))
    with pytest.raises(FileNotFoundError, match="nope.npy"):
        load_event_source(EventSource(str(tmp_path / "nope.npy")))


@pytest.mark.parametrize("name,span_us", [("sample1", 49_595), ("interlaken_00_d_000089", 49_999),
                                          ("interlaken_00_d_000099", 49_999)])
def test_real_npy_clips(name, span_us):
    path = require_shared(SHARED_DATA / "dsec_events" / f"{name}.npy")
    raw_t = np.load(path, allow_pickle=True).item()["t"]
    ev = load_event_source(EventSource(str(path)))
    assert ev["t"].dtype == np.int64 and int(ev["t"][-1] - ev["t"][0]) == span_us
    assert np.array_equal(ev["t"], raw_t.astype(np.int64))         # values kept, only the dtype widened
    imgs = event_images(ev, n_chunks=5)
    per = len(ev["t"]) // 5
    for k, img in enumerate(imgs):                                 # each chunk's own canvas
        sl = slice(k * per, (k + 1) * per if k < 4 else None)
        assert img.shape == (ev["y"][sl].max() + 1, ev["x"][sl].max() + 1, 3)
    px = event_pixels(ev, n_chunks=1)
    assert tuple(px.shape) == (1, 3, 336, 336) and px.dtype.is_floating_point


# ----------------------------------------------------------------------------- event images / pixels
def test_event_images_chunks_by_count_with_own_canvas():
    ev = {"x": np.array([0, 3, 1, 1, 2, 5, 5]), "y": np.array([0, 1, 2, 2, 0, 0, 0]),
          "t": np.arange(7), "p": np.array([1, 0, 1, 0, 1, 0, 1])}
    a, b, c = event_images(ev, n_chunks=3)                         # 2, 2 and the remainder 3 events
    assert a.shape == (2, 4, 3) and b.shape == (3, 2, 3) and c.shape == (1, 6, 3)
    assert a[0, 0].tolist() == [255, 0, 0] and a[1, 3].tolist() == [0, 0, 255]
    assert b[2, 1].tolist() == [0, 0, 255]                         # ON then OFF at a pixel: last wins
    assert c[0, 5].tolist() == [255, 0, 0] and c[0, 0].tolist() == [255, 255, 255]
    with pytest.raises(ValueError, match="cannot fill 8 chunks"):
        event_images(ev, n_chunks=8)


def test_event_pixels_clip_normalisation():
    # canvas exactly 336 x 336: no resize, so values are exact
    ev = {"x": np.array([0, 335]), "y": np.array([0, 335]), "t": np.array([0, 1]), "p": np.array([0, 1])}
    px = event_pixels(ev)                                          # (1, 3, 336, 336)
    mean, std = np.array(CLIP_MEAN), np.array(CLIP_STD)
    assert np.allclose(px[0, :, 0, 0].numpy(), (np.array([0, 0, 1]) - mean) / std, atol=1e-6)
    assert np.allclose(px[0, :, 335, 335].numpy(), (np.array([1, 0, 0]) - mean) / std, atol=1e-6)
    assert np.allclose(px[0, :, 100, 200].numpy(), (1 - mean) / std, atol=1e-6)
    wide = {"x": np.array([639]), "y": np.array([479]), "t": np.array([0]), "p": np.array([1])}
    assert tuple(event_pixels(wide).shape) == (1, 3, 336, 336)     # 480 x 640 -> 336 x 448 -> crop


# ----------------------------------------------------------------------------- video
def _frame_folder(folder, n, ext=".png"):
    folder.mkdir(parents=True)
    for i in reversed(range(n)):                                   # creation order is not name order
        Image.fromarray(np.full((6, 8, 3), 10 * i, np.uint8)).save(folder / f"{i:06d}{ext}")
    (folder / "timestamps.txt").write_text("not a frame\n")
    return folder


def test_frame_folder_sampled_uniformly_by_name(tmp_path):
    frames = sample_video(_frame_folder(tmp_path / "f", 12))
    assert frames.shape == (8, 6, 8, 3) and frames.dtype == np.uint8
    assert frames[:, 0, 0, 0].tolist() == [10 * i for i in (0, 2, 3, 5, 6, 8, 9, 11)]


def test_too_few_frames_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=r"5 frames, fewer than the 8 asked for"):
        sample_video(_frame_folder(tmp_path / "few", 5))
    assert sample_video(tmp_path / "few", n=5).shape[0] == 5
    (tmp_path / "none").mkdir()
    with pytest.raises(ValueError, match="none: no frames"):
        sample_video(tmp_path / "none")
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        sample_video(tmp_path / "missing.mp4")


def test_mp4_sampled_uniformly(tmp_path):
    levels = 20 * np.arange(12)
    video = np.broadcast_to(levels[:, None, None, None], (12, 32, 32, 3)).astype(np.uint8)
    write_video(tmp_path / "v.mp4", video, fps=10)
    frames = sample_video(tmp_path / "v.mp4")
    got = frames.reshape(8, -1).mean(1)
    assert np.allclose(got, levels[[0, 2, 3, 5, 6, 8, 9, 11]], atol=6)   # H.264 is lossy
    write_video(tmp_path / "short.mp4", video[:4], fps=10)
    with pytest.raises(ValueError, match=r"short\.mp4: 4 frames"):
        sample_video(tmp_path / "short.mp4")


# ----------------------------------------------------------------------------- work list
def _repo_entry(question):
    """An entry as the research repo's generate_json.py writes it, with the question filled in."""
    return {"id": f"u-{question}", "event_data": "seq/000001.npy", "video_data": "seq/000001",
            "mp4_data": "seq/000001.mp4", "conversations": [{"from": "human", "value": "<event>\n" + question},
                                                             {"from": "gpt", "value": ""}]}


def _study_manifest(root):
    """Two clips in the research repo's layout (seq/clip paths, question only in the human
    turn) and the synthetic world's (query, question_idx), entries out of order."""
    for sub in ("event_npy/seq", "mp4/seq", "video/seq/000001", "event_npy", "mp4"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for f in ("event_npy/seq/000001.npy", "mp4/seq/000001.mp4", "event_npy/c0.npy", "mp4/c0.mp4"):
        (root / f).write_bytes(b"")
    synth = {"id": "c0_q3", "event_data": "c0.npy", "video_data": "c0.mp4", "mp4_data": "c0.mp4",
             "clip_id": "c0", "question_idx": 3, "query": QUESTIONS[3], "conversations": []}
    entries = [_repo_entry(QUESTIONS[2]), synth, _repo_entry(QUESTIONS[0])]
    (root / "EventGPT_Instruction_Subset.json").write_text(json.dumps(entries))
    return entries


def test_work_list_from_manifest(tmp_path):
    _study_manifest(tmp_path)
    items = work_list(tmp_path)
    assert [(i.clip_id, i.question_idx, i.question) for i in items] == [
        ("c0", 3, QUESTIONS[3]), ("seq/000001", 0, QUESTIONS[2]), ("seq/000001", 1, QUESTIONS[0])]
    assert items[1].events == EventSource(str(tmp_path / "event_npy/seq/000001.npy"))
    assert items[1].video == str(tmp_path / "mp4/seq/000001.mp4")
    with pytest.raises(FileNotFoundError, match=r"entry 1 \(id 'c0_q3'\): video not found: .*video/c0\.mp4"):
        work_list(tmp_path, video="frames")                        # synthetic entries have no video/ folder
    (tmp_path / "video/c0.mp4").write_bytes(b"")
    frames = work_list(tmp_path / "EventGPT_Instruction_Subset.json", video="frames")
    assert frames[1].video == str(tmp_path / "video/seq/000001")


def test_work_list_missing_files(tmp_path):
    _study_manifest(tmp_path)
    (tmp_path / "event_npy/c0.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"id 'c0_q3'\): event file not found: .*c0\.npy"):
        work_list(tmp_path)
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        work_list(tmp_path / "elsewhere")


def test_work_list_on_the_synthetic_world(tmp_path):
    generate_dataset(tmp_path, n_clips=2, size=(64, 48), progress=False, n_workers=1)
    items = work_list(tmp_path)
    assert [(i.clip_id, i.question_idx) for i in items] == [(f"clip_00000{c}", q) for c in (0, 1) for q in range(10)]
    assert [i.question for i in items[:10]] == list(QUESTIONS)
    assert len(load_event_source(items[0].events)["t"]) > 0
    assert sample_video(items[0].video).shape == (8, 48, 64, 3)


def test_work_list_from_clip_folders(tmp_path):
    ev = {"x": [1], "y": [1], "t": [5], "p": [1]}
    a, b = tmp_path / "zurich_a", tmp_path / "interlaken_b"
    a.mkdir()
    save_events(a / "events.npy", ev)
    write_video(a / "clip.mp4", np.zeros((8, 16, 16, 3), np.uint8), fps=10)
    _frame_folder(b / "frames", 8)
    save_events(b / "events.npy", ev)
    items = work_list([a, b], questions=QUESTIONS[:2])
    assert items == [ClipItem("interlaken_b", 0, QUESTIONS[0], EventSource(str(b / "events.npy")), str(b / "frames")),
                     ClipItem("interlaken_b", 1, QUESTIONS[1], EventSource(str(b / "events.npy")), str(b / "frames")),
                     ClipItem("zurich_a", 0, QUESTIONS[0], EventSource(str(a / "events.npy")), str(a / "clip.mp4")),
                     ClipItem("zurich_a", 1, QUESTIONS[1], EventSource(str(a / "events.npy")), str(a / "clip.mp4"))]
    assert [i.question for i in work_list([a])] == [QUESTIONS[0]]   # default: the study's 1q question
    (b / "events.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"interlaken_b: expected exactly one events \*\.npy"):
        work_list([a, b])
