"""The speculative decoding engine on the shipped synthetic target (fp32, CPU): its output is the
target's own greedy output token for token, for every drafter, gamma, batch size, chains and trees,
fixed and adaptive gamma; a drafter proposing the target's tokens has every draft accepted, an
always-wrong one none; and the engine's accepted counts equal the offline exact simulation's."""
import numpy as np
import pytest
import torch

from helpers.models import vlm
from helpers.models.backend import Backend, generate
from helpers.models.shipped import SHIPPED_DIR
from helpers.spec.engine import SpecConfig, greedy_generate, speculative_generate
from helpers.study.drafters import NgramPrior, RawDraft, evaluate
from helpers.study.pairs import RecordedPair
from helpers.world.captions import QUESTIONS

pytestmark = pytest.mark.usefixtures("one_torch_thread")
MAX_NEW = 24


@pytest.fixture(scope="module")
def world(shipped_models):
    draft, target, tok = shipped_models
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (8, 60, 80, 3), dtype=np.uint8) for _ in range(4)]
    events = [f[4] for f in frames]
    qs = [QUESTIONS[i] for i in (0, 2, 3, 6)]
    be = Backend(target, tok, batch=4, max_len=400)
    reference = [g.ids for g in generate(be, frames, qs, MAX_NEW)]                # target-only greedy
    draft_ids = [g.ids for g in generate(Backend(draft, tok, batch=4, max_len=200), events, qs, MAX_NEW)]
    pairs = [RecordedPair(f"c{i}", i, 0, q, tuple(d), tuple(t)) for i, (q, d, t) in
             enumerate(zip(qs, draft_ids, reference))]
    return dict(target=target, tok=tok, frames=frames, qs=qs, reference=reference, draft_ids=draft_ids, pairs=pairs)


class Oracle:
    """Proposes the target's own greedy continuation (from the reference): every draft accepted."""
    name, needs, ranks = "oracle", "the answer", False

    def __init__(self, questions, reference):
        self.by_question = dict(zip(questions, reference))

    def propose(self, ctx, n):
        ref = self.by_question[ctx.question]
        assert tuple(ref[:len(ctx.target_prefix)]) == ctx.target_prefix      # the engine's prefix is the target's
        return list(ref[len(ctx.target_prefix):len(ctx.target_prefix) + n])

    def propose_tree(self, ctx, n_nodes):
        """A wrong branch first, then the right chain under the root: the tree finds the right path."""
        right = self.propose(ctx, n_nodes - 1)
        nodes = [(-1, 3)] + [(-1 if i == 0 else i, t) for i, t in enumerate(right)]
        return nodes


class Wrong:
    name, needs, ranks = "wrong", "nothing", False

    def propose(self, ctx, n):
        return [3] * n                                    # the pad token: never what the target says


def run(w, drafter, cfg, batch):
    be = Backend(w["target"], w["tok"], batch=batch, max_len=400)
    out = []
    for s in range(0, 4, batch):
        rows = range(s, min(s + batch, 4))
        res = speculative_generate(be, drafter, [w["frames"][i] for i in rows], [w["qs"][i] for i in rows],
                                   lambda b, rows=list(rows): w["draft_ids"][rows[b]], cfg, MAX_NEW)
        out.extend(res.rows)
    return out


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("cfg", [SpecConfig(gamma=1), SpecConfig(gamma=3), SpecConfig(gamma=5),
                                 SpecConfig(gamma=3, adaptive=True, gamma_max=6)])
def test_output_is_the_target_greedy_output_for_every_drafter(world, cfg, batch):
    ngram = NgramPrior(order=3).fit(world["pairs"][:2])
    for drafter in (ngram, RawDraft(), Oracle(world["qs"], world["reference"]), Wrong()):
        rows = run(world, drafter, cfg, batch)
        assert [r.ids for r in rows] == world["reference"], (drafter.name, cfg, batch)


