"""Clips for the real DSEC study: event windows, video frames, the work list, EventGPT's pixels.

Events. Two sources give the same dict as `helpers.world.events` (x, y int32; t int64 µs;
p uint8 0/1), always through its validator:
- an EventGPT `.npy` dict (`load_events`; a uint16 `t` is cast to int64 before any arithmetic);
- a window [start, start + duration) µs, on DSEC's image-timestamp clock, of a DSEC
  `events.h5` (datasets events/{x,y,t,p} with t in µs from `t_offset`, `ms_to_idx` = index
  of the first event at or after each millisecond, scalar `t_offset`; the arrays are
  blosc/zstd-compressed, so `hdf5plugin` must be imported before reading). As the study's
  builder: raw = timestamp - t_offset, rows ms_to_idx[raw_s // 1000] to
  ms_to_idx[raw_e // 1000 + 1], t_offset added back. That read is millisecond-coarse; the rows
  are then cut to the exact half-open window (DSEC's own EventSlicer does the same), which
  is what the study's saved 50 ms windows hold (t spans 49,999 µs).
An empty window, or timestamps that go backwards, is a ValueError naming the file and window.

Video. An mp4 (PyAV, `helpers.world.video`) or a folder of frames (png/jpg, sorted by file
name: DSEC names them 000000.png, ...). `sample_video` takes n = 8 frames at uniform indices
over the clip, as the study fed Video-LLaVA. A clip with fewer than n frames is an ERROR,
not a repeat: a 1 s DSEC clip has 10-20 frames, so fewer than 8 means a broken clip, and
repeating frames would silently change what the target sees.

Work list. `work_list` turns the study's instruction manifest (`EventGPT_Instruction_Subset.json`,
the synthetic world's or the research repo's: `event_data` under event_npy/, `mp4_data` under
mp4/, `video_data` (a frame folder) under video/) or a list of clip folders into sorted
`ClipItem`s. A clip folder holds one events file (`*.npy`) and either one `*.mp4` or the
frames (in a `frames/` subfolder, or the folder itself).

Event pixels. `event_pixels`: events -> N chunks of equal event count (N = 5 official, 1 in
the study), each painted by `event_image` on its own (max y + 1, max x + 1) canvas, then the
CLIP preprocessing of `helpers.models.vlm.preprocess_pixels` at 336 px: (N, 3, 336, 336).
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from helpers.models.vlm import preprocess_pixels
from helpers.world.captions import QUESTIONS
from helpers.world.dataset import MANIFEST_NAME
from helpers.world.events import event_image, load_events, validate_events
from helpers.world.video import read_video, uniform_indices

STUDY_FRAMES = 8                 # Video-LLaVA's frames per clip
EVENTGPT_IMAGE_PX = 336          # CLIP ViT-L/14-336
FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class EventSource:
    """Where a clip's events are: a `.npy` file, or a window of a DSEC `events.h5`
    (start_us on the image-timestamp clock, duration_us; both None for `.npy`)."""
    path: str
    start_us: int | None = None
    duration_us: int | None = None

    def describe(self) -> str:
        """'file' or 'file window [s, e) us', as used in error messages."""
        if self.start_us is None:
            return self.path
        return f"{self.path} window [{self.start_us}, {self.start_us + self.duration_us}) us"


@dataclass(frozen=True)
class ClipItem:
    """One unit of work: a question about a clip, with where its events and video are."""
    clip_id: str
    question_idx: int
    question: str
    events: EventSource
    video: str                   # an mp4 file or a folder of frames


# ----------------------------------------------------------------------------- events
def _import_hdf5():
    try:
        import hdf5plugin  # noqa: F401  (registers the blosc/zstd filters DSEC files use)
        import h5py
    except ImportError as e:
        raise ImportError("reading DSEC events.h5 needs h5py and hdf5plugin: "
                          "pip install h5py hdf5plugin (both in requirements.txt)") from e
    return h5py


def load_dsec_window(h5_path: str | Path, start_us: int, duration_us: int) -> dict[str, np.ndarray]:
    """Events of a DSEC events.h5 in [start_us, start_us + duration_us) (image-timestamp µs);
    t is returned on that clock (t_offset added back). Raises ValueError (naming file and
    window) when the window is empty or its timestamps go backwards."""
    src = EventSource(str(h5_path), int(start_us), int(duration_us))
    if duration_us <= 0:
        raise ValueError(f"{src.describe()}: duration_us must be > 0")
    if not Path(h5_path).is_file():
        raise FileNotFoundError(f"DSEC events file not found: {h5_path}")
    h5py = _import_hdf5()
    with h5py.File(h5_path, "r") as f:
        t_offset = int(np.asarray(f["t_offset"][()]).reshape(-1)[0])
        ms_to_idx = f["ms_to_idx"]
        n_ms, n_events = len(ms_to_idx), len(f["events/t"])

        def row(ms: int) -> int:  # first event at or after `ms` (raw clock); clamped to the file
            return 0 if ms < 0 else n_events if ms >= n_ms else int(ms_to_idx[ms])

        raw_s, raw_e = start_us - t_offset, start_us + duration_us - t_offset
        i0, i1 = row(raw_s // 1000), row(raw_e // 1000 + 1)
        ev = {k: f[f"events/{k}"][i0:max(i0, i1)] for k in ("x", "y", "t", "p")}
    ev["t"] = ev["t"].astype(np.int64) + t_offset          # int64 before adding: t is uint32 on disk
    ev = validate_events(ev, where=src.describe())          # unsorted -> ValueError naming the window
    keep = slice(*np.searchsorted(ev["t"], [start_us, start_us + duration_us], side="left"))
    ev = {k: v[keep] for k, v in ev.items()}
    if ev["t"].size == 0:
        raise ValueError(f"{src.describe()}: no events in this window (file has {n_events} events, "
                         f"t_offset {t_offset} us); check the window is on the image-timestamp clock")
    return ev


def load_event_source(src: EventSource) -> dict[str, np.ndarray]:
    """The events of a clip (npy or DSEC window), validated; empty is a ValueError."""
    if src.start_us is not None:
        return load_dsec_window(src.path, src.start_us, src.duration_us)
    if not Path(src.path).is_file():
        raise FileNotFoundError(f"event file not found: {src.path}")
    ev = load_events(src.path)
    if ev["t"].size == 0:
        raise ValueError(f"{src.describe()}: no events in this file")
    return ev


def dsec_windows(h5_path: str | Path, image_timestamps_us, duration_us: int = 1_000_000,
                 stride_us: int | None = None) -> list[EventSource]:
    """Windows [s, s + D) from the first image timestamp, stride D/2 (the study's 50% overlap),
    each ending by the last image timestamp."""
    ts = np.asarray(image_timestamps_us, dtype=np.int64)
    stride = stride_us or duration_us // 2
    starts = np.arange(ts.min(), ts.max() - duration_us + 1, stride) if ts.size else []
    return [EventSource(str(h5_path), int(s), int(duration_us)) for s in starts]


# ----------------------------------------------------------------------------- video
def frame_files(folder: str | Path) -> list[Path]:
    """Frame images (png/jpg) in a folder, sorted by file name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"frame folder not found: {folder}")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS)


