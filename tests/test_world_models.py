"""The synthetic world's shipped models, grounding scores, recorded pairs and chapters 01-03."""
import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np
import pytest
import torch
import yaml

from helpers.world import grounding
from helpers.study import pairs
from helpers.models import vlm
from helpers.world.dataset import generate_dataset, load_manifest
from helpers.suite.paths import REPO_ROOT
from helpers.models import record
from helpers.models.tokenizer import load_tokenizer, train_tokenizer
from helpers.models.shipped import SHIPPED_DIR, read_scenes

STAGES = ["01_world", "02_models", "03_inference"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Three unseen clips (the book's seed), two questions each."""
    d = tmp_path_factory.mktemp("world")
    generate_dataset(d, n_clips=3, seed=0, progress=False, n_workers=1)
    return [e for e in load_manifest(d) if e["question_idx"] in (0, 2)]


# --------------------------------------------------------------------------- grounding
def test_answer_facts_hand_cases():
    f = grounding.answer_facts("The key elements in this scene include a red car parked on the side of a winding "
                               "road, a person on a bicycle crossing the street, white lines along the edges, a "
                               "traffic light showing green, and mountains in the background at night.")
    assert f["objects"] == {"car", "cyclist", "traffic_light"}   # 'person on a bicycle' is no pedestrian
    assert f["colours"] == {"red"}                                # lane lines and signals are no object colour
    assert f["motion"] == {"parked", "crossing"}
    assert f["scene"] == {"layout:winding", "background:mountains", "time:night"}


def test_grounding_scores_hand_computed():
    scene = {"agents": [{"kind": "car", "colour": "red", "state": "parked"},
                        {"kind": "bus", "colour": "blue", "state": "oncoming"}],
             "roadside": [{"kind": "tree"}], "background": "sea", "time_of_day": "day",
             "road": {"layout": "straight"}, "ego_motion": "slow"}
    s = grounding.grounding_scores(["A red car parked by a truck on a straight road."], [scene])
    assert s["objects"]["recall"] == pytest.approx(1 / 3)   # car of {car, bus, tree}
    assert s["objects"]["precision"] == pytest.approx(1 / 2)  # car of {car, truck}
    assert s["colours"]["recall"] == pytest.approx(1 / 2)
    assert s["motion"]["recall"] == pytest.approx(1 / 2)
    assert s["scene"]["recall"] == pytest.approx(1 / 4)


def test_reference_chance_and_chance_multiples_hand_computed():
    def scene(kinds, colour="red"):
        return {"agents": [{"kind": k, "colour": colour, "state": "parked"} for k in kinds], "roadside": [],
                "background": "sea", "time_of_day": "day", "road": {"layout": "straight"}, "ego_motion": "slow"}

    scenes = [scene(["car"]), scene(["car", "bus"]), scene(["truck"], "blue")]
    answers = ["a car", "a car", "a car"]                  # names a car whatever it sees
    refs = ["a red car", "a red car and a red bus", "a blue truck"]
    t = grounding.grounding_table(answers, refs, scenes, ["a", "b", "c"])
    # the next clip's scenes: b, c, a -> answers hit car (b), -, car (a) of 2 + 1 + 1 objects
    assert t["chance"]["objects"]["recall"] == pytest.approx(2 / 4)
    # references against b, c, a: car (of car, bus), nothing (truck vs car), nothing (car vs truck)
    assert t["reference_chance"]["objects"]["recall"] == pytest.approx(1 / 4)
    m = grounding.chance_multiples({"target": t}).set_index("facts")
    assert m.loc["objects", "model recall"] == pytest.approx(2 / 4)        # car, car of car / car+bus / truck
    assert m.loc["objects", "model x chance"] == pytest.approx(1.0)        # a fluent constant answer: chance
    assert m.loc["objects", "reference x chance"] == pytest.approx(1.0 / (1 / 4))
    assert "scene" not in m.index                          # no reference names a scene-level fact here
    # a table without the reference's chance (an older manifest's) gives no rows, not an error
    assert grounding.chance_multiples({"target": {k: v for k, v in t.items() if k != "reference_chance"}}).empty


def test_caption_multiples_hand_computed():
    def scene(kinds):
        return {"agents": [{"kind": k, "colour": "red", "state": "parked"} for k in kinds], "roadside": [],
                "background": "sea", "time_of_day": "day", "road": {"layout": "straight"}, "ego_motion": "slow"}

    scenes = [scene(["car"]), scene(["truck"]), scene(["car"])]
    caps = {"target": ["a red car", "a red truck", "a red car"], "draft": ["a car", "a truck", "a car"]}
    t = grounding.caption_multiples(caps, scenes, ["a", "b", "c"]).set_index(["register", "facts"])
    # own scenes: every object named; the next clip's (b, c, a): only c's car against a's car
    assert t.loc[("target", "objects"), "recall"] == 1.0
    assert t.loc[("target", "objects"), "chance"] == pytest.approx(1 / 3)
    assert t.loc[("target", "objects"), "x chance"] == pytest.approx(3.0)
    assert t.loc[("target", "colours"), "x chance"] == pytest.approx(1.0)   # every agent is red
    assert ("draft", "colours") not in t.index                              # a register that names none
    assert ("target", "scene") not in t.index


def test_rank_auc_counts_ordered_pairs_and_half_ties():
    import itertools
    import numpy as np
    rng = np.random.default_rng(0)
    t, z = rng.random(30) < 0.4, rng.integers(0, 4, 30).astype(float)   # many ties
    pairs_ = [(a, b) for a, b in itertools.product(z[t], z[~t])]
    brute = np.mean([1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs_])
    assert grounding.rank_auc(t, z) == pytest.approx(brute)
    assert grounding.rank_auc([True, False], [0.2, 0.1]) == 1.0
    assert grounding.rank_auc([True, False], [0.1, 0.2]) == 0.0
    assert np.isnan(grounding.rank_auc([True, True], [0.1, 0.2]))


def test_colour_evidence_from_pixels_answers_and_references():
    import numpy as np
    from helpers.world.scene import COLOURS

    def scene(*colours):
        return {"agents": [{"kind": "car", "colour": c, "state": "parked"} for c in colours], "roadside": [],
                "background": "sea", "time_of_day": "day", "road": {"layout": "straight"}, "ego_motion": "slow"}

    def frames(colour, n_px):
        f = np.full((2, 10, 10, 3), 128, np.uint8)           # grey-ish background, no palette colour
        if n_px:
            f[:, 0, :n_px] = np.round(np.array(COLOURS[colour]) * 255).astype(np.uint8)
        return f

    scenes = [scene("red"), scene("red"), scene("blue"), scene()]
    fr = [frames("red", 5), frames("red", 1), frames("blue", 4), frames("red", 2)]   # clip 4: red pixels, no red agent
    answers = [["a red car"], ["a car"], ["a red car"], ["nothing"]]
    refs = [["a red car"], ["a red car"], ["a blue car"], ["nothing"]]
    shares = grounding.palette_shares(fr[0])
    assert shares["red"] == pytest.approx(0.05) and shares["blue"] == 0.0   # 5 of each frame's 100 pixels
    assert shares["grey"] == pytest.approx(0.95)                              # the background, 0.08 from grey
    t = grounding.colour_evidence(fr, scenes, answers, refs).set_index("colour")
    assert list(t.index) == ["red", "blue"]                   # colours no clip has are left out
    assert t.loc["red", "clips with it"] == 2 and t.loc["red", "clips"] == 4
    # red pixels 5, 1 (red clips) vs 0, 2 (others): 3 of 4 ordered pairs
    assert t.loc["red", "pixels (AUC)"] == pytest.approx(0.75)
    # answers name red in clip 1 (red) and clip 3 (not red): (1 + 0.5 + 0.5 + 0) / 4
    assert t.loc["red", "answers (AUC)"] == pytest.approx(0.5)
    assert t.loc["red", "reference captions (AUC)"] == 1.0
    assert t.loc["blue", "pixels (AUC)"] == 1.0
    assert "reference captions (AUC)" not in grounding.colour_evidence(fr, scenes, answers)
    assert grounding.colour_evidence(fr[:1], scenes[:1], answers[:1]).empty   # one clip tells no colour apart


def test_object_sizes_and_recall_by_size_hand_computed():
    import dataclasses
    import numpy as np
    from helpers.world.sample import sample_scene
    from helpers.world.scene import FOCAL_FRAC, SIZES_M, scene_to_dict

    base = sample_scene(np.random.default_rng(0))
    road = dataclasses.replace(base.road, layout="straight")       # no bend: in view iff |0.8 x / d| < 0.47

    def scene(agents, roadside=(), ego=0.0):
        d = scene_to_dict(dataclasses.replace(base, road=road, ego_speed_mps=ego, ego_lat_m=0.0, agents=[], roadside=[]))
        d["agents"] = [{"kind": k, "colour": "red", "state": "ahead", "side": "center", "s_m": s, "lat_m": lat,
                        "speed_mps": v, "lat_speed_mps": 0.0, "lights_on": False} for k, s, lat, v in agents]
        d["roadside"] = [{"kind": k, "side": "right", "s_m": s, "lat_m": lat} for k, s, lat in roadside]
        return d

    # two cars ahead: the nearer (10 m) is the widest; a sign behind the camera and a tree far to the side
    # (0.8 * 20 / 12 > 0.47) are out of view and left out
    s0 = scene([("car", 40.0, 0.0, 0.0), ("car", 10.0, 1.0, 0.0)], [("sign", 1.0, 3.0), ("tree", 12.0, 20.0)])
    assert grounding.object_sizes(s0, 100) == {"car": pytest.approx(FOCAL_FRAC * 100 * SIZES_M["car"][0] / 10)}
    # an agent driving away at 10 m/s under an ego at 4 m/s: depth 20 + 5 - 2 at t = 0.5
    s1 = scene([("truck", 20.0, 0.0, 10.0)], ego=4.0)
    assert grounding.object_sizes(s1, 100)["truck"] == pytest.approx(FOCAL_FRAC * 100 * SIZES_M["truck"][0] / 23)
    # bins by width at input 100: car at 10 m = 14.4 px, truck at 23 m = 8.7 px, pedestrian at 40 m = 1 px
    s2 = scene([("pedestrian", 40.0, 2.0, 0.0)])
    t = grounding.recall_by_size([s0, s1, s2], [["a car"], ["a car and a pedestrian"], ["nothing"]],
                                 [["a car"], ["a truck"], ["a pedestrian"]], 100, bins=(0, 2, 10, 20))
    assert list(t["objects"]) == [1, 1, 1]
    assert list(t["model"]) == [0.0, 0.0, 1.0]         # only the car is named by its own clip's answers
    assert list(t["reference"]) == [1.0, 1.0, 1.0]
    # chance: clip 0's car judged by clip 1's answers (a car: named), clip 1's truck by clip 2's, clip 2's pedestrian by clip 0's
    assert list(t["chance"]) == [0.0, 0.0, 1.0]
    assert list(t["apparent width"]) == ["0-2 px", "2-10 px", "10-20 px"]
    with pytest.raises(ValueError, match="two clips"):
        grounding.recall_by_size([s0], [["a car"]], [["a car"]], 100)


def test_shifted_pairs_each_clip_with_the_next():
    assert grounding.shifted(["a", "a", "b", "c"], ["x", "x", "y", "z"]) == ["b", "b", "c", "a"]
    with pytest.raises(ValueError):
        grounding.shifted(["a"], ["x"])


# --------------------------------------------------------------------------- shipped models
def test_manifest_says_how_the_models_were_made():
    m = json.loads((SHIPPED_DIR / "manifest.json").read_text())
    for kind in ("draft", "target"):
        k = m[kind]
        assert k["data"]["seed"] != 0  # the book's default world (seed 0) is unseen
        assert k["epochs_run"] >= 1 and k["train_s"] > 0 and k["test_loss"] < 1.0
        assert len(k["git_commit"]) == 40 and k["device"]
        assert set(k["grounding"]["model"]) == set(grounding.CATEGORIES)
    assert m["target"]["n_visual_tokens_per_item"] * 8 > 5 * m["draft"]["n_visual_tokens_per_item"]
    size = sum(p.stat().st_size for p in SHIPPED_DIR.rglob("*") if p.is_file())
    assert size < 12e6


def test_shipped_target_is_grounded_in_scene_facts_above_chance():
    g = json.loads((SHIPPED_DIR / "manifest.json").read_text())["target"]["grounding"]
    assert g["model"]["scene"]["recall"] > g["chance"]["scene"]["recall"] + 0.1


def test_shipped_models_name_objects_and_motion_above_chance_and_better_than_before():
    """The vision stage's point (issue 10): both models name objects and motions more often than
    chance on held-out clips (recall at least 1.2 times chance), and each one's margin over chance
    (recall - chance) is larger than the caption-loss-only models' was."""
    m = json.loads((SHIPPED_DIR / "manifest.json").read_text())
    for kind in ("draft", "target"):
        assert m[kind]["vision_pretraining"]["seconds"] > 0
        now, before = m[kind]["grounding"], m["previous"][kind]["grounding"]
        for c in ("objects", "motion"):
            assert now["model"][c]["recall"] > 1.2 * now["chance"][c]["recall"], (kind, c)
            margin_now = now["model"][c]["recall"] - now["chance"][c]["recall"]
            margin_before = before["model"][c]["recall"] - before["chance"][c]["recall"]
            assert margin_now > margin_before, (kind, c, margin_now, margin_before)
    assert m["draft"]["vlm_config"]["pixel_fit"] == "squash"


def test_shipped_models_answer_unseen_clips(shipped_models, world):
    draft, target, tokenizer = shipped_models
    scenes = read_scenes(world)
    answers = {"draft": [], "target": []}
    for kind, model in (("draft", draft), ("target", target)):
        from helpers.models.train import load_examples
        for e, (pixels, q, _) in zip(world, load_examples(world, kind)):
            ids, text, _ = vlm.generate_greedy(model, tokenizer, pixels, q, max_new_tokens=40)
            assert text and all(0 <= t < len(tokenizer) for t in ids)
            answers[kind].append(text)
    # registers as in the recorded DSEC pairs: events -> "In the scene, there is ...", video -> colours
    assert any(a.startswith(("In the scene", "The scene shows")) for a in answers["draft"])
    assert any(grounding.answer_facts(a)["colours"] for a in answers["target"])
    assert not any(grounding.answer_facts(a)["colours"] for a in answers["draft"])
    t = grounding.grounding_scores(answers["target"], [scenes[e["clip_id"]] for e in world])
    assert t["scene"]["recall"] > 0  # names at least one true scene-level fact


def test_load_examples_threads_read_each_clip_once_in_order(world):
    from helpers.models.train import load_examples
    for kind in ("draft", "target"):
        one, many = load_examples(world, kind, workers=1), load_examples(world, kind, workers=4)
        assert [(q, a) for _, q, a in one] == [(e["query"], e[f"{kind}_answer"]) for e in world]
        assert all(np.array_equal(x, y) for (x, _, _), (y, _, _) in zip(one, many, strict=True))
        by_clip = {}
        for e, (px, _, _) in zip(world, many):             # a clip's questions share one array
            assert by_clip.setdefault(e["clip_id"], px) is px
    with pytest.raises(KeyError, match="draft' or 'target"):
        load_examples(world, "video")


def test_recipe_entry_reads_what_the_recipe_search_records():
    """The shipped pair's own row in the recipe search was written from its manifest: recipe_entry
    rebuilds it field by field from the kinds' manifests."""
    from helpers.models.shipped import recipe_entry
    m = json.loads((SHIPPED_DIR / "manifest.json").read_text())
    (row,) = [r for name, r in m["recipe_search"].items() if name.endswith("(shipped)")]
    for kind in ("draft", "target"):
        e = recipe_entry(m[kind])
        for k in ("best_val_loss", "test_loss", "epochs_run", "pixel_fit", "vision_pretraining_s", "grounding_recall"):
            assert e[k] == row[kind][k], (kind, k)
        assert e["n_clips"] == m["dataset_summary"]["n_clips"]


def test_record_recipe_compares_pairs_on_the_same_clips(tmp_path):
    """A candidate pair is recorded with both pairs' grounding on the same unseen clips; a candidate
    with the shipped weights answers exactly as the shipped pair does, and the shipped weights stay."""
    import shutil
    from helpers.models.shipped import record_recipe, weights_id
    shipped, cand = tmp_path / "shipped", tmp_path / "cand"
    shutil.copytree(SHIPPED_DIR, shipped)
    shutil.copytree(SHIPPED_DIR, cand)
    entry = record_recipe(cand, "same weights", "cp -r", compare_clips=2, compare_seed=7, models_dir=shipped, workers=1,
                          progress=False)
    m = json.loads((shipped / "manifest.json").read_text())
    assert m["recipe_search"]["same weights"] == json.loads(json.dumps(entry))
    assert entry["command"] == "cp -r" and entry["same_clips"]["shipped_weights"] == weights_id(SHIPPED_DIR)
    tables = entry["same_clips"]["grounding"]
    assert set(tables) == {"shipped", "same weights"}
    for kind in ("draft", "target"):
        same = [json.dumps(tables[p][kind], sort_keys=True) for p in ("shipped", "same weights")]  # NaN-safe
        assert same[0] == same[1], kind
        assert tables["shipped"][kind]["reference"]["objects"]["n_true"] > 0   # scored against the clips' scenes
    assert weights_id(shipped) == weights_id(SHIPPED_DIR)
    with pytest.raises(FileNotFoundError):
        record_recipe(tmp_path / "nowhere", "x", "", models_dir=shipped)


# --------------------------------------------------------------------------- recorded pairs
def test_recorded_pairs_deterministic_and_round_trip(shipped_models, world, tmp_path):
    """The recorder on the shipped models: two runs give the same pairs, in work-list order, with
    per-stage timings, and the pairs survive the parquet file."""
    from helpers.models.backend import Backend
    draft, target, tokenizer = shipped_models
    work = record.work_from_manifest(world, n_questions=10)
    backends = [Backend(m, tokenizer, 4, 400) for m in (draft, target)]
    runs = []
    for name in ("a", "b"):
        record.record(*backends, work, tmp_path / name, chunk=4, max_new_tokens=12, progress=False, log=lambda m: None)
        runs.append(record.merge(tmp_path / name, work, 4)[0])
    a, b = runs
    strip = lambda ps: [(p.key, p.clip_index, p.draft_ids, p.target_ids, p.draft_text, p.target_text) for p in ps]
    assert strip(a) == strip(b)
    assert [p.clip_id for p in a] == [e["clip_id"] for e in sorted(world, key=lambda e: (e["sample_idx"], e["question_idx"]))]
    for p in a:
        assert {"draft_prefill", "draft_decode", "target_prefill", "target_decode", "target_vision"} <= set(p.timings_ms)
        assert all(v > 0 for k, v in p.timings_ms.items() if k.endswith(("prefill", "vision")))
        assert 0 < len(p.target_ids) <= 12
    path = pairs.save_parquet(a, tmp_path / "pairs.parquet", vocab_size=len(tokenizer))
    back = pairs.load_pairs(path)
    assert back == a  # ids, texts and timings
    tok = load_tokenizer(SHIPPED_DIR / "tokenizer")
    assert tok.decode(list(a[0].target_ids), skip_special_tokens=True).strip() == a[0].target_text


@pytest.mark.slow
def test_recording_in_cpu_processes_matches_one_process(world, tmp_path):
    """cpu_workers: two CPU processes split the chunks between them and record the same answers,
    token for token, as the notebook's own process; a rerun records only what is missing, and
    workers that fail raise an error that names them."""
    work = record.work_from_manifest(world, n_questions=3)          # 3 clips x questions 0 and 2
    one = record.launch(work, tmp_path / "one", "synthetic", str(SHIPPED_DIR), 1, 8, gpus=0, progress=False,
                        log=lambda m: None)
    two = record.launch(work, tmp_path / "two", "synthetic", str(SHIPPED_DIR), 1, 8, gpus=0, progress=False,
                        log=lambda m: None, cpu_workers=2)
    assert one["written"] == two["written"] == 6 and two["cpu_workers"] == 2
    ranks = [json.loads((tmp_path / "two" / f"rank_{r}.json").read_text())["written"] for r in (0, 1)]
    assert ranks == [3, 3]                                   # chunks 0, 2, 4 and 1, 3, 5
    strip = lambda ps: [(p.key, p.draft_ids, p.target_ids) for p in ps]
    assert strip(record.merge(tmp_path / "one", work, 1)[0]) == strip(record.merge(tmp_path / "two", work, 1)[0])
    again = record.launch(work, tmp_path / "two", "synthetic", str(SHIPPED_DIR), 1, 8, gpus=0, progress=False,
                          log=lambda m: None, cpu_workers=2)
    assert again["written"] == 0 and again["skipped"] == 6
    with pytest.raises(RuntimeError, match=r"workers \[0, 1\] of 2 failed"):
        record.launch(work, tmp_path / "bad", "synthetic", str(tmp_path / "no_models"), 1, 8, gpus=0,
                      progress=False, log=lambda m: None, cpu_workers=2)


# --------------------------------------------------------------------------- chapters 01-03
def test_world_chapters_smoke_run(tmp_path):
    """Stages 01-03 with the smoke keys, through the runner, into a tmp run folder."""
    from helpers.suite.runner import run_suite

    from helpers.suite.params import notebook_spec

    declared = {k for s in STAGES for k in notebook_spec(REPO_ROOT / "notebooks" / f"{s}.ipynb").params}
    keys = yaml.safe_load((REPO_ROOT / "params" / "smoke.yml").read_text())
    keys = {k: v for k, v in keys.items() if k in declared}  # the smoke preset's keys of stages 01-03
    params_dir = tmp_path / "params"
    params_dir.mkdir()
    (params_dir / "wsmoke.yml").write_text(yaml.safe_dump({**keys, "notebooks": STAGES}))
    rep = run_suite("wsmoke", out=tmp_path / "run", book=False, params_dir=params_dir, progress=False,
                    log=lambda *a: None)
    assert not rep.failures, [(s.stem, s.cell, s.message) for s in rep.failures]
    run = tmp_path / "run"
    world = json.loads((run / "01_world" / "results.json").read_text())
    assert world["n_clips"] == keys["n_clips"] and world["n_distinct_scenes"] == keys["n_clips"]
    models = json.loads((run / "02_models" / "results.json").read_text())
    assert models["tokenizer_path"] == "src/helpers/assets/synthetic_vlm/tokenizer"
    inf = json.loads((run / "03_inference" / "results.json").read_text())
    assert inf["n_pairs"] == keys["n_clips"] * keys["n_questions"]
    assert inf["pairs_path_param"] == "run:03_inference/pairs.parquet"
    recorded = pairs.load_pairs(run / "03_inference" / "pairs.parquet")
    assert len(recorded) == inf["n_pairs"]
    assert sorted({p.clip_index for p in recorded}) == list(range(keys["n_clips"]))
    assert inf["timings_ms"]["target_prefill"]["median"] > inf["timings_ms"]["draft_prefill"]["median"]
    for stem in STAGES:
        assert (run / stem / f"{stem}.ipynb").exists()
    # the world made again with another seed in the same run folder: its clips are recorded anew
    # (the recording's shards are keyed by the world's manifest, not only by the models and sizes)
    rep = run_suite("wsmoke", out=run, book=False, params_dir=params_dir, progress=False, log=lambda *a: None,
                    only=["01_world", "03_inference"], overrides={"seed": 1})
    assert not rep.failures, [(s.stem, s.cell, s.message) for s in rep.failures]
    again = pairs.load_pairs(run / "03_inference" / "pairs.parquet")
    assert json.loads((run / "03_inference" / "results.json").read_text())["launch"]["written"] == inf["n_pairs"]
    assert [p.target_ids for p in again] != [p.target_ids for p in recorded]
    assert len(list((run / "shards").iterdir())) == 2


def test_retrain_models_path_trains_saves_and_reports(tmp_path):
    """retrain_models: true trains both models on 01_world's split and 02 points at them."""
    from helpers.suite.runner import run_suite

    keys = {"n_clips": 4, "split_fractions": [0.5, 0.25, 0.25], "n_workers": 1, "n_show_clips": 1,
            "retrain_models": True, "train_epochs": 1, "grounding_clips": 1, "max_new_tokens": 8,
            "train_vision_s": 1.0, "notebooks": STAGES[:2]}
    params_dir = tmp_path / "params"
    params_dir.mkdir()
    (params_dir / "wretrain.yml").write_text(yaml.safe_dump(keys))
    rep = run_suite("wretrain", out=tmp_path / "run", book=False, params_dir=params_dir, progress=False,
                    log=lambda *a: None)
    assert not rep.failures, [(s.stem, s.cell, s.message) for s in rep.failures]
    res = json.loads((tmp_path / "run" / "02_models" / "results.json").read_text())
    models = tmp_path / "run" / "02_models" / "models"
    assert res["retrained"] and res["models_dir"] == str(models)
    assert [r["epochs"] for r in res["training"]] == [1, 1]
    assert all(r["vision stage s"] > 0 and r["pixels"] == "squash" for r in res["training"])   # the shipped recipe
    for kind in ("draft", "target"):
        assert (models / kind / "model.safetensors").exists()
    # the tokenizer of the pair shipped for the world (02_models' default models_dir) is reused, so 10_data's
    # tokenizer_path stays valid
    from helpers.suite.params import notebook_spec
    shipped_for_world = REPO_ROOT / notebook_spec(REPO_ROOT / "notebooks" / "02_models.ipynb").params["models_dir"].default
    assert (models / "tokenizer" / "tokenizer.json").read_text() == (shipped_for_world / "tokenizer" / "tokenizer.json").read_text()


def test_fact_matrix_and_aux_loss_trains_the_vision_tower():
    """The optional vision fact loss (train_vlm's aux_weight): targets from the scene graph, and
    the vision tower's weights move differently with it than without it."""
    import numpy as np

    from helpers.models import train as vlm_train
    scene = {"agents": [{"kind": "car", "colour": "red", "state": "parked"}], "roadside": [],
             "background": "sea", "time_of_day": "day", "road": {"layout": "straight"}, "ego_motion": "slow"}
    m = grounding.fact_matrix([scene])
    on = {grounding.FACTS[i] for i in np.flatnonzero(m[0])}
    assert on == {"objects:car", "colours:red", "motion:parked", "scene:layout:straight",
                  "scene:background:sea", "scene:time:day", "scene:ego:slow"}
    tok = train_tokenizer(["a red car", "a blue bus", "what is here?"] * 3, vocab_size=300)
    rng = np.random.default_rng(0)
    ex = [(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), "what is here?", a) for a in ("a red car", "a blue bus")] * 2
    labels = rng.integers(0, 2, (len(ex), 5)).astype(np.float32)
    cfg_small = vlm.VLMConfig(text_layers=1, vision_layers=1, image_size_px=48, text_hidden=64, text_intermediate=128)
    towers = []
    for aux in (0.0, 1.0):
        torch.manual_seed(0)
        model = vlm.build_draft_model(cfg_small, tok)
        cfg = vlm_train.vlm_train_config(epochs=1, batch_size=2, progress=False, device="cpu")
        vlm_train.train_vlm(model, tok, ex, [], cfg, labels=labels, aux_weight=aux)
        towers.append(torch.cat([p.detach().flatten() for p in model.model.vision_tower.parameters()]))
    assert not torch.allclose(towers[0], towers[1])


def test_caption_fact_matrix_is_what_the_captions_name():
    import numpy as np
    m = grounding.caption_fact_matrix([["In the scene, there is a car parked on the side of a winding road.",
                                        "A red bus is crossing."], []])
    on = {grounding.FACTS[i] for i in np.flatnonzero(m[0])}
    assert on == {"objects:car", "objects:bus", "motion:parked", "motion:crossing", "colours:red",
                  "scene:layout:winding"}
    assert not m[1].any()


def test_base_rate_scores_predict_the_common_facts_for_every_clip():
    import numpy as np
    from helpers.models.train import base_rate_scores
    names = ["objects:car", "objects:bus", "motion:parked"]
    train = np.array([[1, 0, 1], [1, 0, 0], [1, 1, 0], [0, 0, 1], [1, 0, 1]])   # car 4/5, bus 1/5, parked 3/5
    val = np.array([[1, 1, 0], [0, 0, 1], [1, 0, 0]])
    s = base_rate_scores(train, val, names)
    # car and parked predicted for all three clips, bus for none
    assert s["val_f1_objects"] == pytest.approx(2 * 2 / (3 + 3))        # car right twice; 3 named, 3 true objects
    assert s["val_f1_motion"] == pytest.approx(2 * 1 / (3 + 1))
    flipped = base_rate_scores(1 - train, val, names)                      # bus now common, car rare
    assert flipped["val_f1_objects"] == pytest.approx(2 * 1 / (3 + 3))


def test_add_base_rates_recomputes_what_the_shipped_manifest_records(tmp_path):
    import shutil
    from helpers.models.shipped import add_base_rates
    d = tmp_path / "pair"
    shutil.copytree(SHIPPED_DIR, d)
    before = json.loads((SHIPPED_DIR / "manifest.json").read_text())
    for path, key in [(d / "manifest.json", k) for k in ("draft", "target")] + [(d / k / "manifest.json", None)
                                                                                  for k in ("draft", "target")]:
        m = json.loads(path.read_text())
        (m[key] if key else m)["vision_pretraining"].pop("val_base_rates")
        path.write_text(json.dumps(m))
    assert "val_base_rates" not in json.loads((d / "target" / "manifest.json").read_text())["vision_pretraining"]
    got = add_base_rates(d)
    after = json.loads((d / "manifest.json").read_text())
    for kind in ("draft", "target"):
        assert got[kind] == pytest.approx(before[kind]["vision_pretraining"]["val_base_rates"], nan_ok=True)
        assert after[kind]["vision_pretraining"]["val_base_rates"] == pytest.approx(got[kind], nan_ok=True)
        assert json.loads((d / kind / "manifest.json").read_text())["vision_pretraining"]["val_base_rates"] \
            == pytest.approx(got[kind], nan_ok=True)
        # the towers' own validation F1 beats what base rates alone score
        assert before[kind]["vision_pretraining"]["val"]["val_f1_objects"] > got[kind]["val_f1_objects"]


def test_pixel_fit_squash_keeps_the_frame_sides_and_travels_with_the_config(tmp_path):
    import numpy as np
    frame = np.zeros((120, 160, 3), np.uint8)
    frame[:, :16] = 255                                # a white roadside strip at the left edge
    crop = vlm.preprocess_pixels(frame, 48)
    squash = vlm.preprocess_pixels(frame, 48, fit="squash")
    assert crop.shape == squash.shape == (3, 48, 48)
    assert crop[:, :, 0].max() < 0 < squash[:, :, 0].min()   # the crop drops the strip, the squash keeps it
    with pytest.raises(ValueError, match="fit"):
        vlm.preprocess_pixels(frame, 48, fit="stretch")
    with pytest.raises(ValueError, match="pixel_fit"):
        vlm.build_draft_model(vlm.VLMConfig(pixel_fit="pad"), train_tokenizer(["a car"] * 3, vocab_size=280))
    tok = train_tokenizer(["a red car", "what is here?"] * 3, vocab_size=280)
    cfg = vlm.VLMConfig(text_layers=1, vision_layers=1, image_size_px=48, text_hidden=64, text_intermediate=128,
                        pixel_fit="squash")
    model = vlm.build_draft_model(cfg, tok)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, _ = vlm.load_pretrained(tmp_path, "draft")
    assert torch.equal(vlm.pixel_tensor(loaded, frame)[0], squash)


def test_vision_pretraining_learns_a_visible_fact_and_the_caption_stage_can_keep_the_tower():
    """Stage 1 (train.pretrain_vision) on a fact the pixels show (is the left half bright?): the
    validation loss falls well below the prior's, only the tower and projector move; with the tower
    frozen the caption stage (train_vlm) leaves it exactly as stage 1 made it."""
    import numpy as np

    from helpers.models import train as vlm_train
    rng = np.random.default_rng(0)

    def clip(bright):
        x = rng.integers(0, 60, (48, 64, 3), dtype=np.uint8)
        if bright:
            x[:, :32] += 180
        return x
    y = rng.integers(0, 2, 64)
    imgs = [clip(b) for b in y]
    tok = train_tokenizer(["bright", "dark", "what is here?"] * 3, vocab_size=280)
    torch.manual_seed(0)
    model = vlm.build_draft_model(vlm.VLMConfig(text_layers=1, vision_layers=1, image_size_px=48, text_hidden=64,
                                                text_intermediate=128, pixel_fit="squash"), tok)
    px = [vlm.pixel_tensor(model, x) for x in imgs]
    labels = y[:, None].astype(np.float32)
    lm_before = [p.detach().clone() for p in model.model.language_model.parameters()]
    cfg = vlm_train.vlm_train_config(epochs=12, batch_size=8, lr=3e-3, progress=False, device="cpu", patience=12)
    hist, final = vlm_train.pretrain_vision(model, px[:48], labels[:48], px[48:], labels[48:], cfg, ["objects:bright"])
    prior = -(labels[:48].mean() * np.log(labels[:48].mean()) + (1 - labels[:48].mean()) * np.log(1 - labels[:48].mean()))
    assert final["val_loss"] < 0.5 * prior and final["val_f1_objects"] > 0.8
    assert all(torch.equal(a, b) for a, b in zip(lm_before, model.model.language_model.parameters()))

    for m in vlm_train.vision_modules(model):
        m.requires_grad_(False)
    tower = [p.detach().clone() for p in model.model.vision_tower.parameters()]
    ex = [(x, "what is here?", "bright" if b else "dark") for x, b in zip(imgs[:8], y[:8])]
    vlm_train.train_vlm(model, tok, ex, [], vlm_train.vlm_train_config(epochs=1, batch_size=4, progress=False, device="cpu"))
    assert all(torch.equal(a, b) for a, b in zip(tower, model.model.vision_tower.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(lm_before, model.model.language_model.parameters()))


def test_grounding_verdict_on_a_hand_made_table():
    def t(model, ref, chance):
        return {src: {"objects": {"recall": v}} for src, v in (("model", model), ("reference", ref), ("chance", chance))}
    tables = {"draft": t(0.40, 0.9, 0.20), "target": t(0.22, 0.9, 0.20)}
    v = grounding.verdict(tables, margin=0.05)
    assert v == {"above": ["draft objects (0.40 vs 0.20)"], "at": ["target objects (0.22 vs 0.20)"]}
    assert grounding.verdict({"draft": t(0.4, 0.0, 0.1)})["above"] == []   # the reference never names it: skipped
    assert "above chance: draft objects" in grounding.verdict_text(tables)


def test_weights_id_tells_the_shipped_models_from_others(tmp_path):
    import shutil
    from helpers.models import shipped
    ours = shipped.weights_id()
    assert ours and len(ours) == 12 and shipped.weights_id(shipped.SHIPPED_DIR) == ours
    copy = tmp_path / "pair"
    for kind in shipped.KINDS:
        (copy / kind).mkdir(parents=True)
        shutil.copy(shipped.SHIPPED_DIR / kind / "model.safetensors", copy / kind)
    assert shipped.weights_id(copy) == ours                       # the same weights elsewhere: the same id
    with open(copy / "target" / "model.safetensors", "ab") as f:
        f.write(b"\0")
    assert shipped.weights_id(copy) != ours                       # any change to either file changes it
    (copy / "draft" / "model.safetensors").unlink()
    assert shipped.weights_id(copy) is None                       # not a model pair
