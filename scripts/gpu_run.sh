#!/usr/bin/env bash
# One command on the GPU machine (the device tool): install the carried wheels, then run a preset
# through the suite's own runner there and pack its run folder into $OUT, so that its book is built
# here without re-executing it:  python -m helpers.run --preset PRESET --out runs/NAME --book-only
#   PHASE=7b  bash scripts/gpu_run.sh   # gpu_7b_shapes -> $OUT/gpu7b.tgz      (carry .whl, runs/dsec_slim)
#   ONLY="60_speculative" PHASE=7b ...  # one stage (each call stays under the device's 10 minutes);
#                                       # carry runs/gpu7b back so earlier stages' outputs are kept
#   PHASE=syn bash scripts/gpu_run.sh   # gpu_synthetic -> $OUT/gpusyn.tgz     (carry .whl, .whl-av, runs/gpu7b),
#                                       # and the world's VLMs retrained on the second GPU meanwhile
#   ONLY="01_world 02_models 03_inference 10_data 20_train_drafters" PHASE=synfull bash scripts/gpu_run.sh
#                                       # the full gpu_synthetic preset in stages (kind nvidia-h200, carry .whl .whl-av):
#                                       # then ONLY=30_alignment, then ONLY="60_speculative 90_findings" SD_REPEATS=1
#                                       # (with 3 repeats 60 runs past one call), on a warm machine that keeps
#                                       # runs/gpusyn between calls; the 7B replay shown is measurements/h200/'s
#                                       # -> $OUT/gpusyn.tgz (418da2d: 320 + 541 + 247 s)
#   PHASE=synmeasure bash scripts/gpu_run.sh  # a reduced gpu_synthetic run that fits one call (kind nvidia-h200,
#                                       # carry .whl .whl-av): the CUDA tests of tests/test_graphs.py and test_heads.py (with test_drafters.py), then
#                                       # 60_speculative's end-to-end speed and 35's drafter costs with the
#                                       # networks on the GPU (CUDA graphs and eager) -> $OUT/gpusyn.tgz
#                                       # (SD_SAMPLES, default 32: all the test answers of 40 clips, timed SD_REPEATS, 3, times
#                                       # each after a warm-up; the median per answer is kept)
# LIMIT_S (560) stops the runner in time to pack what it has under the device's 600 s per call.
# GIT_COMMIT names the commit (the copy there has no .git). NVLink multicast stays off (KINDS.md).
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpus.txt"
t0=$(date +%s)
case "${PHASE:?PHASE=7b, syn, synfull or synmeasure}" in
  7b)
    timeout ${LIMIT_S:-560} python3 -m helpers.run --preset gpu_7b_shapes --out runs/gpu7b --no-book --set replay_study_run=runs/dsec_slim \
      ${ONLY:+--only $ONLY} \
      2>&1 | grep -v -E "Executing: |it/s\]$" | tee "$OUT/gpu7b.log"
    tar czf "$OUT/gpu7b.tgz" --exclude=runs/gpu7b/scaling runs/gpu7b ;;
  syn)
    (CUDA_VISIBLE_DEVICES=1 OUT=/tmp/world BUDGET_S=${BUDGET_S:-200} AUX_WEIGHT=${AUX_WEIGHT:-1} \
      bash scripts/train_world_gpu.sh > /tmp/world_train.log 2>&1) &
    CUDA_VISIBLE_DEVICES=0 timeout ${LIMIT_S:-560} python3 -m helpers.run --preset gpu_synthetic --out runs/gpusyn --no-book \
      2>&1 | grep -v -E "Executing: |it/s\]$" | tee "$OUT/gpusyn.log"
    wait
    cat /tmp/world_train.log /tmp/world/*.log /tmp/world/*.txt > "$OUT/world.log" 2>/dev/null
    cp /tmp/world/synthetic_vlm.tar.gz "$OUT/" 2>/dev/null
    tar czf "$OUT/gpusyn.tgz" --exclude=runs/gpusyn/shards --exclude=runs/gpusyn/01_world/data runs/gpusyn ;;
  synfull)
    timeout ${LIMIT_S:-560} python3 -m helpers.run --preset gpu_synthetic --out runs/gpusyn --no-book \
      --set replay_path=measurements/h200/speculative.json sd_repeats=${SD_REPEATS:-3} ${ONLY:+--only $ONLY} \
      2>&1 | grep -v -E "Executing: |it/s\]$" | tee "$OUT/gpusyn.log"
    tar czf "$OUT/gpusyn.tgz" --exclude=runs/gpusyn/shards --exclude=runs/gpusyn/01_world/data \
      --exclude='runs/gpusyn/20_train_drafters/*.pt' runs/gpusyn ;;
  synmeasure)
    # the network drafters' CUDA graphs against their CPU passes (tests/test_graphs.py's CUDA tests)
    timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_graphs.py tests/test_heads.py tests/test_drafters.py 2>&1 | tee "$OUT/test_graphs.log"
    timeout ${LIMIT_S:-560} python3 -m helpers.run --preset gpu_synthetic --out runs/gpusyn --no-book \
      --set 'notebooks=[01_world,02_models,03_inference,10_data,20_train_drafters,30_alignment,35_event_camera,60_speculative]' \
      n_clips=40 n_questions=4 \
      'drafters=[target_prior_ngram,target_prior_kn,target_prior_suffix,target_prior_question,draft_retrieval,draft_copy,cross_modal,target_prior_neural,seed_token_adapter]' \
      'sd_drafters=[target_prior_suffix,target_prior_question,draft_retrieval]' sd_gamma=5 sd_samples=${SD_SAMPLES:-32} 'sd_batches=[1,8,32]' \
      sd_repeats=${SD_REPEATS:-3} compile_decoder=false replay_path=measurements/h200/speculative.json 'ec_curve_sizes=[]' \
      2>&1 | grep -v -E "Executing: |it/s\]$" | tee "$OUT/gpusyn.log"
    tar czf "$OUT/gpusyn.tgz" --exclude=runs/gpusyn/shards --exclude=runs/gpusyn/01_world/data \
      --exclude='runs/gpusyn/20_train_drafters/*.pt' runs/gpusyn ;;
esac
echo "phase ${PHASE} took $(( $(date +%s) - t0 )) s" | tee -a "$OUT/gpus.txt"
