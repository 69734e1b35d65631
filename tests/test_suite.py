"""The real suite: presets agree with the notebooks, the smoke preset runs end to end into a
temporary folder, the book builds and a real browser shows the glued figures."""
import json
import re

import nbformat
import pytest

from helpers.suite.book import find_chromium, rendered_dom
from helpers.suite.params import available_presets, notebook_spec, plan_run
from helpers.suite.paths import REPO_ROOT
from helpers.suite.runner import run_suite

from conftest import DEV_PAIRS, require_shared

NB, PARAMS = REPO_ROOT / "notebooks", REPO_ROOT / "params"
DRAFTER_KEYS = {"token_match", "top5", "mat", "tau", "gamma", "n_pairs", "mat_streamed", "val_mat"}


@pytest.mark.parametrize("preset", available_presets(PARAMS))
def test_every_preset_validates_against_the_notebooks(preset):
    plan = plan_run(preset, NB, PARAMS)  # unknown keys and wrong types raise ParamError
    assert plan.notebooks and all((NB / f"{s.stem}.ipynb").exists() for s in plan.notebooks)


@pytest.mark.parametrize("preset", ["default", "smoke", "dsec_recorded", "dsec_recorded_full"])
def test_published_presets_bound_training_by_epochs_not_by_the_clock(preset):
    """The main job and the recorded study (whose choices a locked test set checks) train every
    network for a set number of epochs: a wall-clock cap would train other networks on a faster or
    busier machine, and so choose and report other numbers from the same command."""
    plan = plan_run(preset, NB, PARAMS)
    stages = {s.stem: s for s in plan.notebooks}
    def value(stage, key):
        return plan.per_notebook[stage].get(key, stages[stage].params[key].default)
    caps = {k: value("20_train_drafters", k) for k in ("adapter_max_minutes", "cm_max_minutes")}
    if "01_world" in stages and "35_event_camera" in stages:      # a world whose draft model 35 runs
        caps["ec_feature_minutes"] = value("35_event_camera", "ec_feature_minutes")
    assert not any(caps.values()), caps


def test_notebooks_are_committed_without_outputs_and_valid():
    for path in sorted(NB.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name} has outputs"
        # nbformat 4.5 wants an id on every cell: without one papermill warns on every run (and will refuse);
        # read the file itself, since nbformat.read adds missing ids
        ids = [c.get("id") for c in json.loads(path.read_text())["cells"]]
        assert all(ids) and len(set(ids)) == len(ids), f"{path.name}: cells without a unique id"
        nbformat.validate(nb)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    return run_suite("smoke", out=tmp_path_factory.mktemp("smoke") / "run", progress=False)


