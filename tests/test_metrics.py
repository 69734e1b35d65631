"""Metrics against hand-computed cases and the seed report's printed samples."""
import json

import numpy as np
import pytest

from helpers.study import metrics
from conftest import DEV_PAIRS, require_shared

# The seed report's rows: "Adapter Output" (position i predicts target i+1) and "VL Actual"
# (which already starts at the target's second token).
SEED_SAMPLES = [
    dict(egpt=[512, 278, 9088, 29892, 727, 338, 263, 1559, 14089, 287, 373, 278, 2625, 310, 263],
         adapter=[1820, 3161, 297, 445, 9088, 3160, 263, 1559, 19500, 1623, 263, 11952, 29892, 263, 29892],
         vl=[1820, 3161, 297, 445, 9088, 3160, 263, 1559, 19500, 1623, 263, 281, 4015, 6520, 29892],
         accepted=11),
    dict(egpt=[450, 9088, 1401, 919, 29879, 263, 19716, 411, 263, 7962, 19405, 15284, 322, 2343, 4366],
         adapter=[1967, 1401, 263, 29879, 263, 263, 11952, 411, 263, 263, 19500, 1623, 278, 6520, 29889],
         vl=[1967, 5680, 263, 1559, 19500, 1623, 263, 281, 4015, 6520, 29892, 22047, 491, 10697, 322],
         accepted=1),
    dict(egpt=[450, 9088, 3697, 263, 1559, 19500, 373, 263, 6520, 411, 1790, 1559, 14432, 310, 372],
         adapter=[1967, 1401, 1048, 263, 1559, 19500, 1623, 263, 6520, 411, 263, 29892, 19500, 29889, 278],
         vl=[9088, 338, 1048, 263, 1559, 19500, 1623, 263, 281, 4015, 6520, 297, 263, 14378, 681],
         accepted=0),
]


@pytest.mark.parametrize("i", range(3))
def test_seed_report_leading_matches(i):
    s = SEED_SAMPLES[i]
    assert metrics.leading_matches(s["adapter"], s["vl"]) == s["accepted"]


@pytest.mark.parametrize("i", range(3))
def test_seed_samples_through_sd_simulation(i):
    """The same count falls out of the SD simulation's first verify step (gamma large enough)."""
    s = SEED_SAMPLES[i]
    target = [450] + s["vl"]                      # reinstate the prefill token
    correct = np.array(s["adapter"]) == np.array(target[1:])
    trace = metrics.simulate_sd(correct, gamma=15)
    assert trace.accepted[0] == s["accepted"]
    # token match as the study coded it: output i vs target i+1
    hits, total = metrics.token_match(np.array(s["adapter"]), target)
    assert total == 15 and hits == int(correct.sum())


def test_sample0_is_clip0_of_dev_pairs():
    doc = json.loads(require_shared(DEV_PAIRS).read_text())
    r = doc["results"][0]
    assert r["sample_idx"] == 0
    assert r["egpt_tokens"][:15] == SEED_SAMPLES[0]["egpt"]
    assert r["vl_tokens"][1:16] == SEED_SAMPLES[0]["vl"]


def test_token_topk_direct_hand_cases():
    target = [5, 6, 7, 8]
    preds = np.array([[6, 1], [0, 7], [8, 2]])    # predicts target[1:] = 6, 7, 8
    assert metrics.token_match(preds, target) == (2, 3)
    assert metrics.topk_match(preds, target) == (3, 3)
    assert metrics.direct_match([5, 9, 7], target) == (2, 4)   # missing 4th draft token = miss
    assert metrics.rate([(2, 3), (1, 1)]) == pytest.approx(0.75)


def test_simulate_sd_hand_case():
    # 9 target tokens -> 8 predictable positions
    correct = [1, 1, 0, 1, 1, 1, 1, 0]
    t = metrics.simulate_sd(correct, gamma=3)
    # step 1 at k=1: window c[0:3]=[1,1,0] -> 2 accepted + correction -> k=4
    # step 2 at k=4: window c[3:6]=[1,1,1] -> 3 accepted + bonus -> k=8
    # step 3 at k=8: remaining 1, window c[7:8]=[0] -> 0 accepted + 1 -> k=9
    assert t.accepted == [2, 3, 0] and t.emitted == [3, 4, 1]
    s = metrics.summarize_sd([t])
    assert s.mat == pytest.approx(8 / 3) and s.tau == pytest.approx(5 / 3)
    assert s.accept_hist == [1, 0, 1, 1]
    assert s.slot_acceptance[0] == pytest.approx(2 / 3)   # slot 1 accepted in 2 of 3 steps
    assert s.slot_acceptance[2] == pytest.approx(1 / 2)   # of the 2 reaching slot 3, 1 accepted


