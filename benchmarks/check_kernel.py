"""Accuracy of backend='kernel' against a float64 reference before timing it:
random and clustered spectra, residual ||Mq - lambda q||, fp32 and fp64."""
import torch

from skspectral import kth_eigvalsh

torch.manual_seed(0)
for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
    for n in (4, 8, 15, 33, 45, 64):
        for kind in ("random", "clustered"):
            B = 512
            if kind == "random":
                G = torch.randn(B, n, n, dtype=torch.float64)
                M = (G + G.mT) / 2
            else:  # eigenvalues in three tight clusters
                Q, _ = torch.linalg.qr(torch.randn(B, n, n, dtype=torch.float64))
                lam = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)[torch.arange(n) % 3] + 1e-6 * torch.randn(B, n, dtype=torch.float64)
                M = (Q * lam[:, None, :]) @ Q.mT
            k = n // 2
            ref = torch.linalg.eigvalsh(M)[:, k]
            X = M.to(dtype=dtype, device="cuda").requires_grad_(True)
            val = kth_eigvalsh(X, k, backend="kernel")
            val.sum().backward()
            q = torch.linalg.eigh(X.grad.double().cpu())[1][:, :, -1]  # grad = q q^T
            scale = torch.linalg.matrix_norm(M, ord=2)
            rel = ((val.double().cpu() - ref).abs() / scale).max().item()
            lam = val.detach().double().cpu()
            resid = ((M @ q[:, :, None])[:, :, 0] - lam[:, None] * q).norm(dim=1).div(scale).max().item()
            nv = kth_eigvalsh(X.detach(), k, backend="kernel")
            same = (nv - val.detach()).abs().max().item()
            ok = rel <= tol and resid <= (1e-4 if dtype == torch.float32 else 1e-10)
            print(f"{str(dtype)[6:]:8} n={n:3} {kind:9} rel_err={rel:.2e} residual={resid:.2e} novec_diff={same:.1e} {'OK' if ok else 'FAIL'}")
