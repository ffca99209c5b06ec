"""Benchmark: one training epoch of the torch MLP on a 1M x 20 table, CUDA (with AMP) vs two CPU threads.

Without a CUDA device it says so and measures the CPU side only; it never reports a GPU figure
it did not measure. The epoch time includes moving the table to the device once, as a fit does.
Usage: python benchmarks/torch_gpu.py [rows]
"""

from __future__ import annotations

import sys
import time

import numpy as np
from _common import ROOT  # noqa: F401  (puts the checkout on sys.path)

from sluicegate.trainers.torch_mlp import TorchMLPClassifier

ROWS = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000


def table(n: int, d: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = (X[:, 0] - 0.5 * X[:, 1] + rng.normal(scale=0.5, size=n) > 0).astype(np.int64)
    return X, y


def one_epoch(X, y, device: str, threads: int) -> float:
    est = TorchMLPClassifier(hidden_layers=(256, 128), epochs=1, batch_size=1024, patience=None, dropout=0.1,
                             device=device, num_threads=threads, seed=0)
    start = time.perf_counter()
    est.fit(X, y)
    return time.perf_counter() - start


def main() -> None:
    import torch

    X, y = table(ROWS)
    print(f"table {ROWS} x {X.shape[1]} float32, MLP 256-128, batch 1024, one epoch (torch {torch.__version__})")
    one_epoch(X[:20_000], y[:20_000], "cpu", 2)  # warm-up: imports, allocator
    cpu = one_epoch(X, y, "cpu", 2)
    print(f"  CPU, 2 threads: {cpu:.2f} s/epoch ({ROWS / cpu:,.0f} rows/s)")
    if not torch.cuda.is_available():
        print("  no CUDA device is present: the GPU side was NOT measured (CPU figure only)")
        return
    one_epoch(X[:20_000], y[:20_000], "cuda", 2)  # warm-up: context, kernels
    gpu = one_epoch(X, y, "cuda", 2)
    print(f"  CUDA ({torch.cuda.get_device_name(0)}), AMP: {gpu:.2f} s/epoch ({ROWS / gpu:,.0f} rows/s)")
    print(f"  RATIO CPU/GPU epoch time = {cpu / gpu:.1f}x")


if __name__ == "__main__":
    main()
