"""Findings and recommendations written from a run's results, by thresholds — never fixed prose.

`findings(data, train, align)` takes the stages' results.json dicts and returns `Finding`s whose
wording depends on the numbers (and whose numbers are formatted from them), so a rerun on other
data cannot leave a stale sentence behind. The drafter they lead with and the gamma they
recommend are the ones chosen on validation by the alignment chapter; the numbers they quote are
the test pairs'. Pure functions: tested on hand-made results.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from helpers.study.literature import STUDY_1Q_TOKEN_MATCH, STUDY_E2E
from helpers.study.metrics import speedup_from_mat


@dataclass
class Finding:
    title: str
    text: str                # the answer, first
    recommendation: str = ""
    headline: str = ""  # one sentence for the landing page ("" = not a headline)
    details: list[tuple[str, str]] = field(default_factory=list)   # (label, sentences): the evidence, one bullet each

    @property
    def body(self) -> str:
        """The answer and its evidence as one paragraph (what the page shows, without the bullets)."""
        return " ".join([self.text] + [d for _, d in self.details])


def _adder(details: list[tuple[str, str]]):
    """`add(label, sentences)`: a bullet of evidence, or more sentences for the bullet just added."""
    def add(label: str, sentences: str) -> None:
        sentences = sentences.strip()
        if details and details[-1][0] == label:
            details[-1] = (label, f"{details[-1][1]} {sentences}")
        else:
            details.append((label, sentences))
    return add


def _interval(c: dict, key: str) -> str:
    return f"{c[key]:+.3f} (95% interval {c[key + '_lo']:+.3f} to {c[key + '_hi']:+.3f})"


def _verdict(c: dict) -> int:
    """+1: the interval of the MAT difference lies above zero, -1: below, 0: contains zero."""
    return 1 if c["mat_diff_lo"] > 0 else -1 if c["mat_diff_hi"] < 0 else 0


def draft_content(align: dict) -> Finding:
    """Does the draft model's output add to what the target's own prefix predicts?"""
    comps, d = align.get("comparisons", {}), align["drafters"]
    key = next((k for k in ("cross_modal - target_prior_ngram", "cross_modal - target_prior_neural") if k in comps), None)
    title = "What the event-camera draft adds"
    if key is None:
        return Finding(title, "Not measured: this run did not train both `cross_modal` and a content-free prior.",
                       "Train `cross_modal` with a prior to answer the study's question.")
    c, a, b = comps[key], *key.split(" - ")
    rel = c["mat_diff"] / d[b]["mat"]
    if _verdict(c) > 0:
        text = (f"Reading the draft's output helps{', modestly' if rel < 0.1 else ''}: with the draft finished, `{a}` "
                f"accepts more per verify step than `{b}`, MAT difference {_interval(c, 'mat_diff')}, "
                f"{rel:+.1%} of the content-free drafter's MAT.")
        rec = "Keep the draft model in the loop; its content is worth the extra input."
        head = f"The event-camera draft's content adds {rel:+.1%} MAT over the content-free `{b}`."
    elif _verdict(c) < 0:
        text = (f"Reading the draft's output hurts: `{a}` accepts less than `{b}`, MAT difference "
                f"{_interval(c, 'mat_diff')}: the network overfits the draft with this little data.")
        rec = "Use the content-free prior, or train the cross-modal drafter on more pairs."
        head = f"Reading the event-camera draft costs {-rel:.1%} of the MAT a content-free drafter reaches."
    else:
        text = (f"No detectable gain from the draft's content: `{a}` vs `{b}` differ by {_interval(c, 'mat_diff')} "
                f"in MAT and {_interval(c, 'token_match_diff')} in token match over {c['n_clips']} test clips.")
        rec = ("Most of what any drafter gets right is the target's own phrasing, which its accepted prefix "
               "already predicts; to gain from the event camera, condition on the draft's content more "
               "directly (hidden states rather than tokens) or use more training pairs.")
        head = "The event-camera draft's content makes no detectable difference to acceptance over a content-free drafter."
    s = comps.get(f"{key} (streamed)")
    if s is not None:
        word = {1: "still helps", -1: "hurts", 0: "makes no detectable difference"}[_verdict(s)]
        text += (f" With the draft still streaming in, it {word}: MAT difference {_interval(s, 'mat_diff')}.")
    return Finding(title, text, rec, head)


def seed_adapter(align: dict, data: dict) -> Finding | None:
    d = align["drafters"]
    if "seed_token_adapter" not in d:
        return None
    s = d["seed_token_adapter"]
    n_train = data.get("split", {}).get("train", "?")
    gap = min((s["token_match"] - v for v in STUDY_1Q_TOKEN_MATCH.values()), key=abs)
    text = (f"The study's TokenAdapter reaches token match {s['token_match']:.1%} (top-5 {s['top5']:.1%}) on "
            f"{s['n_pairs']} test pairs after training on {n_train} pairs; the study reported "
            f"{STUDY_1Q_TOKEN_MATCH[200]:.1%} with 200 and {STUDY_1Q_TOKEN_MATCH[5200]:.1%} with 5,200 training pairs "
            "on its own test split, which also chose its checkpoints: "
            + ("within 3 points." if abs(gap) <= 0.03 else f"{100 * gap:+.1f} percentage points from the nearer of the two."))
    prior = d.get("target_prior_ngram")
    rec = ""
    if prior is not None and prior["mat"] > s["mat"]:
        text += (f" Yet in SD it accepts MAT {s['mat']:.2f}, below the content-free n-gram prior's {prior['mat']:.2f}: "
                 "it never sees the target's accepted prefix, so one early miss misaligns every later draft.")
        rec = "Do not use a drafter that ignores the target's accepted prefix; condition on it."
    return Finding("The study's TokenAdapter, reproduced", text, rec)


def visibility(align: dict) -> Finding:
    """What it costs that the draft model's answer arrives over time."""
    d, v, best = align["drafters"], align["visibility"], align["headline"]
    b = d[best]
    loss = 1 - b["mat_streamed"] / b["mat"]
    readers = [n for n, r in d.items() if r["mat_streamed"] < r["mat"] - 1e-9]
    same = abs(loss) < 0.0005
    text = (f"If the draft model's tokens arrive while the target verifies (lead {v['lead']:.1f} tokens, "
            f"{v['rate']:.2f} per verify step, from {v['source']}), `{best}` accepts MAT {b['mat_streamed']:.2f} "
            + ("with the draft streaming as with it finished. " if same else
               f"instead of {b['mat']:.2f} with the draft finished ("
               + (f"{loss:.1%} less). " if loss > 0 else f"{-loss:.1%} more). "))
            + (f"Drafters that lose acceptance when the draft streams: {', '.join(f'`{n}`' for n in readers)}."
               if readers else "No drafter loses acceptance: none depends on draft tokens that arrive late."))
    rec = ("Report streamed-visibility numbers for any drafter that reads the draft's tokens: a finished draft "
           "before the first verify step is an assumption the real system does not meet." if readers else "")
    return Finding("Draft visibility", text, rec)


