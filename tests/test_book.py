"""The book: toc trimming, status box, a -W build of executed toy notebooks, and a real
browser check that glued values reach the rendered DOM."""
from __future__ import annotations

import re

import pytest

from _toy_suite import make_book_src, make_notebook, write_results_cell
from helpers.suite.book import BookStatus, filter_toc, find_chromium, inject_status, rendered_dom, status_markdown
from helpers.suite.paths import REPO_ROOT
from helpers.suite.runner import run_suite

needs_chromium = pytest.mark.skipif(find_chromium() is None,
                                    reason="chromium not on PATH (apt-get install -y chromium)")


def test_filter_toc_keeps_part_order_and_drops_missing():
    toc = {"format": "jb-book", "root": "intro", "parts": [
        {"caption": "Synthetic world", "chapters": [{"file": "01_world"}]},
        {"caption": "The study", "numbered": True,
         "chapters": [{"file": "10_data"}, {"file": "20_x", "sections": [{"file": "21_y"}]}, {"file": "40_f"}]}]}
    have = {"10_data", "20_x", "40_f"}
    out = filter_toc(toc, lambda f: f in have, extra=["90_extra"])
    assert [p["caption"] for p in out["parts"]] == ["The study", "Other stages"]
    assert out["parts"][0]["chapters"] == [{"file": "10_data"}, {"file": "20_x"}, {"file": "40_f"}]
    assert out["parts"][0]["numbered"] is True and out["parts"][1]["chapters"] == [{"file": "90_extra"}]
    assert "parts" not in filter_toc(toc, lambda f: False)


def test_repo_toc_lists_world_parts_first():
    import yaml
    toc = yaml.safe_load((REPO_ROOT / "book" / "_toc.yml").read_text())
    assert [p["caption"] for p in toc["parts"]] == ["Clips, models and recording", "The study", "Speed", "Findings"]
    listed = [c["file"] for p in toc["parts"] for c in p["chapters"]]
    assert sorted(listed) == sorted(p.stem for p in (REPO_ROOT / "notebooks").glob("*.ipynb"))   # every stage listed
    assert listed.index("35_event_camera") == listed.index("30_alignment") + 1
    cfg = yaml.safe_load((REPO_ROOT / "book" / "_config.yml").read_text())
    assert cfg["title"] == "Cross-modal speculative decoding" and cfg["execute"]["execute_notebooks"] == "off"
    intro = (REPO_ROOT / "book" / "intro.md").read_text()
    assert "python -m helpers.run --preset" in intro
    assert not re.search(r"\d+(\.\d+)?\s*%", intro), "no hard-coded result numbers in the intro"


def test_status_box_after_title_and_warns_on_failure():
    s = BookStatus("smoke", "0123456789abcdef", True, "2026-01-01 00:00 UTC", {"10_a": "ok", "20_b": "failed"}, ["20_b"])
    md = inject_status("---\nx: 1\n---\n# Title\n\nBody\n", status_markdown(s))
    assert md.index("# Title") < md.index("Run status") < md.index("Body")
    assert "```{warning}" in md and "NOT current" in md and "`20_b`" in md and "uncommitted" in md
    ok = status_markdown(BookStatus("smoke", None, None, "d", {"10_a": "ok"}))
    assert "warning" not in ok and "no git" in ok and "Stage time" not in ok
    timed = status_markdown(BookStatus("smoke", None, None, "d", {"10_a": "ok", "20_b": "reused"}, [],
                                       {"10_a": 12.4}, "Some CPU (2 cores)"))
    assert "10_a: ok (12 s), 20_b: reused." in timed and "Stage time 12 s on Some CPU (2 cores)." in timed


@pytest.fixture(scope="module")
def built_book(tmp_path_factory):
    """A toy stage whose prose takes a computed value through myst_nb.glue, run + built."""
    root = tmp_path_factory.mktemp("booktoy")
    nbd, pdir = root / "notebooks", root / "params"
    make_notebook(nbd / "10_glue.ipynb", "k = 7  # numerator\n", [
        "from myst_nb import glue\nrate = k / 9\nglue('accept_rate', rate, display=False)",
        write_results_cell("10_glue", "{'accept_rate': rate}"),
        ("md", "## Result\n\nThe toy acceptance rate is {glue:text}`accept_rate:.4f` per step."),
    ])
    pdir.mkdir()
    (pdir / "toy.yml").write_text("k: 5\n")
    rep = run_suite("toy", out=root / "run", notebooks_dir=nbd, params_dir=pdir,
                    book_src=make_book_src(root, ["10_glue"]), progress=False)
    return rep


@pytest.mark.slow
def test_book_builds_with_W_from_executed_copies(built_book):
    rep = built_book
    assert rep.exit_code == 0, rep.book
    assert rep.book["status"] == "ok" and rep.book["current"] is True
    html = rep.run_dir / "book" / "_build" / "html"
    page = (html / "10_glue.html").read_text()
    assert "0.5556" in page  # 5/9 from the preset, not the notebook default 7/9
    assert "0.7778" not in page
    assert "Run status" in (html / "intro.html").read_text()
    assert "00_absent" not in (rep.run_dir / "book" / "_toc.yml").read_text()


@pytest.mark.slow
@needs_chromium
def test_glued_value_in_rendered_dom_and_screenshot(built_book):
    html = built_book.run_dir / "book" / "_build" / "html"
    dom = rendered_dom(html / "10_glue.html")
    text = re.sub(r"<[^>]+>", "", dom)
    assert re.search(r"The toy acceptance rate is\s*0\.5556\s*per step", text), text[:2000]
    png = built_book.run_dir / "book" / "index.png"
    assert png.exists() and png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 5000
    assert built_book.book["screenshot"] == str(png)
