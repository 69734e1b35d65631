"""`python -m helpers.run`: execute the notebook stages with papermill, then build the book.

    python -m helpers.run --preset smoke                    # every stage, then the book
    python -m helpers.run --preset smoke --set epochs=2     # typed override (YAML)
    python -m helpers.run --preset smoke --only 30_alignment   # re-run one stage, reuse the rest
    python -m helpers.run --list                            # presets, notebooks, parameters

All parameters are validated against the notebooks' `parameters` cells before anything runs
(helpers.suite.params). A failing stage does not stop the others: every failure is collected
(stage, cell, exception), the book says it is not current, and the exit code is 1.
Outputs: `<run_dir>/<stage>/{<stage>.ipynb, results.json, provenance.json}`, `<run_dir>/run.json`,
`<run_dir>/book/_build/html/`. Nothing is written into notebooks/.
"""
from __future__ import annotations

import argparse
import difflib
import functools
import json
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from helpers.suite import book as book_mod
from helpers.suite import provenance as prov
from helpers.suite.params import ParamError, Plan, available_presets, discover_notebooks, plan_run
from helpers.suite.paths import REPO_ROOT

KERNEL = "python3"


@dataclass
class StageResult:
    stem: str
    status: str  # ok | failed | reused | missing (not run now, no earlier output)
    wall_s: float | None = None
    cell: int | None = None  # index of the failing cell in the source notebook (0-based)
    exec_count: int | None = None  # its "In [n]" in the executed copy
    exception: str | None = None  # exception class name
    message: str | None = None
    notebook: str | None = None  # executed copy
    reused: bool = False
    machine: str | None = None  # where it ran (from its provenance when reused)


@dataclass
class RunReport:
    run_dir: Path
    preset: str
    stages: list[StageResult] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    book: dict[str, Any] = field(default_factory=lambda: {"status": "skipped"})
    wall_s: float = 0.0

    @property
    def failures(self) -> list[StageResult]:
        return [s for s in self.stages if s.status == "failed"]

    @property
    def exit_code(self) -> int:
        return 1 if self.failures or self.book.get("status") == "failed" else 0


