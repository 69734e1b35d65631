"""Record draft/target greedy pairs from the world's two VLMs, with per-stage timings.

`record_pairs` runs both models on the chosen manifest entries (clip x question, in clip
order) and returns `helpers.study.pairs.RecordedPair`s whose `timings_ms` hold, per model
(`draft_` / `target_` prefix): preprocess, vision, prefill (prompt forward up to the first
token), decode (all later tokens), decode_per_token, total; all in ms. Timing hygiene: one
warm-up generation per model before anything is timed, batch 1, greedy, synchronised.
`clip_index` is the clip's position in the dataset (its `sample_idx`), so the later split
by clip order is deterministic; `clip_id` is the dataset's clip id.
"""
from __future__ import annotations

import numpy as np

from helpers.models import vlm
from helpers.study.pairs import RecordedPair
from helpers.models.train import load_examples

STAGES = ("preprocess", "vision", "prefill", "decode", "decode_per_token", "total")


def stage_timings(prefix: str, timings: dict) -> dict[str, float]:
    """helpers.models.vlm.generate_greedy's timings -> {'<prefix>_<stage>': ms}."""
    decode = timings["decode_ms"]
    return {f"{prefix}_preprocess": timings["preprocess_ms"], f"{prefix}_vision": timings["vision_ms"],
            f"{prefix}_prefill": timings["prefill_ms"], f"{prefix}_decode": float(sum(decode)),
            f"{prefix}_decode_per_token": float(np.mean(decode)) if decode else float("nan"),
            f"{prefix}_total": timings["total_ms"]}


def record_pairs(draft, target, tokenizer, entries, max_new_tokens: int = 50, progress: bool = True,
                 warmup: bool = True) -> tuple[list[RecordedPair], dict]:
    """Greedy answers of both models for each entry -> (pairs, extras). extras: per pair the
    prompt and visual token counts ({key: {...}}) and the input pixel shapes."""
    from tqdm.auto import tqdm

    entries = sorted(entries, key=lambda e: (e["sample_idx"], e["question_idx"]))
    draft_in = load_examples(entries, "draft")
    target_in = load_examples(entries, "target")
    if warmup and entries:
        vlm.generate_greedy(draft, tokenizer, draft_in[0][0], draft_in[0][1], 4)
        vlm.generate_greedy(target, tokenizer, target_in[0][0], target_in[0][1], 4)
    pairs, counts = [], {}
    for e, d_in, t_in in tqdm(list(zip(entries, draft_in, target_in)), desc="pairs", disable=not progress):
        d_ids, d_text, d_t = vlm.generate_greedy(draft, tokenizer, d_in[0], d_in[1], max_new_tokens)
        t_ids, t_text, t_t = vlm.generate_greedy(target, tokenizer, t_in[0], t_in[1], max_new_tokens)
        p = RecordedPair(
            clip_id=e["clip_id"], clip_index=int(e["sample_idx"]), question_index=int(e["question_idx"]),
            question=e["query"], draft_ids=tuple(d_ids), target_ids=tuple(t_ids), draft_text=d_text,
            target_text=t_text, timings_ms={**stage_timings("draft", d_t), **stage_timings("target", t_t)})
        pairs.append(p)
        counts[p.key] = {"draft_prompt_tokens": d_t["n_prompt_tokens"], "draft_visual_tokens": d_t["n_visual_tokens"],
                         "target_prompt_tokens": t_t["n_prompt_tokens"], "target_visual_tokens": t_t["n_visual_tokens"]}
    extras = {"token_counts": counts,
              "draft_input_shape": list(draft_in[0][0].shape) if entries else [],
              "target_input_shape": list(target_in[0][0].shape) if entries else []}
    return pairs, extras


def timing_summary(pairs) -> dict[str, dict[str, float]]:
    """{stage: {median, mean, p90}} over pairs for every timing key."""
    keys = sorted({k for p in pairs for k in p.timings_ms})
    out = {}
    for k in keys:
        v = np.array([p.timings_ms[k] for p in pairs if k in p.timings_ms], dtype=float)
        out[k] = {"median": float(np.median(v)), "mean": float(np.mean(v)), "p90": float(np.percentile(v, 90))}
    return out
