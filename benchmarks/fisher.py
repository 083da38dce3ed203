"""Per-sample Fisher: torch.func vmap (chunked) vs the batch-size-1 loop FISH's public code uses.

Run ``python benchmarks/fisher.py`` (``--quick`` for a smoke run). Prints seconds for N samples on a small MLP and a
small transformer, the speed-up, and the peak resident memory of fresh processes for several chunk sizes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from lightning_info.fisher import empirical_fisher


class SmallTransformer(nn.Module):
    def __init__(self, in_dim: int = 8, d_model: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        self.embed = nn.Linear(in_dim, d_model)
        layer = nn.TransformerEncoderLayer(d_model, 4, 2 * d_model, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(self.embed(x)).mean(1))


def models() -> dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]]:
    return {
        "mlp": (
            lambda: nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)),
            (64,),
        ),
        "transformer": (SmallTransformer, (8, 8)),
    }


def _data(n: int, shape: tuple[int, ...]) -> list[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g)
    return [(x, y)]  # one batch: chunk_size alone decides how many samples vmap processes at once


def timed(name: str, n: int, mode: str, chunk: int) -> float:
    build, shape = models()[name]
    torch.manual_seed(0)
    model, data = build(), _data(n, shape)
    empirical_fisher(model, data, num_samples=min(n, 8), mode=mode, chunk_size=chunk)  # warm-up
    start = time.perf_counter()
    empirical_fisher(model, data, num_samples=n, mode=mode, chunk_size=chunk)
    return time.perf_counter() - start


def peak_rss_mb(name: str, n: int, chunk: int) -> float:
    """Peak resident memory (MB) of a fresh process computing the vmap Fisher with ``chunk_size=chunk``."""
    code = (
        "import resource, sys; sys.path.insert(0, 'benchmarks'); from fisher import timed; "
        f"timed({name!r}, {n}, 'vmap', {chunk}); print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1]) / 1024


def main(quick: bool = False, memory: bool = True) -> dict[str, float]:
    n = 64 if quick else 1024
    chunk = 64
    ratios: dict[str, float] = {}
    print(f"{'model':12s} {'params':>8s} {'vmap s':>8s} {'loop s':>8s} {'speed-up':>9s}   (N={n}, chunk={chunk})")
    for name, (build, _) in models().items():
        params = sum(p.numel() for p in build().parameters())
        fast, slow = timed(name, n, "vmap", chunk), timed(name, n, "loop", chunk)
        ratios[name] = slow / fast
        print(f"{name:12s} {params:8d} {fast:8.3f} {slow:8.3f} {ratios[name]:8.1f}x")
    if memory:
        print("\npeak RSS of a fresh process, vmap on the mlp (per-sample gradients: chunk x params x 4 bytes)")
        params = sum(p.numel() for p in models()["mlp"][0]().parameters())
        for size in (16, 128, 1024) if not quick else (4, 16):
            grads_mb = size * params * 4 / 2**20
            print(f"  chunk {size:5d}: {peak_rss_mb('mlp', n, size):8.1f} MB  (gradients {grads_mb:7.1f} MB)")
    for name, ratio in ratios.items():
        print(f"vmap vs batch-1 loop Fisher ({name}, {n} samples): {ratio:.1f}x (goal >= 5x)")
    return ratios


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="64 samples, small memory sweep (smoke run)")
    args = parser.parse_args()
    main(quick=args.quick)
