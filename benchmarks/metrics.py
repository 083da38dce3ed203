"""Information-metric timings: Matrix Nuclear-Norm vs matrix entropy, and vendi_score vs the vendi-score package.

Run ``python benchmarks/metrics.py`` (``--quick`` for a smoke run). Timings are the minimum over ``--repeats`` runs
made in alternating blocks, so that the compared functions see the same machine load (CPU, default threads;
float64 data for the Vendi comparison so both sides compute the same number).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import numpy as np
import torch

from lightning_info.metrics.functional import matrix_entropy, matrix_nuclear_norm, vendi_score


def _best_seconds(fns: dict[str, Callable[[], object]], repeats: int, blocks: int = 3) -> dict[str, float]:
    """Minimum wall time of each function over ``repeats`` runs, in ``blocks`` alternating blocks of runs.

    Alternating blocks spread slow phases of a shared machine over all functions; within a block one function runs
    back to back (interleaving single calls of numpy/OpenBLAS and torch/OpenMP code makes each wait for the other's
    spinning worker threads).
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(blocks):
        for name, fn in fns.items():
            fn()  # warm-up
            for _ in range(max(repeats // blocks, 1)):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, few repeats (smoke run)")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 40)
    n_mnn, d_mnn = (64, 32) if args.quick else (1024, 512)
    n_vs, d_vs = (100, 16) if args.quick else (2000, 64)

    z = torch.randn(n_mnn, d_mnn, generator=torch.Generator().manual_seed(0))
    mnn = _best_seconds(
        {
            "entropy": lambda: matrix_entropy(z),
            "fast": lambda: matrix_nuclear_norm(z),
            "exact": lambda: matrix_nuclear_norm(z, mode="exact"),
        },
        max(repeats // 4, 3),
    )
    t_entropy, t_fast, t_exact = mnn["entropy"], mnn["fast"], mnn["exact"]

    from vendi_score import vendi

    x = np.random.default_rng(0).normal(size=(n_vs, d_vs))
    xt = torch.from_numpy(x)
    vs = _best_seconds({"package": lambda: vendi.score_dual(x, q=1), "ours": lambda: vendi_score(xt, q=1.0)}, repeats)
    t_package, t_ours = vs["package"], vs["ours"]
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
        f"matrix_nuclear_norm fast vs matrix_entropy at N={n_mnn}, d={d_mnn}: {results['mnn_speedup']:.2f}x (goal >= 8)"
    )
    print(f"vendi_score vs vendi-score package at N={n_vs}, d={d_vs}: {results['vendi_speedup']:.2f}x (goal >= 2)")
    return results


if __name__ == "__main__":
    main()
