#!/usr/bin/env bash
# One device-machine session: GPU tests, then benchmarks; logs and JSON to $OUT.
#   bash benchmarks/gpu_run.sh [tests] [eig-quick] [eig] [fit] [example] [classification]
# Needs the California cache at .data/scikit_learn_data and, where the image
# lacks them, wheels for pytest/hypothesis in .wheels (carried with the run).
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export SCIKIT_LEARN_DATA="$PWD/.data/scikit_learn_data" PYTHONPATH="$PWD"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, cupy, sklearn; print('torch', torch.__version__, 'cupy', cupy.__version__, 'sklearn', sklearn.__version__)" | tee -a "$OUT/gpu.txt"
python3 -c "import hypothesis, pytest, threadpoolctl, matplotlib" 2>/dev/null || pip install -q --no-index --find-links .wheels hypothesis pytest threadpoolctl 2>&1 | tail -2
for step in "$@"; do
  case $step in
    tests) python3 benchmarks/probe_nonfinite.py 2>&1 | tee "$OUT/probe.txt"; python3 -m pytest tests -q -p no:cacheprovider -p no:warnings 2>&1 | tail -25 | tee "$OUT/tests.txt" ;;
    eig-quick) python3 benchmarks/bench_eig.py --cuda --quick --json "$OUT/eig_quick.json" 2>"$OUT/eig_quick.log" | tee "$OUT/eig_quick.md" ;;
    eig) python3 benchmarks/bench_eig.py --cuda --json "$OUT/eig.json" 2>"$OUT/eig.log" | tee "$OUT/eig.md" | tail -90 ;;
    fit) python3 benchmarks/bench_fit.py --device cuda --json "$OUT/fit.json" 2>&1 | tee "$OUT/fit.md" | tail -12 ;;
    example) python3 examples/california_housing.py --splits 3 --figures "$OUT" 2>&1 | grep -v -i warn | tee "$OUT/example.txt" | tail -22 ;;
    classification) python3 examples/classification.py 2>&1 | grep -v -i warn | tee "$OUT/classification.txt" | tail -20 ;;
  esac
done