def ensure_kernel(name: str = KERNEL) -> None:
    """Make sure papermill's kernel is this interpreter (the venv), not some other python3:
    a kernelspec pointing elsewhere would run the notebooks without our packages."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    def spec_ok() -> bool:
        try:
            argv0 = KernelSpecManager().get_kernel_spec(name).argv[0]
        except NoSuchKernel:
            return False
        # jupyter_client replaces a bare "python"/"python3" with sys.executable
        return argv0 in {"python", f"python{sys.version_info[0]}", "python%i.%i" % sys.version_info[:2]} \
            or Path(argv0).resolve() == Path(sys.executable).resolve()

    if spec_ok():
        return
    subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix", "--name", name],
                   check=True, capture_output=True)
    if not spec_ok():
        spec = KernelSpecManager().get_kernel_spec(name)
        raise RuntimeError(f"kernel '{name}' resolves to {spec.argv[0]} ({spec.resource_dir}), not "
                           f"{sys.executable}; remove that kernelspec or set JUPYTER_PREFER_ENV_PATH=1")


@functools.cache
def _ipc_dir(tmp: str) -> str:
    """This process's private folder (mode 0700) in `tmp` for the kernels' Unix sockets: made on
    first use, removed at exit."""
    import atexit
    import tempfile
    d = tempfile.mkdtemp(prefix="helpers-kernels-", dir=tmp)
    atexit.register(shutil.rmtree, d, True)
    return d


def kernel_manager_class(tmp: str | None = None):
    """The kernel manager papermill starts each stage's kernel with: its sockets are Unix domain
    sockets in a private temporary folder of this process (mode 0700, removed at exit) rather than
    plain TCP on localhost, so the kernel neither listens on a port nor prints ipykernel's warning
    about unencrypted TCP at every stage. Where Unix sockets are not available (Windows) or their
    paths would exceed the OS limit (a long TMPDIR), None: jupyter_client's TCP default. `tmp`: the
    folder the private one is made in (default: the system's temporary folder)."""
    import os
    import tempfile
    import uuid

    from jupyter_client import AsyncKernelManager
    from traitlets import default

    # <tmp>/helpers-kernels-XXXXXXXX/<32 hex>-<n>: about 60 characters after the folder; sun_path holds 107 bytes
    tmp = tmp or tempfile.gettempdir()
    if os.name != "posix" or len(os.fsencode(tmp)) + 64 > 107:
        return None

    class IPCKernelManager(AsyncKernelManager):
        @default("transport")
        def _transport_default(self):
            return "ipc"

        @default("ip")
        def _ip_default(self):   # jupyter_client's default is relative ('kernel-ipc'): the kernel's cwd
            return os.path.join(_ipc_dir(tmp), uuid.uuid4().hex)

    return IPCKernelManager


def _failure(e: Exception, params_cell: int) -> dict[str, Any]:
    from papermill.exceptions import PapermillExecutionError
    if isinstance(e, PapermillExecutionError):
        # papermill counts its injected-parameters cell (right after the parameters cell)
        cell = e.cell_index - 1 if e.cell_index > params_cell else e.cell_index
        return {"cell": cell, "exec_count": e.exec_count, "exception": e.ename,
                "message": str(e.evalue)[:2000]}
    return {"cell": None, "exec_count": None, "exception": type(e).__name__, "message": str(e)[:2000]}


def run_stage(spec, run_dir: Path, injected: dict[str, Any], progress: bool = True,
              log_output: bool = False, git: dict | None = None, hash_cache: dict | None = None) -> StageResult:
    """Execute one notebook into a fresh `<run_dir>/<stem>/` (cwd of the kernel) and write its
    provenance, whatever the outcome. The folder is emptied first so a stale results.json
    from an earlier run can never pass for this run's."""
    import papermill as pm
    stage = run_dir / spec.stem
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    out_nb = stage / f"{spec.stem}.ipynb"
    started, t0 = prov.now_iso(), time.perf_counter()
    error = None
    try:
        km = kernel_manager_class()
        pm.execute_notebook(str(spec.path), str(out_nb), parameters=injected, kernel_name=KERNEL,
                            cwd=str(stage), progress_bar=progress, log_output=log_output,
                            **({"kernel_manager_class": km} if km else {}))
    except Exception as e:  # every failure is collected; the next stage still runs
        error = _failure(e, spec.parameters_cell)
    wall = time.perf_counter() - t0
    effective = {k: p.default for k, p in spec.params.items()} | injected
    rec = prov.make_record(spec.stem, effective, injected, started, prov.now_iso(), wall,
                           "failed" if error else "ok", error, git, hash_cache, stage)
    prov.write_record(stage / "provenance.json", rec)
    return StageResult(spec.stem, "failed" if error else "ok", round(wall, 3), machine=prov.machine_summary(),
                       notebook=str(out_nb) if out_nb.exists() else None, **(error or {}))


def _reused(stem: str, run_dir: Path) -> StageResult:
    """A stage not run now: reuse its earlier output, carrying over an earlier failure."""
    nb, rec_path = run_dir / stem / f"{stem}.ipynb", run_dir / stem / "provenance.json"
    if not nb.exists():
        return StageResult(stem, "missing")
    rec = json.loads(rec_path.read_text()) if rec_path.exists() else {}
    if rec.get("status") == "failed":
        err = rec.get("error") or {}
        return StageResult(stem, "failed", rec.get("wall_s"), notebook=str(nb), reused=True,
                           cell=err.get("cell"), exec_count=err.get("exec_count"),
                           exception=err.get("exception"),
                           message=f"(earlier run) {err.get('message', '')}")
    machine = prov.machine_summary(rec["device"]) if rec.get("device") else None
    return StageResult(stem, "reused", rec.get("wall_s"), notebook=str(nb), reused=True, machine=machine)


def _write_run_json(rep: RunReport, plan: Plan, git: dict, started: str, status: str) -> None:
    data = {
        "preset": rep.preset, "status": status, "started": started, "ended": prov.now_iso(),
        "wall_s": round(rep.wall_s, 3), "git": git,
        "parameters": {k: {"value": v.value, "source": v.source} for k, v in plan.values.items()},
        "stages": [asdict(s) for s in rep.stages],
        "failures": [{"stage": s.stem, "cell": s.cell, "exception": s.exception, "message": s.message}
                     for s in rep.failures],
        "book": rep.book,
    }
    (rep.run_dir / "run.json").write_text(json.dumps(data, indent=2, default=str))


def run_suite(preset: str = "default", params_files: list | None = None,
              overrides: list[str] | dict | None = None, only: list[str] | None = None,
              out: str | Path | None = None, book: bool = True,
              notebooks_dir: str | Path = REPO_ROOT / "notebooks",
              params_dir: str | Path = REPO_ROOT / "params", book_src: str | Path = REPO_ROOT / "book",
              progress: bool = True, log_output: bool = False, log=print, execute: bool = True) -> RunReport:
    """Validate everything, run the selected stages (or the `only` subset), build the book.
    execute=False runs nothing: the book is built from the executed notebooks already in the run
    folder (e.g. one brought back from the GPU machine). Raises ParamError before executing
    anything if a parameter or stage name is wrong."""
    t0, started = time.perf_counter(), prov.now_iso()
    plan = plan_run(preset, notebooks_dir, params_dir, params_files, overrides)
    stems = [s.stem for s in plan.notebooks]
    for o in only or []:
        if o not in stems:
            hint = difflib.get_close_matches(o, stems, n=1)
            raise ParamError(f"--only {o}: not a selected notebook"
                             + (f" (did you mean '{hint[0]}'?)" if hint else "") + f". Selected: {', '.join(stems)}")
    run_dir = Path(out).resolve() if out else (REPO_ROOT / "runs" / preset)
    run_dir.mkdir(parents=True, exist_ok=True)
    ensure_kernel()
    git, cache = prov.git_info(), {}
    rep = RunReport(run_dir, preset, parameters={k: v.value for k, v in plan.values.items()})
    to_run = [s for s in plan.notebooks if execute and (not only or s.stem in only)]
    for spec in plan.notebooks:
        if spec not in to_run:
            rep.stages.append(_reused(spec.stem, run_dir))
            log(f"[--] {spec.stem}: {rep.stages[-1].status} (from {run_dir / spec.stem})")
            continue
        i = to_run.index(spec) + 1
        log(f"[{i}/{len(to_run)}] {spec.stem}  (elapsed {time.perf_counter() - t0:.0f}s)")
        injected = {**plan.per_notebook[spec.stem], "run_dir": str(run_dir), "preset": preset}
        res = run_stage(spec, run_dir, injected, progress, log_output, git, cache)
        rep.stages.append(res)
        log(f"[{i}/{len(to_run)}] {spec.stem}: {res.status} in {res.wall_s:.1f}s"
            + (f" -- cell {res.cell}: {res.exception}: {res.message}" if res.status == "failed" else ""))
        rep.wall_s = time.perf_counter() - t0
        _write_run_json(rep, plan, git, started, "running")
    if book:
        rep.book = _book(rep, git, book_src, log)
    rep.wall_s = time.perf_counter() - t0
    _write_run_json(rep, plan, git, started, "failed" if rep.exit_code else "ok")
    return rep


def _book(rep: RunReport, git: dict, book_src, log) -> dict[str, Any]:
    """Build the book from the stages that have a good executed copy; failed ones are named."""
    failed = [s.stem for s in rep.failures]
    nbs = {s.stem: Path(s.notebook) for s in rep.stages if s.status in ("ok", "reused") and s.notebook}
    status = book_mod.BookStatus(rep.preset, git.get("commit"), git.get("dirty"),
                                 prov.now_iso().replace("T", " ").replace("+00:00", " UTC"),
                                 {s.stem: s.status for s in rep.stages}, failed,
                                 {s.stem: s.wall_s for s in rep.stages if s.status in ("ok", "failed", "reused") and s.wall_s},
                                 prov.machine_summary(),
                                 {s.stem: s.machine for s in rep.stages if s.machine})
    try:
        res = book_mod.build_book(rep.run_dir, nbs, status, book_src, log=log)
    except Exception as e:  # a broken book source must not hide the stages' report
        res = book_mod.BookResult("failed", errors=[f"{type(e).__name__}: {e}"])
    log(f"[book] {res.status} in {res.wall_s:.1f}s -> {res.index_html}"
        + "".join(f"\n  {e}" for e in res.errors))
    return {"status": res.status, "current": res.status == "ok" and not failed,
            "html": str(res.index_html) if res.index_html else None,
            "screenshot": str(res.screenshot) if res.screenshot else None,
            "wall_s": round(res.wall_s, 3), "errors": res.errors, "failed_stages": failed}


def summary_table(rep: RunReport) -> str:
    rows = [("stage", "status", "wall_s", "cell", "error")]
    for s in rep.stages:
        err = f"{s.exception}: {s.message}" if s.exception else ""
        rows.append((s.stem, s.status, "" if s.wall_s is None else f"{s.wall_s:.1f}",
                     "" if s.cell is None else str(s.cell), err.splitlines()[0][:100] if err else ""))
    rows.append(("book", rep.book.get("status", ""), f"{rep.book.get('wall_s', 0) or 0:.1f}", "",
                 "" if rep.book.get("current", rep.book.get("status") == "skipped") else "NOT current"))
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w[i]) if i < 4 else c for i, c in enumerate(r)) for r in rows]
    lines.insert(1, "-" * max(len(l) for l in lines))
    return "\n".join(lines) + f"\nrun folder: {rep.run_dir}   total {rep.wall_s:.1f}s"