def sample_video(video: str | Path, n: int = STUDY_FRAMES) -> np.ndarray:
    """n frames at uniform indices over an mp4 or a frame folder: uint8 (n, H, W, 3).
    Fewer than n frames (or none) is a ValueError naming the video."""
    from PIL import Image
    video = Path(video)
    if video.is_dir():
        files = frame_files(video)
        _check_count(video, len(files), n, f" ({', '.join(FRAME_EXTENSIONS)})")
        frames = [np.asarray(Image.open(files[i]).convert("RGB")) for i in uniform_indices(len(files), n)]
        if len({f.shape for f in frames}) != 1:
            raise ValueError(f"{video}: frames differ in size: {sorted({f.shape for f in frames})}")
        return np.stack(frames)                                          # (n, H, W, 3)
    if not video.is_file():
        raise FileNotFoundError(f"video not found: {video} (pass an mp4 file or a folder of frames)")
    frames = read_video(video)                                           # (T, H, W, 3)
    _check_count(video, len(frames), n, "")
    return frames[uniform_indices(len(frames), n)]


def _check_count(video: Path, have: int, n: int, kinds: str) -> None:
    if have == 0:
        raise ValueError(f"{video}: no frames{kinds}")
    if have < n:
        raise ValueError(f"{video}: {have} frames, fewer than the {n} asked for; frames are not "
                         f"repeated (pass n <= {have}, or rebuild the clip)")


# ----------------------------------------------------------------------------- work list
def _question_of(entry: dict) -> str:
    if entry.get("query"):
        return entry["query"]
    human = next((c["value"] for c in entry.get("conversations", []) if c.get("from") == "human"), "")
    return human.replace("<event>", "").strip()


