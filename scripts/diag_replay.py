"""Why the trace-driven replay's verify step (8.5 ms) costs more than a verify forward in a loop (5.5 ms).

Runs helpers.spec.study.replay on a few DSEC test pairs of a study run (runs/dsec_slim) with the
7B-shaped target as replay_7b builds it, then again with every verify / set_lengths / drafter call
wrapped in synchronised timers, and prints where the per-step time goes. Also times the decode
step with each cache attention. Writes $OUT/diag_replay.json.

    PYTHONPATH=src python scripts/diag_replay.py runs/dsec_slim
"""
import json
import os
import sys
import time
from collections import defaultdict

import torch

from helpers.models import shapes
from helpers.models.backend import Backend
from helpers.models.tokenizer import load_tokenizer
from helpers.spec import study as sd
from helpers.study import data as study_data
from helpers.study.drafters import FULL, evaluate, zoo
from helpers.suite.paths import stage_dir

run = sys.argv[1]
OUT = os.environ.get("OUT", "/tmp")
res = {}
tok = load_tokenizer("src/helpers/assets/synthetic_vlm/tokenizer")
pairs = study_data.load_study_data(run, parts=("test",)).split.test[:6]
model = shapes.video_llava_7b("cuda")
ad = shapes.adapter("target", model, tok)
q = pairs[0].question
n_prompt = len(ad.prompt_ids(q, 8))
pixel = shapes.random_inputs("target", 1)[0]
drafter = zoo.load(stage_dir(run, "20_train_drafters", create=False), "draft_copy")
ev = evaluate(drafter, pairs, 4, visibility=FULL)
for attention in ("auto", "matmul"):
    be = Backend(model, tok, 1, n_prompt + max(len(p.target_ids) for p in pairs) + 21 + 8, ad, compile=True,
                 attention=attention)
    df = sd.replay(be, pixel, q, pairs, ev.traces, drafter, repeats=3, gamma=4)
    res[attention] = sd.replay_summary(df)
    print(attention, json.dumps({k: round(v, 3) for k, v in res[attention].items()}), flush=True)
    # the same replay with every call of a step timed on its own (synchronised)
    dec = be.decoder
    acc = defaultdict(float)
    seq = []
    calls = defaultdict(int)

    def timed(name, fn):
        def w(*a, **k):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = fn(*a, **k)
            torch.cuda.synchronize()
            acc[name] += (time.perf_counter() - t0) * 1e3
            calls[name] += 1
            seq.append((name, round((time.perf_counter() - t0) * 1e3, 2)))
            return out
        return w
    dec.verify = timed("verify", dec.verify)
    dec.set_lengths = timed("set_lengths", dec.set_lengths)
    drafter.propose = timed("propose", drafter.propose)
    orig_ctx = sd.DraftContext
    sd.DraftContext = timed("DraftContext", orig_ctx)
    df2 = sd.replay(be, pixel, q, pairs, ev.traces, drafter, repeats=1, gamma=4)
    sd.DraftContext = orig_ctx
    del drafter.propose
    res[attention + "_per_call_ms"] = {k: acc[k] / calls[k] for k in acc}
    res[attention + "_timed_summary"] = sd.replay_summary(df2)
    res[attention + "_sequence"] = seq[:400]
    print([x for x in seq if x[0] == "verify"][:80], flush=True)
    print(attention, "per call", json.dumps({k: round(v, 3) for k, v in res[attention + "_per_call_ms"].items()}),
          "verify_step", round(res[attention + "_timed_summary"]["verify_step_ms"], 3), flush=True)
    del be, dec
    torch.cuda.empty_cache()
    with open(os.path.join(OUT, "diag_replay.json"), "w") as f:
        json.dump(res, f, indent=1)
