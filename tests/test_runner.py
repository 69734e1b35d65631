"""The runner (helpers.suite.runner) on toy notebooks in tmp folders, and provenance records."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from _toy_suite import make_book_src, make_notebook, snapshot, write_results_cell
from helpers.suite import provenance as prov
from helpers.suite.params import ParamError
from helpers.suite.runner import main, run_suite, summary_table


def toy_suite(tmp_path, first_fails: bool):
    """Two stages: 10_first writes results (or raises in cell 3), 20_second reads them if present."""
    nbd, pdir = tmp_path / "notebooks", tmp_path / "params"
    make_notebook(nbd / "10_first.ipynb", "n = 3  # a count\nfail = False  # raise in cell 3?\n", [
        "x = n * 2",  # cell 2
        "if fail:\n    raise RuntimeError(f'toy failure n={n}')",  # cell 3
        write_results_cell("10_first", "{'x': x}"),
    ])
    make_notebook(nbd / "20_second.ipynb", "data_path = ''  # an input file\n", [
        "import json, os\nfrom helpers.suite.paths import read_results, write_results\n"
        "try:\n    up = read_results(run_dir, '10_first', preset)['x']\nexcept FileNotFoundError:\n    up = None\n"
        "write_results(run_dir, '20_second', {'up': up, 'pid': os.getpid()})",
    ])
    pdir.mkdir()
    (pdir / "toy.yml").write_text(f"fail: {str(first_fails).lower()}\n")
    return nbd, pdir, make_book_src(tmp_path, ["10_first", "20_second"])


@pytest.mark.slow
def test_failure_is_collected_and_later_stages_still_run(tmp_path):
    nbd, pdir, src = toy_suite(tmp_path, first_fails=True)
    before = snapshot(nbd)
    out = tmp_path / "run"
    rep = run_suite("toy", out=out, notebooks_dir=nbd, params_dir=pdir, book_src=src, progress=False)
    assert snapshot(nbd) == before, "the runner wrote into the notebooks folder"
    assert [(s.stem, s.status) for s in rep.stages] == [("10_first", "failed"), ("20_second", "ok")]
    f = rep.failures[0]
    assert (f.stem, f.cell, f.exception) == ("10_first", 3, "RuntimeError")
    assert "toy failure n=3" in f.message
    assert rep.exit_code == 1
    # the second stage ran, in its own folder, and saw no results from the failed one
    assert json.loads((out / "20_second" / "results.json").read_text())["up"] is None
    assert not (out / "10_first" / "results.json").exists()
    for stem in ("10_first", "20_second"):
        assert (out / stem / f"{stem}.ipynb").exists() and (out / stem / "provenance.json").exists()
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "failed" and run["failures"][0]["stage"] == "10_first"
    assert run["failures"][0]["cell"] == 3 and run["failures"][0]["exception"] == "RuntimeError"
    # the book is built but says it is not current, naming the failed stage
    assert run["book"]["status"] == "ok" and run["book"]["current"] is False
    intro = (out / "book" / "_build" / "html" / "intro.html").read_text()
    assert "NOT current" in intro and "10_first" in intro
    assert not (out / "book" / "_build" / "html" / "10_first.html").exists()
    table = summary_table(rep)
    assert "10_first" in table and "RuntimeError" in table and "NOT current" in table


@pytest.mark.slow
def test_kernels_talk_over_unix_sockets_not_tcp(tmp_path, capfd):
    from helpers.suite.runner import kernel_manager_class
    km = kernel_manager_class()
    assert km is not None and km().transport == "ipc"
    a, b = km().ip, km().ip                    # each kernel's sockets: its own path in a private folder, not the cwd
    assert os.path.isabs(a) and a != b and os.path.dirname(a) == os.path.dirname(b)
    assert os.stat(os.path.dirname(a)).st_mode & 0o777 == 0o700
    nbd, pdir, src = toy_suite(tmp_path, first_fails=False)
    rep = run_suite("toy", out=tmp_path / "run", notebooks_dir=nbd, params_dir=pdir, book_src=src, progress=False)
    assert [s.status for s in rep.stages] == ["ok", "ok"]
    assert "without encryption" not in capfd.readouterr().err          # ipykernel's warning about plain TCP
    assert sorted(p.name for p in (tmp_path / "run" / "20_second").iterdir()) == \
        ["20_second.ipynb", "inputs.json", "provenance.json", "results.json"]   # no socket files left there
    assert kernel_manager_class(str(tmp_path / ("x" * 80))) is None  # sockets' paths too long: TCP, as before


@pytest.mark.slow
def test_cli_exit_code_and_only_reuses_earlier_outputs(tmp_path, capsys):
    nbd, pdir, src = toy_suite(tmp_path, first_fails=False)
    out = tmp_path / "run"
    args = ["--preset", "toy", "--out", str(out), "--notebooks-dir", str(nbd), "--params-dir", str(pdir)]
    assert main(args + ["--no-book", "--set", "n=5"]) == 0
    first = out / "10_first" / "results.json"
    mtime, pid = first.stat().st_mtime_ns, json.loads((out / "20_second" / "results.json").read_text())["pid"]
    assert json.loads(first.read_text()) == {"x": 10}

    rep = run_suite("toy", only=["20_second"], out=out, notebooks_dir=nbd, params_dir=pdir,
                    book_src=src, progress=False)
    assert [(s.stem, s.status) for s in rep.stages] == [("10_first", "reused"), ("20_second", "ok")]
    assert first.stat().st_mtime_ns == mtime, "a reused stage must not be re-run"
    second = json.loads((out / "20_second" / "results.json").read_text())
    assert second["up"] == 10 and second["pid"] != pid
    assert rep.book["status"] == "ok" and rep.book["current"] is True
    assert (out / "book" / "_build" / "html" / "10_first.html").exists()  # reused stage still in the book

    # a failure makes the CLI exit non-zero and is printed in the summary
    capsys.readouterr()
    assert main(args + ["--no-book", "--set", "fail=true"]) == 1
    assert "RuntimeError" in capsys.readouterr().out
    # reusing a stage whose last run failed still counts as a failure: the book is not current
    rep = run_suite("toy", only=["20_second"], out=out, notebooks_dir=nbd, params_dir=pdir,
                    book=False, progress=False)
    assert rep.stages[0].status == "failed" and rep.stages[0].reused and rep.exit_code == 1
    assert rep.stages[0].cell == 3 and "(earlier run)" in rep.stages[0].message


def test_validation_happens_before_anything_runs(tmp_path, capsys):
    nbd, pdir, src = toy_suite(tmp_path, first_fails=False)
    out = tmp_path / "run"
    with pytest.raises(ParamError, match="'data_pth'.*did you mean 'data_path'"):
        run_suite("toy", overrides=["data_pth=x"], out=out, notebooks_dir=nbd, params_dir=pdir)
    with pytest.raises(ParamError, match="--only 20_secnd.*did you mean '20_second'"):
        run_suite("toy", only=["20_secnd"], out=out, notebooks_dir=nbd, params_dir=pdir)
    assert not out.exists()
    args = ["--out", str(out), "--notebooks-dir", str(nbd), "--params-dir", str(pdir)]
    assert main(args + ["--preset", "toy", "--set", "n=many"]) == 2
    assert "'n' (from --set) is str 'many', but notebook 10_first declares int" in capsys.readouterr().err
    assert main(args) == 2  # no params/default.yml
    assert "preset 'default' not found" in capsys.readouterr().err and not out.exists()


def test_list_shows_presets_and_parameter_help(tmp_path, capsys):
    nbd, pdir, _ = toy_suite(tmp_path, first_fails=False)
    assert main(["--list", "--notebooks-dir", str(nbd), "--params-dir", str(pdir)]) == 0
    text = capsys.readouterr().out
    assert "toy" in text and "n = 3    # a count" in text and "20_second" in text


def test_hash_path_covers_content_and_skips_big_files(tmp_path, monkeypatch):
    d = tmp_path / "data"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("alpha")
    (d / "sub" / "b.bin").write_bytes(b"\0" * 100)
    h1 = prov.hash_path(d)
    assert h1["files"] == 2 and h1["bytes"] == 105 and "skipped" not in h1
    assert prov.hash_path(d)["sha256"] == h1["sha256"]  # deterministic
    (d / "a.txt").write_text("alphb")
    assert prov.hash_path(d)["sha256"] != h1["sha256"]  # content, not just names
    monkeypatch.setattr(prov, "MAX_HASH_BYTES", 50)
    h2 = prov.hash_path(d)
    assert h2["skipped"] == [{"path": "sub/b.bin", "bytes": 100}]
    assert prov.hash_path(d / "sub" / "b.bin")["sha256"] is None


def test_input_hashes_only_for_existing_paths(tmp_path):
    f = tmp_path / "x.json"
    f.write_text("{}")
    got = prov.input_hashes({"data": str(f), "name": "smoke", "empty": "", "n": 3,
                             "many": [str(f), "nope"], "run_dir": str(tmp_path)})
    assert set(got) == {"data", "many"} and got["data"]["kind"] == "file"
    assert len(got["many"]) == 1


def test_git_info_without_git(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no git binary
    assert prov.git_info() == {"commit": None, "dirty": None}
    monkeypatch.undo()
    assert prov.git_info(tmp_path) == {"commit": None, "dirty": None}  # not a repository


def test_git_commit_named_by_the_sender_wins_over_a_git_found_there(monkeypatch):
    here = prov.git_info()
    monkeypatch.setenv("HELPERS_GIT_COMMIT", "abc1234")
    assert prov.git_info() == {"commit": "abc1234", "dirty": None}       # the GPU copy may hold an older .git
    monkeypatch.delenv("HELPERS_GIT_COMMIT")
    assert prov.git_info() == here


def test_record_has_the_required_fields():
    rec = prov.make_record("10_x", {"n": 1}, {"n": 1}, "t0", "t1", 1.23456, "ok")
    for k in ("parameters", "git", "inputs", "libraries", "device", "wall_s", "started", "ended", "hostname"):
        assert k in rec
    for lib in ("python", "torch", "transformers", "numpy", "pandas", "papermill", "jupyter-book", "myst-nb", "helpers"):
        assert lib in rec["libraries"]
    assert rec["device"]["cpu_count"] >= 1 and rec["wall_s"] == 1.235
    json.dumps(rec)


@pytest.mark.slow
def test_module_entry_point_help():
    r = subprocess.run([sys.executable, "-m", "helpers.run", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--only" in r.stdout and "--set" in r.stdout


def test_book_only_builds_from_an_existing_run_without_executing(tmp_path):
    """A run folder made elsewhere (the GPU machine) is turned into a book here without re-running:
    the stages are 'reused', the notebooks untouched, and the status box says where each ran."""
    import json as _json
    nbd, pdir = tmp_path / "notebooks", tmp_path / "params"
    make_notebook(nbd / "10_a.ipynb", "k = 1  # a number\n", [write_results_cell("10_a", "{'k': k}")])
    pdir.mkdir()
    (pdir / "toy.yml").write_text("k: 2\n")
    src = make_book_src(tmp_path, ["10_a"])
    first = run_suite("toy", out=tmp_path / "run", notebooks_dir=nbd, params_dir=pdir, book=False, progress=False)
    assert first.exit_code == 0
    prov_file = tmp_path / "run" / "10_a" / "provenance.json"
    rec = _json.loads(prov_file.read_text())
    rec["device"] = {**rec["device"], "cuda_device": "NVIDIA H200"}                  # as if it ran on the GPU machine
    prov_file.write_text(_json.dumps(rec))
    before = (tmp_path / "run" / "10_a" / "10_a.ipynb").read_bytes()
    rep = run_suite("toy", out=tmp_path / "run", notebooks_dir=nbd, params_dir=pdir, book_src=src, progress=False,
                    execute=False)
    assert [s.status for s in rep.stages] == ["reused"] and rep.book["status"] == "ok"
    assert (tmp_path / "run" / "10_a" / "10_a.ipynb").read_bytes() == before
    intro = (tmp_path / "run" / "book" / "_build" / "html" / "intro.html").read_text()
    assert "NVIDIA H200" in intro
    assert main(["--preset", "toy", "--book-only", "--only", "10_a", "--out", str(tmp_path / "run"),
                 "--notebooks-dir", str(nbd), "--params-dir", str(pdir)]) == 2
