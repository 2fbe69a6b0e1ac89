#!/bin/bash
# throw-away: this session's GPU runs (deleted before commit)
pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=$PWD:/tmp/site SCIKIT_LEARN_DATA=$PWD/.data/scikit_learn_data
timeout 560 python3 benchmarks/distributional.py --device cuda --data .data/tabular --parts quantiles counts robust --folds 0 1 2 3 4 --json $OUT/distributional_cuda_h200_suite.json > $OUT/dist.log 2>&1
tail -60 $OUT/dist.log | cut -c1-300
