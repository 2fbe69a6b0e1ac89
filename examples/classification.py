"""SpectralClassifier next to LogisticRegression, MLPClassifier and
HistGradientBoostingClassifier on scikit-learn's bundled datasets.

    python examples/classification.py

Prints test accuracy, log-loss and fit time for each model on the same
stratified split (no download needed).
"""

from __future__ import annotations

import time

import torch
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skspectral import SpectralClassifier


def models(seed: int) -> dict:
    return {
        "SpectralClassifier": SpectralClassifier(random_state=seed),
        "LogisticRegression": make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)),
        "MLPClassifier": make_pipeline(StandardScaler(), MLPClassifier(max_iter=1000, random_state=seed)),
        "HistGradientBoosting": HistGradientBoostingClassifier(random_state=seed),
    }


def main() -> None:
    where = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    print(f"SpectralClassifier on {where}\n")
    print("| dataset | model | accuracy | log-loss | fit s |\n|---|---|---|---|---|")
    for name, loader in [("breast_cancer", load_breast_cancer), ("iris", load_iris), ("wine", load_wine), ("digits", load_digits)]:
        X, y = loader(return_X_y=True)
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
        for model_name, model in models(0).items():
            start = time.perf_counter()
            model.fit(X_train, y_train)
            seconds = time.perf_counter() - start
            accuracy = accuracy_score(y_test, model.predict(X_test))
            loss = log_loss(y_test, model.predict_proba(X_test), labels=model.classes_)
            print(f"| {name} | {model_name} | {accuracy:.3f} | {loss:.3f} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
