"""SpectralClassifier: binary and multiclass, against sklearn's linear and MLP models;
on CUDA (marked ``cuda``): a fit that pickles and predicts on a CPU."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_digits, load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skspectral import SpectralClassifier

from .conftest import SERIES

CPU = dict(device="cpu", random_state=0)


@pytest.mark.parametrize(
    "loader,params,max_gap",
    [
        (load_breast_cancer, dict(dim=6, max_iter=60), 0.03),
        (load_iris, dict(dim=6, max_iter=100, learning_rate_init=0.02), 0.05),
        (load_digits, dict(dim=6, max_iter=40, learning_rate_init=0.01), 0.05),
    ],
)
def test_accuracy_close_to_logistic_regression_and_mlp(loader, params, max_gap):
    X, y = loader(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    spectral = SpectralClassifier(**params, **CPU).fit(X_train, y_train).score(X_test, y_test)
    logistic = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X_train, y_train).score(X_test, y_test)
    mlp = make_pipeline(StandardScaler(), MLPClassifier(max_iter=1000, random_state=0)).fit(X_train, y_train).score(X_test, y_test)
    assert spectral >= min(logistic, mlp) - max_gap, (spectral, logistic, mlp)


@pytest.fixture(scope="module")
def iris_strings():
    X, y = load_iris(return_X_y=True)
    labels = np.array(["setosa", "versicolor", "virginica"])[y]
    return X, labels


def test_string_labels_predict_matches_proba(iris_strings):
    X, y = iris_strings
    est = SpectralClassifier(dim=5, max_iter=60, learning_rate_init=0.02, **SERIES, **CPU).fit(X, y)
    np.testing.assert_array_equal(est.classes_, ["setosa", "versicolor", "virginica"])
    proba = est.predict_proba(X)
    assert proba.shape == (150, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(est.predict(X), est.classes_[proba.argmax(axis=1)])
    np.testing.assert_allclose(np.exp(est.predict_log_proba(X)), proba, rtol=1e-10)
    assert est.decision_function(X).shape == (150, 3)
    assert est.mu_.shape == (3, 5) and est.feature_matrices_.shape == (3, 4, 5, 5)
    assert est.score(X, y) > 0.9


def test_binary_non_contiguous_integer_labels():
    X, y = load_breast_cancer(return_X_y=True)
    y = np.where(y == 1, 7, -3)
    est = SpectralClassifier(dim=4, max_iter=20, **CPU).fit(X, y)
    np.testing.assert_array_equal(est.classes_, [-3, 7])
    logits = est.decision_function(X)
    assert logits.shape == (len(y),)
    np.testing.assert_array_equal(est.predict(X), np.where(logits > 0, 7, -3))
    np.testing.assert_array_equal(est.predict(X), est.classes_[est.predict_proba(X).argmax(axis=1)])
    np.testing.assert_allclose(np.exp(est.predict_log_proba(X)), est.predict_proba(X), rtol=1e-10)


def test_pipeline_and_grid_search(iris_strings):
    X, y = iris_strings
    grid = GridSearchCV(
        make_pipeline(StandardScaler(), SpectralClassifier(max_iter=20, learning_rate_init=0.02, **CPU)),
        {"spectralclassifier__dim": [3, 5], "spectralclassifier__eigval_idx": [None, -1]},
        cv=3,
    ).fit(X, y)
    assert grid.best_score_ > 0.8


def test_class_weight_balanced_helps_minority():
    rng = np.random.RandomState(0)
    X = np.vstack([rng.normal(0, 1, (300, 2)), rng.normal(1.5, 1, (20, 2))])
    y = np.r_[np.zeros(300), np.ones(20)]
    plain = SpectralClassifier(dim=3, max_iter=30, **CPU).fit(X, y)
    balanced = SpectralClassifier(dim=3, max_iter=30, class_weight="balanced", **CPU).fit(X, y)
    assert (balanced.predict(X)[y == 1] == 1).mean() > (plain.predict(X)[y == 1] == 1).mean()
    as_dict = SpectralClassifier(dim=3, max_iter=30, class_weight={0.0: 1.0, 1.0: 15.0}, **CPU).fit(X, y)
    assert (as_dict.predict(X)[y == 1] == 1).mean() > (plain.predict(X)[y == 1] == 1).mean()


def test_partial_fit_needs_classes_and_continues(iris_strings):
    X, y = iris_strings
    est = SpectralClassifier(dim=4, **CPU)
    with pytest.raises(ValueError, match="classes must be passed"):
        est.partial_fit(X, y)
    for _ in range(3):
        est.partial_fit(X[:100], y[:100], classes=np.unique(y))  # first 100 rows: two classes only
    assert len(est.classes_) == 3 and est.n_iter_ == 3


def test_early_stopping_on_log_loss_and_pickle(iris_strings):
    X, y = iris_strings
    # without iris's duplicate rows, the fit's rows are X's, in order: the held-out rows below are the fit's
    distinct = np.sort(np.unique(X, axis=0, return_index=True)[1])
    X, y = X[distinct], y[distinct]
    est = SpectralClassifier(dim=4, max_iter=100, early_stopping=True, n_iter_no_change=5, learning_rate_init=0.02,
                             refit=False, **CPU)  # the model kept is the one the held-out rows scored
    est.fit(X, y)
    # the held-out score is the negative log-loss of the fitted (best) model on the stratified
    # held-out rows: far better than chance's -log(3), and better than the last epoch's
    from sklearn.metrics import log_loss

    from skspectral._preprocessing import validation_split

    _, held_out = validation_split(len(X), est.validation_fraction, np.random.RandomState(est._seed()),
                                   stratify=np.searchsorted(est.classes_, y))
    np.testing.assert_allclose(-log_loss(y[held_out], est.predict_proba(X[held_out]), labels=est.classes_),
                               est.best_validation_score_, rtol=1e-5)  # float32 training
    assert -np.log(3) / 2 < est.best_validation_score_ and est.validation_scores_[-1] < est.best_validation_score_
    loaded = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))


def test_errors():
    X = np.random.RandomState(0).normal(size=(20, 3))
    with pytest.raises(ValueError, match="2 classes"):
        SpectralClassifier(max_iter=1).fit(X, np.zeros(20))
    with pytest.raises(ValueError, match=r"got 1 class: 'yes'\.$"):  # the label as the user wrote it
        SpectralClassifier(max_iter=1).fit(X, np.array(["yes"] * 20))
    with pytest.raises(ValueError, match="Unknown label type"):
        SpectralClassifier(max_iter=1).fit(X, np.linspace(0, 1, 20))
    with pytest.raises(ValueError, match="eigval_idx"):
        SpectralClassifier(dim=3, eigval_idx=3, max_iter=1).fit(X, np.arange(20) % 2)
    est = SpectralClassifier(dim=3, max_iter=1, **CPU).partial_fit(X, np.arange(20) % 2, classes=[0, 1])
    with pytest.raises(ValueError, match="not among classes_"):
        est.partial_fit(X, np.full(20, 5))


def test_early_stopping_split_is_stratified(monkeypatch):
    from skspectral import _estimator

    held_out = []
    original = _estimator.validation_split

    def spy(n_rows, fraction, rng, stratify=None):
        train, val = original(n_rows, fraction, rng, stratify)
        held_out.append(np.bincount(stratify[val].astype(int), minlength=3))
        return train, val

    monkeypatch.setattr(_estimator, "validation_split", spy)
    rng = np.random.RandomState(0)
    X = rng.normal(size=(200, 3))
    y = np.r_[np.zeros(180), np.ones(10), np.full(10, 2)]
    SpectralClassifier(dim=3, max_iter=3, early_stopping=True, validation_fraction=0.1, **CPU).fit(X, y)
    np.testing.assert_array_equal(held_out, [[18, 1, 1]])


@pytest.mark.cuda
def test_classifier_on_cuda_and_pickled_to_cpu(monkeypatch):
    X, y = load_iris(return_X_y=True)
    est = SpectralClassifier(dim=5, max_iter=60, learning_rate_init=0.02, random_state=0, device="cuda").fit(X, y)
    assert est.device_.startswith("cuda") and est.score(X, y) > 0.9
    proba = est.predict_proba(X)
    np.testing.assert_array_equal(est.predict(X), est.classes_[proba.argmax(axis=1)])
    blob = pickle.dumps(est)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    np.testing.assert_allclose(pickle.loads(blob).predict_proba(X), proba, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("n_classes, members", [(2, 1), (2, 3), (3, 2)])
def test_a_fit_starts_from_the_weighted_class_priors(n_classes, members):
    """A fit starts from the best constant -- the weighted log-odds (binary) or log-priors (multiclass) at the
    eigenvalue of every member -- as gradient boosting does: a fit that barely moves predicts about the class
    shares, sample weights counted, where the evenly spaced diagonal would predict about 1 / n_classes."""
    from sklearn.datasets import make_classification

    weights = [0.8, 0.2] if n_classes == 2 else [0.7, 0.2, 0.1]
    X, y = make_classification(1500, 5, n_informative=3, n_classes=n_classes, weights=weights, random_state=0)
    sample_weight = np.random.RandomState(0).uniform(0.5, 2.0, size=len(y))
    est = SpectralClassifier(max_iter=1, learning_rate_init=1e-9, early_stopping=False, n_estimators=members,
                             random_state=0, device="cpu", dtype="float64").fit(X, y, sample_weight=sample_weight)
    shares = np.bincount(y, weights=sample_weight) / sample_weight.sum()
    np.testing.assert_allclose(est.predict_proba(X).mean(axis=0), shares, atol=0.03)  # (before: 0.27-0.37 off)


def test_refit_classifier_and_a_fit_iter_stopped_early_keeps_the_selecting_model():
    X, y = load_breast_cancer(return_X_y=True)
    X, y = np.vstack([X, X + 0.01]), np.concatenate([y, y])  # 1,138 rows: early stopping holds out rows
    params = dict(dim=4, max_iter=8, n_iter_no_change=2, random_state=0, device="cpu")
    selecting = SpectralClassifier(refit=False, **params).fit(X, y)
    refitted = SpectralClassifier(refit=True, **params).fit(X, y)
    assert selecting.early_stopping_ and selecting.refit_epochs_ is None
    assert refitted.refit_epochs_ == -(-(1 + int(np.argmax(selecting.validation_scores_))) // 2)
    assert refitted.validation_scores_ == selecting.validation_scores_
    assert not np.array_equal(refitted.predict_proba(X), selecting.predict_proba(X))
    again = pickle.loads(pickle.dumps(SpectralClassifier(refit=True, **params).fit(X, y)))
    np.testing.assert_array_equal(again.predict_proba(X), refitted.predict_proba(X))
    stopped = SpectralClassifier(refit=True, **params)
    for record in stopped.fit_iter(X, y):
        if record["epoch"] == 3:
            break
    assert stopped.refit_epochs_ is None and stopped.n_iter_ == 3
