#!/usr/bin/env bash
# The dsec_clips preset's real-checkpoint path at full 7B size on the GPU machine: write an
# EventGPT-7B folder in the official layout and a Video-LLaVA-7B-hf folder in transformers' layout
# (real architectures and sizes, random weights: no checkpoint can be downloaded there), a few
# clips with the study's instruction manifest (the synthetic world's, mp4 videos), then record
# them with 03_inference through the suite's runner exactly as a user with the real checkpoints
# would (loading both folders, bf16, compiled decode loop, torchrun over the visible GPUs).
#   run(command="GIT_COMMIT=<sha> bash scripts/gpu_real_path.sh", kind="nvidia-h200-x2", carry=[".whl", ".whl-av"])
source "$(dirname "$0")/gpu_env.sh"
CK=/tmp/ckpt
t0=$(date +%s)
python3 - <<'PY' 2>&1 | tee "$OUT/real_path.log"
import time, torch
from helpers.models import eventgpt, shapes
from helpers.models.tokenizer import load_tokenizer
from helpers.world.dataset import generate_dataset
t0 = time.perf_counter()
tok = load_tokenizer("src/helpers/assets/synthetic_vlm/tokenizer")
eventgpt.save_eventgpt(shapes.eventgpt_7b("cuda"), "/tmp/ckpt/EventGPT-7b", tok)
torch.cuda.empty_cache()
print(f"EventGPT-7B folder written in {time.perf_counter() - t0:.0f} s", flush=True)
t1 = time.perf_counter()
vl = shapes.video_llava_7b("cuda", image_id=tok.convert_tokens_to_ids("<image>"), video_id=tok.convert_tokens_to_ids("<video>"))
vl.save_pretrained("/tmp/ckpt/Video-LLaVA-7B-hf")
tok.save_pretrained("/tmp/ckpt/Video-LLaVA-7B-hf")
print(f"Video-LLaVA-7B-hf folder written in {time.perf_counter() - t1:.0f} s", flush=True)
generate_dataset("/tmp/clips", n_clips=8, seed=0, n_workers=8, progress=False)
PY
du -sh $CK/* | tee -a "$OUT/real_path.log"
timeout ${LIMIT_S:-420} python3 -m helpers.run --preset dsec_clips --out runs/gpureal --no-book \
  --set clips=/tmp/clips draft_checkpoint=$CK/EventGPT-7b target_checkpoint=$CK/Video-LLaVA-7B-hf \
  'notebooks=[03_inference]' n_questions=4 batch_size=8 2>&1 | grep -v -E "Executing: |it/s\]$" | tee -a "$OUT/real_path.log"
tar czf "$OUT/gpureal.tgz" --exclude=runs/gpureal/shards runs/gpureal
echo "took $(( $(date +%s) - t0 )) s" | tee -a "$OUT/real_path.log"