def speed(align: dict) -> Finding:
    """What the headline drafter's acceptance implies for speed at the validation-chosen gamma."""
    best, gc = align["headline"], align["gamma_choice"]
    b, g, c = align["drafters"][best], gc["gamma"], gc["cost_ratio_c"]
    mats = {int(k): v for k, v in b["mat_by_gamma"].items()}
    text = (f"The drafter chosen on validation, `{best}`, accepts MAT {b['mat']:.2f} (tau {b['tau']:.2f}) on the test "
            f"pairs at gamma = {align['gamma']}. Lossless SD pays off only while a drafter step costs less than "
            f"(MAT - 1) / gamma = {(b['mat'] - 1) / align['gamma']:.3f} of a target decode step.")
    rec = f"Draft {g} token(s) per verify step (chosen on validation for a drafter step of c = {c:g} target steps)"
    if g in mats:
        sp = speedup_from_mat(mats[g], g, c)
        rec += f": the test MAT there, {mats[g]:.2f}, implies a decode-phase speedup of {sp:.2f}x."
        head = (f"`{best}` (chosen on validation) accepts MAT {mats[g]:.2f} per verify step on the test pairs at "
                f"gamma {g}: an implied decode-phase speedup of {sp:.2f}x for c = {c:g}.")
    else:
        rec += "."
        head = ""
    return Finding("What speculative decoding can gain", text, rec + " This is arithmetic from an assumed cost "
                   "ratio, not a measured wall-clock speedup.", head)


def recommends_recent(ev: dict | None) -> bool:
    """Whether chapter 35's validation pairs prefer drafting from the target's latest answers
    (`target_prior_recent`) to both the prior without a store and the every-N store: the one place
    this choice is made (the test pairs only report its figure)."""
    rc = (ev or {}).get("recent")
    if not rc:
        return False
    vm = rc["validation_mat"]
    return vm["prior"] > max(vm["offline"], vm.get("store") or 0)


