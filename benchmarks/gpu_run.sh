#!/usr/bin/env bash
# One device-machine session: GPU tests, then benchmarks; logs and JSON to $OUT.
#   bash benchmarks/gpu_run.sh [tests] [eig] [eig-quick] [fit] [ttr] [example] [quality] [variants] [monotone]
# The device machine has no internet: carry the California cache and the tables as .data
# (mkdir -p .data/tabular && cp -r ../shared/data/scikit_learn_data .data/ && cp ../shared/data/tabular/* .data/tabular/)
# and, for LightGBM in the quality step, its wheel in .whl; run with carry [".data", ".whl"].
# quality takes its arguments from $QUALITY_ARGS (default: every dataset, every fold, "default");
# variants from $VARIANTS_ARGS (default: every part).
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export SCIKIT_LEARN_DATA="$PWD/.data/scikit_learn_data" PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, cupy, sklearn; print('torch', torch.__version__, 'cupy', cupy.__version__, 'sklearn', sklearn.__version__)" | tee -a "$OUT/gpu.txt"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
for step in "$@"; do
  case $step in
    tests) python3 -m pytest tests -q -p no:cacheprovider -rs 2>&1 | tail -40 | tee "$OUT/tests.txt" ;;
    eig) python3 benchmarks/bench_eig.py --cuda --json "$OUT/eig_cuda.json" 2>"$OUT/eig.log" | tee "$OUT/eig.md" | tail -100 ;;
    eig-quick) python3 benchmarks/bench_eig.py --cuda --ns 8 16 45 64 128 --batches 1 64 4096 65536 \
                 --json "$OUT/eig_cuda.json" 2>"$OUT/eig.log" | tee "$OUT/eig.md" | tail -50 ;;
    fit) python3 benchmarks/bench_fit.py --device cuda --json "$OUT/fit_cuda.json" 2>&1 | tee "$OUT/fit.md" | tail -12 ;;
    ttr) python3 benchmarks/time_to_rmse.py --device cuda --naive-budget 30 --json "$OUT/time_to_rmse_cuda.json" 2>&1 \
           | tee "$OUT/ttr.md" | tail -16 ;;
    example) python3 examples/california_housing.py --splits 3 --figures "$OUT" 2>&1 | grep -v -i warn \
               | tee "$OUT/example.txt" | tail -22 ;;
    quality) python3 benchmarks/quality.py --device cuda --data .data/tabular ${QUALITY_ARGS:-} \
               --json "$OUT/quality_cuda.json" 2>&1 | tee "$OUT/quality.log" | grep -v '^{' ;;
    variants) python3 benchmarks/bench_variants.py --device cuda --data .data/tabular ${VARIANTS_ARGS:-} \
                --json "$OUT/variants_cuda.json" 2>&1 | tee "$OUT/variants.log" | grep -v "^{" ;;
    monotone) python3 examples/california_monotone.py --figure "$OUT/california_monotone.png" 2>&1 \
                | tee "$OUT/monotone.txt" ;;
  esac
done
