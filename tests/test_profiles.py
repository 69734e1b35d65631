"""World profiles: the driving world is the one the shipped pair learned from, scene for scene; the
legible world is one whose captions carry information about their clip; the legible pair is shipped
with the world it was trained on, and every preset pairs a world with models trained on it."""
import hashlib
import json

import numpy as np
import pytest

from helpers.models.shipped import SHIPPED_DIR
from helpers.suite.params import available_presets, plan_run
from helpers.suite.paths import REPO_ROOT
from helpers.world import grounding
from helpers.world.captions import captions_for_scene
from helpers.world.dataset import generate_dataset, load_manifest, world_captions
from helpers.world.sample import PROFILES, SceneDistribution, profile, sample_scene
from helpers.world.scene import scene_to_dict

LEGIBLE_DIR = SHIPPED_DIR.parent / "synthetic_vlm_legible"


def _scenes(name: str, n: int, first: int = 0):
    return [scene_to_dict(sample_scene(np.random.default_rng(i), seed=i, dist=PROFILES[name])) for i in range(first, first + n)]


def test_driving_profile_draws_the_scenes_drawn_before_profiles_existed():
    """The shipped pair's training world and every recorded synthetic figure came from these scenes:
    the digest of the first 300, computed with the sampler as it was before SceneDistribution."""
    digest = hashlib.sha256(json.dumps(_scenes("driving", 300), sort_keys=True).encode()).hexdigest()
    assert digest == "66037f9419f061d2092c346372cbf8b50d23f33bf3d6c659a00caa5e9ffcf084"
    assert _scenes("driving", 5) == [scene_to_dict(sample_scene(np.random.default_rng(i), seed=i)) for i in range(5)]


def _caption_multiples(name: str, n: int = 300) -> dict:
    scenes = [sample_scene(np.random.default_rng(i), seed=i, dist=PROFILES[name]) for i in range(n)]
    caps = [captions_for_scene(s) for s in scenes]
    rows = grounding.caption_multiples({r: [t for c in caps for t in c[r]] for r in ("draft", "target")},
                                       [scene_to_dict(s) for s in scenes for _ in range(10)],
                                       [i for i in range(n) for _ in range(10)])
    return rows.set_index(["register", "facts"])["x chance"].to_dict()


def test_legible_captions_carry_about_twice_the_information_of_driving_ones():
    """In the driving world the reference captions name a clip's objects about twice as often as
    captions of another clip do: twice-chance grounding is the ceiling there. The legible world is
    made so that it is not."""
    driving, legible = _caption_multiples("driving"), _caption_multiples("legible")
    for register in ("draft", "target"):
        assert driving[(register, "objects")] < 2.5
        assert legible[(register, "objects")] > 3.5
        assert legible[(register, "motion")] > 2.5


def test_legible_objects_are_nearer_and_fewer():
    for s in _scenes("legible", 200):
        assert len(s["agents"]) <= 3
        # oncoming agents start 10 m further; crossing vehicles cross where the intersection is (18-41 m)
        assert all(7.0 <= a["s_m"] <= 24.0 + 10.0 for a in s["agents"] if a["state"] != "crossing" or a["kind"] == "pedestrian")
        assert all(r["s_m"] <= 28.0 for r in s["roadside"] if r["kind"] != "traffic_light")   # those stand at the intersection
    widths = [w for s in _scenes("legible", 200) for w in grounding.object_sizes(s, 96).values()]
    widths_driving = [w for s in _scenes("driving", 200) for w in grounding.object_sizes(s, 96).values()]
    assert np.median(widths) > 1.3 * np.median(widths_driving)