def measured_speed(align: dict, spec: dict, event: dict | None = None) -> Finding:
    """What the measurements of the speculative-decoding chapter say (replaces the arithmetic of
    `speed` when the run has them): the configuration chosen on validation (its drafter, as a chain
    of its gamma), replayed at 7B shape on the recorded test traces, end to end with the prefill,
    against greedy on the same loop; the other measured shapes (token trees, adaptive gamma), the
    batch sizes and transformers' generate as context, never as a choice made on test figures;
    losslessness end to end. When the replay has the latest-answers prior, its figure is reported;
    when chapter 35 (`event`) recommends that prior on its validation pairs, the recommendation and
    the headline serve it."""
    from helpers.spec.study import highlight
    rep = spec["replay"]
    chain_key, tree_key = highlight(rep)
    name = chain_key.split("|")[0]
    b = rep["drafters"][chain_key]["summary"]
    text = (f"Measured at 7B shape on an {rep['device']} (trace-driven on the recorded test pairs, compiled decode "
            f"loop, batch 1, gamma = {rep['gamma']}): `{name}`, "
            + (("the drafter chosen on validation" if name == align["headline"] else
                f"the drafter the replayed study run chose on validation (this run chose `{align['headline']}`)")
               if rep.get("chosen") == name else "the first drafter replayed")
            + ", with the draft "
            f"finished gives {b['speedup_ratio_of_means']:.2f}x end to end with the prefill "
            f"({b['decode_speedup_ratio_of_means']:.2f}x in the decode phase) at MAT {b['mat']:.2f}. The original "
            f"study measured {STUDY_E2E['speedup']:.2f}x.")
    details: list[tuple[str, str]] = []
    add = _adder(details)
    add("Where the time goes", f"A chain's verify step costs {b['verify_step_ms']:.2f} ms against "
        f"{b['decode_step_ms']:.2f} ms for a decode step, the drafter {b['drafter_ms_per_step']:.2f} ms, and the "
        f"prefill ({b['prefill_ms']:.0f} ms) is not shortened by any drafter.")
    if tree_key:
        t = rep["drafters"][tree_key]["summary"]
        add("Token trees", f"Proposing token trees of {t['tree_nodes']} nodes, `{name}` reaches MAT {t['mat']:.2f} and "
            f"{t['speedup_ratio_of_means']:.2f}x (its tree costs {t['drafter_ms_per_step']:.2f} ms to draft and "
            f"{t['verify_step_ms']:.2f} ms to verify per step).")
    online = rep["drafters"].get("target_prior_recent|full|online")
    latest = online["summary"] if online else None
    serve_latest = latest is not None and recommends_recent(event)
    if latest:
        add("The latest answers", f"Drafting from the target's latest answers to the same question (`target_prior_recent`, its "
            "settings chosen on validation; the store starting empty at the first replayed pair and taking each "
            f"answer in before the next): MAT {latest['mat']:.2f} and {latest['speedup_ratio_of_means']:.2f}x end "
            f"to end, its propose call {latest['drafter_ms_per_step']:.2f} ms per step.")
    hf = rep.get("hf_generate")
    if hf:
        add("Against transformers' `generate`", f"The same answers come {hf['sd_vs_hf']:.1f}x faster, "
            f"{hf['greedy_vs_hf']:.1f}x of it from the compiled loop alone.")
    batched: dict[str, dict[int, float]] = {}          # drafter -> batch -> SD / greedy throughput
    for k, v in rep.get("batched", {}).items():
        batched.setdefault(k.split("|")[0], {})[v["summary"]["batch"]] = v["summary"]["throughput_ratio"]
    if batched:
        order = sorted(batched, key=lambda n: n == "target_prior_recent")          # the latest answers last
        add("Batched", "SD's throughput over batched greedy is " + "; ".join(
            ", ".join(f"{r:.2f}x at batch {bt}" for bt, r in sorted(batched[n].items())) + f" with `{n}`"
            + (" (its store taking in each batch's answers before the next batch)" if n == "target_prior_recent" else "")
            for n in order) + ".")
    served = "target_prior_recent" if serve_latest else name
    bname = served if served in batched else name if name in batched else next(iter(batched), None)
    cross = min((bt for bt, r in batched.get(bname, {}).items() if r < 1), default=None)
    top = max(batched.get(bname, {}), default=1)                  # the largest batch measured
    fade = f"; batched, its gain fades to {batched[bname][top]:.2f}x at batch {top}" if bname == served and top > 1 else ""
    gpu = spec.get("gpu_seconds") or []
    if gpu:
        g = gpu[-1]
        add("Two GPUs", f"With the draft model on a second GPU, an answer takes {g['GPU-seconds vs greedy']:.2f} times "
            "greedy's GPU-seconds.")
    e2e = spec.get("end_to_end")
    if e2e:
        add("Lossless", f"End to end on this run's own models ({e2e['where']}), {e2e['exact_match']:.1%} of the speculative "
            "answers equal the target's greedy answers.")
    best = (latest if serve_latest else b)["speedup_ratio_of_means"]
    what = ("`target_prior_recent` (the target's latest answers, recommended above on validation)" if serve_latest
            else f"`{name}`")
    rec = (f"Serve {what} with chains of gamma {rep['gamma']} (chosen on validation) on a compiled "
           "decode loop, " + ("for latency at small batches: speculative decoding pays here"
                             + (f", not from batch {cross} on, where batched greedy's throughput is higher"
                                + (f" (measured with `{bname}`)" if bname != served else "")
                                if cross else fade)
                             + "." if best > 1.05 else
                             "only after improving the drafter: at these acceptance rates speculative decoding does not pay."))
    head = (f"Measured end to end at 7B shape on the recorded DSEC traces: `{name}` makes Video-LLaVA answer "
            f"{b['speedup_ratio_of_means']:.2f}x faster with the same output (prefill included)"
            + (f", drafting from the target's latest answers {latest['speedup_ratio_of_means']:.2f}x" if serve_latest else "")
            + f", against the original study's {STUDY_E2E['speedup']:.2f}x.")
    return Finding("Measured speed", text, rec, head, details)


