"""Where things live: the repository, the shared data, run folders and stage outputs.

Relative paths in parameters are resolved against the repository root, so a notebook
opened in Jupyter (cwd = notebooks/) and one executed by the runner (cwd = its stage
folder) see the same files.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[3]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


class MissingStageOutput(FileNotFoundError):
    """An earlier stage's output is not in the run folder."""


# Files and folders this process read as inputs (earlier stages' outputs, data named by
# parameters). `write_results` saves them beside the stage's results as inputs.json, and the
# runner hashes each one into the stage's provenance: every input a stage reads is recorded.
_INPUTS_READ: list[str] = []
INPUTS_FILE = "inputs.json"


def note_input(path: str | Path) -> Path:
    """Record `path` as an input of the running stage; returns it."""
    p = Path(path).resolve()
    if str(p) not in _INPUTS_READ:
        _INPUTS_READ.append(str(p))
    return p


def inputs_read() -> list[str]:
    return list(_INPUTS_READ)


def resolve(path: str | Path) -> Path:
    """Absolute path; relative ones are taken from the repository root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (REPO_ROOT / p).resolve()


RUN_PREFIX = "run:"  # in path parameters: relative to the run folder (an earlier stage's output)


def resolve_in_run(path: str | Path, run_dir: str | Path) -> Path:
    """Like `resolve`, but `run:<stage>/<file>` names a file inside the run folder, so a preset
    can point a later stage at what an earlier stage of the same run wrote."""
    s = str(path)
    if s.startswith(RUN_PREFIX):
        return resolve(run_dir) / s[len(RUN_PREFIX):]
    return resolve(path)


def stage_dir(run_dir: str | Path, stage: str, create: bool = True) -> Path:
    """The folder where stage `stage` (a notebook's stem, e.g. '20_train_drafters') writes."""
    d = resolve(run_dir) / stage
    if create:
        d.mkdir(parents=True, exist_ok=True)
    return d


def _jsonable(x: Any) -> Any:
    """numpy scalars/arrays and Paths -> plain JSON types."""
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def write_results(run_dir: str | Path, stage: str, results: dict) -> Path:
    """Write a stage's machine-readable results as `<run_dir>/<stage>/results.json`."""
    path = stage_dir(run_dir, stage) / "results.json"
    path.write_text(json.dumps(_jsonable(results), indent=2, sort_keys=True))
    (path.parent / INPUTS_FILE).write_text(json.dumps(inputs_read(), indent=1))
    return path


def require_stage_file(run_dir: str | Path, stage: str, name: str, preset: str = "default") -> Path:
    """Path of a file an earlier stage wrote (recorded as an input of the running stage); a clear
    error naming the command that makes it."""
    path = stage_dir(run_dir, stage, create=False) / name
    if not path.exists():
        raise MissingStageOutput(
            f"{path} is missing: it is written by notebook {stage}. Produce it with\n"
            f"    python -m helpers.run --preset {preset} --out {resolve(run_dir)} --only {stage}\n"
            f"(or run the whole suite: python -m helpers.run --preset {preset})"
        )
    return note_input(path)


def measurement(path: str | Path, made_by: str) -> Path:
    """A measurement file a parameter names (recorded as an input); a clear error saying how it
    is made when it is absent."""
    p = resolve(path)
    if not p.exists():
        raise FileNotFoundError(f"{p} is missing: it is made by {made_by}")
    return note_input(p)


def read_results(run_dir: str | Path, stage: str, preset: str = "default") -> dict:
    """The results.json of an earlier stage (see require_stage_file for the error)."""
    return json.loads(require_stage_file(run_dir, stage, "results.json", preset).read_text())
