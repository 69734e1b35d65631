"""Published and previously measured figures the book sets its own results beside.

One place for every number that does not come from this suite's runs (all from
../shared/docs/background.md), so no chapter or finding types one by hand.
"""
from __future__ import annotations

import pandas as pd

# The original study's test figures (token match is teacher-forced; its test split also chose checkpoints).
STUDY_RUNS = pd.DataFrame([
    {"run": "study 1q, 200 train", "train_pairs": 200, "test_pairs": 1100, "direct_match": 0.0158,
     "token_match": 0.2666, "top5": 0.4391},
    {"run": "study 1q", "train_pairs": 5200, "test_pairs": 1100, "direct_match": 0.0158,
     "token_match": 0.2790, "top5": 0.5164},
    {"run": "study 10q (seed report)", "train_pairs": 52000, "test_pairs": 11000, "direct_match": 0.0805,
     "token_match": 0.2148, "top5": 0.5152},
])
STUDY_1Q_TOKEN_MATCH = {200: 0.2666, 5200: 0.2790}  # train pairs -> test token match

# The original study's end-to-end run: RTX 4090, 4-bit NF4, batch 1, 50 scenes x 10 questions.
STUDY_E2E = {
    "device": "RTX 4090 (4-bit NF4)",
    "speedup": 1.03,                       # best of 1.02-1.03x end to end
    "target_prefill_ms": 320.0,            # Video-LLaVA prefill 315-326 ms
    "target_decode_ms": 14.3,              # 14.0-14.6 ms/token
    "draft_vision_ms": 8.0,                # EventGPT vision 7.5-8.6 ms
    "draft_prefill_ms": 83.0,
    "draft_decode_ms": 10.0,
    "verify_ms": 70.0,                     # verifying ~21 drafts
    "samples_per_s": 1.0,                  # ~1 sample/s per model
    "exact_match_rate": 0.86,              # SD output == the target's own greedy output
}

# Measured on an H200 (bf16, HF eager, SDPA, random weights; timings do not depend on weights).
H200_EAGER = {
    "device": "NVIDIA H200 (bf16, transformers eager)",
    "target_prefill_ms": 76.0,             # Video-LLaVA, 8 frames, 2,091-token prompt, vision included
    "target_decode_ms": 21.9,
    "draft_prefill_ms": 31.0,              # LLaVA at EventGPT's shape: one 336 px image, 631 tokens
    "draft_decode_ms": 20.1,
    "verify_ms": 21.5,                     # k = 2..40 tokens in one forward: 20-23 ms
    "decode_bound_ms": 2.8,                # memory-bandwidth bound of one 7B bf16 decode step
    "compiled_decode_ms": 5.8,             # hand-owned static-cache loop, torch.compile reduce-overhead
}

# Speculative-decoding anchors (Spec-Bench and VLM papers).
ANCHORS = pd.DataFrame([
    {"method": "EAGLE-2 (Spec-Bench, Vicuna-7B, A100)", "speedup": 2.36, "mat": 4.34},
    {"method": "SpS (Spec-Bench, Vicuna-7B, A100)", "speedup": 1.52, "mat": 2.28},
    {"method": "ViSpec (LLaVA-1.6-7B)", "speedup": 2.58, "mat": float("nan")},
    {"method": "SpecVLM (video, 72B target, decode only)", "speedup": 2.68, "mat": float("nan")},
    {"method": "the original study (EventGPT -> Video-LLaVA)", "speedup": STUDY_E2E["speedup"], "mat": float("nan")},
])
