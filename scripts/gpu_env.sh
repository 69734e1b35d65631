# Sourced by the GPU jobs (scripts/gpu_run.sh, scripts/gpu_real_path.sh) on the GPU machine: $OUT,
# the carried wheels installed into /tmp/site (no network there), the suite on PYTHONPATH, offline
# transformers, the commit named for provenance (the copy there has no .git), NVLink multicast off
# (KINDS.md).
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
for w in .whl .whl-av; do
  [ -d "$w" ] && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$w"/*.whl
done
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HELPERS_GIT_COMMIT=${GIT_COMMIT:-unknown}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 TOKENIZERS_PARALLELISM=false
