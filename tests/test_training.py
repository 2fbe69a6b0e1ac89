"""The training loop's step variants agree (CPU: the graph-ready static steps run eagerly)."""

import pytest
import torch

from skspectral import SpectralModel
from skspectral._training import Dataset, Trainer, TrainingOptions


@pytest.mark.parametrize("n_rows,batch_size", [(530, 100), (200, 200), (7, 3)])
def test_static_batch_steps_match_the_eager_loop(n_rows, batch_size):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n_rows, 4, dtype=torch.float64, generator=g)
    y = torch.randn(n_rows, dtype=torch.float64, generator=g)
    w = torch.rand(n_rows, dtype=torch.float64, generator=g) + 0.1
    results = []
    for static in (False, True):
        model = SpectralModel(4, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        options = TrainingOptions(learning_rate_init=0.01, batch_size=batch_size, max_iter=3,
                                  learning_rate_schedule="cosine", alpha=0.0, cuda_graph=static)

        def loss(output, target, weight):
            return ((output - target) ** 2 * weight).sum() / weight.sum()

        trainer = Trainer(model, loss, options, torch.Generator().manual_seed(0),
                          penalty_fn=lambda: 1e-3 * model.weight.square().sum())
        records = list(trainer.epochs(Dataset(X, y, w)))
        results.append((model.weight.detach().clone(), [r["train_loss"] for r in records], trainer.state.t))
    (w_eager, loss_eager, t_eager), (w_static, loss_static, t_static) = results
    assert t_eager == t_static == 3 * -(-n_rows // batch_size)
    torch.testing.assert_close(torch.tensor(loss_static), torch.tensor(loss_eager), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(w_static, w_eager, rtol=1e-10, atol=1e-12)
