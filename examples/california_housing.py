"""California Housing: SpectralRegressor next to HistGradientBoosting and MLP.

    python examples/california_housing.py            # GPU when there is one, else CPU
    python examples/california_housing.py --splits 3 # several random splits

Fits every model on the same split(s) and prints test RMSE in dollars and fit
time. On a GPU the spectral model uses dim=45; on a CPU the default
dimension, which fits in about a minute on two cores.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.datasets import fetch_california_housing
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skspectral import SpectralRegressor

DOLLARS = 100_000  # the target is in units of $100,000


def models(on_gpu: bool, seed: int) -> dict:
    spectral = SpectralRegressor(dim=45, random_state=seed) if on_gpu else SpectralRegressor(random_state=seed)
    return {
        f"SpectralRegressor(dim={spectral.dim})": spectral,
        "HistGradientBoostingRegressor": HistGradientBoostingRegressor(random_state=seed),
        "MLPRegressor (scaled)": make_pipeline(StandardScaler(), MLPRegressor(random_state=seed, max_iter=500)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--splits", type=int, default=1, help="number of random train/test splits")
    parser.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda'")
    args = parser.parse_args()
    on_gpu = args.device != "cpu" and torch.cuda.is_available()

    X, y = fetch_california_housing(return_X_y=True)
    where = torch.cuda.get_device_name() if on_gpu else f"CPU ({torch.get_num_threads()} threads)"
    print(f"California Housing: {X.shape[0]} rows, {X.shape[1]} features; spectral model on {where}")
    results: dict[str, list] = {}
    for split in range(args.splits):
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=split)
        for name, model in models(on_gpu, split).items():
            if isinstance(model, SpectralRegressor):
                model.set_params(device="cuda" if on_gpu else "cpu")
            start = time.perf_counter()
            model.fit(X_train, y_train)
            seconds = time.perf_counter() - start
            rmse = float(np.sqrt(np.mean((model.predict(X_test) - y_test) ** 2))) * DOLLARS
            results.setdefault(name, []).append((rmse, seconds))
            print(f"  split {split}: {name:<32} test RMSE ${rmse:>9,.0f}   fit {seconds:6.1f} s", flush=True)
    print(f"\nMean over {args.splits} split(s):")
    best = min(np.mean([r for r, _ in v]) for v in results.values())
    for name, values in results.items():
        rmse = np.mean([r for r, _ in values])
        seconds = np.mean([s for _, s in values])
        print(f"  {name:<32} test RMSE ${rmse:>9,.0f} ({rmse / best - 1:+6.1%} vs best)   fit {seconds:6.1f} s")


if __name__ == "__main__":
    main()