@pytest.mark.slow
def test_smoke_preset_runs_every_stage_and_builds_the_book(smoke_run):
    rep = smoke_run
    assert rep.exit_code == 0, [(s.stem, s.exception, s.message) for s in rep.failures] or rep.book
    assert [s.stem for s in rep.stages] == sorted(p.stem for p in NB.glob("*.ipynb"))
    align = json.loads((rep.run_dir / "30_alignment" / "results.json").read_text())
    drafters = align["drafters"]
    for name in ("seed_token_adapter", "target_prior_ngram", "cross_modal", "target_prior_neural", "draft_direct"):
        d = drafters[name]
        assert DRAFTER_KEYS <= set(d), name
        assert 1.0 <= d["mat"] <= align["gamma"] + 1 and 1.0 <= d["mat_streamed"] <= align["gamma"] + 1
        assert d["tau"] <= d["mat"] <= d["tau"] + 1  # the bonus adds at most 1
    assert drafters["target_prior_ngram"]["mat_streamed"] == drafters["target_prior_ngram"]["mat"]  # reads no draft
    # the headline and gamma are the validation argmaxes, whatever the test numbers say
    val = {n: d["val_mat"] for n, d in drafters.items() if n != "draft_direct"}
    assert val[align["headline"]] == max(val.values())      # ties go to the first trained, not the first in the file
    table = align["gamma_choice"]["table"]
    assert align["gamma_choice"]["gamma"] == int(max(table, key=lambda g: table[g]["speedup"]))
    assert 0.0 <= align["direct_match"] <= 1.0
    oracle = json.loads((rep.run_dir / "35_event_camera" / "results.json").read_text())["oracle"]
    assert 1.0 <= oracle["perfect_draft"] <= align["gamma"] + 1    # the world's reference captions read as drafts
    read35 = [r["path"] for r in json.loads((rep.run_dir / "35_event_camera" / "provenance.json").read_text())["inputs_read"]]
    assert any(p.endswith("EventGPT_Instruction_Subset.json") for p in read35)   # the references it read are recorded
    timed = {r["method"] for r in json.loads((rep.run_dir / "60_speculative" / "results.json").read_text())
             ["end_to_end"]["speedups"]}
    assert align["headline"] in timed and "target_prior_ngram" in timed   # validation's choice is timed, with sd_drafters
    data = json.loads((rep.run_dir / "10_data" / "results.json").read_text())
    assert align["n_test_pairs"] == data["split"]["test"] > 0
    # provenance hashes what each stage read, earlier stages' files included
    prov20 = json.loads((rep.run_dir / "20_train_drafters" / "provenance.json").read_text())
    read20 = [r["path"] for r in prov20["inputs_read"]]
    assert any(p.endswith("pairs_trainval.parquet") for p in read20) and all(r.get("sha256") for r in prov20["inputs_read"])
    assert not any(p.endswith("pairs_test.parquet") for p in read20)            # training never opens the test file
    prov10 = json.loads((rep.run_dir / "10_data" / "provenance.json").read_text())
    assert prov10["inputs"]["pairs_path"]["path"].endswith("03_inference/pairs.parquet")  # a run: parameter
    html = rep.run_dir / "book" / "_build" / "html"
    for stem in ("01_world", "10_data", "30_alignment", "90_findings"):
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
    assert f"for {align['direct_match']:.1%} of target tokens" in text
    best = align["headline"]
    assert f"The headline drafter {best} accepts MAT {align['drafters'][best]['mat']:.2f} per verify step" in text
    png = smoke_run.run_dir / "book" / "index.png"
    assert png.exists() and png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_every_page_reads_as_a_report(smoke_run):
    """What a reader sees in a real browser: code folded away, no Python warning, no absolute
    path of the machine that built the book, no papermill injected-parameters cell; the
    landing page opens with the glued answer."""
    if not find_chromium():
        pytest.skip("chromium not installed (apt-get install chromium): browser test skipped")
    html = smoke_run.run_dir / "book" / "_build" / "html"
    machine_paths = re.compile(r"(/tmp/|/work/|/home/|/root/|/usr/|/opt/|" + re.escape(str(REPO_ROOT)) + ")")
    pages = ["intro"] + [p.stem for p in sorted(NB.glob("*.ipynb"))]
    for stem in pages:
        dom = rendered_dom(html / f"{stem}.html")
        body = dom.split('<article class="bd-article"', 1)[-1]
        text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body))
        assert not re.search(r"\w+Warning\b|Traceback|Error:", text), (stem, re.findall(r".{80}\w+Warning.{80}", text))
        assert not machine_paths.search(body), (stem, machine_paths.search(body).group(0))
        assert "Injected parameters" not in text and "injected-parameters" not in body, stem
        # Markdown that reached the page unrendered (a {glue:text} value holding backticks or bold)
        prose = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", re.sub(r"<details.*?</details>|<pre.*?</pre>", " ", body,
                                                                  flags=re.S)))
        assert not re.search(r"`|\*\*", prose), (stem, re.findall(r".{60}(?:`|\*\*).{60}", prose))
        if stem != "intro":
            shown = set(notebook_spec(NB / f"{stem}.ipynb").params) - {"run_dir", "preset"}
            assert ("Parameters of this chapter in this run" in text) == bool(shown), stem
            n_inputs = body.count('class="cell_input')
            folded = re.findall(r'<details class="[^"]*hide above-input"(?![^>]*\bopen\b)[^>]*>', body)
            assert n_inputs and len(folded) == n_inputs, stem                         # code hidden by default
    intro = rendered_dom(html / "intro.html").split('<article class="bd-article"', 1)[-1]
    answer = intro.split("The answer", 1)[1].split("How this book was produced", 1)[0]
    align = json.loads((smoke_run.run_dir / "30_alignment" / "results.json").read_text())
    assert "<code" in answer and align["headline"] in answer and "key_figure.png" in answer
    assert answer.index(align["headline"]) < answer.index("Run status")            # answer first, status below


