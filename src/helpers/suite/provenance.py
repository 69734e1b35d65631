"""Provenance records: enough to tell, months later, what produced a stage's numbers.

One JSON per executed stage (`<run_dir>/<stage>/provenance.json`): the parameters, the code
version (git commit + dirty flag), content hashes of input data named by parameters, library
versions, the device, timestamps and wall time. Everything degrades to null rather than
failing, because a missing git binary must not cost a finished run.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from helpers.suite.paths import INPUTS_FILE, REPO_ROOT, resolve, resolve_in_run

MAX_HASH_BYTES = 200 * 1024 ** 2  # files above this are recorded by size only (hashing GBs is slow)
LIBRARIES = ("torch", "transformers", "numpy", "pandas", "papermill", "jupyter-book",
             "myst-nb", "helpers")
_SKIP_DIRS = {".git", "__pycache__", ".ipynb_checkpoints"}


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def git_info(repo: str | Path = REPO_ROOT) -> dict[str, Any]:
    """{'commit': sha | None, 'dirty': bool | None}; None when git or the repo is absent. The
    environment variable HELPERS_GIT_COMMIT, when set, names the commit instead (dirty None): the
    command that sent a copy of the tree to another machine knows what it sent, and a .git found
    there may belong to an older copy."""
    if os.environ.get("HELPERS_GIT_COMMIT"):
        return {"commit": os.environ["HELPERS_GIT_COMMIT"], "dirty": None}

    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                               timeout=20)
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain") if commit else None  # untracked source counts as dirty
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def _hash_file(path: Path, h) -> None:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)


def hash_path(path: str | Path) -> dict[str, Any]:
    """sha256 of a file, or of a directory's sorted relative paths + file contents.
    Files over MAX_HASH_BYTES enter the directory hash by path and size only and are listed
    under 'skipped', so the record says exactly what the hash covers."""
    p = Path(path)
    if p.is_file():
        size = p.stat().st_size
        if size > MAX_HASH_BYTES:
            return {"path": str(p), "kind": "file", "bytes": size, "sha256": None,
                    "skipped": [{"path": p.name, "bytes": size}]}
        h = hashlib.sha256()
        _hash_file(p, h)
        return {"path": str(p), "kind": "file", "bytes": size, "sha256": h.hexdigest()}
    h, n, total, skipped = hashlib.sha256(), 0, 0, []
    for root, dirs, files in os.walk(p):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        for name in sorted(files):
            f = Path(root) / name
            if not f.is_file():
                continue
            rel, size = f.relative_to(p).as_posix(), f.stat().st_size
            h.update(rel.encode() + b"\0")
            if size > MAX_HASH_BYTES:
                h.update(f"size:{size}".encode())
                skipped.append({"path": rel, "bytes": size})
            else:
                _hash_file(f, h)
            h.update(b"\0")
            n, total = n + 1, total + size
    out = {"path": str(p), "kind": "dir", "files": n, "bytes": total, "sha256": h.hexdigest()}
    if skipped:
        out["skipped"] = skipped
    return out


def _path_candidates(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, str)]
    return []


def input_hashes(params: dict[str, Any], cache: dict | None = None,
                 exclude: tuple[str, ...] = ("run_dir", "preset"), run_dir: str | Path | None = None) -> dict[str, Any]:
    """Hashes of every parameter value that names an existing file or directory (relative
    paths from the repository root, `run:<stage>/<file>` from the run folder, as notebooks
    resolve them). `cache` (path -> record) avoids re-hashing a data folder several stages read."""
    cache = {} if cache is None else cache
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key in exclude:
            continue
        recs = []
        for s in _path_candidates(value):
            if not s.strip() or s.strip() in (".", "..", "/") or "\n" in s:
                continue
            p = resolve_in_run(s, run_dir) if run_dir is not None else resolve(s)
            if p.exists() and p != REPO_ROOT:
                if str(p) not in cache:
                    cache[str(p)] = hash_path(p)
                recs.append(cache[str(p)])
        if recs:
            out[key] = recs[0] if isinstance(value, str) else recs
    return out


@functools.lru_cache(maxsize=1)
def library_versions() -> dict[str, str | None]:
    """Installed distribution versions (read from metadata: no heavy imports)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


@functools.lru_cache(maxsize=1)
def device_info() -> dict[str, Any]:
    """CPU model and count, and the CUDA device name when there is one. torch is imported
    only when an NVIDIA driver is visible: importing it costs seconds on a CPU machine."""
    out: dict[str, Any] = {"cpu": _cpu_model(), "cpu_count": os.cpu_count(),
                           "platform": platform.platform(), "cuda_device": None}
    if shutil.which("nvidia-smi") or Path("/dev/nvidiactl").exists():
        try:
            import torch
            if torch.cuda.is_available():
                out["cuda_device"] = torch.cuda.get_device_name(0)
                out["cuda_version"] = torch.version.cuda
        except Exception as e:  # a broken CUDA setup is worth recording, not crashing on
            out["cuda_error"] = f"{type(e).__name__}: {e}"
    return out


def machine_summary(info: dict[str, Any] | None = None) -> str:
    """One line for people: 'CPU model (N cores)' plus the GPU when there is one."""
    info = info or device_info()
    out = f"{info.get('cpu') or 'unknown CPU'} ({info.get('cpu_count')} cores)"
    return out + (f", {info['cuda_device']}" if info.get("cuda_device") else "")


def files_read(stage_dir: str | Path, cache: dict | None = None) -> list[dict[str, Any]]:
    """Hashes of the files the stage recorded reading (helpers.suite.paths.note_input): earlier
    stages' outputs and data named by parameters."""
    listed = Path(stage_dir) / INPUTS_FILE
    if not listed.exists():
        return []
    cache = {} if cache is None else cache
    out = []
    for s in json.loads(listed.read_text()):
        if Path(s).exists():
            if s not in cache:
                cache[s] = hash_path(s)
            out.append(cache[s])
        else:
            out.append({"path": s, "missing": True})
    return out


def make_record(stage: str, parameters: dict[str, Any], injected: dict[str, Any],
                started: str, ended: str, wall_s: float, status: str,
                error: dict | None = None, git: dict | None = None,
                hash_cache: dict | None = None, stage_dir: str | Path | None = None) -> dict[str, Any]:
    """The provenance dict for one stage run. `parameters` are the effective values
    (defaults + injected); `injected` only what the runner passed in; `stage_dir` the folder
    whose inputs.json lists what the stage read."""
    return {
        "stage": stage,
        "status": status,
        "error": error,
        "parameters": parameters,
        "injected": injected,
        "git": git if git is not None else git_info(),
        "inputs": input_hashes(parameters, hash_cache, run_dir=parameters.get("run_dir")),
        "inputs_read": files_read(stage_dir, hash_cache) if stage_dir is not None else [],
        "libraries": library_versions(),
        "device": device_info(),
        "hostname": socket.gethostname(),
        "python_executable": sys.executable,
        "started": started,
        "ended": ended,
        "wall_s": round(wall_s, 3),
    }


def write_record(path: str | Path, record: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
    return path