def test_all_correct_and_all_wrong():
    n = 49                                                  # 50 target tokens, 49 to produce
    t = metrics.simulate_sd([True] * n, gamma=5)
    assert t.accepted == [5] * 8 + [1] and t.emitted == [6] * 8 + [1]   # 8 full steps, then 1 token left
    assert t.drafted == [5] * 8 + [1]
    plain = metrics.summarize_sd([metrics.simulate_sd([False] * n, gamma=5)])
    assert plain.mat == 1.0 and plain.tau == 0.0 and plain.steps == n


def test_trace_invariants_on_random_correctness():
    """Every target token is produced exactly once; a step accepts no more than it drafted and
    drafts no more than gamma; only the last step may emit fewer than accepted + 1."""
    rng = np.random.default_rng(1)
    for _ in range(200):
        n, gamma = int(rng.integers(1, 40)), int(rng.integers(1, 8))
        proposed = rng.random(n) < 0.9
        correct = (rng.random(n) < 0.6) & proposed
        t = metrics.simulate_sd(correct, gamma, proposed)
        assert sum(t.emitted) == n
        assert all(0 <= a <= d <= gamma for a, d in zip(t.accepted, t.drafted))
        assert all(e == a + 1 for a, e in zip(t.accepted[:-1], t.emitted[:-1]))


def test_slot_acceptance_ignores_slots_never_drafted():
    """Regression: with fewer tokens left than gamma, the slots that were never drafted are not
    rejections (they used to count as 0.0)."""
    s = metrics.summarize_sd([metrics.simulate_sd([True, True], 5)])
    assert s.slot_acceptance[:2] == [1.0, 1.0] and all(np.isnan(s.slot_acceptance[2:]))
    assert s.mean_drafted == 2.0


def test_a_chain_stops_where_the_drafter_proposes_nothing():
    # proposals exist for positions 0, 1 only; the rest are -1 (e.g. draft tokens not yet streamed)
    t = metrics.simulate_sd([True, True, False, False], gamma=3, proposed=[True, True, False, False])
    assert t.drafted == [2, 0] and t.accepted == [2, 0] and t.emitted == [3, 1]   # the last step is a plain decode


def test_proposal_loop_equals_shortcut_for_prefix_dependent_drafter():
    """A drafter that conditions on the prefix: explicit propose/verify == correctness shortcut."""
    rng = np.random.default_rng(0)
    for _ in range(50):
        target = rng.integers(0, 4, size=rng.integers(2, 30)).tolist()

        def next_tok(prefix):                    # deterministic, prefix-dependent rule
            return (prefix[-1] * 3 + len(prefix)) % 4

        def propose(prefix, n):
            seq = list(prefix)
            for _ in range(n):
                seq.append(next_tok(seq))
            return seq[len(prefix):]

        correct = [next_tok(target[: i + 1]) == target[i + 1] for i in range(len(target) - 1)]
        for gamma in (1, 3, 5):
            a = metrics.simulate_sd(correct, gamma)
            b = metrics.simulate_sd_with_proposals(lambda step, prefix, n: propose(prefix, n), target, gamma)
            assert (a.drafted, a.accepted, a.emitted) == (b.drafted, b.accepted, b.emitted)


def test_leviathan_formulas():
    assert metrics.expected_tokens_per_step(0.0, 5) == 1.0
    assert metrics.expected_tokens_per_step(1.0, 5) == 6.0
    assert metrics.expected_tokens_per_step(0.5, 2) == pytest.approx(1.75)
    assert metrics.walltime_improvement(0.5, 2, 0.25) == pytest.approx(1.75 / 1.5)
    assert metrics.speedup_from_mat(3.0, 4, 0.5) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        metrics.expected_tokens_per_step(1.5, 5)
    with pytest.raises(ValueError):
        metrics.simulate_sd([True], gamma=0)


# --- token trees -------------------------------------------------------------------------

def test_tree_accepts_the_longest_matching_path_hand_case():
    # root children: 7 (node 0) and 5 (node 1); 5 -> 6 (node 2), 5 -> 9 (node 3); 6 -> 8 (node 4)
    nodes = [(-1, 7), (-1, 5), (1, 6), (1, 9), (2, 8)]
    assert metrics.tree_depths(nodes) == [1, 1, 2, 2, 3]
    assert metrics.accept_tree(nodes, [5, 6, 8, 1]) == 3      # 5 -> 6 -> 8
    assert metrics.accept_tree(nodes, [5, 9, 8]) == 2         # the sibling branch
    assert metrics.accept_tree(nodes, [5, 6]) == 2            # the continuation ends before node 4
    assert metrics.accept_tree(nodes, [6, 8]) == 0            # 6 is not a child of the root
    assert metrics.accept_tree([], [1, 2]) == 0
    # target 0 | 5 6 8 4 3: step 0 accepts 5 6 8 and the target adds 4 (k 1 -> 5); step 1 has 1 token left
    t = metrics.simulate_tree_sd(lambda s, prefix, n: nodes, [0, 5, 6, 8, 4, 3], n_nodes=5)
    assert t.accepted == [3, 0] and t.emitted == [4, 1] and t.drafted == [5, 2]   # depth > 1 dropped at the end
    assert metrics.summarize_sd([t]).mat == pytest.approx(5 / 2)


