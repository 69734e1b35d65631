"""RGB video as mp4 through PyAV: write (downsampling the internal frame rate), read, sample.

`sample_frames(path, n=8)` returns n frames at uniformly spaced indices over the decoded
video, `np.linspace(0, T-1, n)` rounded, which is how Video-LLaVA's processor is fed 8
frames of a clip. With a 1 s clip at 10 fps that is about 8 Hz: motion faster than one
frame interval (100 ms) is seen only as displacement between frames, never as motion.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def downsample_indices(n_internal: int, fps_internal: float, video_fps: float) -> np.ndarray:
    """Indices of internal frames shown at video_fps: frame j at time j / video_fps, t < duration."""
    duration_s = (n_internal - 1) / fps_internal
    n_out = max(1, int(round(duration_s * video_fps)))
    return np.minimum(np.round(np.arange(n_out) * fps_internal / video_fps).astype(int), n_internal - 1)


def write_video(path: str | Path, frames: np.ndarray, fps: float, fps_internal: float | None = None,
                crf: int = 23) -> int:
    """Write frames uint8 (T, H, W, 3) as H.264 mp4 at `fps`; frames are at fps_internal
    (default: fps, i.e. written as they are). Returns the number of frames written.
    H.264 with yuv420p needs even sizes; odd sizes are padded by edge replication."""
    if fps_internal is not None and fps_internal != fps:
        frames = frames[downsample_indices(len(frames), fps_internal, fps)]
    h, w = frames.shape[1:3]
    pad_h, pad_w = h % 2, w % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height = w + pad_w, h + pad_h
        stream.pix_fmt = "yuv420p"
        # asm=0: x264's SIMD routines gave a different bitstream (decoded pixels off by up to 50 levels)
        # from one encode of the same frames to the next, so one seed gave two worlds; the C routines
        # are deterministic and cost about 5 ms more per clip at these sizes
        stream.options = {"crf": str(crf), "preset": "veryfast", "x264-params": "asm=0"}
        stream.codec_context.thread_count = 1
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return len(frames)


def read_video(path: str | Path) -> np.ndarray:
    """All frames of a video: uint8 (T, H, W, 3)."""
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return np.stack(frames)


def video_fps(path: str | Path) -> float:
    with av.open(str(path)) as container:
        return float(container.streams.video[0].average_rate)


def uniform_indices(n_total: int, n: int) -> np.ndarray:
    """n indices spread uniformly over 0..n_total-1 (linspace, rounded), first and last included.
    With n > n_total some indices repeat; callers that must not repeat check first."""
    return np.round(np.linspace(0, n_total - 1, n)).astype(int)


def sample_frames(path: str | Path, n: int = 8) -> np.ndarray:
    """n frames at uniformly spaced indices (linspace over the whole video): (n, H, W, 3)."""
    frames = read_video(path)
    return frames[uniform_indices(len(frames), n)]
