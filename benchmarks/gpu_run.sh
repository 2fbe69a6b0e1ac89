#!/usr/bin/env bash
# One device-machine session: GPU tests, then benchmarks; logs and JSON to $OUT.
#   bash benchmarks/gpu_run.sh [tests] [eig] [eig-quick] [fit] [ttr] [example] [quality] [variants] [monotone]
#                              [memory] [dask] [cuda-tests] [scale-search] [scale-data] [cpu-threads]
#                              [distributional] [intervals]
# The device machine has no internet: carry the California cache and the tables as .data
# (mkdir -p .data/tabular && cp -r ../shared/data/scikit_learn_data .data/ && cp ../shared/data/tabular/* .data/tabular/)
# and, for LightGBM in the quality step, its wheel in .whl (XGBoost: the CPU-only xgboost-cpu wheel, 5.8 MB);
# run with carry [".data", ".whl"]. CatBoost's 97 MB wheel exceeds the 64 MiB carry limit, so it travels
# repacked in .whl/catboost: the wheel's files without _catboost.so as catboost-VERSION-no-so.tar.gz, the .so
# as _catboost.so.xz (xz -9e: 276 -> 33 MB), and six's wheel; carry [".data", ".whl/lightgbm-...whl",
# ".whl/xgboost_cpu-...whl", ".whl/catboost"] (50 MB). The
# device has Numba 0.68 now (2026-12-04; before, the CPU steps needed numba and llvmlite wheels carried in
# .whl/numba, which are still installed over it where present: cpu-threads with [".data/scikit_learn_data",
# ".whl/numba"], under the 64 MiB limit).
# quality's MLP peers (QUALITY_ARGS="... --peers hgb lightgbm tabm realmlp") need pytabkit and its
# dependencies as wheels in .whl/pytabkit (pip download --no-deps --python-version 3.12 --only-binary=:all:
# pytabkit pytorch-lightning torchmetrics lightning-utilities aiohttp ... ; 12 MB).
# The Dask steps (dask, scale-*) need dask, distributed (and optionally dask-cuda) as wheels in
# .whl/dask (pip download --no-deps --python-version 3.12 --only-binary=:all: ...); the memory
# step takes its rows from $MEMORY_ROWS (default 10000000), scale-data from $SCALE_ROWS;
# both scale steps take their worker counts from $SCALE_WORKERS (default 1 to the GPUs), scale-data
# more arguments from $SCALE_DATA_ARGS (e.g. --scale-batch: global batch 4096 x workers). The dask
# step runs the GPU tests of tests/test_dask.py (its CPU tests run in CI; on a 64-core host their
# one-process CPU fits outran the step's time limit).
# distributional takes its arguments from $DISTRIBUTIONAL_ARGS (e.g. --parts quantiles --folds 1 2 3 4);
# cuda-tests runs every test marked cuda (also each case parametrised with the device "cuda", marked in
# tests/conftest.py): 543 in 243 s on an H200 (2026-12-06, 0c460f2; 241 s on an H100), within $TESTS_TIMEOUT (default 420 s).
# quality takes its arguments from $QUALITY_ARGS (default: every dataset, every fold, "default");
# variants from $VARIANTS_ARGS (default: every part).
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export SCIKIT_LEARN_DATA="$PWD/.data/scikit_learn_data" PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, cupy, sklearn; print('torch', torch.__version__, 'cupy', cupy.__version__, 'sklearn', sklearn.__version__)" | tee -a "$OUT/gpu.txt"
WHEELS=$(ls .whl/*.whl .whl/numba/*.whl 2>/dev/null)  # LightGBM; Numba and llvmlite (the CPU kernels)
if [ -n "$WHEELS" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site $WHEELS \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
if [ -f .whl/catboost/_catboost.so.xz ]; then  # CatBoost, repacked to fit the carry limit (see the top)
  mkdir -p /tmp/site-catboost && tar xzf .whl/catboost/catboost-*-no-so.tar.gz -C /tmp/site-catboost \
    && python3 -c "import lzma, shutil; shutil.copyfileobj(lzma.open('.whl/catboost/_catboost.so.xz'), open('/tmp/site-catboost/catboost/_catboost.so', 'wb'))" \
    && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site-catboost .whl/catboost/six-*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site-catboost"
fi
if ls .whl/dask/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site-dask .whl/dask/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site-dask"
fi
if ls .whl/pytabkit/*.whl >/dev/null 2>&1; then  # pytabkit and its dependencies: quality's --peers realmlp tabm
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site-pytabkit .whl/pytabkit/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site-pytabkit"
fi
NGPU=$(python3 -c "import torch; print(torch.cuda.device_count())")
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
    memory) python3 benchmarks/bench_memory.py --device cuda --rows ${MEMORY_ROWS:-10000000} \
              --json "$OUT/memory_cuda.json" 2>&1 | tee "$OUT/memory.txt" | tail -8 ;;
    dask) timeout -s INT ${DASK_TIMEOUT:-360} python3 -m pytest tests/test_dask.py -m cuda -v -s -p no:cacheprovider -rs \
            -o faulthandler_timeout=240 2>&1 | tee "$OUT/dask_tests.txt" | tail -25 ;;
    cuda-tests) { timeout -s INT ${TESTS_TIMEOUT:-420} python3 -m pytest tests -m cuda --ignore=tests/test_dask.py -q \
                    -p no:cacheprovider -rs; python3 -m pytest tests/test_transfer.py tests/test_training.py -q \
                    -p no:cacheprovider; } 2>&1 | tee "$OUT/cuda_tests.txt" | tail -25 ;;
    distributional) python3 benchmarks/distributional.py --device cuda --data .data/tabular ${DISTRIBUTIONAL_ARGS:-} \
                      --json "$OUT/distributional_cuda.json" 2>&1 | tee "$OUT/distributional.log" | grep -v '^{' ;;
    intervals) for dataset in california flights; do python3 examples/prediction_intervals.py --dataset $dataset \
                 --data .data/tabular --figure "$OUT/intervals_$dataset.png" 2>&1 | grep -v -i warn; done \
                 | tee "$OUT/intervals.txt" ;;
    cpu-threads) python3 benchmarks/bench_cpu_threads.py --json "$OUT/cpu_threads.json" 2>&1 | grep -v -i warn \
                   | tee "$OUT/cpu_threads.txt" | tail -30 ;;
    scale-search) python3 benchmarks/bench_scale.py --gpu --parts search --workers ${SCALE_WORKERS:-$(seq -s ' ' 1 "$NGPU")} \
                    --json "$OUT/scale_search_cuda.json" 2>&1 | grep -v -i warn | tee "$OUT/scale_search.txt" | tail -8 ;;
    scale-data) python3 benchmarks/bench_scale.py --gpu --parts data ${SCALE_DATA_ARGS:-} --workers ${SCALE_WORKERS:-$(seq -s ' ' 1 "$NGPU")} \
                  --rows ${SCALE_ROWS:-10000000 50000000} --json "$OUT/scale_data_cuda.json" 2>&1 | grep -v -i warn \
                  | tee "$OUT/scale_data.txt" | tail -10 ;;
  esac
done
