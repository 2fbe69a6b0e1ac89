"""The training loop: the graph-ready static steps equal the eager loop (CPU),
records follow the history schema, early stopping keeps the best epoch; on CUDA,
a fit replays its steps from a CUDA graph where the backend is capture-safe."""

import warnings
from contextlib import nullcontext

import math
import os
import time

import numpy as np
import pytest
import torch

from skspectral import SpectralModel, SpectralRegressor
from skspectral._losses import squared_error
from skspectral._training import Dataset, Trainer, TrainingOptions, history
from skspectral._training.cuda_graph import StaticBatchSteps
from skspectral.eig._cupy_support import is_available

from .conftest import allow_look_ahead, available_backends


def _problem(n_rows, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n_rows, 4, dtype=torch.float64, generator=g)
    y = torch.randn(n_rows, dtype=torch.float64, generator=g)
    w = torch.rand(n_rows, dtype=torch.float64, generator=g) + 0.1
    return X, y, w


@pytest.mark.parametrize("n_rows,batch_size", [(530, 100), (200, 200), (7, 3)])
def test_static_batch_steps_match_the_eager_loop(n_rows, batch_size):
    X, y, w = _problem(n_rows)
    results = []
    for static in (False, True):
        model = SpectralModel(4, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        options = TrainingOptions(learning_rate_init=0.01, batch_size=batch_size, max_iter=3,
                                  learning_rate_schedule="cosine", cuda_graph=static)
        trainer = Trainer(model, squared_error, options, torch.Generator().manual_seed(0),
                          penalty_fn=lambda: 1e-3 * model.weight.square().sum(),
                          train_metric=("rmse", torch.sqrt))
        assert trainer.static_steps == static
        records = list(trainer.epochs(Dataset(X, y, w)))
        results.append((model.weight.detach().clone(), records, trainer.state.t))
    (w_eager, rec_eager, t_eager), (w_static, rec_static, t_static) = results
    assert t_eager == t_static == 3 * -(-n_rows // batch_size)
    for key in (history.TRAIN_LOSS, history.train_key("rmse")):
        torch.testing.assert_close(torch.tensor([r[key] for r in rec_static]), torch.tensor([r[key] for r in rec_eager]),
                                   rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(w_static, w_eager, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("n_rows,batch_size", [(530, 100), (7, 3)])
def test_eager_epochs_gathered_in_blocks_train_as_one_gather(monkeypatch, n_rows, batch_size):
    """The eager loop gathers its shuffled rows a block of batches at a time (bounded memory):
    the same batches, bit for bit, as one gather of the epoch."""
    from skspectral._training import trainer as trainer_module

    X, y, w = _problem(n_rows)
    results = []
    for gather_bytes in (2**30, 1):  # one block; a block per batch
        monkeypatch.setattr(trainer_module, "GATHER_BYTES", gather_bytes)
        model = SpectralModel(4, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        options = TrainingOptions(learning_rate_init=0.01, batch_size=batch_size, max_iter=2, cuda_graph=False)
        trainer = Trainer(model, squared_error, options, torch.Generator().manual_seed(0))
        records = list(trainer.epochs(Dataset(X, y, w)))
        results.append((model.weight.detach().clone(), [r[history.TRAIN_LOSS] for r in records], trainer.state.t))
    assert results[0][1] == results[1][1] and results[0][2] == results[1][2]
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=0)


@pytest.mark.parametrize("n_rows,batch_size,taken", [(503, 100, 500), (530, 100, 530), (50, 100, 50), (100, 100, 100),
                                                    (196_408, 1964, 196_400), (196_408, 1960, 196_408)])
def test_a_last_batch_under_a_tenth_of_a_batch_is_left_out_of_its_epoch(n_rows, batch_size, taken):
    """One step on a handful of rows, at the step size of whole batches, threw a fit off just before each
    epoch's validation (flights with batch_size=1964: an 8-row last batch; benchmarks/RESULTS.md, section 9):
    such a batch is left out of its epoch (its rows are drawn anew each epoch). The steps, eager and
    replayed, take the same batches; the epoch's mean loss is over the rows it took."""
    from skspectral._training.trainer import rows_per_epoch

    assert rows_per_epoch(n_rows, batch_size) == taken
    if n_rows > 1000:
        return
    X, y, w = _problem(n_rows)
    results = []
    for static in (False, True):
        model = SpectralModel(4, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        options = TrainingOptions(learning_rate_init=0.01, batch_size=batch_size, max_iter=3, cuda_graph=static)
        trainer = Trainer(model, squared_error, options, torch.Generator().manual_seed(0))
        records = list(trainer.epochs(Dataset(X, y, w)))
        results.append((model.weight.detach().clone(), [r[history.TRAIN_LOSS] for r in records], trainer.state.t))
    assert results[0][2] == results[1][2] == 3 * -(-taken // batch_size)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-12)
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-10, atol=1e-12)
    # unshuffled and with no step: the first epoch's mean loss is the weighted mean over the rows taken
    model = SpectralModel(4, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for static in (False, True):
        options = TrainingOptions(learning_rate_init=0.0, batch_size=batch_size, max_iter=1, shuffle=False,
                                  cuda_graph=static)
        record = next(Trainer(model, squared_error, options, torch.Generator().manual_seed(0)).epochs(Dataset(X, y, w)))
        with torch.no_grad():
            expected = squared_error(model(X[:taken]), y[:taken], w[:taken]).item()
        np.testing.assert_allclose(record[history.TRAIN_LOSS], expected, rtol=1e-12)


@pytest.mark.parametrize("static", [False, True])
def test_a_data_parallel_epoch_weights_each_rank_by_the_rows_it_took(static):
    """A rank's epoch means are over the rows it took (a short last batch left out), so the ranks' means are
    averaged by those rows' weight, not by all of the rank's rows' (which would also steer a fit that stops on
    its training loss)."""
    X, y, w = _problem(503)
    w = w * torch.linspace(0.5, 2.0, 503, dtype=w.dtype)  # the rows left out weigh what a mean can tell apart

    class OneRank:  # a one-rank world that keeps what each average was weighted by
        def __init__(self):
            self.weights = []

        def weighted_average(self, tensors, weight):
            self.weights.append(float(weight))
            return tensors

        def gradient_reducer(self, parameters):
            return lambda batch_weight: None

        def all_agree(self, ok):
            return ok

    model = SpectralModel(4, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    world = OneRank()
    options = TrainingOptions(learning_rate_init=0.01, batch_size=100, max_iter=2, cuda_graph=static)
    trainer = Trainer(model, squared_error, options, torch.Generator().manual_seed(0), distributed=world)
    generator = torch.Generator().manual_seed(0)  # the trainer's own draws of each epoch's order
    expected = [float(w[torch.randperm(503, generator=generator)[:500]].sum()) for _ in range(2)]
    list(trainer.epochs(Dataset(X, y, w)))
    np.testing.assert_allclose(world.weights, expected, rtol=1e-12)
    assert abs(world.weights[0] - float(w.sum())) > 1e-3


def test_records_hold_objective_and_training_metric():
    X, y, w = _problem(300)
    model = SpectralModel(4, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    penalty = 0.5
    trainer = Trainer(model, squared_error, TrainingOptions(batch_size=300, max_iter=2, shuffle=False),
                      torch.Generator().manual_seed(0), penalty_fn=lambda: torch.tensor(penalty, dtype=torch.float64),
                      train_metric=("rmse", lambda loss: 10.0 * loss.sqrt()))
    with torch.no_grad():
        before = squared_error(model(X), y, w).item()
    first = next(trainer.epochs(Dataset(X, y, w)))
    assert first[history.EPOCH] == 1 and first[history.ELAPSED] >= 0
    # one full-batch step: the running means are the loss at the start of the epoch
    np.testing.assert_allclose(first[history.TRAIN_LOSS], before + penalty, rtol=1e-12)
    np.testing.assert_allclose(first[history.train_key("rmse")], 10.0 * np.sqrt(before), rtol=1e-12)


def test_validation_keeps_the_best_epoch_also_when_the_consumer_stops_early():
    X, y, w = _problem(200, seed=3)
    Xv, yv, wv = _problem(50, seed=4)
    model = SpectralModel(4, 5, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    trainer = Trainer(model, squared_error, TrainingOptions(learning_rate_init=0.05, batch_size=20, max_iter=30),
                      torch.Generator().manual_seed(0), score_fn=lambda o, t, w_: -squared_error(o, t, w_))
    records = trainer.epochs(Dataset(X, y, w), Dataset(Xv, yv, wv))
    for record in records:
        if record[history.EPOCH] == 6:
            break
    records.close()
    best = max(trainer.state.validation_scores)
    assert len(trainer.state.validation_scores) == 6 and trainer.state.best_validation_score == best
    with torch.no_grad():
        np.testing.assert_allclose(-squared_error(model(Xv), yv, wv).item(), best, rtol=1e-12)


def _averaged_fit(decay: float, stop_at: int | None = None):
    """A trainer's epochs on a small problem with validation; the live parameters at each epoch's end
    (as the next epoch starts from them) and the trainer."""
    X, y, w = _problem(200, seed=3)
    Xv, yv, wv = _problem(50, seed=4)
    model = SpectralModel(4, 5, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    options = TrainingOptions(learning_rate_init=0.05, batch_size=20, max_iter=12, average_decay=decay)
    trainer = Trainer(model, squared_error, options, torch.Generator().manual_seed(0),
                      score_fn=lambda o, t, w_: -squared_error(o, t, w_))
    live = []
    records = trainer.epochs(Dataset(X, y, w), Dataset(Xv, yv, wv))
    for record in records:
        live.append([p.detach().clone() for p in model.parameters()])
        if record[history.EPOCH] == stop_at:
            break
    records.close()
    return live, trainer, model, (Xv, yv, wv)


def test_an_averaged_fit_scores_and_keeps_the_running_average_and_trains_as_before():
    decay = 0.5
    live, trainer, model, (Xv, yv, wv) = _averaged_fit(decay)
    plain_live, plain, _, _ = _averaged_fit(0.0)
    # training goes on from the last parameters: the same steps, to the bit
    assert trainer.state.loss_curve == plain.state.loss_curve
    for ours, theirs in zip(live, plain_live):
        for a, b in zip(ours, theirs):
            assert torch.equal(a, b)
    # each epoch's score is the running average's (by hand from the live parameters)
    averages = None
    expected = []
    for parameters in live:
        averages = ([p.clone() for p in parameters] if averages is None
                    else [decay * a + (1 - decay) * p for a, p in zip(averages, parameters)])
        check = SpectralModel(4, 5, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        with torch.no_grad():
            for target, value in zip(check.parameters(), averages):
                target.copy_(value)
            expected.append((-squared_error(check(Xv), yv, wv).item(), [a.clone() for a in averages]))
    np.testing.assert_allclose(trainer.state.validation_scores, [score for score, _ in expected], rtol=1e-12)
    assert trainer.state.validation_scores != plain.state.validation_scores
    # the model kept is the best-scoring average
    best = int(np.argmax(trainer.state.validation_scores))
    for kept, value in zip(model.parameters(), expected[best][1]):
        torch.testing.assert_close(kept.detach(), value, rtol=1e-12, atol=1e-14)


def test_an_averaged_fit_stopped_by_its_consumer_keeps_its_best_average():
    live, trainer, model, (Xv, yv, wv) = _averaged_fit(0.5, stop_at=4)
    assert len(trainer.state.validation_scores) == 4
    with torch.no_grad():
        np.testing.assert_allclose(-squared_error(model(Xv), yv, wv).item(), trainer.state.best_validation_score,
                                   rtol=1e-12)


def _looked_ahead_fit(look_ahead: bool, *, validation: bool, max_iter: int = 12, stop_at: int | None = None,
                      schedule: str = "constant", n_iter_no_change: int = 10, learning_rate: float = 0.05,
                      decay: float = 0.5, device: str = "cpu"):
    """A trainer's epochs on the static-step path (replayed from a CUDA graph on CUDA, eager elsewhere), the
    next epoch queued before each record is read or not; (records without their clock, the parameters after
    the generator ended, the state, the epochs run)."""
    X, y, w = (t.to(device) for t in _problem(200, seed=3))
    Xv, yv, wv = (t.to(device) for t in _problem(50, seed=4))
    model = SpectralModel(4, 5, generator=torch.Generator().manual_seed(5), dtype=torch.float64).to(device)
    options = TrainingOptions(learning_rate_init=learning_rate, batch_size=30, max_iter=max_iter,
                              average_decay=decay, cuda_graph=True, learning_rate_schedule=schedule,
                              n_iter_no_change=n_iter_no_change)
    trainer = Trainer(model, squared_error, options, torch.Generator(device=device).manual_seed(0),
                      score_fn=lambda o, t, w_: -squared_error(o, t, w_), train_metric=("rmse", torch.sqrt))
    records = trainer.epochs(Dataset(X, y, w), Dataset(Xv, yv, wv) if validation else None,
                             record_fn=lambda: {"norm": model.weight.detach().square().sum()}, look_ahead=look_ahead)
    kept, run = [], []
    original = trainer._run_epoch
    trainer._run_epoch = lambda train, epoch: (run.append(epoch), original(train, epoch))[1]
    try:
        for record in records:
            kept.append({k: v for k, v in record.items() if k != history.ELAPSED})
            if record[history.EPOCH] == stop_at:
                break
    finally:
        records.close()
    return kept, [p.detach().clone() for p in model.parameters()], trainer.state, run


@pytest.mark.parametrize("ends, case", [
    ("converged", dict(validation=True, max_iter=60, n_iter_no_change=3)),  # early stopping
    ("converged", dict(validation=True, max_iter=60, n_iter_no_change=3, decay=0.0)),
    ("consumer", dict(validation=True, stop_at=4)),  # the consumer stops
    ("max_iter", dict(validation=True, max_iter=5, n_iter_no_change=50)),  # nothing queued beyond the last
    ("converged", dict(validation=False, learning_rate=1e-6, n_iter_no_change=1, max_iter=30)),  # a plateau of the loss
    ("consumer", dict(validation=False, stop_at=3, decay=0.0)),
    ("max_iter", dict(validation=False, schedule="cosine", max_iter=4)),  # a refit's epochs
])
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_epochs_queued_ahead_of_the_read_train_and_keep_what_epochs_one_at_a_time_do(ends, case, device):
    """The next epoch queued before this one's record is read (``look_ahead``): the same records, the same
    stopping epoch, and where the consumer ends the fit the queued epoch taken back -- the parameters kept
    (the best epoch's, else the last read epoch's) and the step count, to the bit. None is queued where
    the record may stop the fit (nor beyond max_iter)."""
    one_at_a_time, queued = (_looked_ahead_fit(look_ahead, device=device, **case) for look_ahead in (False, True))
    records, state, run = queued[0], queued[2], queued[3]
    assert run == list(range(len(records) + (ends == "consumer")))
    assert one_at_a_time[3] == list(range(len(records)))
    n_epochs = {"converged": None, "consumer": case.get("stop_at"), "max_iter": case.get("max_iter")}[ends]
    assert state.converged == (ends == "converged")
    assert len(records) == n_epochs if n_epochs else len(records) < case["max_iter"] - 1
    assert records == one_at_a_time[0]
    for a, b in zip(queued[1], one_at_a_time[1]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for name in ("t", "n_iter", "converged", "best_validation_score", "validation_scores", "loss_curve"):
        assert getattr(state, name) == getattr(one_at_a_time[2], name), name
    assert state.t == len(records) * 7  # 200 rows in batches of 30: the queued epoch's steps not counted


def test_epochs_queued_ahead_take_back_the_queued_epoch_when_a_fit_diverges():
    """A loss that turns NaN in the third epoch: the same error at the same epoch, and the queued fourth
    epoch taken back (the parameters and the step count as the third left them)."""
    X, y, w = _problem(200, seed=3)
    ended = []
    for look_ahead in (False, True):
        steps = [0]

        def turning_nan(output, target, weight):
            steps[0] += 1
            loss = squared_error(output, target, weight)
            return loss * float("nan") if steps[0] > 2 * 7 + 3 else loss

        model = SpectralModel(4, 5, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        options = TrainingOptions(learning_rate_init=0.05, batch_size=30, max_iter=10, cuda_graph=True)
        trainer = Trainer(model, turning_nan, options, torch.Generator().manual_seed(0))
        with pytest.raises(FloatingPointError, match="at epoch 3"):
            list(trainer.epochs(Dataset(X, y, w), look_ahead=look_ahead))
        ended.append((model.weight.detach().clone(), trainer.state.t, steps[0]))
    (one_at_a_time, t, n_steps), (queued, queued_t, queued_steps) = ended
    assert t == queued_t == 3 * 7 and (n_steps, queued_steps) == (3 * 7, 4 * 7)
    torch.testing.assert_close(queued, one_at_a_time, rtol=0, atol=0, equal_nan=True)


def test_epochs_look_ahead_only_on_graph_ready_steps_of_resident_rows():
    X, y, w = _problem(60)
    for static in (False, True):
        model = SpectralModel(4, 5, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        trainer = Trainer(model, squared_error, TrainingOptions(batch_size=20, max_iter=3, cuda_graph=static),
                          torch.Generator().manual_seed(0))
        queued = []
        original = trainer._run_epoch
        trainer._run_epoch = lambda train, epoch: (queued.append(epoch), original(train, epoch))[1]
        records = trainer.epochs(Dataset(X, y, w), look_ahead=True)
        next(records)
        # the eager path (the CPU's fits) runs an epoch only when its record is asked for
        assert queued == ([0, 1] if static else [0])
        records.close()


def test_metric_series_orders_training_then_eval_sets():
    record = {"epoch": 1, "train_loss": 0.1, "train_rmse": 2.0, "eval_0_rmse": 3.0, "eval_1_rmse": 4.0,
              "eval_0_r2": 0.5}
    assert history.metric_series(record, "rmse") == ["train_rmse", "eval_0_rmse", "eval_1_rmse"]
    assert history.metric_series(record, "r2") == ["eval_0_r2"]
    assert history.metric_series(record, "log_loss") == []


@pytest.mark.cuda
def test_cuda_fit_replays_the_step_from_a_cuda_graph(monkeypatch):
    if "kernel" not in available_backends("cuda"):
        pytest.skip("needs CuPy")
    rng = np.random.RandomState(0)
    X = rng.normal(size=(600, 6)) * [1, 10, 100, 0.1, 1, 5]
    y = np.sin(X[:, 0]) + 0.01 * X[:, 1] ** 2 + X[:, 3] * 3 + 0.1 * rng.normal(size=600)
    replays = []
    original = torch.cuda.CUDAGraph.replay
    monkeypatch.setattr(torch.cuda.CUDAGraph, "replay", lambda self: (replays.append(1), original(self))[1])
    params = dict(dim=8, max_iter=4, random_state=0, dtype="float64", shuffle=True, batch_size=64, early_stopping=False)
    graphed = SpectralRegressor(device="cuda", **params).fit(X, y)
    assert graphed.backend_ == "kernel"
    # 600 rows in batches of 64: 10 steps per epoch, 3 eager warm-up steps, the rest replayed
    assert len(replays) == 4 * 10 - 3
    eager = SpectralRegressor(device="cuda", backend="cupy", **params).fit(X, y)  # not capture-safe: eager
    assert len(replays) == 4 * 10 - 3
    np.testing.assert_allclose(graphed.predict(X), eager.predict(X), rtol=1e-5, atol=1e-5 * np.std(y))
    assert graphed.t_ == eager.t_ == 40


@pytest.mark.cuda
@pytest.mark.parametrize("estimator", ["regressor", "classifier"])
def test_a_cuda_fit_queueing_each_next_epoch_ahead_fits_what_it_fits_one_epoch_at_a_time(monkeypatch, estimator):
    """A CUDA fit queues each next epoch before it reads this one's record: early stopping ends it with an
    epoch queued beyond the last read (taken back), the refit after it runs its length; the fitted model,
    its record and step count are those of the same fit one epoch at a time, to the bit."""
    if "kernel" not in available_backends("cuda"):
        pytest.skip("needs CuPy")
    from skspectral import SpectralClassifier

    rng = np.random.RandomState(2)
    X = np.column_stack([rng.randint(0, 5, size=3000), rng.normal(size=(3000, 4))])
    y = X[:, 0] + np.sin(3 * X[:, 1]) + X[:, 2] * X[:, 3] + 0.5 * rng.normal(size=3000)
    if estimator == "classifier":
        y = (y > np.median(y)).astype(int)
    make = SpectralRegressor if estimator == "regressor" else SpectralClassifier
    params = dict(device="cuda", dim=6, max_iter=200, n_iter_no_change=3, categorical_features=[0], random_state=0)
    from skspectral._training import trainer as trainer_module

    queued, kept = [], []
    keep = trainer_module._LookAhead.keep
    monkeypatch.setattr(trainer_module._LookAhead, "keep", lambda self, t: (kept.append(t), keep(self, t))[1])
    fits = []
    for allowed in (False, True):
        allow_look_ahead(monkeypatch, allowed, queued)
        fits.append(make(**params).fit(X, y))
    one_at_a_time, ahead = fits
    assert queued == [False, False, True, True]  # the fit's epochs and its refit's
    assert ahead.n_iter_ == one_at_a_time.n_iter_ < params["max_iter"] and ahead.t_ == one_at_a_time.t_
    assert len(kept) > ahead.n_iter_ // 2  # most epochs were queued ahead
    assert ahead.refit_epochs_ == one_at_a_time.refit_epochs_ > 0
    drop = history.ELAPSED
    assert [{k: v for k, v in r.items() if k != drop} for r in ahead.history_] == [
        {k: v for k, v in r.items() if k != drop} for r in one_at_a_time.history_]
    out = "predict_proba" if estimator == "classifier" else "predict"
    np.testing.assert_array_equal(getattr(ahead, out)(X), getattr(one_at_a_time, out)(X))


@pytest.mark.cuda
def test_a_cuda_fit_stopped_by_a_callback_that_reads_no_model_takes_its_queued_epoch_back(monkeypatch):
    """A callback that counts epochs (a progress bar's kind) lets the fit queue its next epoch ahead; when
    it stops the fit, the queued epoch is taken back: the model, record and step count of the same fit one
    epoch at a time, to the bit."""
    if "kernel" not in available_backends("cuda"):
        pytest.skip("needs CuPy")
    pytest.importorskip("sklearn.callback")
    from skspectral._training import trainer as trainer_module

    from .test_estimator import EpochCounter

    rng = np.random.RandomState(3)
    X = rng.normal(size=(2000, 5))
    y = np.sin(2 * X[:, 0]) + X[:, 1] * X[:, 2] + 0.3 * rng.normal(size=2000)
    taken_back = []
    take_back = trainer_module._LookAhead.take_back
    monkeypatch.setattr(trainer_module._LookAhead, "take_back",
                        lambda self, state: (taken_back.append(self.queued is not None), take_back(self, state))[1])
    fits = []
    for allowed in (False, True):
        allow_look_ahead(monkeypatch, allowed)
        counter = EpochCounter(stop_after=4)
        fits.append(SpectralRegressor(device="cuda", dim=6, max_iter=50, random_state=0).set_callbacks(counter)
                    .fit(X, y))
    one_at_a_time, ahead = fits
    # the selecting fit's queued fifth epoch taken back; its refit (under 100,000 rows) queues none beyond its end
    assert taken_back == [True, False] and ahead.n_iter_ == one_at_a_time.n_iter_ == 4
    assert ahead.t_ == one_at_a_time.t_ and ahead.refit_epochs_ == one_at_a_time.refit_epochs_ > 0
    drop = history.ELAPSED
    assert [{k: v for k, v in r.items() if k != drop} for r in ahead.history_] == [
        {k: v for k, v in r.items() if k != drop} for r in one_at_a_time.history_]
    np.testing.assert_array_equal(ahead.predict(X), one_at_a_time.predict(X))


@pytest.mark.cuda
def test_cuda_fit_with_encodings_levels_and_members_replays_from_a_cuda_graph(monkeypatch):
    """The default model (piecewise bins, members) and categorical levels stay capture-safe."""
    if "kernel" not in available_backends("cuda"):
        pytest.skip("needs CuPy")
    rng = np.random.RandomState(1)
    X = np.column_stack([rng.randint(0, 4, size=640), rng.normal(size=640), rng.normal(size=640)])
    X[::9, 1] = np.nan
    y = X[:, 0] + np.nan_to_num(X[:, 1]) ** 2 + X[:, 2]
    replays = []
    original = torch.cuda.CUDAGraph.replay
    monkeypatch.setattr(torch.cuda.CUDAGraph, "replay", lambda self: (replays.append(1), original(self))[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a failed capture warns: make it fail the test
        est = SpectralRegressor(device="cuda", dim=8, max_iter=3, batch_size=64, categorical_features=[0],
                                n_estimators=3, early_stopping=False, random_state=0).fit(X, y)
    assert est.encoding_.n_levels == [5] and est.encoding_.missing == [1]
    assert len(replays) == 3 * 10 - 3


@pytest.mark.cuda
def test_cuda_fits_on_several_threads_at_once_fit_what_one_fit_at_a_time_fits(monkeypatch):
    """A search on joblib's threads on one GPU: each fit queues its work on a stream it alone holds and
    warms up and captures its step there while the others replay theirs. Work another thread queues on a
    stream being captured would become part of that graph, and a device-wide synchronisation while another
    thread captures breaks both captures, so every fit must be what it is one at a time, to the bit (the
    GPU's fits are deterministic), with as many steps replayed from graphs and no capture given up (a
    RuntimeWarning, an error here)."""
    if "kernel" not in available_backends("cuda"):
        pytest.skip("needs CuPy")
    import joblib
    from sklearn.model_selection import GridSearchCV

    rng = np.random.RandomState(2)
    X = rng.normal(size=(2400, 5))
    y = np.sin(X[:, 0]) + X[:, 1] * X[:, 2] + 0.1 * rng.normal(size=2400)
    replays = []
    original = torch.cuda.CUDAGraph.replay
    monkeypatch.setattr(torch.cuda.CUDAGraph, "replay", lambda self: (replays.append(1), original(self))[1])
    grid = {"dim": [8, 15], "learning_rate_init": [2e-3, 4e-3]}
    estimator = SpectralRegressor(max_iter=6, batch_size=64, random_state=0, device="cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        one_at_a_time = GridSearchCV(estimator, grid, cv=2, error_score="raise").fit(X, y)
        replayed_one_at_a_time = len(replays)
        with joblib.parallel_config(backend="threading"):
            side_by_side = GridSearchCV(estimator, grid, cv=2, n_jobs=4, error_score="raise").fit(X, y)
    assert replayed_one_at_a_time > 0 and len(replays) == 2 * replayed_one_at_a_time
    for split in ("split0_test_score", "split1_test_score"):
        np.testing.assert_array_equal(side_by_side.cv_results_[split], one_at_a_time.cv_results_[split])
    np.testing.assert_array_equal(side_by_side.predict(X), one_at_a_time.predict(X))


@pytest.mark.cuda
def test_cuda_fit_iter_loops_interleaved_on_one_thread_each_train_on_its_own_stream(monkeypatch):
    """A fit's work goes to its leased stream only while the fit runs (entered around each resumption of its
    generator): a ``fit_iter`` loop's body runs on the caller's stream, with no fit's stream named, and two
    loops stepped in turn -- each capturing its step on its own stream -- fit what each fits alone, to the
    bit, with every step after the capture replayed from a graph."""
    if "kernel" not in available_backends("cuda"):
        pytest.skip("needs CuPy")
    from skspectral._device import leased_stream

    rng = np.random.RandomState(3)
    X = rng.normal(size=(1500, 4))
    y = np.sin(X[:, 0]) + X[:, 1] * X[:, 2] + 0.1 * rng.normal(size=1500)
    device = torch.device("cuda", torch.cuda.current_device())
    params = dict(max_iter=5, batch_size=64, early_stopping=False, device="cuda")
    replays = []
    original = torch.cuda.CUDAGraph.replay
    monkeypatch.setattr(torch.cuda.CUDAGraph, "replay", lambda self: (replays.append(1), original(self))[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no capture given up
        alone = [SpectralRegressor(random_state=seed, **params).fit(X, y) for seed in (0, 1)]
        replayed_alone = len(replays)
        fits = [SpectralRegressor(random_state=seed, **params) for seed in (0, 1)]
        loops = [fit.fit_iter(X, y) for fit in fits]
        caller = torch.cuda.current_stream(device)
        bodies = []
        for _ in range(params["max_iter"]):
            for loop in loops:
                next(loop)
                bodies.append((leased_stream(device), torch.cuda.current_stream(device) == caller))
        for loop in loops:
            assert next(loop, None) is None
    assert bodies == [(None, True)] * 2 * params["max_iter"]
    assert replayed_alone > 0 and len(replays) == 2 * replayed_alone
    for fit, one in zip(fits, alone):
        np.testing.assert_array_equal(fit.predict(X), one.predict(X))


@pytest.mark.cuda
@pytest.mark.parametrize("others_agree", [True, False])
def test_ranks_replay_from_graphs_only_where_every_rank_captured(others_agree):
    """A data-parallel step holds a collective: after capturing, the ranks agree, and one
    rank's failed capture sends every rank down the eager path (nothing captured has run)."""
    torch.manual_seed(0)
    X, y = torch.randn(300, 3, device="cuda"), torch.randn(300, device="cuda")
    weight = torch.ones(300, device="cuda")
    w = torch.zeros(3, device="cuda", requires_grad=True)
    optimizer = torch.optim.Adam([w], lr=0.1, capturable=True)

    def step(xb, yb, wb):
        loss = (wb * (xb @ w - yb) ** 2).sum() / wb.sum().clamp_min(1e-12)
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        optimizer.step()
        return (loss.detach(),)

    asked = []
    steps = StaticBatchSteps(step, X, y, weight, batch_size=32, n_values=1,
                             agree=lambda captured: (asked.append(captured), captured and others_agree)[1])
    first = steps.epoch(torch.arange(300, device="cuda"))
    second = steps.epoch(torch.arange(300, device="cuda"))
    assert asked == [True]  # asked once, after this rank's capture succeeded
    assert (steps.graph is not None) == others_agree and steps.capture == others_agree
    assert torch.isfinite(first).all() and second[0] < first[0]  # both paths keep training


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n_values", [1, 2, 4])
def test_the_steps_kernels_take_the_batches_and_totals_torchs_ops_take(dtype, n_values):
    """On CUDA a step's batch (rows, targets, the padded last batch's zero weights) and the epoch's
    totals come from two kernels: the same batches, bit for bit, and the same totals to rounding as
    torch's ops, eagerly and replayed from a graph."""
    if not is_available():
        pytest.skip("needs CuPy")
    g = torch.Generator(device="cuda").manual_seed(0)
    X = torch.randn(203, 7, device="cuda", generator=g, dtype=dtype)
    y = torch.randn(203, device="cuda", generator=g, dtype=dtype)
    weight = torch.rand(203, device="cuda", generator=g, dtype=dtype)
    order = torch.randperm(203, device="cuda", generator=g)

    def run(kernels: bool, graphed: bool):
        seen = []

        def step(xb, yb, wb):
            if not graphed:
                seen.append((xb.clone(), yb.clone(), wb.clone()))
            return tuple((xb.sum(dim=1) * yb).mean() + j for j in range(n_values))

        steps = StaticBatchSteps(step, X, y, weight, batch_size=32, n_values=n_values)
        assert steps.kernels  # contiguous CUDA rows of one dtype
        steps.kernels, steps.capture = kernels, graphed
        return [steps.epoch(order).clone() for _ in range(2)], seen, steps.graph is not None

    (expected, expected_seen, _), (eager, seen, _) = run(False, False), run(True, False)
    assert len(seen) == 2 * 7 and all(torch.equal(a, b) for pair in zip(seen, expected_seen)
                                      for a, b in zip(*pair))
    assert torch.equal(seen[6][2][203 - 6 * 32:], torch.zeros(32 * 7 - 203, dtype=dtype, device="cuda"))
    rounding = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-13)
    for got, want in zip(eager, expected):
        torch.testing.assert_close(got, want, **rounding)
    graphed, _, captured = run(True, True)
    assert captured
    for got, want in zip(graphed, eager):
        assert torch.equal(got, want)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("estimator", ["regressor", "classifier"])
def test_rows_streamed_from_host_memory_train_as_resident_rows(monkeypatch, device, estimator):
    """Training rows too large for the GPU stay in host memory and stream to it in blocks of
    whole batches: the same batches in the same order as resident rows, so the same fit
    (blocks of 3 batches, a short last one; on CUDA the steps replay from a graph both ways)."""
    from skspectral import SpectralClassifier, _estimator
    from skspectral._training import streaming

    if device == "cuda" and "kernel" not in available_backends("cuda"):
        pytest.skip("needs CuPy")
    rng = np.random.RandomState(3)
    X = rng.normal(size=(3000, 5))
    y = np.sin(X[:, 0]) + X[:, 1] * X[:, 2] + 0.1 * rng.normal(size=3000)
    X[rng.rand(3000) < 0.02, 3] = np.nan  # missing values stream as NaN, as they stay resident
    cls = SpectralRegressor
    if estimator == "classifier":  # and a float32 X: its raw rows stream as float32
        cls, y, X = SpectralClassifier, np.digitize(y, [-0.5, 0.5]), X.astype(np.float32)
    params = dict(dim=6, max_iter=3, batch_size=64, n_estimators=2, early_stopping=True, refit=False, random_state=0,
                  device=device)
    replays = []
    if device == "cuda":
        original = torch.cuda.CUDAGraph.replay
        monkeypatch.setattr(torch.cuda.CUDAGraph, "replay", lambda self: (replays.append(1), original(self))[1])
    resident = cls(**params).fit(X, y)
    resident_replays = len(replays)
    dtype_bytes = 4  # float32 training rows on both devices
    monkeypatch.setattr(streaming, "STREAM_BYTES" if device == "cuda" else "CPU_STREAM_BYTES", 3 * 64 * 5 * dtype_bytes)
    monkeypatch.setattr(_estimator, "_stream_rows", lambda n_bytes, device: True)
    blocks = []
    original_blocks = streaming.HostRowBlocks.blocks
    monkeypatch.setattr(streaming.HostRowBlocks, "blocks",
                        lambda self, order: (blocks.append(self.block_rows), original_blocks(self, order))[1])
    streamed = cls(**params).fit(X, y)
    assert len(blocks) == 3 and set(blocks) == {3 * 64}  # one pass of blocks per epoch
    assert streamed.t_ == resident.t_
    if device == "cuda":
        assert resident_replays > 0 and len(replays) - resident_replays > 0
    # float32 on CUDA, and the epoch's losses summed per block there: agreement to float32 rounding
    rtol, atol = (1e-4, 1e-5) if device == "cuda" else (1e-12, 1e-12)
    np.testing.assert_allclose(streamed.loss_curve_, resident.loss_curve_, rtol=rtol)
    output = "predict_proba" if estimator == "classifier" else "predict"
    np.testing.assert_allclose(getattr(streamed, output)(X), getattr(resident, output)(X), rtol=rtol, atol=atol)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_streamed_blocks_are_the_resident_rows_of_a_split_and_padded_shard(device):
    """A block holds standardised rows as resident rows have them, through the row map of a
    validation split, with the clip and the fill; padding positions (past the shard's rows) are
    finite."""
    from skspectral._training import HostRows
    from skspectral._training.streaming import HostRowBlocks
    from skspectral._transfer import Standardisation, standardised_rows

    rng = np.random.RandomState(0)
    X = rng.normal(size=(500, 3)).astype(np.float32)
    X[7, 1] = np.nan
    rows = rng.permutation(500)[:400]
    mean, scale = X[~np.isnan(X).any(1)].mean(0).astype(np.float64), np.array([1.5, 2.0, 0.5])
    low, high = np.full(3, -1.0), np.full(3, 1.0)
    device = torch.device(device)
    dtype = torch.float32 if device.type == "cuda" else torch.float64
    standardisation = Standardisation(mean, scale, low, high, np.array([np.nan, 0.25, np.nan]))
    resident = standardised_rows(X, standardisation, device, dtype, rows=rows, n_rows=410)
    blocks = HostRowBlocks(HostRows(X, standardisation, dtype, rows=rows, n_rows=410), 64, device)
    order = torch.randperm(410, generator=torch.Generator().manual_seed(1))
    for start, n in blocks.blocks(order):
        positions = order[start : start + n]
        block = blocks.device_rows[:n]
        real = positions < 400
        torch.testing.assert_close(block[real.to(device)], resident[positions[real].to(device)], rtol=0, atol=0,
                                   equal_nan=True)
        assert torch.isfinite(block[(~real).to(device)]).all()
    assert blocks.block_rows % 64 == 0


def test_rows_are_read_in_blocks_on_the_cpu_where_their_copy_would_be_large():
    from skspectral._estimator import _stream_rows

    assert not _stream_rows(2**20, torch.device("cpu")) and _stream_rows(2**30, torch.device("cpu"))


@pytest.mark.cuda
def test_rows_stream_from_host_only_where_they_would_crowd_the_gpu():
    from skspectral._estimator import _stream_rows

    free, _ = torch.cuda.mem_get_info()
    assert not _stream_rows(2**20, torch.device("cuda"))
    assert _stream_rows(free, torch.device("cuda"))  # more than half of what is free


def test_data_parallel_steps_on_two_ranks_are_one_process_steps_on_the_joined_batches(tmp_path):
    """Two gloo ranks, each holding every other row and taking half of each global batch
    (shuffle off): each step's gradient is the weighted mean over the global batch, so
    after 2 epochs both ranks hold what one process holds after the same global batches
    (random weights, a penalty, 6 steps an epoch); the ranks hold the same bits, and
    DistributedContext.same_on_every_rank says so (and sees one rank's difference)."""
    import socket
    import subprocess
    import sys
    from pathlib import Path

    X, y, w = _problem(600)
    batch_size = 100
    torch.save({"X": X, "y": y, "w": w, "batch_size": batch_size}, tmp_path / "data.pt")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    worker = Path(__file__).with_name("_distributed_worker.py")
    ranks = [subprocess.Popen([sys.executable, str(worker), str(rank), "2", f"tcp://127.0.0.1:{port}",
                               str(tmp_path / "data.pt"), str(tmp_path / "out.pt")]) for rank in range(2)]
    assert [rank.wait(timeout=300) for rank in ranks] == [0, 0]
    rank0, rank1 = (torch.load(tmp_path / f"out.pt.{rank}") for rank in range(2))
    torch.testing.assert_close(rank0["weight"], rank1["weight"], rtol=0, atol=0)
    # the check a data-parallel fit ends with sees the same bits, and a difference on one rank
    assert [r["same"] for r in (rank0, rank1)] == [True, True]
    assert [r["one_rank_off"] for r in (rank0, rank1)] == [False, False]
    # one process: rank r's j-th row is row 2j + r, so global batch i is rows 100i ... 100i + 99
    model = SpectralModel(4, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    options = TrainingOptions(learning_rate_init=0.01, batch_size=batch_size, max_iter=2, shuffle=False,
                              cuda_graph=False)
    trainer = Trainer(model, squared_error, options, torch.Generator().manual_seed(0),
                      penalty_fn=lambda: 1e-3 * model.weight.square().sum())
    losses = [r[history.TRAIN_LOSS] for r in trainer.epochs(Dataset(X, y, w))]
    torch.testing.assert_close(rank0["weight"], model.weight.detach(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(rank0["losses"], losses, rtol=1e-10)


class _ScriptedIdle:
    """A stand-in for threads.IdleCores: ``free_cores`` idle over every hold (None: nothing readable, as
    off Linux), the window too short for the first ``short_holds`` holds that end."""

    def __init__(self, free_cores=None, short_holds=0):
        self.free_cores, self.short_holds = free_cores, short_holds

    def start(self):
        pass

    def seconds_left(self):
        if self.free_cores is None:
            return None
        if self.short_holds:
            self.short_holds -= 1
            return 0.01
        return 0.0

    def free(self):
        return self.free_cores


def _tuner(**kwargs):
    """A tuner that cannot read the machine's idle cores (the scripted tests' steps are not the machine's)."""
    from skspectral._training import threads

    return threads.AdaptiveThreads(idle_cores=kwargs.pop("idle_cores", _ScriptedIdle()), **kwargs)


def _scripted(tuner, seconds: dict, n_steps: int) -> list:
    """The thread counts a tuner runs n_steps on when a step on n threads takes seconds[n]."""
    counts = []
    for _ in range(n_steps):
        counts.append(tuner.current)
        tuner.record(seconds[tuner.current])
    return counts


def test_cpu_steps_run_on_the_thread_count_that_times_best(monkeypatch):
    """Every candidate count is timed a few steps (the first left out), the fastest held, then
    timed again; the fit's own thread count comes back at the end."""
    from skspectral._training import threads

    torch.set_num_threads(2)
    try:
        first = threads.AdaptiveThreads()
        with first.step():  # a step runs on the current candidate: one thread first
            assert torch.get_num_threads() == 1
        first.close()  # the fit's own count back
        assert torch.get_num_threads() == 2
        counts = _scripted(_tuner(probe_steps=3, hold_steps=5, warmup_steps=0), {2: 0.7, 1: 0.5}, 20)
        assert counts[:8] == [1] * 4 + [2] * 4 and counts[8:13] == [1] * 5  # probe both, hold the faster
        assert counts[13:21] == ([1] * 4 + [2] * 3)[: len(counts[13:21])]  # then probe again
        tuner = _tuner(probe_steps=3, hold_steps=5, warmup_steps=0)
        assert _scripted(tuner, {2: 0.3, 1: 0.5}, 12) == [1] * 4 + [2] * 8  # an idle machine: two threads
        warming = _tuner(probe_steps=3, hold_steps=5, warmup_steps=4)  # (the default: WARMUP_STEPS)
        assert warming.steps_left() == 4  # the warm-up: one thread, untimed, then the same schedule
        assert _scripted(warming, {2: 0.3, 1: 0.5}, 16) == [1] * 4 + [1] * 4 + [2] * 8
        warming.close()
        tuner.close()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(2)


def test_the_thread_tuner_stops_probing_a_count_that_is_already_far_slower():
    """Two threads spinning on a busy machine: their probe ends at the first timed step slower than
    ABANDON_FACTOR times one thread's mean (its start-up step is not timed)."""

    torch.set_num_threads(2)
    try:
        tuner = _tuner(probe_steps=6, hold_steps=50, warmup_steps=0)
        assert _scripted(tuner, {2: 10.0, 1: 1.0}, 30) == [1] * 7 + [2] * 2 + [1] * 21
        tuner.close()
    finally:
        torch.set_num_threads(2)


def test_the_thread_tuner_holds_a_choice_it_makes_again_twice_as_long():
    """A measurement that chooses the count before it again doubles the hold (up to a cap); a new
    choice starts from the base hold again."""
    from skspectral._training import threads

    torch.set_num_threads(2)
    try:
        seconds = {2: 1.0, 1: 0.5}
        tuner = _tuner(probe_steps=1, hold_steps=3, warmup_steps=0)
        holds = []
        for step in range(400):
            if step == 250:
                seconds = {2: 0.25, 1: 0.5}  # the machine became idle: two threads win
            measuring = tuner.probing is not None
            tuner.record(seconds[tuner.current])
            if measuring and tuner.probing is None:  # a measurement chose
                holds.append((tuner.chosen, tuner.hold))
        tuner.close()
    finally:
        torch.set_num_threads(2)
    cap = threads.MAX_HOLD_FACTOR * 3
    assert holds[:6] == [(1, 3), (1, 6), (1, 12), (1, 24), (1, 48), (1, 48)]
    assert all(hold <= cap for _, hold in holds) and holds[4] == (1, cap)
    switch = [chosen for chosen, _ in holds].index(2)  # a new choice: held from the base again
    assert holds[switch:switch + 5] == [(2, 3), (2, 6), (2, 12), (2, 24), (2, 48)]


def test_a_held_choice_of_several_threads_that_turns_slow_is_measured_again():
    """Beside a busy process a few fast probe steps could choose two threads that then stall: a held
    choice of several threads runs at most WATCH_STEPS steps together, and a block (or WATCH_STEPS single
    steps) slower than ABANDON_FACTOR times one thread's measured step ends the hold at once; a later
    candidate is probed for at least PROBE_SECONDS."""
    from skspectral._training import threads

    torch.set_num_threads(2)
    try:
        tuner = _tuner(probe_steps=3, hold_steps=500, warmup_steps=0)
        one, two = 0.004, 0.002
        # one thread 4 steps; two threads until their timed steps (the first left out) reach PROBE_SECONDS
        probed = 1 + max(3, math.ceil(threads.PROBE_SECONDS / two - 1e-9))
        assert _scripted(tuner, {1: one, 2: two}, 4 + probed) == [1] * 4 + [2] * probed
        assert tuner.probing is None and tuner.chosen == 2 and tuner.steps_left() == threads.WATCH_STEPS
        tuner.record(threads.WATCH_STEPS * two, threads.WATCH_STEPS)  # as fast as measured: held
        assert tuner.probing is None and tuner.held == threads.WATCH_STEPS
        tuner.record(threads.WATCH_STEPS * 3 * one, threads.WATCH_STEPS)  # the other process is back
        assert tuner.probing == 0 and tuner.current == 1 and tuner.hold == 500
        single = _tuner(probe_steps=3, hold_steps=500, warmup_steps=0)
        _scripted(single, {1: one, 2: two}, 4 + probed)
        for _ in range(threads.WATCH_STEPS - 1):  # single steps: judged over WATCH_STEPS of them
            single.record(3 * one)
        assert single.probing is None
        single.record(3 * one)
        assert single.probing == 0
        tiny = _tuner(probe_steps=3, hold_steps=10, warmup_steps=0)  # steps of 1 us: capped
        assert _scripted(tiny, {1: 1e-6, 2: 1e-6}, 5 + threads.MAX_PROBE_STEPS) == [1] * 4 + [2] * (
            1 + threads.MAX_PROBE_STEPS)
        assert tiny.probing is None
        quiet = _tuner(probe_steps=3, hold_steps=10, warmup_steps=0)
        assert _scripted(quiet, {1: one, 2: 5 * one}, 6) == [1] * 4 + [2] * 2  # hopeless: abandoned
        assert quiet.chosen == 1 and quiet.steps_left() == 10  # one thread held is not watched: whole holds
        single.close()
        quiet.close()
        tuner.close()
    finally:
        torch.set_num_threads(2)


def test_steps_run_together_only_while_the_thread_choice_holds():
    """steps_left: 1 while a count is probed (each probed step is timed alone), else the rest of the
    hold; ``step(count)`` records its steps at once, so the same schedule as one step at a time."""

    torch.set_num_threads(2)
    try:
        seconds = {2: 0.7, 1: 0.5}
        one_by_one = _tuner(probe_steps=3, hold_steps=5, warmup_steps=4)
        together = _tuner(probe_steps=3, hold_steps=5, warmup_steps=4)
        expected = _scripted(one_by_one, seconds, 40)
        counts, lefts = [], []
        while len(counts) < 40:
            left = together.steps_left()
            lefts.append(left)
            count = min(left, 40 - len(counts))
            with pytest.raises(ValueError, match="timed alone") if together.probing is not None else nullcontext():
                together.step(2)
            current = together.current
            counts += [current] * count
            together.record(count * seconds[current], count)
        assert counts == expected
        assert {1, 4, 5, 10} <= set(lefts) <= {1, 4, 5, 10, 20}  # the warm-up, then whole holds at once
        together.close()
    finally:
        torch.set_num_threads(2)


def test_a_cpu_fit_sets_up_on_one_thread_and_tunes_its_steps_from_the_callers_count(monkeypatch):
    """The set-up before a CPU fit's steps (columns, rows, model, encodings) runs on one thread (beside a
    busy process two threads waited on each other there); the steps' tuner starts from the caller's count,
    and reads the machine's idle cores from the set-up's start (it ran on one thread, as the warm-up does);
    the caller's count is back after the fit, also after an error inside it."""
    from skspectral._training import threads

    seen = []
    original = threads.AdaptiveThreads.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen.append((torch.get_num_threads(), self.start_threads))
        assert isinstance(self.idle_cores, threads.IdleCores) and started <= self.idle_cores.mark[0]
        assert self.idle_cores.mark[0] < time.perf_counter() - 1e-4  # started before the tuner: at the set-up

    monkeypatch.setattr(threads.AdaptiveThreads, "__init__", init)
    rng = np.random.RandomState(0)
    X = rng.normal(size=(400, 3))
    y = X[:, 0] - X[:, 1] * X[:, 2]
    torch.set_num_threads(2)
    try:
        started = time.perf_counter()
        SpectralRegressor(dim=4, max_iter=2, random_state=0, device="cpu", refit=False).fit(X, y)
        assert seen == [(1, 2)] and torch.get_num_threads() == 2

        def failing(*args, **kwargs):
            assert torch.get_num_threads() == 1
            raise RuntimeError("inside the fit")

        monkeypatch.setattr(SpectralRegressor, "_fit_core", failing)
        with pytest.raises(RuntimeError, match="inside the fit"):
            SpectralRegressor(dim=4, max_iter=2, random_state=0, device="cpu").fit(X, y)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(2)


def test_a_fit_does_not_depend_on_the_thread_counts_its_steps_ran_on(monkeypatch):
    """The kernels split work in a fixed way: a fit whose steps switch thread counts (as the
    tuner does) is the fit on one thread, bit for bit."""
    from skspectral._training import threads

    rng = np.random.RandomState(0)
    X = rng.normal(size=(2000, 4))
    y = np.sin(X[:, 0]) + X[:, 1] * X[:, 2]
    params = dict(dim=8, max_iter=2, random_state=0, device="cpu")
    torch.set_num_threads(1)
    try:
        one = SpectralRegressor(**params).fit(X, y).predict(X)
    finally:
        torch.set_num_threads(2)
    monkeypatch.setattr(threads, "PROBE_STEPS", 1)
    monkeypatch.setattr(threads, "HOLD_STEPS", 2)
    switching = SpectralRegressor(**params).fit(X, y).predict(X)
    np.testing.assert_array_equal(switching, one)


@pytest.mark.parametrize("structure, smoothing, gather", [("dense", None, True), ("dense", None, False),
                                                          ("tridiagonal", None, False), ("dense", 0.1, False)])
def test_a_model_on_encoded_columns_is_the_model_on_rows(structure, smoothing, gather):
    """forward(encoded(X), encoded=True) == forward(X): the encoder has no parameters, so a fit may
    encode its rows once (exactly the same where the matrices are products; the CPU's gathered
    path sums the columns' matrices instead of prefix sums: equal to rounding)."""
    from skspectral.encoding import EncodingSpec, FeatureEncoder
    from skspectral.model import OnEncodedRows, model_class

    spec = EncodingSpec(3, numeric=[0, 2], edges=[[-1.0, 0.0, 1.0, 2.0], None], missing=[0], categorical=[1],
                        n_levels=[3], has_missing_level=[False])
    rng = np.random.default_rng(0)
    X = torch.as_tensor(np.column_stack([rng.normal(size=50), rng.integers(-1, 2, 50), rng.normal(size=50)]))
    X[::7, 0] = float("nan")
    model = model_class(structure)(3, 5, encoder=FeatureEncoder(spec, dtype=torch.float64), n_members=2,
                                   smoothing=smoothing, dtype=torch.float64, backend="auto",
                                   generator=torch.Generator().manual_seed(0))
    model.gather = gather
    Z = model.encoded(X)
    assert Z.shape == (50, spec.n_columns)
    expected = model(X)
    rtol = 1e-12 if model.gathers else 0.0
    torch.testing.assert_close(OnEncodedRows(model)(Z), expected, rtol=rtol, atol=rtol)
    grads = torch.autograd.grad(model(X).sum(), model.weight if structure == "dense" else model.band_weight)
    encoded_grads = torch.autograd.grad(OnEncodedRows(model)(Z).sum(),
                                        model.weight if structure == "dense" else model.band_weight)
    torch.testing.assert_close(encoded_grads, grads, rtol=rtol, atol=rtol)


def _mixed_problem(seed: int, estimator: str):
    """(X, y, estimator class): a numeric column with missing values, a categorical one and a
    numeric one, 900 rows; regression or three classes."""
    from skspectral import SpectralClassifier

    rng = np.random.RandomState(seed)
    X = np.column_stack([rng.normal(size=900), rng.randint(0, 4, 900), rng.normal(size=900)])
    X[::11, 0] = np.nan
    y = np.nan_to_num(X[:, 0]) + (X[:, 1] == 2) - X[:, 2] ** 2 + 0.1 * rng.normal(size=900)
    if estimator == "classifier":
        return X, np.digitize(y, [-1.0, 0.5]), SpectralClassifier
    return X, y, SpectralRegressor


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("estimator", ["regressor", "classifier"])
def test_rows_encoded_once_train_as_rows_encoded_every_step(monkeypatch, device, estimator):
    """A fit whose forward multiplies encoded columns (the GPU's; the CPU's off the gathered path)
    encodes its training and validation rows once: the same fit as encoding every batch, and a
    fit over the size limit encodes every batch."""
    from skspectral import _estimator
    from skspectral.model import OnEncodedRows

    if device == "cuda" and "kernel" not in available_backends("cuda"):
        pytest.skip("needs CuPy")
    X, y, cls = _mixed_problem(5, estimator)
    params = dict(dim=6, max_iter=3, batch_size=64, n_estimators=2, early_stopping=True, categorical_features=[1],
                  random_state=0, device=device, backend="torch" if device == "cpu" else "auto")
    calls = []
    original = OnEncodedRows.forward
    monkeypatch.setattr(OnEncodedRows, "forward", lambda self, Z: (calls.append(Z.shape), original(self, Z))[1])
    once = cls(**params).fit(X, y)
    n_columns = once.column_mapper_.spec.n_columns
    assert calls and all(shape[1] == n_columns for shape in calls)  # steps and validation scores
    calls.clear()
    monkeypatch.setattr(_estimator, "_ENCODED_ROWS_BYTES", 0)
    every_step = cls(**params).fit(X, y)
    assert not calls
    tolerance = dict(rtol=1e-5, atol=1e-6) if device == "cuda" else dict(rtol=0, atol=0)
    np.testing.assert_allclose(once.loss_curve_, every_step.loss_curve_, **tolerance)
    output = "predict_proba" if estimator == "classifier" else "predict"
    np.testing.assert_allclose(getattr(once, output)(X), getattr(every_step, output)(X), **tolerance)
    if device == "cpu":  # the CPU's default gathered path holds its rows' terms instead (below)
        calls.clear()
        params["backend"] = "auto"
        cls(**params).fit(X, y)
        assert not calls


@pytest.mark.parametrize("estimator", ["regressor", "classifier"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gathered_terms_found_once_train_as_terms_found_every_step(monkeypatch, estimator, dtype):
    """On the CPU's gathered path a fit finds its training and validation rows' terms once
    (OnGatheredTerms: table rows and weights packed in one tensor): bit for bit the fit that finds
    each batch's terms at its step, which is what a fit over the size limit does."""
    from skspectral import _estimator
    from skspectral.eig import REGISTRY
    from skspectral.model import OnGatheredTerms

    if not REGISTRY["numba"].is_available():
        pytest.skip("needs Numba (the gathered path)")
    X, y, cls = _mixed_problem(6, estimator)
    params = dict(dim=6, max_iter=3, batch_size=64, n_estimators=2, early_stopping=True, categorical_features=[1],
                  random_state=0, device="cpu", dtype=dtype)
    calls = []
    original = OnGatheredTerms.unpack  # (the compiled pass's terms_of: steps and validation scores)
    monkeypatch.setattr(OnGatheredTerms, "unpack", staticmethod(lambda P: (calls.append(P.shape), original(P))[1]))
    once = cls(**params).fit(X, y)
    assert calls and all(shape[1] == 2 for shape in calls)  # steps and validation scores
    calls.clear()
    monkeypatch.setattr(_estimator, "_GATHERED_TERMS_BYTES", 0)
    every_step = cls(**params).fit(X, y)
    assert not calls
    np.testing.assert_array_equal(once.loss_curve_, every_step.loss_curve_)
    output = "predict_proba" if estimator == "classifier" else "predict"
    np.testing.assert_array_equal(getattr(once, output)(X), getattr(every_step, output)(X))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n_params", [5, 11])
def test_elementwise_adam_is_torchs_adam_also_replayed_from_a_cuda_graph(dtype, n_params):
    """The CUDA Adam (one thread per element, eight parameters a launch, the last launch moving the step
    count on) takes torch.optim.Adam's steps: parameters of several sizes (an empty one; one launch a step,
    or two), a learning rate a schedule changes in place, and steps replayed from a graph."""
    from skspectral._training.adam import ElementwiseAdam, adam

    if "kernel" not in available_backends("cuda"):
        pytest.skip("needs CuPy")
    generator = torch.Generator(device="cuda").manual_seed(0)
    shapes = ([(4, 1), (4, 14), (4, 113, 15, 15), (4, 0), (7,)] + [(3, 5), (300,), (1,)] * 2)[:n_params]
    ours = [torch.nn.Parameter(torch.randn(s, generator=generator, device="cuda", dtype=dtype)) for s in shapes]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    lr = torch.tensor(1e-2, dtype=torch.float32, device="cuda")
    optimizer = adam(ours, lr, capturable=True)
    assert isinstance(optimizer, ElementwiseAdam)
    reference = torch.optim.Adam(theirs, lr=1e-2)

    def loss(parameters):
        return sum((p.sin() * (i + 1)).square().sum() for i, p in enumerate(parameters))

    def step():
        optimizer.zero_grad(set_to_none=False)
        loss(ours).backward()
        optimizer.step()

    def set_rate(rate):  # the trainer's learning rate is a float32 tensor: the reference takes its value
        lr.fill_(rate)
        for group in reference.param_groups:
            group["lr"] = float(lr)

    for rate in (1e-2, 1e-2, 3e-3):
        set_rate(rate)
        step()
        reference.zero_grad()
        loss(theirs).backward()
        reference.step()
    graph = torch.cuda.CUDAGraph()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()  # warm-up on a side stream, as torch.cuda.graphs asks
    torch.cuda.current_stream().wait_stream(side)
    reference.zero_grad()
    loss(theirs).backward()
    reference.step()
    with torch.cuda.graph(graph):
        step()
    for rate in (1e-3, 5e-4):
        set_rate(rate)
        graph.replay()
        reference.zero_grad()
        loss(theirs).backward()
        reference.step()
    tolerance = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    for mine, torchs in zip(ours, theirs):
        torch.testing.assert_close(mine, torchs, **tolerance)
    assert not torch.equal(ours[2], theirs[2].detach() * 0)  # it moved
    assert optimizer._step_count.item() == 6.0 and optimizer._finished_blocks.item() == 0


def test_the_trainer_uses_the_compiled_adam_on_the_cpu_and_torchs_fused_adam_without_numba(monkeypatch):
    from skspectral._training import adam as adam_module

    parameter = torch.nn.Parameter(torch.zeros(3))
    expected = adam_module.CompiledAdam if adam_module._adam_kernel() is not None else torch.optim.Adam
    assert type(adam_module.adam([parameter], 0.1, capturable=False)) is expected
    monkeypatch.setattr(adam_module, "_adam_kernel", lambda: None)
    optimizer = adam_module.adam([parameter], 0.1, capturable=False)
    # torch's fused Adam where this torch has one for the CPU (2.4 on), its default Adam before
    fused_on_cpu = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 4)
    assert type(optimizer) is torch.optim.Adam and bool(optimizer.defaults["fused"]) == fused_on_cpu
    parameter.grad = torch.ones(3)
    optimizer.step()
    torch.testing.assert_close(parameter.detach(), torch.full((3,), -0.1))  # Adam's first step: -lr * sign(g)


def test_compiled_adam_on_gradient_buffers_kept_from_step_to_step_is_torchs_adam():
    """The compiled pass writes every step's gradients into the same buffers: the optimizer's arrays,
    found once for them, follow their new contents (and a gradient in new storage is found again)."""
    from skspectral._training.adam import CompiledAdam, _adam_kernel

    if _adam_kernel() is None:
        pytest.skip("needs Numba")
    generator = torch.Generator().manual_seed(1)
    ours = [torch.nn.Parameter(torch.randn((3, 5), generator=generator)), torch.nn.Parameter(torch.randn(7))]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    buffers = [torch.empty_like(p) for p in ours]
    optimizer, reference = CompiledAdam(ours, lr=1e-2), torch.optim.Adam(theirs, lr=1e-2, foreach=False)
    for step in range(12):
        for mine, torchs, buffer in zip(ours, theirs, buffers):
            g = torch.randn(mine.shape, generator=generator)
            buffer.copy_(g)
            mine.grad = buffer if step != 6 else g.clone()  # once in new storage
            torchs.grad = g.clone()
        optimizer.step()
        reference.step()
        for mine, torchs in zip(ours, theirs):
            torch.testing.assert_close(mine.detach(), torchs.detach(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_adam_is_torchs_adam(dtype):
    """The CPU's compiled Adam takes torch.optim.Adam's steps (its arithmetic, up to the last bits
    of the order torch's vector units use): parameters of several sizes, gradients of several
    scales, a learning rate changed between steps, a parameter without a gradient left alone,
    both forms of torch's lerp (beta1 below and above 0.5)."""
    from skspectral._training.adam import CompiledAdam, _adam_kernel

    if _adam_kernel() is None:
        pytest.skip("needs Numba")
    generator = torch.Generator().manual_seed(0)
    shapes = [(4, 1), (4, 14), (4, 113, 15, 15), (2, 3)]
    for betas in ((0.9, 0.999), (0.3, 0.99)):
        ours = [torch.nn.Parameter(torch.randn(s, generator=generator, dtype=dtype)) for s in shapes]
        theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
        untouched = ours[-1].detach().clone()
        optimizer = CompiledAdam(ours, lr=1e-2, betas=betas)
        reference = torch.optim.Adam(theirs, lr=1e-2, betas=betas, foreach=False)
        for step in range(40):
            scale = 10.0 ** (step % 5 - 2)
            rate = 1e-2 if step < 20 else 3e-3
            for opt in (optimizer, reference):
                opt.param_groups[0]["lr"] = rate
                opt.zero_grad(set_to_none=True)
            for mine, torchs in zip(ours[:-1], theirs[:-1]):  # the last one gets no gradient
                g = torch.randn(mine.shape, generator=generator, dtype=dtype) * scale
                mine.grad, torchs.grad = g.clone(), g.clone()
            optimizer.step()
            reference.step()
        tolerance = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-14)
        for mine, torchs in zip(ours, theirs):
            torch.testing.assert_close(mine, torchs, **tolerance)
        assert not torch.allclose(ours[2], theirs[2].detach() * 0)  # it moved
        assert torch.equal(ours[-1].detach(), untouched) and ours[-1] not in optimizer.state


def test_the_thread_tuner_does_not_probe_several_threads_where_the_other_cores_were_busy():
    """A hold of one thread over which the machine left less than BUSY_FREE_CORES idle is held again
    (twice as long) with no probe of several threads; with a core idle it is measured as before; a hold
    too short to read the idle cores (the warm-up) is held on until it is not; and close() sets back the
    count torch had when the tuner came (a fit's finish runs on the set-up's one thread)."""

    torch.set_num_threads(2)
    try:
        seconds = {1: 1.0, 2: 10.0}
        busy = _tuner(probe_steps=1, hold_steps=3, warmup_steps=0, idle_cores=_ScriptedIdle(free_cores=0.1))
        counts = _scripted(busy, seconds, 40)
        assert counts[:4] == [1, 1, 2, 2] and counts[4:] == [1] * 36  # measured once, then never probed
        assert busy.hold == 24 and busy.measured  # held 3, 6, 12, then 24 steps
        idle = _tuner(probe_steps=1, hold_steps=3, warmup_steps=0, idle_cores=_ScriptedIdle(free_cores=1.0))
        assert _scripted(idle, seconds, 11) == [1, 1, 2, 2] + [1] * 3 + [1, 1, 2, 2]  # measured after each hold
        # the warm-up of 4 steps of 1 s ends 0.01 s short of the window: held 1 step more, then the other
        # core is found busy and one thread is held from the base hold, never probing two
        warming = _tuner(probe_steps=1, hold_steps=3, warmup_steps=4,
                         idle_cores=_ScriptedIdle(free_cores=0.0, short_holds=1))
        assert _scripted(warming, seconds, 7) == [1] * 7
        assert warming.hold == 3 and warming.held == 2 and warming.probing is None
        torch.set_num_threads(1)  # (a fit's set-up: FitThreads)
        tuner = _tuner(start_threads=2, idle_cores=_ScriptedIdle(free_cores=1.0))
        assert tuner.candidates == [1, 2]
        torch.set_num_threads(2)
        tuner.close()
        assert torch.get_num_threads() == 1
        for tuner in (busy, idle, warming):
            tuner.close()
    finally:
        torch.set_num_threads(2)


def test_idle_cores_reads_this_machines_idle_time():
    """Where /proc/stat is readable, a window shorter than IDLE_WINDOW_SECONDS says how long is left and
    no value; a longer one gives the CPUs' idle seconds a second, between 0 and the process's CPU count."""
    from skspectral._training import threads

    idle = threads.IdleCores()
    idle.start()
    if idle.seconds_left() is None:
        pytest.skip("no /proc/stat here")
    assert 0.0 < idle.seconds_left() <= threads.IDLE_WINDOW_SECONDS and idle.free() is None
    time.sleep(threads.IDLE_WINDOW_SECONDS * 1.5)
    assert idle.seconds_left() == 0.0
    free = idle.free()
    assert 0.0 <= free <= len(os.sched_getaffinity(0)) * 1.5  # (ticks of 10 ms round either way)
