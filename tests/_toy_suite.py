"""Toy notebooks, presets and book sources in a tmp folder, for the runner/params/book tests.

Not a conftest: other modules' tests do not need these, and a plain module keeps them explicit.
"""
from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

PARAMS_HEAD = 'run_dir = "runs/toy"  # run folder (the runner injects it)\npreset = "toy"  # preset name (the runner injects it)\n'


def make_notebook(path: Path, params: str, cells: list) -> Path:
    """`params`: body of the parameters cell (run_dir/preset are prepended). `cells`: code
    strings, or ("md", text) for markdown cells."""
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells.append(new_markdown_cell(f"# {path.stem}"))
    nb.cells.append(new_code_cell(PARAMS_HEAD + params, metadata={"tags": ["parameters"]}))
    for c in cells:
        nb.cells.append(new_markdown_cell(c[1]) if isinstance(c, tuple) else new_code_cell(c))
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def write_results_cell(stage: str, expr: str) -> str:
    return f"from helpers.suite.paths import write_results\nwrite_results(run_dir, {stage!r}, {expr})"


def make_book_src(root: Path, chapters: list[str]) -> Path:
    """A minimal book source with the repo's real _config.yml (so -W settings are tested)."""
    src = root / "book"
    src.mkdir(parents=True, exist_ok=True)
    real = Path(__file__).resolve().parents[1] / "book" / "_config.yml"
    (src / "_config.yml").write_text(real.read_text())
    toc = "format: jb-book\nroot: intro\nparts:\n  - caption: Future\n    chapters:\n      - file: 00_absent\n"
    toc += "  - caption: Toy\n    chapters:\n" + "".join(f"      - file: {c}\n" for c in chapters)
    (src / "_toc.yml").write_text(toc)
    (src / "intro.md").write_text("# Toy book\n\nA toy book for tests.\n")
    return src


def snapshot(folder: Path) -> dict[str, float]:
    """Every path under a folder with its mtime: to prove nothing was written there."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}
