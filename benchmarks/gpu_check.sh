#!/usr/bin/env bash
# GPU check in one command (at most 8 minutes): the CUDA tests (tests/test_cuda.py), the step benchmark in bf16 for
# every model, and k-means assignment on the GPU; writes benchmarks/results/gpu_check_<YYYY-MM-DD>.md.
#
#   benchmarks/gpu_check.sh                 # on a GPU machine
#   benchmarks/gpu_check.sh --icefall DIR   # with the k2SSL recipes' own models as anchors (or put the tree in .dev/icefall)
#   benchmarks/gpu_check.sh --dry-run       # the same on the CPU at small sizes; writes /tmp/gpu_check_<date>_cpu_dryrun.md
#   benchmarks/gpu_check.sh --help          # every option
#
# Python: $PYTHON, else .venv/bin/python when it exists, else python3 (the project must be importable by it).
# The details are at the top of benchmarks/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
exec "$PY" benchmarks/gpu_check.py "$@"
