"""California Housing with a monotone constraint: the price never falls as income rises.

    python examples/california_monotone.py              # GPU when there is one, else CPU
    python examples/california_monotone.py --figure out.png

Fits SpectralRegressor with its defaults twice on one split, without and with
``monotonic_cst={"MedInc": 1}``, next to HistGradientBoosting with the same
constraint, and prints the test RMSE of each (what the guarantee costs) and
the largest drop of any prediction along an income sweep of 500 test houses:
positive for the free model, zero for the constrained one. The constrained
model's MedInc matrices are positive semidefinite, so this holds for every
house, not only the ones checked (the Loewner order; see the docstring of
SpectralRegressor). With --figure, draws the two models' predictions along
the sweep for a few houses.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.datasets import fetch_california_housing
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.model_selection import train_test_split

from skspectral import SpectralRegressor

DOLLARS = 100_000


def largest_drop(model, X_rows, sweep) -> float:
    """The largest decrease of a prediction between neighbouring incomes, in dollars."""
    grid = X_rows.loc[X_rows.index.repeat(len(sweep))].copy()
    grid["MedInc"] = np.tile(sweep, len(X_rows))
    steps = np.diff(model.predict(grid).reshape(len(X_rows), len(sweep)), axis=1)
    return float(max(0.0, -steps.min()) * DOLLARS)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figure", help="write the income sweeps of a few houses to this PNG")
    args = parser.parse_args()
    X, y = fetch_california_housing(return_X_y=True, as_frame=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=args.seed)
    sweep = np.linspace(X["MedInc"].min(), X["MedInc"].max(), 100)
    houses = X_test.iloc[:500]
    models = {
        "SpectralRegressor": SpectralRegressor(random_state=args.seed),
        "SpectralRegressor, MedInc +1": SpectralRegressor(monotonic_cst={"MedInc": 1}, random_state=args.seed),
        "HistGradientBoosting, MedInc +1": HistGradientBoostingRegressor(monotonic_cst={"MedInc": 1},
                                                                         random_state=args.seed),
    }
    print(f"{'model':34s} {'test RMSE':>10s} {'fit s':>7s} {'largest drop along income':>26s}")
    for name, model in models.items():
        start = time.perf_counter()
        model.fit(X_train, y_train)
        seconds = time.perf_counter() - start
        rmse = np.sqrt(np.mean((model.predict(X_test) - y_test) ** 2)) * DOLLARS
        print(f"{name:34s} {rmse:10,.0f} {seconds:7.1f} {largest_drop(model, houses, sweep):26,.2f}")
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for i, color in zip(range(4), ["C0", "C1", "C2", "C3"]):
            rows = houses.iloc[[i] * len(sweep)].copy()
            rows["MedInc"] = sweep
            for name, style in (("SpectralRegressor", ":"), ("SpectralRegressor, MedInc +1", "-")):
                ax.plot(sweep, models[name].predict(rows) * DOLLARS, style, color=color)
        ax.set_xlabel("median income (MedInc, $10k)")
        ax.set_ylabel("predicted value ($)")
        ax.set_title("dotted: free; solid: non-decreasing in income")
        fig.tight_layout()
        fig.savefig(args.figure, dpi=120)
        print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