@pytest.mark.slow
def test_a_locked_test_file_is_evaluated_and_never_trained_on(tmp_path):
    """The recorded study with its test pairs in their own file (how a locked test set is checked):
    train and validation come from pairs_path alone, every test figure from the locked file, and
    no training or selection stage opens it."""
    require_shared(DEV_PAIRS)
    doc = json.loads(DEV_PAIRS.read_text())
    for name, rows in (("dev.json", doc["results"][:90]), ("locked.json", doc["results"][700:740])):
        (tmp_path / name).write_text(json.dumps({"questions": doc["questions"], "results": rows}))
    rep = run_suite("dsec_recorded", overrides={
        "pairs_path": str(tmp_path / "dev.json"), "test_pairs_path": str(tmp_path / "locked.json"),
        "adapter_epochs": 1, "cm_epochs": 1, "n_boot": 50, "ec_tree_sizes": [5], "ec_curve_sizes": [], "ec_cost_calls": 5,
        "drafters": ["target_prior_kn", "target_prior_suffix", "draft_retrieval"],
        "notebooks": ["10_data", "20_train_drafters", "30_alignment", "35_event_camera"]},
        out=tmp_path / "run", book=False, progress=False)
    assert rep.exit_code == 0, [(s.stem, s.exception, s.message) for s in rep.failures]
    data = json.loads((tmp_path / "run" / "10_data" / "results.json").read_text())
    assert data["split"] == {"train": 67, "val": 23, "test": 40}                  # 90 clips at 0.6 : 0.2, the locked 40
    locked = list(range(700, 740))
    align = json.loads((tmp_path / "run" / "30_alignment" / "results.json").read_text())
    event = json.loads((tmp_path / "run" / "35_event_camera" / "results.json").read_text())
    assert align["test_clips"] == event["test_clips"] == locked and align["n_test_pairs"] == 40
    assert event["recent"]["n_consecutive"]["test"] == 39                          # the latest answers, clip after clip
    for stage in ("20_train_drafters",):                                           # training never opens the locked file
        read = [r["path"] for r in json.loads((tmp_path / "run" / stage / "provenance.json").read_text())["inputs_read"]]
        assert not any(p.endswith(("pairs_test.parquet", "locked.json")) for p in read), stage


