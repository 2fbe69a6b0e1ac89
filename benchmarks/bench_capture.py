"""What a CUDA-graph capture costs the fit after it: ``torch.cuda.graph`` against our ``capturing``.

    python benchmarks/bench_capture.py [--rows 209000] [--columns 9] [--repeats 12] [--json out.json]

``torch.cuda.graph`` empties the device's and the pinned host memory's caches before each capture,
so the next fit allocates its pinned staging buffers (``_transfer.StagedRows``: two host buffers
and one device buffer of the raw rows) afresh; ``cuda_graph.capturing`` captures the same way
without emptying them. Each repeat: make and drop a fit's staging buffers, then capture a one-kernel
graph; host wall time around each (synchronised: these are host-side costs), medians after two warm-up
repeats, the two captures alternating. The default size is flights' training rows (209,000 x 9 float64).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from _common import versions, write_json


def run(a) -> dict:
    from skspectral._training.cuda_graph import capturing
    from skspectral._transfer import StagedRows

    device = torch.device("cuda")
    x = torch.zeros(1000, device=device)

    def torch_graph():
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            x.add_(1)
        return graph

    def ours():
        graph = torch.cuda.CUDAGraph()
        with capturing(graph, device):
            x.add_(1)
        return graph

    out = {"versions": versions("cuda"), "rows": []}
    for label, capture in [("torch.cuda.graph", torch_graph), ("capturing", ours)] * 2:
        staging_s, capture_s = [], []
        for _ in range(a.repeats + 2):
            torch.cuda.synchronize()
            start = time.perf_counter()
            staging = StagedRows(a.rows, a.columns, np.float64, device)
            del staging
            torch.cuda.synchronize()
            staging_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            graph = capture()
            torch.cuda.synchronize()
            capture_s.append(time.perf_counter() - start)
            del graph
        row = {"capture": label, "staging_ms": 1e3 * statistics.median(staging_s[2:]),
               "capture_ms": 1e3 * statistics.median(capture_s[2:])}
        out["rows"].append(row)
        print(f"{label:18s} the next staging buffers {row['staging_ms']:.2f} ms, the capture {row['capture_ms']:.2f} ms",
              flush=True)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=209_000)
    p.add_argument("--columns", type=int, default=9)
    p.add_argument("--repeats", type=int, default=12)
    p.add_argument("--json")
    a = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_capture.py needs CUDA: it measures CUDA-graph captures.")
    out = run(a)
    if a.json:
        write_json(a.json, out)


if __name__ == "__main__":
    main()
