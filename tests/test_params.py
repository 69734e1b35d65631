"""Parameter parsing, preset layering and validation (helpers.suite.params): no kernels, fast."""
from __future__ import annotations

import pytest

from _toy_suite import make_notebook
from helpers.suite.params import (ParamError, discover_notebooks, layer, notebook_spec,
                            parse_parameters_cell, parse_set, plan_run, type_ok)


@pytest.fixture
def suite(tmp_path):
    nbd, pdir = tmp_path / "notebooks", tmp_path / "params"
    make_notebook(nbd / "10_data.ipynb",
                  "n_pairs = 200  # how many pairs\nsplit = [0.8, 0.1, 0.1]  # train/val/test\n"
                  "tokenizer = 'tok'  # tokenizer folder\ncheckpoint = None  # optional\n", [])
    make_notebook(nbd / "20_train.ipynb",
                  "# learning rate of the adapter\nlearning_rate = 0.001\nepochs = 3  # passes over the data\n"
                  "use_prior = True  # mix in the n-gram prior\nn_pairs = 200  # same key, second notebook\n", [])
    pdir.mkdir()
    (pdir / "smoke.yml").write_text("n_pairs: 10\nepochs: 1\n")
    (pdir / "default.yml").write_text("")
    return nbd, pdir


def test_parse_cell_types_and_help():
    src = ("run_dir = 'runs/x'  # run folder\n"
           "# comment line above\nlr = 1e-3\n"
           "sizes = [1, 2,\n         3]  # spans lines\nopts = {'a': 1}\nflag = False  # a flag\n"
           "neg = -2\nnothing = None\n")
    p = parse_parameters_cell(src, "notebook t")
    assert p["run_dir"].default == "runs/x" and p["run_dir"].help == "run folder"
    assert p["lr"].default == 1e-3 and p["lr"].help == "comment line above"
    assert p["sizes"].default == [1, 2, 3] and p["sizes"].help == "spans lines"
    assert p["opts"].default == {"a": 1} and p["flag"].default is False
    assert p["neg"].default == -2 and p["nothing"].default is None


@pytest.mark.parametrize("src", ["x = compute()", "x, y = 1, 2", "import os", "x = [i for i in range(3)]"])
def test_parse_cell_rejects_non_literals(src):
    with pytest.raises(ParamError, match="notebook 30_eval"):
        parse_parameters_cell(src, "notebook 30_eval")


def test_notebook_needs_tagged_cell_with_run_dir(tmp_path):
    from nbformat.v4 import new_code_cell, new_notebook
    import nbformat
    nb = new_notebook(cells=[new_code_cell("x = 1")])
    nbformat.write(nb, tmp_path / "10_x.ipynb")
    with pytest.raises(ParamError, match="10_x.*no code cell tagged 'parameters'"):
        notebook_spec(tmp_path / "10_x.ipynb")
    nb.cells[0].metadata["tags"] = ["parameters"]
    nbformat.write(nb, tmp_path / "10_x.ipynb")
    with pytest.raises(ParamError, match="run_dir, preset"):
        notebook_spec(tmp_path / "10_x.ipynb")


def test_discover_sorted_with_help(suite):
    specs = discover_notebooks(suite[0])
    assert [s.stem for s in specs] == ["10_data", "20_train"]
    assert specs[1].params["learning_rate"].help == "learning rate of the adapter"
    assert specs[1].parameters_cell == 1


def test_layering_order_and_sources(suite, tmp_path):
    nbd, pdir = suite
    a, b = tmp_path / "a.yml", tmp_path / "b.yml"
    a.write_text("n_pairs: 20\nepochs: 5\nlearning_rate: 0.1\n")
    b.write_text("epochs: 7\n")
    v = layer("smoke", pdir, [a, b], ["learning_rate=0.5"])
    assert v["n_pairs"].value == 20 and "a.yml" in v["n_pairs"].source
    assert v["epochs"].value == 7 and "b.yml" in v["epochs"].source
    assert v["learning_rate"].value == 0.5 and v["learning_rate"].source == "--set"
    plan = plan_run("smoke", nbd, pdir, [a, b], ["learning_rate=0.5"])
    # each notebook receives only the keys it declares
    assert plan.per_notebook["10_data"] == {"n_pairs": 20}
    assert plan.per_notebook["20_train"] == {"n_pairs": 20, "epochs": 7, "learning_rate": 0.5}