def iid_model(align: dict) -> Finding:
    best = align["headline"]
    b = align["drafters"][best]
    ratio = b["mat"] / b["mat_iid"]
    direction = ("more tokens per step than" if ratio > 1.05 else "fewer tokens per step than" if ratio < 0.95
                 else "about as many tokens per step as")
    return Finding("Leviathan's i.i.d. model as a predictor",
                   f"For `{best}` the measured MAT is {b['mat']:.2f} against {b['mat_iid']:.2f} predicted from its "
                   f"token match as i.i.d. acceptance: {direction} independence predicts (ratio {ratio:.2f}).",
                   "Report measured MAT from exact SD; do not convert token match into speedups with the i.i.d. formula."
                   if abs(ratio - 1) > 0.05 else "")


def training(train: dict) -> Finding | None:
    still = [n for n, s in train.get("drafters", {}).items()
             if s.get("best_epoch") and s.get("epochs_run") and s["best_epoch"] >= s["epochs_run"] - 1
             and "no validation improvement" not in str(s.get("stop_reason", ""))]
    if not still:
        return None
    return Finding("Training budget", "Still improving when training stopped: " + ", ".join(f"`{n}`" for n in still)
                   + " (the best validation epoch is the last or second to last).",
                   "Give these drafters more epochs or time (e.g. on a GPU) before reading their numbers as final.")


def _ratio_verdict(r: dict, bar: float) -> str:
    """'bar': the interval of the MAT ratio lies at or above the bar; 'gain': above 1 but not all
    above the bar; 'none': it contains 1; 'loss': it lies below 1."""
    return "bar" if r["lo"] >= bar else "gain" if r["lo"] > 1 else "loss" if r["hi"] < 1 else "none"


def _ratio_text(r: dict) -> str:
    return f"{r['ratio']:.3f}x (95% interval {r['lo']:.3f} to {r['hi']:.3f}; MAT {r['mat_a']:.2f} vs {r['mat_b']:.2f})"


def _feature_pays(ev: dict, chosen: str, prior: str, ratio: dict) -> dict | None:
    """Whether the feature drafter `chosen` (test MAT ratio[mat_a]) is faster at a 7B step than
    `prior` (ratio[mat_b]) at their measured costs per chain (speedup_from_mat: a verify step as
    long as a decode step, the chain drafted between steps): the GPU cost of a network (this run's
    table, else the GPU run's file, "gpu_cost_ms"), the host CPU cost of the prior from the same
    table; None where the costs are not at hand. break_even: the chain cost under which `chosen`
    pays at this step; step_even: the target step (ms) above which it pays at these costs (equal
    speedups: mat_a (t + c_p) = mat_b (t + c_f)); 0 where it pays at any step, inf where at none."""
    step, gamma = ev["target_step_ms"], ev["gamma"]
    for table, where in ((ev.get("cost_ms") or {}, "here"), (ev.get("gpu_cost_ms") or {}, ev.get("gpu_cost_from"))):
        f, p = table.get(chosen, {}), table.get(prior, {})
        c_f = f.get("chain (GPU)") if f.get("runs") == "network" else f.get("chain (CPU)")
        c_p = p.get("chain (CPU)")
        if c_f is not None and c_p is not None:
            break
    else:
        return None
    net = (table.get("draft_features") or {}).get("chain (GPU)") if chosen.startswith("draft_features") else None
    sp_f, sp_p = (speedup_from_mat(m, gamma, c / gamma / step) for m, c in ((ratio["mat_a"], c_f), (ratio["mat_b"], c_p)))
    on = "on the GPU" if f.get("runs") == "network" else "on the host CPU"
    src = "" if where == "here" else f" (measured on the GPU machine: {where})" if where else " (measured on the GPU machine)"
    text = (f"it costs {c_f:.2f} ms per chain of {gamma} {on}{src} against {c_p:.2f} ms for `{prior}`, which at a "
            f"{step:.1f} ms 7B step (a verify step taken as long) implies {sp_f:.2f}x over greedy decoding against "
            f"{sp_p:.2f}x")
    gain, extra = ratio["mat_a"] - ratio["mat_b"], ratio["mat_b"] * c_f - ratio["mat_a"] * c_p
    step_even = math.inf if gain <= 0 else max(0.0, extra / gain)
    return {"feature": sp_f, "prior": sp_p, "text": text, "net": net, "step_even": step_even, "cost": c_f,
            "break_even": ratio["mat_a"] / ratio["mat_b"] * (step + c_p) - step}


