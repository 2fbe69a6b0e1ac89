"""A hyperparameter search over every GPU (or core) of a Dask cluster.

    python examples/dask_search.py                      # a local cluster: one worker per GPU, else 2 CPU workers
    python examples/dask_search.py --scheduler tcp://host:8786   # an existing cluster

scikit-learn's GridSearchCV runs its fits through joblib; under joblib's Dask
backend each fit is a task on a Dask worker. With one single-threaded worker per
GPU (dask-cuda's LocalCUDACluster gives each worker its own card, seen as cuda:0),
every SpectralRegressor fit lands on its worker's GPU, and the fitted estimators
travel back as small numpy state. Prints the search's wall time, the best
parameters and the test RMSE of the refitted best model.
"""

from __future__ import annotations

import argparse
import time

import joblib
import numpy as np
from sklearn.datasets import fetch_california_housing
from sklearn.model_selection import GridSearchCV, train_test_split

from skspectral import SpectralRegressor


def local_cluster():
    """One single-threaded worker per GPU where there are GPUs, else two single-threaded CPU workers."""
    import torch

    if torch.cuda.is_available():
        from skspectral.dask import local_gpu_cluster  # dask-cuda's LocalCUDACluster where installed

        return local_gpu_cluster()
    from distributed import LocalCluster

    return LocalCluster(n_workers=2, threads_per_worker=1, processes=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scheduler", help="address of a running Dask scheduler (default: a local cluster)")
    parser.add_argument("--max-iter", type=int, default=40)
    args = parser.parse_args()
    from distributed import Client

    client = Client(args.scheduler) if args.scheduler else Client(local_cluster())
    print(f"workers: {len(client.scheduler_info()['workers'])}")
    X, y = fetch_california_housing(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0)
    search = GridSearchCV(
        SpectralRegressor(max_iter=args.max_iter, random_state=0),
        {"dim": [8, 15], "learning_rate_init": [0.002, 0.005], "n_bins": [8, 16]},
        cv=3, scoring="neg_root_mean_squared_error", n_jobs=-1,
    )
    start = time.perf_counter()
    with joblib.parallel_config(backend="dask"):
        search.fit(X_train, y_train)
    seconds = time.perf_counter() - start
    rmse = np.sqrt(np.mean((search.predict(X_test) - y_test) ** 2)) * 100_000
    print(f"{len(search.cv_results_['params']) * 3} fits in {seconds:.1f} s; best {search.best_params_}; "
          f"test RMSE ${rmse:,.0f}")
    client.close()


if __name__ == "__main__":
    main()
