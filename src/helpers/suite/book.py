"""Assemble and build the report book from a run folder's executed notebooks.

The book never executes anything (`execute_notebooks: off`): it renders the executed copies
the runner left in `<run_dir>/<stage>/<stage>.ipynb`, so every figure in it is traceable to a
provenance record. The sources (`book/_config.yml`, `_toc.yml`, `*.md`) are copied into
`<run_dir>/book/` with the toc trimmed to the stages that exist, and the intro gets a status
box (preset, commit, date; a warning naming failed stages) so a stale or partial book cannot
pass for a current one. Built with `-W`: any Sphinx warning fails the build.

Each chapter is made to read as a report (`prepare_notebook`): its parameters appear once, as
a small table under the chapter's opening; the parameters cell and papermill's injected cell
are removed; code cells with something to show keep their output with the code folded away
(one click shows it); cells that only compute or glue values are removed; stderr (warnings,
progress bars) never reaches a page. The landing page's answer section pastes the findings
chapter's glued headline and key figure; it is dropped when that chapter is not in the book.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from helpers.suite.paths import REPO_ROOT

BOOK_SRC = REPO_ROOT / "book"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--hide-scrollbars", "--virtual-time-budget=5000"]


@dataclass
class BookResult:
    status: str  # "ok" | "failed" | "skipped"
    book_dir: Path | None = None
    html_dir: Path | None = None
    index_html: Path | None = None  # the root page (index.html only redirects to it)
    screenshot: Path | None = None
    wall_s: float = 0.0
    errors: list[str] = field(default_factory=list)  # warnings/errors from the build log


@dataclass
class BookStatus:
    """What the status box on the intro page says."""
    preset: str
    commit: str | None
    dirty: bool | None
    date: str
    stages: dict[str, str]  # stem -> ok | failed | reused | missing
    failed: list[str] = field(default_factory=list)
    wall_s: dict[str, float] = field(default_factory=dict)  # stem -> seconds
    machine: str = ""  # where they ran (CPU model and cores, GPU name)
    machines: dict[str, str] = field(default_factory=dict)  # stem -> machine, where it differs from `machine`


# ---------------------------------------------------------------- toc
def _entry_file(entry: dict) -> str | None:
    return entry.get("file")


def _keep(entries: list[dict], exists) -> list[dict]:
    """Drop toc entries whose file is absent (recursively through `sections`)."""
    kept = []
    for e in entries or []:
        f = _entry_file(e)
        if f is not None and not exists(f):
            continue
        e = dict(e)
        if "sections" in e:
            e["sections"] = _keep(e["sections"], exists)
            if not e["sections"]:
                del e["sections"]
        kept.append(e)
    return kept


def filter_toc(toc: dict, exists, extra: list[str] = ()) -> dict:
    """Keep parts (in order) and entries whose files exist; empty parts vanish. `extra`
    stems (run but not listed in the toc) go to a trailing part so nothing disappears."""
    toc = dict(toc)
    if "parts" in toc:
        parts = []
        for p in toc["parts"]:
            chapters = _keep(p.get("chapters", []), exists)
            if chapters:
                parts.append({**p, "chapters": chapters})
        if extra:
            parts.append({"caption": "Other stages", "chapters": [{"file": s} for s in extra]})
        toc["parts"] = parts
        if not parts:
            del toc["parts"]
    else:
        chapters = _keep(toc.get("chapters", []), exists) + [{"file": s} for s in extra]
        toc.pop("chapters", None)
        if chapters:
            toc["chapters"] = chapters
    return toc


def _toc_files(toc: dict) -> set[str]:
    out: set[str] = {toc.get("root", "")}

    def walk(entries):
        for e in entries or []:
            if "file" in e:
                out.add(e["file"])
            walk(e.get("sections"))
    for p in toc.get("parts", []):
        walk(p.get("chapters"))
    walk(toc.get("chapters"))
    return out


# ---------------------------------------------------------------- status box
def status_markdown(s: BookStatus) -> str:
    """A MyST admonition (backtick fences: needs no extension). Metadata only, no results."""
    commit = f"`{s.commit[:12]}`" + (" (uncommitted changes)" if s.dirty else "") if s.commit else "unknown (no git)"
    stages = ", ".join(f"{k}: {v}" + (f" ({s.wall_s[k]:.0f} s)" if k in s.wall_s else "")
                       for k, v in s.stages.items()) or "none"
    by_machine: dict[str, list[str]] = {}
    for k in s.wall_s:
        by_machine.setdefault(s.machines.get(k, s.machine), []).append(k)
    if len(by_machine) <= 1:
        where = next(iter(by_machine), s.machine)
        timing = (f"\n\nStage time {sum(s.wall_s.values()):.0f} s" + (f" on {where}" if where else "") + "."
                  if s.wall_s else "")
    else:
        timing = "\n\nStage time " + "; ".join(
            f"{sum(s.wall_s[k] for k in ks):.0f} s on {m} ({', '.join(ks)})" for m, ks in by_machine.items()) + "."
    box = (f"```{{admonition}} Run status\n:class: note\n"
           f"Preset `{s.preset}`, commit {commit}, built {s.date}.\n\nStages: {stages}.{timing}\n```\n")
    if s.failed:
        names = ", ".join(f"`{f}`" for f in s.failed)
        box += (f"\n```{{warning}}\nThis book is NOT current: stage(s) {names} failed in this run. "
                f"Their chapters are left out and later chapters may rest on stale outputs. "
                f"See the run folder's `run.json` and the executed notebooks for the errors.\n```\n")
    return box


def inject_status(md: str, box: str) -> str:
    """Insert the box at the page's run-status marker, else right after its first `# ` heading
    (or at the top)."""
    if STATUS_MARKER in md:
        return md.replace(STATUS_MARKER, box, 1)
    lines = md.splitlines(keepends=True)
    start = 0
    if lines and lines[0].strip() == "---":  # front matter
        for i in range(1, len(lines)):
            if lines[i].strip() == "---":
                start = i + 1
                break
    for i in range(start, len(lines)):
        if lines[i].startswith("# "):
            return "".join(lines[: i + 1]) + "\n" + box + "\n" + "".join(lines[i + 1:])
    return "".join(lines[:start]) + box + "\n" + "".join(lines[start:])


# ---------------------------------------------------------------- chapters as reports
HIDDEN_PARAMS = ("run_dir", "preset")  # the status box names the preset; run_dir is a machine path
ANSWER_START, ANSWER_END = "<!-- answer:start -->", "<!-- answer:end -->"
STATUS_MARKER = "<!-- run-status -->"
FINDINGS_STAGE = "90_findings"


def _literal_assignments(source: str) -> dict:
    """name -> value of the `name = literal` lines of papermill's injected cell."""
    import ast
    out = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return out