def event_camera(ev: dict, bar: float = 1.15) -> Finding:
    """What the event camera's draft adds, from chapter 35's results: the MAT ratio of the best draft
    reader to the best content-free prior (both chosen on validation) at gamma with its clip-bootstrap
    interval, full and streamed; token trees; learning curves; the drafters' own cost per call."""
    best, rc = ev["best"], ev["ratio_chain"]
    reader, prior = best["reader"], best["prior"]
    full, stream = rc["full"], rc["streamed"]
    v, vs = _ratio_verdict(full, bar), _ratio_verdict(stream, bar)
    lead = {"bar": f"meets the bar of {bar:.2f}x", "gain": f"helps, but stays below the bar of {bar:.2f}x",
            "none": "makes no difference this test split can detect", "loss": "does worse than the prior"}[v]
    text = (f"The best draft reader chosen on validation, `{reader}`, against the best content-free prior, `{prior}`, "
            f"at gamma = {ev['gamma']} with the draft finished: {_ratio_text(full)}. Reading the event camera's draft "
            f"{lead}. With the draft streaming in: {_ratio_text(stream)}, "
            + {"bar": "still at the bar.", "gain": "still ahead of the prior.", "none": "no detectable difference.",
               "loss": "behind the prior."}[vs])
    details: list[tuple[str, str]] = []
    add = _adder(details)
    o = ev.get("oracle") or {}
    if o:
        add("Bounds", f"An oracle told which tokens the target's answer contains lifts `{o['prior']}` to "
            f"{o['bag'] / o['mat']:.2f}x its validation MAT ({o['remaining'] / o['mat']:.2f}x when told the "
            "tokens still to come): a bound on what the draft's words could add.")
        if "retrieval" in o:
            add("Bounds", f"Retrieval keyed by the target's own answer, as if the draft named the clip perfectly, reaches "
                f"{o['retrieval'] / o['mat']:.2f}x: a bound on what retrieving training answers could add.")
        if "perfect_draft" in o:
            add("Bounds", "A draft model that perceived every clip perfectly (each draft its reference caption) would "
                f"take `draft_retrieval` to {o['perfect_draft'] / o['mat']:.2f}x the prior's validation MAT.")
    agree = {r["facts"]: r for r in ev.get("fact_agreement") or []}
    if agree:
        from helpers.study.event_camera import FACT_LABELS
        add("What the draft names", "Of the facts the draft names, the target's answer names " + "; ".join(
            f"{r['agreement']:.0%} of the {FACT_LABELS.get(f, f)} (lift {r['lift']:.2f} over a draft of another clip)"
            for f, r in agree.items() if r["lift"] == r["lift"]) + " on the training pairs.")
    own = (ev.get("content_control") or {}).get(reader)
    if own:
        cv = _ratio_verdict(own, bar)
        add("This clip's draft", f"`{reader}` reading each pair's own draft against the same drafter given the draft of a "
            f"clip half the recording away: {_ratio_text(own)}; "
            + {"bar": "the clip's content carries the reader.", "gain": "the clip's content adds that much through it.",
               "none": "no difference this test split can detect, so it cannot credit the reader's gain or loss "
                       "against the prior to what the draft says about the clip.",
               "loss": "the clip's own draft misleads it."}[cv])
    trees = ev.get("tree", {}).get("by_size", {})
    if trees:
        k = max(trees, key=lambda n: int(n))
        t = trees[k]["full"]
        add("Token trees", f"With token trees of {int(k)} nodes the best prior accepts MAT {t['mat_b']:.2f} instead of "
            f"{full['mat_b']:.2f} for a chain, and the draft reader {t['mat_a']:.2f}: ratio {_ratio_text(t)}.")
    slope = ev.get("learning_curve_slope_per_doubling")
    sizes = sorted({r["train pairs"] for r in ev.get("learning_curve", [])})
    if slope is not None and slope == slope and len(sizes) > 1:
        trend = ("grows" if slope > 0.01 else "shrinks" if slope < -0.01 else "stays flat")
        refitted = {r.get("drafter") for r in ev["learning_curve"]}
        lc = (f" From {sizes[0]:,} to {sizes[-1]:,} training pairs the ratio"
                 + ("" if reader in refitted else f" (among the drafters refitted per size, which `{reader}` is not)")
                 + f" {trend} ({slope:+.3f} per doubling of the data)")
        at = {int(n): v for n, v in ev.get("learning_curve_line_at", {}).items() if v == v}
        if at:
            lc += "; the line reads " + " and ".join(
                f"{v:.2f} at {n:,} pairs ({'inside the measured sizes' if n <= sizes[-1] else f'extrapolated to {n / sizes[-1]:.0f} times the largest size measured'})"
                for n, v in sorted(at.items()))
        lc += f"; continuing it beyond {sizes[-1]:,} pairs is an extrapolation, not a measurement."
        add("More data", lc)
    feat = ev.get("draft_features")
    fret = (feat or {}).get("retrieval")
    fmix = (feat or {}).get("mix")
    # the feature drafter the recommendation may name: chapter 35 picks it by validation MAT, never by test
    chosen = (feat or {}).get("chosen") or ("draft_feature_retrieval" if fret else None)
    mix_gain = bool(fmix) and fmix.get("gain_on_validation", fmix["weight"] > 0)   # above the prior alone on validation
    chosen_ratio = (fmix["ratio_vs_prior"] if mix_gain and chosen == fmix["name"] else
                    fret["ratio_vs_prior"] if fret and chosen == "draft_feature_retrieval" else None)
    fv_chosen = _ratio_verdict(chosen_ratio, bar) if chosen_ratio else None
    fv_ret = _ratio_verdict(fret["ratio_vs_prior"], bar) if fret else None
    if fret:
        add("Hidden states", "Retrieval keyed by the draft model's hidden states instead of its words (`draft_feature_retrieval`: "
            "they exist after its prefill, so a streaming draft costs it nothing) against "
            f"`{prior}`: {_ratio_text(fret['ratio_vs_prior'])}; "
            + {"bar": "the hidden states carry the scene", "gain": "the hidden states help where the words do not"
               if v in ("none", "loss") else "the hidden states help",
               "none": "no difference this test split can detect", "loss": "behind the prior"}[fv_ret] + ".")
    if feat:
        r = feat["ratio_vs_ablation"]
        fv = _ratio_verdict(r, bar)
        add("Hidden states", "Drafting from the draft model's hidden states instead of its words (`draft_features`, available "
            "after its prefill, before any draft token) against the same network with the features zeroed: "
            f"{_ratio_text(r)}; "
            + {"bar": "the features carry the scene", "gain": "the features help",
               "none": "the features add nothing this test split can detect",
               "loss": "the features hurt"}[fv]
            + (" in this run (both networks train under a wall-clock budget: repeat it before relying on its sign)."
               if feat.get("max_minutes") else " in this run (one seed on few pairs: repeat it with other seeds "
               "before relying on its sign).")
            + f" Against `{feat['prior']}` it reaches {feat['mat']['draft_features'] / feat['prior_mat']:.2f}x "
              "its MAT.")
    if fmix and not mix_gain:
        add("Hidden states", f"Mixed with `{fmix['prior']}`, the hidden-state network scores no higher on validation than the prior "
            "alone at any weight.")
    elif fmix:
        fv_mix = _ratio_verdict(fmix["ratio_vs_prior"], bar)
        add("Hidden states", f"Mixed with `{fmix['prior']}` (the network weighted {fmix['weight']:g}, chosen on validation), the "
            f"hidden-state network against `{prior}`: {_ratio_text(fmix['ratio_vs_prior'])}; "
            + {"bar": "the hidden states carry the scene", "gain": "the hidden states add to the prior",
               "none": "no difference this test split can detect", "loss": "behind the prior"}[fv_mix]
            + f". Against the same mixture with the features zeroed: {_ratio_text(fmix['ratio_vs_ablation'])}.")
        won = [r for r in fmix.get("token_wins") or [] if r["net"] > 0][:5]
        if won:
            add("Hidden states", "The target tokens it gets right most often where the prior does not (teacher-forced, test pairs): "
                + ", ".join(f"'{r['token'].strip()}' ({r['reader wins']} against {r['prior wins']})" for r in won) + ".")
    fcc = ((feat or {}).get("content_control") or {}).get(chosen)
    if fcc:
        add("Hidden states", f"`{chosen}` (the hidden-state drafter validation prefers) with each pair's own hidden states "
            f"against those of a clip half the recording away, asked the same question: {_ratio_text(fcc)}; "
            + {"bar": "what the draft model saw in this clip carries it", "gain": "what the draft model saw in this clip "
               "adds that much, beyond the question its hidden states also encode",
               "none": "no difference this test split can detect, so nothing it gains or loses can be credited to what "
                       "the draft model saw in this clip", "loss": "the clip's own hidden states mislead it"}[_ratio_verdict(fcc, bar)] + ".")
    hd = (feat or {}).get("heads") if mix_gain else None
    hpays = _feature_pays(ev, hd["name"], prior, hd["ratio_vs_prior"]) if hd and ev.get("target_step_ms") else None
    # whether to recommend the one-pass drafter is decided on validation MAT at the measured costs, never on test
    hpays_val = (_feature_pays(ev, hd["name"], prior, {"mat_a": hd["val_mat"], "mat_b": ev["val_mat"][prior]})
                 if hpays and prior in ev.get("val_mat", {}) else None)
    if hd:
        add("Hidden states", f"The same mixture drafting its chain from one network pass (`{hd['name']}`: {hd['n_heads']} heads for "
            "the tokens after the next on the frozen network, weights chosen on validation) against "
            f"`{prior}`: {_ratio_text(hd['ratio_vs_prior'])}" + (f"; {hpays['text']}" if hpays else "") + ".")
    on = ev.get("online")
    lift = on["online_mat"][on["prior"]] / on["offline_mat"][on["prior"]] if on else None   # the store alone
    if on:
        add("The target's earlier answers", f"An online datastore of the target's own earlier answers (taken in every {on['every']} pairs, as a "
            f"deployment answering clip after clip has them) lifts `{on['prior']}` {lift:.2f}x; "
            f"with it the best reader `{on['reader']}` against that prior: {_ratio_text(on['ratio'])}.")
    rc = ev.get("recent")
    if rc:
        corr = "; ".join(f"r = {c:.2f} on the {part} pairs" for part, c in rc["similarity_corr"].items() if c == c) \
            or "too few consecutive pairs to tell"
        add("The target's earlier answers", f"Taking each answer into the store before the next clip and drafting from the latest answers to the "
            f"same question (`target_prior_recent`, content-free): {rc['ratio_prior_vs_offline']['ratio']:.2f}x "
            f"`{rc['offline_prior']}`'s test MAT without a store; weighing those answers by the draft's resemblance "
            f"(`draft_recent`) against it: {_ratio_text(rc['ratio_reader_vs_prior'])}. Whether the draft answer "
            f"changes with the target's between consecutive clips: {corr}.")
    cost = ev.get("cost_ms", {})
    step = ev.get("target_step_ms")
    def share(c):
        return f"{c / step:.0%} of" if c < step else f"{c / step:.1f} times"
    if reader in cost and step:
        c, g = cost[reader]["chain (CPU)"], cost[reader].get("chain (GPU)")
        add("Cost", f"`{reader}` costs {c:.2f} ms per chain of {ev['gamma']} drafts on the CPU, "
            f"{share(c)} a {step:.1f} ms compiled 7B target decode step"
            + (f" ({g:.2f} ms on the GPU, {share(g)} it)." if g is not None else "."))
    if v == "bar":
        rec = f"Use `{reader}`: the event camera's draft adds at least {bar - 1:.0%} MAT over the best prior."
        head = (f"Reading the event-camera draft, `{reader}` lifts MAT {full['ratio']:.2f}x over the best "
                f"content-free drafter, `{prior}`.")
    elif v == "gain":
        rec = (f"Use `{reader}` where its cost per call is small next to a target step; the draft's content helps "
               f"but by less than {bar - 1:.0%} of MAT.")
        head = (f"Reading the event-camera draft, `{reader}` lifts MAT {full['ratio']:.2f}x over `{prior}`, "
                f"below the {bar:.2f}x bar.")
    elif fv_chosen in ("bar", "gain"):
        fr = chosen_ratio
        mixed = bool(fmix) and chosen == fmix["name"]
        how = ("mix a network that reads its hidden states with the prior (`{}`, the network weighted {:g})".format(
            chosen, fmix["weight"]) if mixed else "key the datastore by its hidden states (`draft_feature_retrieval`)")
        what = (f"`{chosen}` (the network that reads them, mixed with the prior)" if mixed else
                "`draft_feature_retrieval` (the datastore keyed by them)")
        pays = _feature_pays(ev, chosen, prior, fr) if step else None
        if pays is None or pays["feature"] > pays["prior"]:
            c = cost.get(chosen, {})
            spend = (f"; it costs {c['chain (CPU)']:.2f} ms per chain of {ev['gamma']} on the CPU"
                     + (f" ({share(c['chain (CPU)'])} a {step:.1f} ms compiled 7B target decode step)" if step else "")
                     + (f", {c['chain (GPU)']:.2f} ms on the GPU" + (f" ({share(c['chain (GPU)'])} it)" if step else "")
                        if c.get("chain (GPU)") is not None else "")
                     if c.get("chain (CPU)") is not None else "")
            rec = (f"Where the draft model runs next to the target, {how}: {fr['ratio']:.2f}x the MAT of `{prior}`, "
                   f"interval {fr['lo']:.2f} to {fr['hi']:.2f}, with no streaming penalty{spend}"
                   + (f"; {pays['text']}" if pays else "") + f". With the draft's words alone, draft with `{prior}`.")
            head = (f"The event-camera draft model's hidden states lift MAT {fr['ratio']:.2f}x over the best content-free "
                    f"drafter, `{prior}`; its words ({full['ratio']:.2f}x) do not.")
        else:
            rec = (f"Draft with `{prior}` for now. The draft model's hidden states do carry what the target will say: "
                   f"{what} accepts {fr['ratio']:.2f}x the tokens per verify step (interval {fr['lo']:.2f} to "
                   f"{fr['hi']:.2f}), but {pays['text']}. It pays once its chain of {ev['gamma']} costs under "
                   f"{pays['break_even']:.2f} ms" + (f" (the network alone costs {pays['net']:.2f} ms there)"
                                                     if pays.get("net") is not None else "")
                   + (f", or at today's costs for a target whose verify step takes over {pays['step_even']:.0f} ms "
                      f"({pays['step_even'] / step:.0f} times this 7B step)"
                      if math.isfinite(pays["step_even"]) else "") + ".")
            head = (f"The event-camera draft model's hidden states lift MAT {fr['ratio']:.2f}x over the best content-free "
                    f"drafter, `{prior}` (its words {full['ratio']:.2f}x), but at their measured cost they do not yet "
                    "pay at 7B.")
            if hpays_val and hpays_val["feature"] > hpays_val["prior"]:
                hr = hd["ratio_vs_prior"]
                rec = (f"Where the draft model runs next to the target, draft with `{hd['name']}`: one network pass per "
                       f"chain, {hr['ratio']:.2f}x the MAT of `{prior}` (interval {hr['lo']:.2f} to {hr['hi']:.2f}); "
                       f"{hpays['text']}. The mixture that runs a pass per token accepts more but costs more: {pays['text']}.")
                head = (f"The event-camera draft model's hidden states, drafted from one network pass per chain, lift MAT "
                        f"{hr['ratio']:.2f}x over the best content-free drafter, `{prior}`, and pay at 7B.")
            elif hpays:
                hr = hd["ratio_vs_prior"]
                rec += (f" Drafted from one pass per chain (`{hd['name']}`), the mixture keeps {hr['ratio']:.2f}x the "
                        f"prior's MAT, and {hpays['text']}"
                        + ("; on the validation pairs, which decide, it is not faster than the prior" if hpays["feature"] > hpays["prior"]
                           else f"; it would pay under {hpays['break_even']:.2f} ms per chain"
                           + (f", or for a target step over {hpays['step_even']:.0f} ms" if math.isfinite(hpays["step_even"]) else "")
                           if hr["ratio"] > 1 else "; it does not pay either") + ".")
    else:
        tried = feat is not None and _ratio_verdict(feat["ratio_vs_ablation"], bar) in ("none", "loss")
        named = agree.get("objects", {}).get("lift", float("nan"))
        rec = (f"Draft with the content-free `{prior}` (it needs no draft model and costs less); the draft model's "
               "tokens do not predict the target's wording beyond what the question and its accepted prefix do"
               + (f", although the objects the draft names are in the target's answer {named:.1f} times as often as "
                  "a draft of another clip's: the content is there, the drafters do not turn it into accepted tokens"
                  if named >= 1.2 else "") + ". To gain from the "
               + ("event camera, the draft model itself must see the scene better (its hidden states did not help "
                  "either) or the drafters need more pairs." if tried else
                  "event camera, condition on richer draft signals (hidden states, the event features) or on more pairs."))
        head = (f"The best event-camera draft reader, `{reader}`, reaches {full['ratio']:.2f}x the MAT of the best "
                f"content-free drafter, `{prior}` (interval {full['lo']:.2f} to {full['hi']:.2f}): no gain from the "
                "draft's content.") if v == "none" else (
                f"The best event-camera draft reader, `{reader}`, reaches only {full['ratio']:.2f}x the MAT of the best "
                f"content-free drafter, `{prior}`.")
    rv = rc["ratio_prior_vs_offline"] if rc else None
    if rv and recommends_recent(ev):   # decided on the validation pairs; the test pairs give the figure
        rec += (f" Whichever drafter runs, draft from the target's latest answers to the same question, each taken into "
                f"the store before the next clip (`target_prior_recent`): on these pairs that alone lifts MAT "
                f"{rv['ratio']:.2f}x (interval {rv['lo']:.2f} to {rv['hi']:.2f}).")
        if rv["lo"] > 1:
            head += (f" Content-free, the target's own latest answers (each taken in before the next clip) lift "
                     f"`{rc['offline_prior']}`'s MAT {rv['ratio']:.2f}x.")
    elif lift is not None and lift >= 1.05:
        rec += (f" Whichever drafter runs, keep the target's recent answers in its datastore: on these pairs that "
                f"alone lifts MAT {lift:.2f}x.")
    return Finding("What the event camera adds over the best prior", text, rec, head, details)


