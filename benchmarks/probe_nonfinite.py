"""What each CUDA backend does with NaN/inf input (decides PROPAGATES_NONFINITE)."""
import torch

from skspectral.eig import _cupy_backend, _torch_backend

for name, mod in (("torch", _torch_backend), ("cupy", _cupy_backend)):
    for n in (8, 45):
        A = torch.randn(4, n, n, device="cuda")
        A = (A + A.mT) / 2
        A[1, 3, 1] = float("nan")
        A[2, 4, 0] = float("inf")
        for fn in ("eigvalsh_k", "eigh_k"):
            try:
                out = getattr(mod, fn)(A, 2, True)
                v = out if fn == "eigvalsh_k" else out[0]
                ref = torch.linalg.eigvalsh(A[[0, 3]].double().cpu())[:, 2]
                print(name, n, fn, v.tolist(), "clean rows ok:", torch.allclose(v[[0, 3]].double().cpu(), ref, atol=1e-4))
            except Exception as e:
                print(name, n, fn, "ERROR", type(e).__name__, str(e)[:120])