def test_set_typing(suite):
    s = parse_set(["a=3", "b=0.5", "c=[1, 2]", "d=true", "e=hello", "f={x: 1}", "g=null", "h="])
    assert [s[k].value for k in "abcdefgh"] == [3, 0.5, [1, 2], True, "hello", {"x": 1}, None, ""]
    with pytest.raises(ParamError, match="key=value"):
        parse_set(["novalue"])
    nbd, pdir = suite
    # a str parameter keeps the literal text even when YAML would read a number
    plan = plan_run("smoke", nbd, pdir, overrides=["tokenizer=007", "learning_rate=1", "checkpoint=5"])
    assert plan.per_notebook["10_data"]["tokenizer"] == "007"
    assert plan.per_notebook["20_train"]["learning_rate"] == 1.0  # int accepted, made float
    assert isinstance(plan.per_notebook["20_train"]["learning_rate"], float)
    assert plan.per_notebook["10_data"]["checkpoint"] == 5  # None default: any type


def test_unknown_key_names_key_source_notebooks_and_hint(suite):
    nbd, pdir = suite
    (pdir / "bad.yml").write_text("epoch: 2\n")
    with pytest.raises(ParamError) as e:
        plan_run("bad", nbd, pdir)
    msg = str(e.value)
    assert "unknown parameter 'epoch'" in msg and "bad.yml" in msg
    assert "did you mean 'epochs'" in msg and "10_data, 20_train" in msg and "learning_rate" in msg


def test_wrong_type_names_key_and_notebook(suite):
    nbd, pdir = suite
    with pytest.raises(ParamError) as e:
        plan_run("smoke", nbd, pdir, overrides=["epochs=2.5", "use_prior=1", "split=0.8", "n_pairs=x"])
    msg = str(e.value)
    assert "'epochs' (from --set) is float 2.5, but notebook 20_train declares int" in msg
    assert "'use_prior'" in msg and "'split'" in msg
    # n_pairs is declared by both notebooks: both are named
    assert "notebook 10_data declares int" in msg and "notebook 20_train declares int" in msg


def test_type_ok_rules():
    assert type_ok(1, 0.5) and not type_ok(True, 1) and not type_ok(1, True)
    assert type_ok("x", None) and type_ok([1], [0]) and not type_ok({"a": 1}, [0])
    assert not type_ok(None, 3) and type_ok({"a": 1}, {})


def test_missing_preset_lists_available(suite):
    nbd, pdir = suite
    with pytest.raises(ParamError, match=r"preset 'smok' not found.*Did you mean 'smoke'.*default, smoke"):
        plan_run("smok", nbd, pdir)


def test_notebooks_key_selects_and_orders(suite):
    nbd, pdir = suite
    (pdir / "one.yml").write_text("notebooks: [20_train]\nepochs: 2\n")
    plan = plan_run("one", nbd, pdir)
    assert [s.stem for s in plan.notebooks] == ["20_train"]
    (pdir / "other.yml").write_text("notebooks: [20_train]\ntokenizer: t2\n")
    with pytest.raises(ParamError, match="'tokenizer'.*declared by 10_data, which 'notebooks' does not select"):
        plan_run("other", nbd, pdir)
    # a later layer that narrows the preset's selection leaves the preset's keys for the dropped stages unused;
    # the same key set beside that narrower selection is still an error
    (pdir / "both.yml").write_text("notebooks: [10_data, 20_train]\ntokenizer: t2\n")
    plan = plan_run("both", nbd, pdir, overrides=["notebooks=[20_train]"])
    assert [s.stem for s in plan.notebooks] == ["20_train"] and "tokenizer" not in plan.per_notebook["20_train"]
    with pytest.raises(ParamError, match="'tokenizer'.*which 'notebooks' does not select"):
        plan_run("both", nbd, pdir, overrides=["notebooks=[20_train]", "tokenizer=t3"])
    (pdir / "typo.yml").write_text("notebooks: [20_trian]\n")
    with pytest.raises(ParamError, match="unknown notebook '20_trian' \\(did you mean '20_train'"):
        plan_run("typo", nbd, pdir)


def test_runner_keys_are_reserved(suite):
    nbd, pdir = suite
    with pytest.raises(ParamError, match="'run_dir' .* is set by the runner; use --out"):
        plan_run("smoke", nbd, pdir, overrides=["run_dir=/tmp/x"])


def test_params_file_must_be_mapping(suite, tmp_path):
    nbd, pdir = suite
    f = tmp_path / "list.yml"
    f.write_text("- a\n- b\n")
    with pytest.raises(ParamError, match="flat YAML mapping"):
        plan_run("smoke", nbd, pdir, [f])


def test_help_comment_with_equals_is_rejected():
    # papermill's parameter inspection cannot parse such a line ("Unable to parse line")
    with pytest.raises(ParamError, match="contains '='"):
        parse_parameters_cell("gamma = 5  # drafts, e.g. gamma = 5\n", "nb")
    assert parse_parameters_cell("gamma = 5  # drafts: 5\n", "nb")["gamma"].help == "drafts: 5"