def findings(data: dict, train: dict, align: dict, spec: dict | None = None, event: dict | None = None) -> list[Finding]:
    """All findings; with the speculative-decoding chapter's measurements (`spec`) the speed
    finding comes from them rather than from an assumed cost ratio; with chapter 35's results
    (`event`) its comparison against the best prior leads, and the cross_modal-vs-n-gram finding
    keeps its text but no longer makes a headline of its own."""
    content = draft_content(align)
    if event:                          # the comparison with the best prior (chapter 35) decides
        content.headline = ""
        content.recommendation = ""
        content.text += (" This compares with the study's original n-gram prior; the comparison with the best "
                         "content-free prior above is the one the recommendation follows.")
    out = [event_camera(event, event.get("bar", 1.15)) if event else None, content,
           measured_speed(align, spec, event) if spec else speed(align), visibility(align),
           seed_adapter(align, data), iid_model(align), training(train)]
    return [f for f in out if f is not None]


def to_markdown(items: list[Finding]) -> str:
    lines = []
    for i, f in enumerate(items, 1):
        lines.append(f"**{i}. {f.title}.** {f.text}")
        if f.details:
            lines.append("")
            lines.extend(f"- *{label}.* {d}" for label, d in f.details)
        if f.recommendation:
            lines.append(f"\n*Recommendation:* {f.recommendation}")
        lines.append("")
    return "\n".join(lines)


def headlines(items: list[Finding]) -> list[str]:
    """The one-sentence answers the landing page opens with."""
    return [f.headline for f in items if f.headline]