def test_scene_distribution_rejects_what_is_not_a_distribution():
    with pytest.raises(ValueError, match="summing to 1"):
        SceneDistribution(n_agents_p=(0.5, 0.4))
    with pytest.raises(ValueError, match="one probability per kind"):
        SceneDistribution(vehicle_kind_p=(0.5, 0.5))
    with pytest.raises(ValueError, match="near, far"):
        SceneDistribution(agent_s_m=(30.0, 10.0))
    with pytest.raises(ValueError, match="roadside_max"):
        SceneDistribution(roadside_max=0)
    with pytest.raises(ValueError, match="legible"):
        profile("foggy")


def test_generate_dataset_records_its_profile_and_refuses_an_unknown_one(tmp_path):
    with pytest.raises(ValueError, match="unknown world profile"):
        generate_dataset(tmp_path / "bad", n_clips=2, world_profile="foggy", progress=False, n_workers=1)
    assert not (tmp_path / "bad").exists()
    s = generate_dataset(tmp_path / "ds", n_clips=2, seed=3, size=(64, 48), fps_internal=20.0, progress=False,
                         n_workers=1, world_profile="legible")
    assert s.params["world_profile"] == "legible"
    assert s.params["scene_distribution"] == PROFILES["legible"].to_dict()
    entries = load_manifest(tmp_path / "ds")
    # the captions written are those world_captions computes without rendering, for the same profile
    by_clip = {c["clip_id"]: c["captions"] for c in world_captions(2, 3, (0.8, 0.1, 0.1), "legible")}
    assert all(e["target_answer"] == by_clip[e["clip_id"]]["target"][e["question_idx"]] for e in entries)
    assert by_clip != {c["clip_id"]: c["captions"] for c in world_captions(2, 3, (0.8, 0.1, 0.1), "driving")}


def test_legible_pair_is_shipped_with_its_world_and_selection():
    m = json.loads((LEGIBLE_DIR / "manifest.json").read_text())
    assert m["dataset_summary"]["params"]["world_profile"] == "legible"
    shipped = [name for name in m["recipe_search"] if name.endswith("(shipped)")]
    assert len(shipped) == 1
    # chosen by validation loss: the shipped row has the lowest target validation loss of the search
    losses = {name: r["target"]["best_val_loss"] for name, r in m["recipe_search"].items()}
    assert min(losses, key=losses.get) == shipped[0]
    assert m["recipe_search"][shipped[0]]["target"]["best_val_loss"] == m["target"]["best_val_loss"]
    size = sum(p.stat().st_size for p in LEGIBLE_DIR.rglob("*") if p.is_file())
    assert size < 12e6


@pytest.mark.parametrize("preset", available_presets(REPO_ROOT / "params"))
def test_every_preset_reads_models_trained_on_its_world(preset):
    """The world chapter 1 draws (the preset's world_profile, or the notebook's default) is the one the
    models chapter 2 loads were trained on, and the tokenizer chapter 10 reads is theirs."""
    plan = plan_run(preset, REPO_ROOT / "notebooks", REPO_ROOT / "params")
    given = {spec.stem: {n: p.default for n, p in spec.params.items()} | plan.per_notebook.get(spec.stem, {})
             for spec in plan.notebooks}                           # the notebook's defaults, then the preset's values
    if "01_world" not in given or "02_models" not in given:
        pytest.skip("no synthetic world in this preset")
    models_dir = REPO_ROOT / given["02_models"]["models_dir"]
    trained_on = json.loads((models_dir / "manifest.json").read_text())["dataset_summary"]["params"].get(
        "world_profile", "driving")
    assert given["01_world"]["world_profile"] == trained_on
    if given.get("10_data", {}).get("tokenizer_path"):
        assert (REPO_ROOT / given["10_data"]["tokenizer_path"]).resolve() == (models_dir / "tokenizer").resolve()


def test_shipped_pairs_name_both_worlds_pairs_by_fingerprint():
    from helpers.models.shipped import shipped_pairs, weights_id
    pairs = shipped_pairs()
    assert pairs[weights_id(SHIPPED_DIR)] == SHIPPED_DIR and pairs[weights_id(LEGIBLE_DIR)] == LEGIBLE_DIR
    assert len(pairs) == 2
