"""A search in a fresh process, start-up included, with ``n_jobs`` from the command line, on the estimator's
default device (the GPU where there is one, else the CPU). On the CPU: workers are loky processes, each fit on
one thread there; ``--backend threading``: threads of this process, each fit's steps on the thread tuner's
count, which holds one thread while the other fits keep the cores busy; ``n_jobs=1``: each fit on the thread
tuner's count. On a GPU, ``--backend threading`` runs the fits side by side on the one GPU, each on a
CUDA stream it alone holds (skspectral._device.own_stream).

    python benchmarks/bench_search.py 1; python benchmarks/bench_search.py 2            # alternate, repeat
    python benchmarks/bench_search.py 2 --backend threading
    python benchmarks/bench_search.py 1 --size issue; python benchmarks/bench_search.py 2 --size issue

``--size small`` (the default): ``GridSearchCV(SpectralRegressor(max_iter=30), 4 candidates, cv=3)`` on 8,000
California rows, a search whose workers' start-up is a large share. ``--size issue``: issue 24's search, 20
candidates (dim, learning_rate_init, alpha) × 5 folds of every California row with the defaults otherwise.
"""

import argparse
import json
import time

t0 = time.perf_counter()
import joblib  # noqa: E402
from sklearn.datasets import fetch_california_housing  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402

from skspectral import SpectralRegressor  # noqa: E402

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("n_jobs", type=int)
p.add_argument("--size", choices=["small", "issue"], default="small")
p.add_argument("--backend", choices=["loky", "threading"], default="loky", help="joblib's backend for n_jobs > 1")
a = p.parse_args()
X, y = fetch_california_housing(return_X_y=True)
if a.size == "small":
    estimator, grid, cv, X, y = (SpectralRegressor(max_iter=30, random_state=0),
                                 {"dim": [8, 15], "learning_rate_init": [1e-3, 2e-3]}, 3, X[:8000], y[:8000])
else:
    estimator, grid, cv = (SpectralRegressor(random_state=0),
                           {"dim": [10, 15], "learning_rate_init": [1e-3, 2e-3], "alpha": [0, 1e-4, 1e-3, 1e-2, 1e-1]},
                           5)
search = GridSearchCV(estimator, grid, cv=cv, n_jobs=a.n_jobs)
with joblib.parallel_config(backend=a.backend):
    search.fit(X, y)
print(json.dumps({"size": a.size, "n_jobs": a.n_jobs, "backend": a.backend, "device": search.best_estimator_.device_,
                  "seconds": round(time.perf_counter() - t0, 2), "best_score": round(float(search.best_score_), 4)}))