def _value_md(v) -> str:
    text = repr(v) if not isinstance(v, str) else (f'"{v}"' if v else '""')
    text = text if len(text) <= 80 else text[:77] + "..."
    return "`" + text.replace("|", "\\|").replace("`", "'") + "`"


def parameters_markdown(params: dict, effective: dict) -> str:
    """A captioned MyST table of a chapter's parameters: name, value in this run, meaning."""
    rows = [f"| `{n}` | {_value_md(effective.get(n, p.default))} | {p.help.replace('|', '/')} |"
            for n, p in params.items() if n not in HIDDEN_PARAMS]
    if not rows:
        return ""
    return (":::{table} Parameters of this chapter in this run\n:align: left\n\n"
            "| parameter | value | meaning |\n|---|---|---|\n" + "\n".join(rows) + "\n:::")


def _visible(output) -> bool:
    """Would a reader see this output? (not stderr, not a glue record stored for pasting)"""
    if output.get("output_type") == "stream":
        return output.get("name") == "stdout" and bool("".join(output.get("text", "")).strip())
    meta = output.get("metadata", {}).get("scrapbook")
    return not (meta and meta.get("mime_prefix"))


def _tag(cell, tag: str) -> None:
    tags = cell.setdefault("metadata", {}).setdefault("tags", [])
    if tag not in tags:
        tags.append(tag)


def prepare_notebook(path: str | Path) -> None:
    """Rewrite an executed notebook in place so that it reads as a report (see module doc)."""
    import nbformat

    from helpers.suite.params import parse_parameters_cell

    nb = nbformat.read(path, as_version=4)
    params, injected, first_md = {}, {}, None
    for i, cell in enumerate(nb.cells):
        tags = cell.get("metadata", {}).get("tags", [])
        if cell.cell_type == "markdown" and first_md is None:
            first_md = i
        if cell.cell_type != "code":
            continue
        if "parameters" in tags:
            params = parse_parameters_cell(cell.source, where=Path(path).stem)
            _tag(cell, "remove-cell")
        elif "injected-parameters" in tags:
            injected = _literal_assignments(cell.source)
            _tag(cell, "remove-cell")
        else:
            cell.outputs = [o for o in cell.get("outputs", []) if not (o.get("output_type") == "stream"
                                                                      and o.get("name") == "stderr")]
            _tag(cell, "hide-input" if any(_visible(o) for o in cell.outputs) else "remove-cell")
    table = parameters_markdown(params, injected)
    if table:
        nb.cells.insert(0 if first_md is None else first_md + 1, nbformat.v4.new_markdown_cell(table))
    nbformat.write(nb, path)


