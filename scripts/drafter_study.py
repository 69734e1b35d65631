"""The drafter study on recorded pairs: what does the event camera's draft add over the best prior?

    PYTHONPATH=src python scripts/drafter_study.py --out /tmp/drafter_study.json \
        [--pairs ../shared/data/dsec_1q/pairs_dev.json] [--networks-from RUN/20_train_drafters]

Trains every drafter on the train part (60% of clips), makes every choice on the validation part
(settings, the best prior and the best draft reader, at each tree size too), evaluates the test part
(chains at gamma, full and streamed visibility with the 7B H200 costs; trees by size), bootstraps
the MAT ratio best reader / best prior by clip, runs learning curves and measures each drafter's
cost per propose call. Writes one JSON. `--networks-from` loads cross_modal / target_prior_neural
from a run's stage 20 (trained on the same split's train part) instead of training them here.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from helpers.study import alignment
from helpers.study import data as study
from helpers.study import event_camera as ec
from helpers.study.drafters import zoo
from helpers.suite.paths import _jsonable

LOOKUP_TREES = zoo.LOOKUP   # trees for the count drafters; a network's tree needs a forward pass per node


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", default="../shared/data/dsec_1q/pairs_dev.json")
    ap.add_argument("--out", required=True)
    ap.add_argument("--gamma", type=int, default=5)
    ap.add_argument("--names", nargs="*", default=list(zoo.LOOKUP) + ["target_prior_ngram", "cross_modal", "target_prior_neural",
                                                                     "draft_direct"])
    ap.add_argument("--networks-from", default="")
    ap.add_argument("--tree-sizes", type=int, nargs="*", default=[5, 10, 20, 40])
    ap.add_argument("--curve-sizes", type=int, nargs="*", default=[100, 200, 400, 0])
    ap.add_argument("--curve-names", nargs="*", default=list(zoo.LOOKUP) + ["target_prior_ngram"])
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--cost-calls", type=int, default=200)
    ap.add_argument("--cm-max-minutes", type=float, default=0.0,
                    help="wall-clock cap per network in minutes (0: none; they stop after 20 epochs, as in dsec_recorded)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    log = lambda *m: print(f"[{time.perf_counter() - t_start:6.0f}s]", *m, flush=True)   # noqa: E731

    pairs, vocab = study.read_recorded(a.pairs, ".")
    split = study.make_split(pairs, 0.6, 0.2)
    train, val, test = split.train, split.val, split.test
    recipe = zoo.Recipe(device="cpu", select_gamma=a.gamma, text_vocab=vocab, cm_epochs=20,
                        cm_max_minutes=a.cm_max_minutes, progress=False)
    with tempfile.TemporaryDirectory() as bare:       # no 03_inference there: the 7B pair's H200 costs
        streamed, stream_source = alignment.visibility(-1, -1, bare)
    out = {"pairs": a.pairs, "n": {"train": len(train), "val": len(val), "test": len(test)}, "gamma": a.gamma,
           "visibility": {"lead": streamed.lead, "rate": streamed.rate, "source": stream_source}}

    # --- train, every choice on validation -------------------------------------------------------
    drafters, summaries = {}, {}
    for name in a.names:
        ck = Path(a.networks_from) / zoo.checkpoint(".", name).name if a.networks_from else None
        if name in zoo.UNTRAINED:
            drafters[name], summaries[name] = zoo.load(".", name), {"stop_reason": "nothing to train"}
        elif name in ("cross_modal", "target_prior_neural") and ck is not None and ck.exists():
            drafters[name], summaries[name] = zoo.load(a.networks_from, name), {"loaded_from": str(ck)}
        else:
            drafters[name], summaries[name] = zoo.train(name, train, val, recipe, drafters)
        log("trained", name, summaries[name].get("stop_reason", summaries[name].get("loaded_from")))
    out["training"] = {n: {k: v for k, v in s.items() if k != "history"} for n, s in summaries.items()}
    needs = {n: d.needs for n, d in drafters.items()}

    val_full, _ = ec.chain_evals(drafters, val, a.gamma)
    val_mat = {n: e.sd.mat for n, e in val_full.items()}
    prior, reader = ec.best_of(val_mat, False), ec.best_of(val_mat, True)
    log("validation MAT", {n: round(v, 3) for n, v in val_mat.items()}, "-> prior", prior, "reader", reader)

    # --- test: chains -----------------------------------------------------------------------------
    test_full, test_stream = ec.chain_evals(drafters, test, a.gamma, streamed)
    log("test chains done")
    out["chain"] = {n: {"reads_draft": ec.reads_draft(n), "needs": needs[n], "val_mat": val_mat[n],
                        "test_mat_full": test_full[n].sd.mat, "test_mat_streamed": test_stream[n].sd.mat,
                        "test_token_match": test_full[n].token_match, "test_top5": test_full[n].top5}
                    for n in drafters}
    out["best"] = {"prior": prior, "reader": reader, "chosen_on": "validation MAT (chain, full visibility)"}
    out["ratio_chain"] = {
        "full": ec.ratio(test_full[reader].traces, test_full[prior].traces, test, a.n_boot),
        "streamed": ec.ratio(test_stream[reader].traces, test_stream[prior].traces, test, a.n_boot)}
    log("chain ratio", out["ratio_chain"])

    # --- each reader with another clip's draft: what its own clip's draft is worth (test pairs) ------
    readers = {n: d for n, d in drafters.items() if ec.reads_draft(n)}
    out["content_control"] = ec.content_control(readers, test, {n: test_full[n].traces for n in readers},
                                                a.gamma, a.n_boot)
    log("own draft vs another clip's", {n: round(r["ratio"], 4) for n, r in out["content_control"].items()})

    # --- the oracle bound on bag-of-words content (validation pairs) --------------------------------
    count_priors = [n for n in drafters if not ec.reads_draft(n) and hasattr(drafters[n], "dist")]
    if count_priors:
        op = max(count_priors, key=lambda n: val_mat[n])
        out["oracle"] = {"prior": op, "mat": val_mat[op], "bag": ec.oracle_content_mat(drafters[op], val, a.gamma),
                         "remaining": ec.oracle_content_mat(drafters[op], val, a.gamma, remaining=True)}
        log("oracle", out["oracle"])

    # --- trees: validation chooses the best prior and reader per size ------------------------------
    tree_names = {n: drafters[n] for n in drafters if n in LOOKUP_TREES}
    val_trees = ec.mat_table(ec.tree_sweep(tree_names, val, a.tree_sizes))
    out["tree"] = {"val_mat": val_trees.to_dict(), "by_size": {}}
    for k in a.tree_sizes:
        col = val_trees[k].to_dict()
        tp, tr = ec.best_of(col, False), ec.best_of(col, True)
        row = {"prior": tp, "reader": tr}
        for label, vis in (("full", ec.FULL), ("streamed", streamed)):
            a_tr = ec.tree_traces(drafters[tr], test, k, vis)
            b_tr = ec.tree_traces(drafters[tp], test, k, vis)
            row[label] = ec.ratio(a_tr, b_tr, test, a.n_boot)
        out["tree"]["by_size"][k] = row
        log("tree", k, row["prior"], row["reader"], round(row["full"]["mat_a"], 3), round(row["full"]["mat_b"], 3),
            round(row["streamed"]["mat_a"], 3), round(row["streamed"]["mat_b"], 3))

    # --- where the draft helps ----------------------------------------------------------------------
    gain = ec.position_gain(test_full[reader], test_full[prior], 50)
    out["position_gain"] = gain.reset_index().to_dict("records")

    # --- cost per call: the CPU, and the networks again on a GPU where there is one -------------------
    gpu = "cuda" if torch.cuda.is_available() else None
    cost = ec.cost_table(drafters, test, test_full[prior].traces, a.gamma, a.tree_sizes, a.cost_calls, gpu)
    out["cost_ms"] = ec.cost_records(cost)
    log("cost\n", cost.to_string())

    # --- learning curves -----------------------------------------------------------------------------
    def fit(name, tr, va, trained):
        return zoo.train(name, tr, va, recipe, trained)[0]
    curve = ec.learning_curve(a.curve_names, split, a.curve_sizes, fit, a.gamma)
    out["learning_curve"] = curve.to_dict("records")
    out["learning_curve_slope_per_doubling"] = ec.slope_per_doubling(curve)
    log("learning curve\n", curve.to_string())
    out["seconds"] = time.perf_counter() - t_start
    Path(a.out).write_text(json.dumps(_jsonable(out), indent=1, sort_keys=True))
    log("wrote", a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