def test_oracle_has_everything_accepted_and_wrong_nothing(world):
    cfg = SpecConfig(gamma=4)
    for r in run(world, Oracle(world["qs"], world["reference"]), cfg, 4):
        assert all(s.accepted == s.drafted for s in r.steps) and r.mat > 1.5
    for r in run(world, Wrong(), cfg, 4):
        assert all(s.accepted == 0 for s in r.steps) and r.mat == 1.0


def test_trees_find_the_accepted_path_and_stay_lossless(world):
    rows = run(world, Oracle(world["qs"], world["reference"]), SpecConfig(tree_nodes=5), 4)
    assert [r.ids for r in rows] == world["reference"]
    assert all(s.accepted == min(4, s.emitted - 1) or s.emitted < 5 for r in rows for s in r.steps)


def test_engine_accepts_what_the_offline_simulation_says(world):
    """On the pairs recorded from these very models, the engine's per-step drafted/accepted counts
    equal helpers.study.metrics' exact simulation (the offline study's numbers are the engine's)."""
    ngram = NgramPrior(order=3).fit(world["pairs"][:2])
    for drafter in (ngram, RawDraft()):
        ev = evaluate(drafter, world["pairs"], 4)
        for cfg, sim in ((SpecConfig(gamma=4), ev.traces),
                         (SpecConfig(gamma=2, adaptive=True, gamma_min=1, gamma_max=6), ev.simulate(2, (1, 6)))):
            rows = run(world, drafter, cfg, 4)
            for r, t in zip(rows, sim):
                assert [s.accepted for s in r.steps] == t.accepted and [s.drafted for s in r.steps] == t.drafted
        assert sim != ev.traces and any(len(set(t.drafted)) > 1 for t in sim)  # gamma did adapt


def test_lossy_acceptance_is_labelled_and_greedy_loop_matches(world):
    be = Backend(world["target"], world["tok"], batch=4, max_len=400)
    g = greedy_generate(be, world["frames"], world["qs"], MAX_NEW)
    assert [r.ids for r in g.rows] == world["reference"] and not g.lossy
    res = speculative_generate(Backend(world["target"], world["tok"], batch=4, max_len=400), Wrong(), world["frames"],
                               world["qs"], lambda b: (), SpecConfig(gamma=3, lossy_topk=50), MAX_NEW)
    assert res.lossy


def test_concurrent_draft_model_feeds_the_engine_what_exists(world):
    """The draft model generating in a thread: the engine stays lossless, each step records how many
    draft tokens it saw, and what a step saw never shrinks."""
    from helpers.spec.overlap import DraftStream
    draft, tok = vlm.load_pretrained(SHIPPED_DIR / "draft", "draft")
    ds = DraftStream(Backend(draft, tok, batch=4, max_len=200), [f[4] for f in world["frames"]], world["qs"], MAX_NEW)
    be = Backend(world["target"], world["tok"], batch=4, max_len=400)
    ds.start()
    res = speculative_generate(be, RawDraft(), world["frames"], world["qs"], ds.visible, SpecConfig(gamma=3), MAX_NEW)
    ds.join()
    assert [r.ids for r in res.rows] == world["reference"]
    assert ds.tokens == world["draft_ids"]                       # the draft model's own greedy answers, all of them
    for r in res.rows:
        seen = [s.visible for s in r.steps]
        assert seen == sorted(seen) and all(0 <= v <= MAX_NEW for v in seen)