@pytest.mark.slow
def test_recorded_dsec_study_on_a_few_pairs(tmp_path, monkeypatch):
    require_shared(DEV_PAIRS)
    rep = run_suite("dsec_recorded", overrides={"max_pairs": 100, "adapter_epochs": 1, "cm_epochs": 1, "n_boot": 50,
                                                "drafters": ["seed_token_adapter", "target_prior_ngram"],
                                                "notebooks": ["10_data", "20_train_drafters", "30_alignment"]},
                    out=tmp_path / "run", book=False, progress=False)
    assert rep.exit_code == 0, [(s.stem, s.exception, s.message) for s in rep.failures]
    align = json.loads((tmp_path / "run" / "30_alignment" / "results.json").read_text())
    assert set(align["drafters"]) == {"seed_token_adapter", "target_prior_ngram", "draft_direct"}  # only those asked for
    assert "direct_match" in align
    # the 7B trace-driven replay's code path, on this study run with the small synthetic target (CPU)
    from helpers.models import vlm
    from helpers.models.backend import hf_adapter
    from helpers.models.shipped import SHIPPED_DIR
    from helpers.spec.study import replay_7b

    def build(device):
        model, tok = vlm.load_pretrained(SHIPPED_DIR / "target", "target")
        return model, hf_adapter(model, tok)
    tok = vlm.load_pretrained(SHIPPED_DIR / "target", "target")[1]
    rep = replay_7b(str(tmp_path / "run"), ["target_prior_ngram"], tok, 5, "cpu", max_pairs=4, repeats=1,
                    build=build, compile=False, log=lambda m: None, adaptive_max=7, batches=[1, 2], hf_pairs=2)
    assert set(rep["drafters"]) == {"target_prior_ngram|full", "target_prior_ngram|streamed",
                                    "target_prior_ngram|full|adaptive7"}
    full = rep["drafters"]["target_prior_ngram|full"]["summary"]
    assert full["samples"] == 4 and full["mat"] >= 1 and full["leviathan"] > 0
    b2 = rep["batched"]["target_prior_ngram|full|b2"]
    assert b2["summary"]["batches"] == 2 and b2["summary"]["tokens"] == sum(r["n_tokens"] for r in
                                                                            rep["drafters"]["target_prior_ngram|full"]["rows"])
    assert b2["summary"]["verify_steps_per_batch"] <= b2["summary"]["greedy_steps_per_batch"]
    assert len(rep["hf_generate"]["rows"]) == 2 and rep["hf_generate"]["sd_vs_hf"] > 0
    also = replay_7b(str(tmp_path / "run"), ["draft_direct"], tok, 5, "cpu", max_pairs=2, repeats=1, build=build,
                     compile=False, log=lambda m: None)
    assert also["chosen"] != "draft_direct" and {f"{also['chosen']}|full", "draft_direct|full"} <= set(also["drafters"])
    # the latest-answers prior chapter 35 chose, replayed with each answer taken in before the next pair
    with pytest.raises(ValueError, match="35_event_camera"):
        replay_7b(str(tmp_path / "run"), [], tok, 5, "cpu", max_pairs=4, build=build, recent=True)
    chosen = {"tau": 1.0, "horizon": 4, "weight": 0.6, "temperature": 0.0, "max_ctx": 7, "order": 3}
    (tmp_path / "run" / "35_event_camera").mkdir()
    (tmp_path / "run" / "35_event_camera" / "results.json").write_text(json.dumps({"recent": {"prior": chosen}}))
    on = replay_7b(str(tmp_path / "run"), [], tok, 5, "cpu", max_pairs=4, repeats=1, build=build, compile=False,
                   log=lambda m: None, recent=True, batches=[1, 2])
    from helpers.study import event_camera as ec, metrics
    from helpers.study.data import load_study_data
    from helpers.study.drafters.lookup import RecentAnswers
    split = load_study_data(str(tmp_path / "run"), "dsec_recorded").split
    expect = ec.online_traces(RecentAnswers(**chosen).fit(split.train), split.train, split.test[:4], 5, 1)
    got = on["drafters"]["target_prior_recent|full|online"]
    assert [r["steps"] for r in got["rows"]] == [t.steps for t in expect]          # the online store's traces
    assert got["summary"]["mat"] == pytest.approx(metrics.summarize_sd(expect).mat) and 0 <= got["summary"]["alpha"] <= 1
    assert got["settings"] == chosen and got["summary"]["leviathan"] > 0
    # batched: a batch's answers come together, so the store takes them in batch by batch (blocks of 2 here)
    assert set(on["batched"]) == {"target_prior_recent|full|online|b1", "target_prior_recent|full|online|b2"}
    blocks = ec.online_traces(RecentAnswers(**chosen).fit(split.train), split.train, split.test[:4], 5, 2)
    assert [r["steps"] for r in on["batched"]["target_prior_recent|full|online|b2"]["rows"]] == \
        [max(t.steps for t in blocks[i:i + 2]) for i in (0, 2)]
    assert on["batched"]["target_prior_recent|full|online|b1"]["summary"]["tokens"] == \
        on["batched"]["target_prior_recent|full|online|b2"]["summary"]["tokens"]
    import shutil
    shutil.rmtree(tmp_path / "run" / "35_event_camera")                       # a stand-in for the replay only
    # the speed chapters render measurement files of this form (what the GPU run writes), read from elsewhere
    from _tiny import run_7b_tiny
    perf = tmp_path / "performance.json"
    perf.write_text(json.dumps(run_7b_tiny(monkeypatch), default=str))
    spec = tmp_path / "speculative.json"
    spec.write_text(json.dumps({"replay": {**rep, "drafters": {**rep["drafters"], **on["drafters"]},
                                           "batched": {**rep["batched"], **on["batched"]}, "device": "a CPU (test)"}},
                               default=str))
    monkeypatch.undo()
    rep2 = run_suite("dsec_recorded", overrides={"measurements_path": str(perf), "replay_path": str(spec)},
                     only=["50_performance", "60_speculative", "90_findings"], out=tmp_path / "run", book=False,
                     progress=False)
    assert rep2.exit_code == 0, [(s.stem, s.exception, s.message) for s in rep2.failures]
    found = json.loads((tmp_path / "run" / "90_findings" / "results.json").read_text())
    assert any(f["title"] == "Measured speed" for f in found["findings"])
    chapter = json.loads((tmp_path / "run" / "60_speculative" / "60_speculative.ipynb").read_text())
    md = [o["data"]["text/markdown"] for c in chapter["cells"] for o in c.get("outputs", []) if "text/markdown" in o.get("data", {})]
    shown = "".join("".join(m) if isinstance(m, list) else m for m in md)                 # nbformat keeps either form
    assert "**The target's latest answers.** Taking each answer into the store before the next pair" in shown
    assert "throughput over batched greedy: target_prior_ngram " in shown and "; target_prior_recent " in shown  # both
    assert align["n_test_pairs"] == 20  # 100 pairs of 1 question: 60/20/20 clips


