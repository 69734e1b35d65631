#!/usr/bin/env bash
# Train and ship the synthetic world's two VLMs on the GPU machine, in one command (~7.5 min on
# an NVIDIA H200 with the defaults below: data ~80 s, both models in parallel ~255 s + loading
# and held-out answers ~100 s). Run from the repository root; the machine needs PyAV, carried
# as a wheel in .whl-av/ (scripts/gpu_wheels.sh).
#
#   run(command="GIT_COMMIT=$(git rev-parse HEAD) bash scripts/train_world_gpu.sh", carry=[".whl-av"])
#
# Knobs (environment): N_CLIPS, SEED, BUDGET_S (training seconds per model), AUX_WEIGHT (vision
# fact loss, 0 = off), BATCH, LR, VLM_CONFIG (JSON of helpers.models.vlm.VLMConfig fields), GIT_COMMIT.
# Output: $OUT/synthetic_vlm.tar.gz (unpack into src/helpers/assets/synthetic_vlm/) and logs.
set -euo pipefail
N_CLIPS=${N_CLIPS:-3000}
SEED=${SEED:-1000}
BUDGET_S=${BUDGET_S:-255}
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
python3 -m helpers.models.shipped data --data /tmp/w --n-clips "$N_CLIPS" --seed "$SEED" --workers "$(nproc --all)" --quiet \
  2>&1 | tee "$OUT/data.log"
for k in draft target; do
  python3 -m helpers.models.shipped train --data /tmp/w --kind $k --out /tmp/ship --epochs 30 --batch-size "$BATCH" \
    --lr "$LR" --time-budget-s "$BUDGET_S" --n-eval-clips 30 --aux-weight "$AUX_WEIGHT" --quiet \
    --vlm-config "$VLM_CONFIG" > "$OUT/train_$k.log" 2>&1 &
done
wait
python3 -m helpers.models.shipped ship --data /tmp/w --out /tmp/ship
echo "total $(( $(date +%s) - t0 )) s" | tee "$OUT/time.txt"
tar czf "$OUT/synthetic_vlm.tar.gz" -C /tmp/ship .
tail -n 2 "$OUT"/train_*.log | cut -c1-600
