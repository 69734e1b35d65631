"""The real suite: presets agree with the notebooks, the smoke preset runs end to end into a
temporary folder, the book builds and a real browser shows the glued figures."""
import json
import re

import nbformat
import pytest

from helpers.suite.book import find_chromium, rendered_dom
from helpers.suite.params import available_presets, plan_run
from helpers.suite.paths import REPO_ROOT
from helpers.suite.runner import run_suite

from conftest import DEV_PAIRS, require_shared

NB, PARAMS = REPO_ROOT / "notebooks", REPO_ROOT / "params"
DRAFTER_KEYS = {"token_match", "top5", "mat", "tau", "gamma", "n_test_pairs"}


@pytest.mark.parametrize("preset", available_presets(PARAMS))
def test_every_preset_validates_against_the_notebooks(preset):
    plan = plan_run(preset, NB, PARAMS)  # unknown keys and wrong types raise ParamError
    assert plan.notebooks and all((NB / f"{s.stem}.ipynb").exists() for s in plan.notebooks)


def test_notebooks_are_committed_without_outputs():
    for path in sorted(NB.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name} has outputs"


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    return run_suite("smoke", out=tmp_path_factory.mktemp("smoke") / "run", progress=False)


@pytest.mark.slow
def test_smoke_preset_runs_every_stage_and_builds_the_book(smoke_run):
    rep = smoke_run
    assert rep.exit_code == 0, [(s.stem, s.exception, s.message) for s in rep.failures] or rep.book
    assert [s.stem for s in rep.stages] == sorted(p.stem for p in NB.glob("*.ipynb"))
    align = json.loads((rep.run_dir / "30_alignment" / "results.json").read_text())
    for name in ("seed_token_adapter", "target_prior_ngram", "cross_modal", "target_prior_neural", "draft_direct"):
        assert DRAFTER_KEYS <= set(align[name]), name
        assert 1.0 <= align[name]["mat"] <= align["gamma"] + 1
        assert align[name]["tau"] <= align[name]["mat"] <= align[name]["tau"] + 1  # the bonus adds at most 1
    assert 0.0 <= align["direct_match"] <= 1.0
    data = json.loads((rep.run_dir / "10_data" / "results.json").read_text())
    assert align["n_test_pairs"] == data["split"]["test"] > 0
    html = rep.run_dir / "book" / "_build" / "html"
    for stem in ("01_world", "10_data", "30_alignment", "40_findings"):
        assert (html / f"{stem}.html").exists(), stem
    total = sum(s.wall_s for s in rep.stages)
    assert f"Stage time {total:.0f} s on " in (html / "intro.html").read_text()  # the suite's wall time, in the book


@pytest.mark.slow
def test_glued_study_figures_in_the_rendered_dom(smoke_run):
    if not find_chromium():
        pytest.skip("chromium not installed (apt-get install chromium): browser test skipped")
    align = json.loads((smoke_run.run_dir / "30_alignment" / "results.json").read_text())
    text = re.sub(r"<[^>]+>", "", rendered_dom(smoke_run.run_dir / "book" / "_build" / "html" / "30_alignment.html"))
    text = re.sub(r"\s+", " ", text)
    assert f"for {align['direct_match']:.2%} of target tokens" in text
    assert f"with MAT {align[align['best_drafter']]['mat']:.2f} at gamma = {align['gamma']}" in text
    png = smoke_run.run_dir / "book" / "index.png"
    assert png.exists() and png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_recorded_dsec_study_on_a_few_pairs(tmp_path):
    require_shared(DEV_PAIRS)
    rep = run_suite("dsec_recorded", overrides={"max_pairs": 100, "adapter_epochs": 1, "cm_epochs": 1, "n_boot": 50,
                                                "drafters": ["seed_token_adapter", "target_prior_ngram"]},
                    out=tmp_path / "run", book=False, progress=False)
    assert rep.exit_code == 0, [(s.stem, s.exception, s.message) for s in rep.failures]
    align = json.loads((tmp_path / "run" / "30_alignment" / "results.json").read_text())
    assert set(align) >= {"seed_token_adapter", "target_prior_ngram", "draft_direct", "direct_match"}
    assert "cross_modal" not in align  # only the drafters asked for
    assert align["n_test_pairs"] == 20  # 100 pairs of 1 question: 60/20/20 clips
