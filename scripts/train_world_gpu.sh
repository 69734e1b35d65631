#!/usr/bin/env bash
# Train and ship the synthetic world's two VLMs on the GPU machine, in one command (~7.5 min on
# an NVIDIA H200 with the defaults below: data ~80 s, both models in parallel ~255 s + loading
# and held-out answers ~100 s). Run from the repository root; the machine needs PyAV, carried
# as a wheel in .whl-av/ (scripts/gpu_wheels.sh).
#
#   run(command="GIT_COMMIT=$(git rev-parse HEAD) bash scripts/train_world_gpu.sh", carry=[".whl-av"])
#
# Knobs (environment): N_CLIPS, SEED, WORLD_PROFILE (scene distribution, helpers.world.sample.PROFILES), BUDGET_S (caption training seconds per model), VISION_S
# (seconds of vision pretraining on the facts the captions name, before the caption stage; 0 = off),
# FREEZE_VISION (1: the caption stage keeps the tower stage 1 made), AUX_WEIGHT (vision fact loss
# during caption training, 0 = off), BATCH, LR, VLM_CONFIG (JSON of helpers.models.vlm.VLMConfig
# fields), GIT_COMMIT. VARIANTS="name:vision_s:freeze[:pixel_fit[:SIZExPATCH]] ..." trains several
# recipes on the same data, variant i on GPU i mod (GPUs) (default: one variant, "main", from VISION_S
# and FREEZE_VISION; pixel_fit, crop or squash, and SIZExPATCH, e.g. 128x8 for a 128-pixel input cut
# into 8-pixel patches, override VLM_CONFIG's; max_positions grows to hold the target's 8 frames). SPLIT_KINDS=1 gives the draft and
# the target of a variant a GPU each (one variant on two GPUs: a longer BUDGET_S fits one call).
# Output: $OUT/synthetic_vlm[_<variant>].tar.gz (unpack into src/helpers/assets/synthetic_vlm/) and logs.
set -euo pipefail
N_CLIPS=${N_CLIPS:-3000}
SEED=${SEED:-1000}
WORLD_PROFILE=${WORLD_PROFILE:-driving}
BUDGET_S=${BUDGET_S:-255}
VISION_S=${VISION_S:-0}
FREEZE_VISION=${FREEZE_VISION:-0}
VARIANTS=${VARIANTS:-"main:$VISION_S:$FREEZE_VISION"}
AUX_WEIGHT=${AUX_WEIGHT:-0}
BATCH=${BATCH:-64}
LR=${LR:-3e-3}
VLM_CONFIG=${VLM_CONFIG:-'{"vision_hidden": 128, "vision_layers": 3, "vision_intermediate": 512, "vision_heads": 4}'}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
if [ -d .whl-av ] && [ ! -d /tmp/site/av ]; then   # PyAV (see scripts/gpu_wheels.sh); gpu_run.sh may have installed it
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl-av/*.whl
fi
export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
export PYTHONPATH=$PWD/src:${PYTHONPATH:-} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4 HF_HUB_OFFLINE=1
export HELPERS_GIT_COMMIT=${GIT_COMMIT:-unknown}
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/gpu.txt" || true
t0=$(date +%s)
python3 -m helpers.models.shipped data --data /tmp/w --n-clips "$N_CLIPS" --seed "$SEED" --world-profile "$WORLD_PROFILE" --workers "$(nproc --all)" --quiet \
  2>&1 | tee "$OUT/data.log"
N_GPU=$( (nvidia-smi -L 2>/dev/null || true) | wc -l); N_GPU=$(( N_GPU > 0 ? N_GPU : 1 ))
SPLIT_KINDS=${SPLIT_KINDS:-0}
i=0
for v in $VARIANTS; do
  IFS=: read -r name vs fz fit geom <<< "$v"
  freeze=(); [ "$fz" = 1 ] && freeze=(--freeze-vision)
  cfg=$(python3 - "$VLM_CONFIG" "${fit:-}" "${geom:-}" <<'PY'
import json, sys
c = json.loads(sys.argv[1])
if sys.argv[2]:
    c["pixel_fit"] = sys.argv[2]
if sys.argv[3]:
    size, patch = map(int, sys.argv[3].split("x"))
    c.update(image_size_px=size, patch_size_px=patch)
    c["max_positions"] = max(c.get("max_positions", 1024), 8 * (size // patch) ** 2 + 256)
print(json.dumps(c))
PY
)
  for k in draft target; do
    gpu=$(( i % N_GPU ))
    [ "$SPLIT_KINDS" = 1 ] && [ $k = target ] && gpu=$(( (i + 1) % N_GPU ))
    CUDA_VISIBLE_DEVICES=$gpu python3 -m helpers.models.shipped train --data /tmp/w --kind $k \
      --out "/tmp/ship_$name" --epochs 30 --batch-size "$BATCH" --lr "$LR" --time-budget-s "$BUDGET_S" \
      --n-eval-clips 30 --aux-weight "$AUX_WEIGHT" --vision-s "$vs" "${freeze[@]}" --quiet \
      --vlm-config "$cfg" > "$OUT/train_${name}_$k.log" 2>&1 &
  done
  i=$(( i + 1 + SPLIT_KINDS ))
done
wait
for v in $VARIANTS; do
  name=${v%%:*}
  python3 -m helpers.models.shipped ship --data /tmp/w --out "/tmp/ship_$name"
  suffix=$([ "$name" = main ] && echo "" || echo "_$name")
  tar czf "$OUT/synthetic_vlm$suffix.tar.gz" -C "/tmp/ship_$name" .
done
echo "total $(( $(date +%s) - t0 )) s" | tee "$OUT/time.txt"
tail -n 3 "$OUT"/train_*.log | cut -c1-900
