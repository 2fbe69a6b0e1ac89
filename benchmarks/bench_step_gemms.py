"""The GPU step's two products with the encoded columns, and what could replace them.

    python benchmarks/bench_step_gemms.py [--json out.json]

A CUDA step multiplies a batch's encoded columns Z (B, C) with every model's matrices A (C, models * n * n)
(``SpectralModel.matrices``), and its backward takes Z^T G (C, models * n * n). For batch shapes of the
suite (flights: B 1,310, C 340, four members of 15 x 15; diamonds; California), each alternative on
random data of those shapes, CUDA-graph replayed (50 calls a graph, median of 20 replays, microseconds a
call; a graph takes the launch cost away, as a fit's replayed steps do):

- ``fwd`` / ``bwd``: the two float32 products as the step runs them; ``bwd contiguous``: Z^T made
  contiguous first; ``bwd split-K k``: the batch in k chunks (a batched product, then the sum);
- ``fwd tf32`` / ``bwd tf32``: the same with TF32 tensor cores allowed (10-bit mantissas: not the
  model's float32 arithmetic);
- ``gather fwd`` / ``scatter bwd``: the matrices gathered from a table of T terms a row with torch ops
  (what the CPU's gathered kernel does in one pass) and their gradient scattered back with index_add_.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _common import markdown_table, versions, write_json

SHAPES = {"flights": (1310, 340, 4, 15, 16), "diamonds": (216, 113, 4, 15, 12), "california": (200, 128, 3, 15, 16)}


def replayed_us(fn, inner: int = 50, replays: int = 20) -> float:
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            for _ in range(inner):
                fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) * 1000 / inner)
    return statistics.median(times)


def alternatives(B: int, C: int, models: int, n: int, T: int) -> dict:
    generator = torch.Generator(device="cuda").manual_seed(0)
    L = models * n * n
    Z = torch.rand(B, C, device="cuda", generator=generator)
    Z = Z * (torch.rand(B, C, device="cuda", generator=generator) < 0.1)
    A = torch.randn(C, L, device="cuda", generator=generator)
    G = torch.randn(B, L, device="cuda", generator=generator)
    Zt = Z.t().contiguous()
    out = {}
    torch.backends.cuda.matmul.allow_tf32 = False
    out["fwd"] = replayed_us(lambda: Z @ A)
    out["bwd"] = replayed_us(lambda: Z.t() @ G)
    out["bwd contiguous"] = replayed_us(lambda: Zt @ G)
    for k in (2, 4):
        rows = B // k * k
        Zk, Gk = Z[:rows].view(k, rows // k, C).transpose(1, 2), G[:rows].view(k, rows // k, L)
        out[f"bwd split-K {k}"] = replayed_us(lambda: torch.bmm(Zk, Gk).sum(0))
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        out["fwd tf32"] = replayed_us(lambda: Z @ A)
        out["bwd tf32"] = replayed_us(lambda: Z.t() @ G)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False
    table = torch.randn(models, C + 64, n * n, device="cuda", generator=generator)
    rows = torch.randint(0, C + 64, (B, T), device="cuda", generator=generator)
    weights = torch.rand(B, T, device="cuda", generator=generator)
    grad_out = torch.randn(B, models, n * n, device="cuda", generator=generator)
    out["gather fwd"] = replayed_us(lambda: torch.einsum("bt,mbtl->bml", weights, table[:, rows]))

    def scatter():
        grad = torch.zeros_like(table)
        terms = (weights[:, :, None, None] * grad_out[:, None]).permute(2, 0, 1, 3).reshape(models, B * T, n * n)
        return grad.index_add_(1, rows.reshape(-1), terms)

    out["scatter bwd"] = replayed_us(scatter)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = []
    for name, shape in SHAPES.items():
        row = {"shape": f"{name} (B {shape[0]}, C {shape[1]}, {shape[2]} models, T {shape[4]})"}
        row.update({key: f"{value:.1f}" for key, value in alternatives(*shape).items()})
        rows.append(row)
        print(row, flush=True)
    print(markdown_table(rows, list(rows[0])))
    if args.json:
        write_json(args.json, {"versions": versions(), "rows": rows})


if __name__ == "__main__":
    main()
