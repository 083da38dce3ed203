"""Information-metric timings: Matrix Nuclear-Norm vs matrix entropy, and vendi_score vs the vendi-score package.

Run ``python benchmarks/metrics.py`` (``--quick`` for a smoke run). Timings are the minimum over ``--repeats`` runs
(CPU, float64 data for the Vendi comparison so both sides compute the same number).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import numpy as np
import torch

from lightning_info.metrics.functional import matrix_entropy, matrix_nuclear_norm, vendi_score


def _best_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, few repeats (smoke run)")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 20)
    n_mnn, d_mnn = (64, 32) if args.quick else (1024, 512)
    n_vs, d_vs = (100, 16) if args.quick else (2000, 64)

    z = torch.randn(n_mnn, d_mnn, generator=torch.Generator().manual_seed(0))
    t_entropy = _best_seconds(lambda: matrix_entropy(z), max(repeats // 4, 1))
    t_fast = _best_seconds(lambda: matrix_nuclear_norm(z), repeats)
    t_exact = _best_seconds(lambda: matrix_nuclear_norm(z, mode="exact"), max(repeats // 4, 1))

    from vendi_score import vendi

    x = np.random.default_rng(0).normal(size=(n_vs, d_vs))
    xt = torch.from_numpy(x)
    t_package = _best_seconds(lambda: vendi.score_dual(x, q=1), repeats)
    t_ours = _best_seconds(lambda: vendi_score(xt, q=1.0), repeats)
    worst_gap = max(
        abs(vendi_score(xt, q=q).item() - vendi.score_dual(x, q="inf" if q == math.inf else q))
        / vendi.score_dual(x, q="inf" if q == math.inf else q)
        for q in (0.5, 1.0, 2.0, math.inf)
    )

    print(f"{'what':<44}{'size':>14}{'ms':>10}")
    rows = [
        ("matrix_entropy (eigvalsh, float64)", (n_mnn, d_mnn), t_entropy),
        ("matrix_nuclear_norm fast (L1,2)", (n_mnn, d_mnn), t_fast),
        ("matrix_nuclear_norm exact (svdvals, float64)", (n_mnn, d_mnn), t_exact),
        ("vendi-score package score_dual", (n_vs, d_vs), t_package),
        ("lightning_info vendi_score", (n_vs, d_vs), t_ours),
    ]
    for name, size, seconds in rows:
        print(f"{name:<44}{size!s:>14}{seconds * 1e3:>10.3f}")
    print(f"vendi_score max relative difference to the package over q in {{0.5, 1, 2, inf}}: {worst_gap:.1e}")
    results = {"mnn_speedup": t_entropy / t_fast, "vendi_speedup": t_package / t_ours, "vendi_rel_diff": worst_gap}
    print(
        f"matrix_nuclear_norm fast vs matrix_entropy at N={n_mnn}, d={d_mnn}: {results['mnn_speedup']:.1f}x (goal >= 8)"
    )
    print(f"vendi_score vs vendi-score package at N={n_vs}, d={d_vs}: {results['vendi_speedup']:.1f}x (goal >= 2)")
    return results


if __name__ == "__main__":
    main()