def test_wallclock_study_and_trace_replay_report_consistent_numbers(world):
    from helpers.spec import study
    be = Backend(world["target"], world["tok"], batch=2, max_len=400)
    ngram = NgramPrior(order=3).fit(world["pairs"][:2])
    df = study.wallclock(be, world["frames"], world["qs"], {"ngram": ngram, "draft_direct": RawDraft()},
                         draft_answers=world["draft_ids"], max_new_tokens=MAX_NEW, repeats=1)
    assert set(df.method) == {"greedy", "ngram", "draft_direct"} and df.exact.all()
    sp = study.speedups(df)
    assert set(sp.index) == {("ngram", "full"), ("draft_direct", "full")} and (sp["exact match"] == 1).all()
    # mismatch classification: plant a runner-up token and a far-off token at position 2 of two answers
    b1 = Backend(world["target"], world["tok"], batch=1, max_len=400)
    assert study.classify_mismatches(b1, world["frames"], world["qs"], df).empty      # all exact: nothing to classify
    greedy0 = df[(df.method == "greedy") & (df["sample"] == 0)].ids.iloc[0]
    logits = b1.prefill([world["qs"][0]], b1.encode([world["frames"][0]]), [b1.adapter.n_items(world["frames"][0])])[0]
    logits = b1.decoder.verify(torch.tensor([greedy0[:2]]))[0, 1]
    order = logits.argsort(descending=True).tolist()
    assert order[0] == greedy0[2]
    planted = df.copy()
    sd_rows = planted.index[(planted.method != "greedy") & (planted["sample"] == 0)]
    for idx, tok in zip(sd_rows, (order[1], order[50])):
        planted.at[idx, "ids"] = greedy0[:2] + [tok] + greedy0[3:]
        planted.at[idx, "exact"] = False
    tie = study.classify_mismatches(b1, world["frames"], world["qs"], planted, threshold=1e9)
    assert list(tie.position) == [2, 2] and list(tie.sd_token_rank) == [1, 50]
    assert list(tie.verdict) == ["near tie", "real bug"]                               # rank 50 is never a tie
    gap = float(logits[order[0]] - logits[order[1]])
    assert tie.margin.iloc[0] == pytest.approx(gap, rel=1e-4, abs=1e-4)
    strict = study.classify_mismatches(b1, world["frames"], world["qs"], planted, threshold=gap / 2)
    assert list(strict.verdict) == ["real bug", "real bug"]                            # margin above threshold
    # replay: one verify per trace step; its MAT is the trace's
    traces = evaluate(ngram, world["pairs"], 3).traces
    be1 = Backend(world["target"], world["tok"], batch=1, max_len=400)
    rep = study.replay(be1, world["frames"][0], world["qs"][0], world["pairs"], traces, ngram, repeats=1)
    assert list(rep.steps) == [t.steps for t in traces]
    s = study.replay_summary(rep)
    assert s["mat"] == pytest.approx(sum(len(p.target_ids) - 1 for p in world["pairs"]) / sum(t.steps for t in traces))
    assert s["speedup_ratio_of_means"] > 0 and s["drafter_ms_per_step"] >= 0
    # trees: the drafter's own tree verified per step, its accepted path kept; the greedy baseline
    # measured above is shared, and the cache ends holding prompt + every emitted token
    from helpers.study.drafters.lookup import KneserNeyPrior
    from helpers.study.event_camera import tree_traces
    kn = KneserNeyPrior(order=4).fit(world["pairs"][:2])
    base: dict = {}
    seen: list[int] = []                                    # an online drafter's hook: before each pair, in order
    study.replay(be1, world["frames"][0], world["qs"][0], world["pairs"], traces, ngram, repeats=1, baseline=base,
                 before=seen.append)
    assert seen == list(range(len(world["pairs"])))
    ttr = tree_traces(kn, world["pairs"], 6)
    tree = study.replay(be1, world["frames"][0], world["qs"][0], world["pairs"], ttr, kn, repeats=1,
                        tree_nodes=6, baseline=base)
    assert list(tree.steps) == [t.steps for t in ttr] and set(base) == {p.key for p in world["pairs"]}
    assert (tree.greedy_decode_ms.values == [base[p.key][1] for p in world["pairs"]]).all()
    n_prompt = len(be1.adapter.prompt_ids(world["qs"][0], 8))
    assert int(be1.decoder.lengths[0]) == n_prompt + len(world["pairs"][-1].target_ids)