def test_tree_format_is_checked():
    with pytest.raises(ValueError, match="parent"):
        metrics.simulate_tree_sd(lambda s, p, n: [(0, 3)], [0, 3, 4], 2)        # a node cannot be its own parent
    with pytest.raises(ValueError, match="at most"):
        metrics.simulate_tree_sd(lambda s, p, n: [(-1, 3)] * 3, [0, 3, 4], 2)
    with pytest.raises(ValueError, match="n_nodes"):
        metrics.simulate_tree_sd(lambda s, p, n: [], [0, 3], 0)


def test_tree_of_a_chain_equals_the_chain_simulation():
    """A chain of n nodes proposed as a tree gives exactly the chain simulation at gamma = n, for a
    prefix-dependent drafter that also proposes nothing sometimes (a chain that stops early)."""
    rng = np.random.default_rng(3)
    for _ in range(60):
        target = rng.integers(0, 4, size=rng.integers(2, 30)).tolist()

        def propose(step, prefix, n):
            seq = list(prefix)
            for _ in range(n):
                if (seq[-1] + len(seq) + step) % 7 == 0:    # nothing to propose here
                    break
                seq.append((seq[-1] * 3 + len(seq)) % 4)
            return seq[len(prefix):]

        for n in (1, 3, 5):
            chain = metrics.simulate_sd_with_proposals(propose, target, n)
            tree = metrics.simulate_tree_sd(lambda s, p, k: metrics.chain_tree(propose(s, p, k)), target, n)
            assert (chain.drafted, chain.accepted, chain.emitted) == (tree.drafted, tree.accepted, tree.emitted)


def test_a_tree_with_every_token_at_the_root_accepts_at_least_one_per_step():
    rng = np.random.default_rng(4)
    for _ in range(40):
        target = rng.integers(0, 3, size=rng.integers(2, 25)).tolist()

        def tree(s, prefix, n):                       # a chain of 2, plus every other token at the root
            chain = [(prefix[-1] + 1) % 3, prefix[-1]]
            return metrics.chain_tree(chain) + [(-1, t) for t in range(3) if t != chain[0]]

        t = metrics.simulate_tree_sd(tree, target, 4)
        assert all(a >= 1 for a in t.accepted) and sum(t.emitted) == len(target) - 1
        assert all(d <= 4 for d in t.drafted)


def test_adaptive_gamma_grows_after_full_acceptance_and_shrinks_after_a_miss():
    c = [1, 1, 1, 0, 1, 1, 1, 1, 1, 1]
    t = metrics.simulate_sd(c, 2, adaptive=(1, 4))
    assert (t.drafted, t.accepted, t.emitted) == ([2, 3, 2, 3], [2, 0, 2, 3], [3, 1, 3, 3])
    assert metrics.simulate_sd(c, 2, adaptive=(2, 2)) == metrics.simulate_sd(c, 2)      # bounds at gamma: fixed gamma
    with pytest.raises(ValueError, match="adaptive bounds"):
        metrics.simulate_sd(c, 5, adaptive=(1, 4))


def test_simulate_sd_offsets_reads_each_chain_offset_from_its_own_row():
    c = [True, False, True, True, False, True]
    one = metrics.simulate_sd_offsets([c], gamma=3)
    ref = metrics.simulate_sd(c, gamma=3)
    assert (one.drafted, one.accepted, one.emitted) == (ref.drafted, ref.accepted, ref.emitted)
    # offset 0 always right, offset 1 never, offsets 2+ (the last row) always: 6 positions, gamma 3
    rows = [[True] * 6, [False] * 6, [True] * 6]
    t = metrics.simulate_sd_offsets(rows, gamma=3)
    # every step: the first draft accepted, the second rejected -> 1 accepted + the correction, k 1 -> 3 -> 5 -> 7
    assert t.accepted == [1, 1, 1] and t.emitted == [2, 2, 2]
    # a chain stops where its offset proposes nothing: offset 1 proposes nowhere
    p = metrics.simulate_sd_offsets([[True] * 6, [True] * 6], gamma=3, proposed=[[True] * 6, [False] * 6])
    assert p.drafted == [1, 1, 1] and p.accepted == [1, 1, 1]
    with pytest.raises(ValueError, match="shape"):
        metrics.simulate_sd_offsets([[True] * 6], 3, proposed=[[True] * 5])
