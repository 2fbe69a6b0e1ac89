"""Accuracy of backend='kernel' against a float64 reference, before timing it.

    python benchmarks/check_kernel.py

Random, clustered (three tight clusters), exactly repeated, diagonal, zero
and badly scaled matrices; k at both ends and in the middle; fp32 and fp64.
Reports the eigenvalue error relative to ||M||_2, the eigenvector residual
||Mq - lambda q|| / ||M||_2 and |q| - 1, and that the no-grad path gives the
same value. Exits non-zero on a failure.
"""
import sys

import torch

from skspectral import kth_eigvalsh


def matrices(kind, B, n, g):
    if kind == "random":
        G = torch.randn(B, n, n, dtype=torch.float64, generator=g)
        return (G + G.mT) / 2
    Q, _ = torch.linalg.qr(torch.randn(B, n, n, dtype=torch.float64, generator=g))
    if kind == "clustered":  # eigenvalues in three tight clusters
        lam = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)[torch.arange(n) % 3]
        lam = lam + 1e-6 * torch.randn(B, n, dtype=torch.float64, generator=g)
    elif kind == "repeated":  # two eigenvalues, each of multiplicity ~n/2
        lam = torch.where(torch.arange(n) < n // 2, 2.0, -0.5).to(torch.float64).expand(B, n)
    elif kind == "diagonal":
        return torch.diag_embed(torch.randn(B, n, dtype=torch.float64, generator=g).round(decimals=1))
    elif kind == "zero":
        return torch.zeros(B, n, n, dtype=torch.float64)
    elif kind == "tiny":
        return 1e-30 * matrices("random", B, n, g)
    elif kind == "huge":
        return 1e30 * matrices("random", B, n, g)
    elif kind == "near_singular":  # one eigenvalue ~1e-7 of the others
        lam = torch.randn(B, n, dtype=torch.float64, generator=g)
        lam[:, 0] = 1e-7
    return (Q * lam[:, None, :]) @ Q.mT


def main():
    g = torch.Generator().manual_seed(0)
    failures = 0
    for dtype, tol, rtol in ((torch.float32, 1e-5, 1e-4), (torch.float64, 1e-12, 1e-10)):
        for n in (2, 3, 4, 8, 15, 32, 33, 45, 64):
            for kind in ("random", "clustered", "repeated", "diagonal", "zero", "tiny", "huge", "near_singular"):
                if dtype == torch.float32 and kind in ("tiny", "huge"):
                    continue  # 1e+-30 squared leaves fp32's range: not a float32 use case
                M = matrices(kind, 256, n, g)
                worst = (0.0, 0.0, 0.0, 0.0)
                for k in (0, n // 2, n - 1):
                    ref = torch.linalg.eigvalsh(M)[:, k]
                    X = M.to(dtype=dtype, device="cuda").requires_grad_(True)
                    val = kth_eigvalsh(X, k, backend="kernel")
                    val.sum().backward()
                    grad = X.grad.double().cpu()  # g q q^T with g = 1
                    q = grad.diagonal(dim1=-2, dim2=-1).clamp_min(0).sqrt()  # |q_i|
                    sign = torch.sign(grad[torch.arange(len(grad)), :, grad.diagonal(dim1=-2, dim2=-1).argmax(-1)])
                    q = q * torch.where(sign == 0, 1.0, sign)
                    scale = torch.linalg.matrix_norm(M, ord=2).clamp_min(torch.finfo(torch.float64).tiny)
                    lam = val.detach().double().cpu()
                    rel = ((lam - ref).abs() / scale).max().item()
                    resid = ((M @ q[:, :, None])[:, :, 0] - lam[:, None] * q).norm(dim=1).div(scale).max().item()
                    if kind == "zero":
                        resid = 0.0
                    unit = (q.norm(dim=1) - 1).abs().max().item()
                    nv = kth_eigvalsh(X.detach(), k, backend="kernel")
                    same = (nv - val.detach()).abs().div(scale.to(nv)).max().item()
                    worst = tuple(max(a, b) for a, b in zip(worst, (rel, resid, unit, same)))
                ok = worst[0] <= tol and worst[1] <= rtol and worst[2] <= rtol and worst[3] <= tol
                failures += not ok
                print(f"{str(dtype)[6:]:8} n={n:3} {kind:13} rel_err={worst[0]:.1e} residual={worst[1]:.1e} "
                      f"|q|-1={worst[2]:.1e} novec_diff={worst[3]:.1e} {'OK' if ok else 'FAIL'}", flush=True)
    print("failures:", failures)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