def _manifest_items(manifest: Path, video: str) -> list[ClipItem]:
    root = manifest.parent
    items, seen_q = [], {}
    for k, e in enumerate(json.loads(manifest.read_text())):
        where = f"{manifest} entry {k} (id {e.get('id')!r})"
        if video == "mp4" and not e.get("mp4_data"):
            raise ValueError(f"{where}: no mp4_data; pass video='frames' to use video_data (a frame folder)")
        vid = root / "mp4" / e["mp4_data"] if video == "mp4" else root / "video" / e["video_data"]
        ev = root / "event_npy" / e["event_data"]
        for path, what in ((ev, "event file"), (vid, "video")):
            if not path.exists():
                raise FileNotFoundError(f"{where}: {what} not found: {path}")
        question = _question_of(e)
        if not question:
            raise ValueError(f"{where}: no question (empty 'query' and human turn)")
        clip_id = e.get("clip_id") or str(Path(e["event_data"]).with_suffix(""))
        qs = seen_q.setdefault(clip_id, [])
        if question not in qs:
            qs.append(question)
        q_idx = int(e["question_idx"]) if "question_idx" in e else qs.index(question)
        items.append(ClipItem(clip_id, q_idx, question, EventSource(str(ev)), str(vid)))
    return items


def _folder_item(folder: Path) -> tuple[str, EventSource, str]:
    if not folder.is_dir():
        raise FileNotFoundError(f"clip folder not found: {folder}")
    npys, mp4s = sorted(folder.glob("*.npy")), sorted(folder.glob("*.mp4"))
    if len(npys) != 1:
        raise FileNotFoundError(f"{folder}: expected exactly one events *.npy, found {[p.name for p in npys]}")
    if len(mp4s) > 1:
        raise ValueError(f"{folder}: several mp4 files {[p.name for p in mp4s]}; keep one")
    vid = mp4s[0] if mp4s else (folder / "frames" if (folder / "frames").is_dir() else folder)
    if not mp4s and not frame_files(vid):
        raise FileNotFoundError(f"{folder}: no video (an *.mp4, or png/jpg frames in frames/ or the folder)")
    return folder.name, EventSource(str(npys[0])), str(vid)


def work_list(source, questions=None, video: str = "mp4") -> list[ClipItem]:
    """Sorted (clip_id, question_idx) work items.

    source: a manifest file, a dataset folder holding `EventGPT_Instruction_Subset.json`, a
    folder of clip folders (its subfolders holding an events *.npy), or a list of clip folders. Manifest: questions come from its entries (`query`, else the human
    turn without `<event>`); question_idx from `question_idx`, else the order of first
    appearance within the clip; video='mp4' uses mp4/<mp4_data>, 'frames' video/<video_data>.
    Clip folders: `questions` (default: the study's first, "What are the key elements in this
    scene?") are asked of every clip, question_idx = position in `questions`.
    Missing files are a FileNotFoundError naming the entry and the path.
    """
    if video not in ("mp4", "frames"):
        raise ValueError(f"video must be 'mp4' or 'frames', got {video!r}")
    if isinstance(source, (str, Path)) and Path(source).is_dir() and not (Path(source) / MANIFEST_NAME).exists():
        subdirs = sorted(p for p in Path(source).iterdir() if p.is_dir() and any(p.glob("*.npy")))
        if not subdirs:
            raise FileNotFoundError(f"{source}: neither a manifest ({MANIFEST_NAME}) nor clip folders (subfolders "
                                    f"holding an events *.npy)")
        source = subdirs
    if isinstance(source, (str, Path)):
        manifest = Path(source) / MANIFEST_NAME if Path(source).is_dir() else Path(source)
        if not manifest.is_file():
            raise FileNotFoundError(f"manifest not found: {manifest} (pass the manifest json, its folder, "
                                    f"or a list of clip folders)")
        if questions is not None:
            raise ValueError("questions= applies to clip folders; a manifest carries its own questions")
        items = _manifest_items(manifest, video)
    else:
        qs = list(questions) if questions is not None else [QUESTIONS[0]]
        items = [ClipItem(cid, i, q, ev, vid)
                 for cid, ev, vid in map(_folder_item, map(Path, source)) for i, q in enumerate(qs)]
    items.sort(key=lambda it: (it.clip_id, it.question_idx))
    counts = Counter((it.clip_id, it.question_idx) for it in items)
    dup = sorted(k for k, c in counts.items() if c > 1)
    if dup:
        raise ValueError(f"duplicate (clip_id, question_idx) in {source}: {dup[:10]}")
    return items


# ----------------------------------------------------------------------------- event pixels
def event_images(ev: dict, n_chunks: int = 1) -> list[np.ndarray]:
    """EventGPT's event images: n_chunks uint8 (H, W, 3), each on its chunk's own canvas."""
    if len(ev["t"]) < n_chunks:
        raise ValueError(f"{len(ev['t'])} events cannot fill {n_chunks} chunks")
    return event_image(ev, size=None, n_chunks=n_chunks)


def event_pixels(ev: dict, n_chunks: int = 1, image_px: int = EVENTGPT_IMAGE_PX) -> torch.Tensor:
    """EventGPT's vision input: (n_chunks, 3, image_px, image_px) float32, CLIP-normalized."""
    return torch.stack([preprocess_pixels(img, image_px) for img in event_images(ev, n_chunks)])
