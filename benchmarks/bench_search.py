"""A small CPU search in a fresh process, start-up included: ``GridSearchCV(SpectralRegressor(max_iter=30),
4 candidates, cv=3)`` on 8,000 California rows with ``n_jobs`` from the command line (workers: loky
processes, each fit on one thread there; ``n_jobs=1``: each fit on the thread tuner's count).

    python benchmarks/bench_search.py 1; python benchmarks/bench_search.py 2   # alternate, repeat
"""

import sys, time, json
t0 = time.perf_counter()
from sklearn.datasets import fetch_california_housing
from sklearn.model_selection import GridSearchCV
from skspectral import SpectralRegressor
X, y = fetch_california_housing(return_X_y=True)
search = GridSearchCV(SpectralRegressor(max_iter=30, random_state=0),
                      {"dim": [8, 15], "learning_rate_init": [1e-3, 2e-3]}, cv=3, n_jobs=int(sys.argv[1]))
search.fit(X[:8000], y[:8000])
print(json.dumps({f"n_jobs={sys.argv[1]}": round(time.perf_counter() - t0, 2)}))