def list_suite(notebooks_dir: Path, params_dir: Path) -> str:
    """--list: presets and every notebook's parameters with their help comments."""
    out = [f"presets ({params_dir}): {', '.join(available_presets(params_dir)) or '(none)'}", ""]
    for spec in discover_notebooks(notebooks_dir):
        out.append(f"{spec.stem}")
        for p in spec.params.values():
            out.append(f"    {p.name} = {p.default!r}" + (f"    # {p.help}" if p.help else ""))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m helpers.run", description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="default", help="params/NAME.yml (default: default)")
    ap.add_argument("--params", nargs="+", default=[], metavar="FILE", help="YAML files layered on the preset, later wins")
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="overrides", help="typed overrides (YAML values)")
    ap.add_argument("--only", nargs="+", metavar="STEM", help="run these stages; reuse the others' outputs")
    ap.add_argument("--out", help="run folder (default runs/<preset>)")
    ap.add_argument("--no-book", action="store_true", help="skip building the book")
    ap.add_argument("--book-only", action="store_true",
                    help="execute nothing: build the book from the run folder's executed notebooks (e.g. a GPU run brought back)")
    ap.add_argument("--list", action="store_true", help="show presets and notebook parameters")
    ap.add_argument("--log-output", action="store_true", help="stream cell output (tqdm bars) to the terminal")
    ap.add_argument("--notebooks-dir", default=str(REPO_ROOT / "notebooks"), help=argparse.SUPPRESS)
    ap.add_argument("--params-dir", default=str(REPO_ROOT / "params"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.list:
        print(list_suite(Path(a.notebooks_dir), Path(a.params_dir)))
        return 0
    try:
        if a.book_only and (a.only or a.no_book):
            raise ParamError("--book-only builds the book from what the run folder holds: it takes neither --only nor --no-book")
        rep = run_suite(a.preset, a.params, a.overrides, a.only, a.out, not a.no_book,
                        a.notebooks_dir, a.params_dir, log_output=a.log_output, execute=not a.book_only)
    except ParamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n" + summary_table(rep))
    return rep.exit_code


if __name__ == "__main__":
    sys.exit(main())
