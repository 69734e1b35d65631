#!/usr/bin/env bash
# Wheels the GPU machine lacks, so that the suite's own runner (papermill + ipykernel, myst-nb's
# glue) and PyAV run there: it has torch, transformers, pandas, matplotlib... but no Jupyter stack
# and no network (see /work/.library/device/README.md). Downloads CPython 3.12 manylinux x86_64
# wheels into .whl/ and PyAV into .whl-av/ (git-ignored: add both to .git/info/exclude), pinned to the versions this
# venv runs, so both machines execute the same notebook stack. Usage, from the repository root:
#   bash scripts/gpu_wheels.sh            # then carry .whl and install it there with
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
pkgs=(papermill entrypoints tenacity nbclient nbformat fastjsonschema jsonschema jsonschema-specifications
      referencing rpds-py jupyter_client jupyter_core platformdirs traitlets pyzmq tornado ipykernel comm
      ipython ipython_pygments_lexers prompt_toolkit wcwidth pexpect ptyprocess stack-data
      asttokens executing pure_eval matplotlib-inline nest-asyncio2 myst-nb docutils importlib_metadata
      pytest pluggy iniconfig)     # pytest: tests/test_graphs.py's CUDA tests run there (gpu_run.sh PHASE=synmeasure)
# Left out: jedi, parso and debugpy (9 MB). IPython looks for jedi only to complete code and ipykernel
# for debugpy only when a debugger attaches; papermill's kernel runs without them (checked here with
# the three made unimportable), and without them the working tree, .whl and .whl-av stay under the
# device tool's 64 MiB for a call (the two shipped model pairs take 17 MB of the tree).
pins=()
for p in "${pkgs[@]}"; do
  v=$("$PY" -m pip show "$p" 2>/dev/null | sed -n 's/^Version: //p')
  [ -n "$v" ] || { echo "skipped (not in this venv, so not needed): $p" >&2; continue; }
  pins+=("$p==$v")
done
mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_31_x86_64 --platform manylinux_2_34_x86_64 --platform manylinux_2_35_x86_64 \
  -d .whl "${pins[@]}"
# PyAV (35 MB) only for runs that write or read mp4 (the synthetic world): its own folder, carried when needed
mkdir -p .whl-av
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 -d .whl-av "av==$("$PY" -m pip show av | sed -n 's/^Version: //p')"
du -sh .whl .whl-av