def test_real_checkpoints_and_clips_through_the_runner(tmp_path):
    """The dsec_clips preset's path on a CPU: real DSEC event files in clip folders, an EventGPT
    folder in the official layout (tiny, random) and a Video-LLaVA folder (the shipped world
    target, the same transformers class) given as parameters; 03_inference records with them,
    the study reads those pairs with the recording's tokenizer, and 60_speculative runs the engine
    on the same two models. Missing checkpoints stop 03_inference with what to pass."""
    import shutil

    import numpy as np
    import torch
    from PIL import Image

    from helpers.models import eventgpt
    from helpers.models.shipped import SHIPPED_DIR
    from helpers.models.tokenizer import load_tokenizer
    from helpers.suite.paths import SHARED_DATA
    events = require_shared(SHARED_DATA / "dsec_events")
    rng = np.random.default_rng(0)
    for i, npy in enumerate(sorted(events.glob("*.npy")) * 2):             # 6 clip folders from the 3 event files
        clip = tmp_path / "clips" / f"{npy.stem}_{i}"
        (clip / "frames").mkdir(parents=True)
        shutil.copy(npy, clip / npy.name)
        for k in range(10):
            Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(clip / "frames" / f"{k:06d}.png")
    tok = load_tokenizer(SHIPPED_DIR / "tokenizer")
    torch.manual_seed(0)
    draft = eventgpt.save_eventgpt(eventgpt.build_eventgpt(eventgpt.EventGPTConfig.tiny(vocab=len(tok))),
                                   tmp_path / "EventGPT-7b", tok)
    common = {"clips": str(tmp_path / "clips"), "draft_checkpoint": str(draft), "n_questions": 3,
              "max_new_tokens": 12, "batch_size": 2, "compile_decoder": False, "torch_threads": 1,
              "drafters": ["target_prior_ngram"], "adapter_epochs": 1, "cm_epochs": 1, "ngram_orders": [2, 3],
              "n_boot": 50, "gamma_sweep": [1, 3],
              "sd_drafters": ["target_prior_ngram", "draft_direct"], "sd_samples": 2, "sd_batches": [1, 2],
              "sd_repeats": 1, "notebooks": ["03_inference", "10_data", "20_train_drafters", "30_alignment",
                                             "60_speculative"]}
    first = {k: common[k] for k in ("clips", "draft_checkpoint", "n_questions", "max_new_tokens")}
    bad = run_suite("dsec_clips", overrides={**first, "notebooks": ["03_inference"]}, out=tmp_path / "bad",
                    book=False, progress=False)
    assert "no target checkpoint given: pass the Video-LLaVA-7B-hf checkpoint folder (target_checkpoint)" \
        in bad.failures[0].message
    rep = run_suite("dsec_clips", overrides={**common, "target_checkpoint": str(SHIPPED_DIR / "target")},
                    out=tmp_path / "run", book=False, progress=False)
    assert rep.exit_code == 0, [(s.stem, s.exception, s.message) for s in rep.failures]
    inf = json.loads((tmp_path / "run" / "03_inference" / "results.json").read_text())
    assert inf["source"] == "clips" and inf["n_pairs"] == 18 and inf["models_dir"]["draft"] == str(draft)
    data = json.loads((tmp_path / "run" / "10_data" / "results.json").read_text())
    assert data["tokenizer_path"] == str(SHIPPED_DIR / "target")              # the recording's own tokenizer
    sd = json.loads((tmp_path / "run" / "60_speculative" / "results.json").read_text())["end_to_end"]
    assert sd["exact_match"] == 1.0 and {r["batch"] for r in sd["speedups"]} == {1, 2}