def place_answer(md: str, have_findings: bool) -> str:
    """Keep the landing page's answer section (between the answer markers) only when the
    findings chapter, whose glued values it pastes, is in the book."""
    if ANSWER_START not in md:
        return md
    head, rest = md.split(ANSWER_START, 1)
    answer, tail = rest.split(ANSWER_END, 1)
    if not have_findings:
        answer = ("\nThis run did not produce the findings chapter, so there is no answer to show here; "
                  "the chapters below hold what it did measure.\n")
    return head + answer + tail


# ---------------------------------------------------------------- assemble + build
def assemble(run_dir: str | Path, notebooks: dict[str, Path], status: BookStatus,
             book_src: str | Path = BOOK_SRC) -> Path:
    """Fresh `<run_dir>/book/`: sources + executed notebooks + trimmed toc + status box."""
    src, book = Path(book_src), Path(run_dir) / "book"
    if book.exists():
        shutil.rmtree(book)
    shutil.copytree(src, book, ignore=shutil.ignore_patterns("_build", ".ipynb_checkpoints"))
    for stem, nb in notebooks.items():
        shutil.copy2(nb, book / f"{stem}.ipynb")
        prepare_notebook(book / f"{stem}.ipynb")
    toc = yaml.safe_load((book / "_toc.yml").read_text())
    exists = lambda f: any((book / f).with_suffix(s).exists() for s in (".md", ".ipynb")) or (book / f).exists()
    listed = _toc_files(toc)
    toc = filter_toc(toc, exists, extra=[s for s in notebooks if s not in listed])
    (book / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    root = book / f"{toc['root']}.md"
    if root.exists():
        md = place_answer(root.read_text(), FINDINGS_STAGE in notebooks)
        root.write_text(inject_status(md, status_markdown(status)))
    key_figure = Path(run_dir) / FINDINGS_STAGE / "key_figure.png"
    if FINDINGS_STAGE in notebooks and key_figure.exists():
        shutil.copy2(key_figure, book / "key_figure.png")
    return book


def _jupyter_book_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "jupyter-book"
    return [str(exe)] if exe.exists() else [shutil.which("jupyter-book") or "jupyter-book"]


def build(book_dir: str | Path, log=print) -> BookResult:
    """`jupyter-book build --builder html -W --keep-going`; the full log goes to build.log."""
    import time
    book_dir = Path(book_dir)
    t0 = time.perf_counter()
    cmd = _jupyter_book_cmd() + ["build", str(book_dir), "--builder", "html", "-W", "--keep-going"]
    log(f"[book] {' '.join(cmd)}")
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=book_dir)
    text = r.stdout + r.stderr
    (book_dir / "build.log").write_text(text)
    html = book_dir / "_build" / "html"
    res = BookResult("ok" if r.returncode == 0 else "failed", book_dir, html,
                     wall_s=time.perf_counter() - t0)
    if r.returncode != 0:
        res.errors = [l for l in text.splitlines() if "WARNING" in l or "ERROR" in l][:50] or text.splitlines()[-20:]
    toc = yaml.safe_load((book_dir / "_toc.yml").read_text())
    res.index_html = html / f"{toc['root']}.html"
    return res


# ---------------------------------------------------------------- browser
def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _chromium(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError("chromium is not on PATH (apt-get install -y chromium)")
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        return subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout)


def rendered_dom(html_path: str | Path) -> str:
    """The page's DOM after its scripts ran (headless Chromium --dump-dom): what a reader
    sees, which can differ from the HTML source when JavaScript fails or rewrites the page."""
    r = _chromium(["--dump-dom", Path(html_path).resolve().as_uri()])
    if r.returncode != 0 or not r.stdout.strip():
        raise RuntimeError(f"chromium --dump-dom failed ({r.returncode}): {r.stderr[-2000:]}")
    return r.stdout


def screenshot(html_path: str | Path, png: str | Path, size: str = "1280,1600") -> Path | None:
    """PNG of a page as the browser renders it; None (not an error) without chromium."""
    if find_chromium() is None:
        return None
    png = Path(png)
    r = _chromium([f"--screenshot={png.resolve()}", f"--window-size={size}",
                   Path(html_path).resolve().as_uri()])
    return png if r.returncode == 0 and png.exists() else None


def build_book(run_dir: str | Path, notebooks: dict[str, Path], status: BookStatus,
               book_src: str | Path = BOOK_SRC, log=print) -> BookResult:
    """Assemble, build with -W, then screenshot the root page to `<run_dir>/book/index.png`."""
    book = assemble(run_dir, notebooks, status, book_src)
    res = build(book, log=log)
    if res.status == "ok" and res.index_html and res.index_html.exists():
        try:
            res.screenshot = screenshot(res.index_html, book / "index.png")
        except (subprocess.SubprocessError, OSError) as e:
            log(f"[book] screenshot failed: {e}")
    return res
