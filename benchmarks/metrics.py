"""Information-metric timings: Matrix Nuclear-Norm vs matrix entropy, and vendi_score vs the vendi-score package.

Run ``python benchmarks/metrics.py`` (``--quick`` for a smoke run, ``--threads 1`` to pin torch and numpy/OpenBLAS
to one thread each). Timings are the minimum over runs made in alternating blocks, so that the compared functions
see the same machine load (CPU; float64 data for the Vendi comparison so both sides compute the same number). The
Vendi comparison runs over the grid N in {500, 2000, 10000} x d in {64, 512} plus 500 x 2048 (N < d), with
``matrix_entropy`` (the same Gram-spectrum path) beside it.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from functools import partial

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


VENDI_GRID = ((500, 64), (2000, 64), (10000, 64), (500, 512), (2000, 512), (10000, 512), (500, 2048))
QUICK_GRID = ((100, 16), (16, 40))
GOAL_SIZE = (2000, 64)  # the size of the >= 3x goal; >= 1x at every other size


def _repeats_for(fn: Callable[[], object], budget_s: float, cap: int) -> int:
    """How many timed runs of ``fn`` fit in ``budget_s`` (one untimed call measures it), at least 3, at most ``cap``."""
    start = time.perf_counter()
    fn()
    return max(3, min(cap, int(budget_s / max(time.perf_counter() - start, 1e-9))))


def _vendi_grid(grid: tuple[tuple[int, int], ...], cap: int) -> dict[tuple[int, int], dict[str, float]]:
    """Seconds of the package's ``score_dual``, our ``vendi_score`` and ``matrix_entropy`` (q = alpha = 1) per size."""
    from vendi_score import vendi

    timings = {}
    for n, d in grid:
        x = np.random.default_rng(0).normal(size=(n, d))
        xt = torch.from_numpy(x)
        fns: dict[str, Callable[[], object]] = {
            "package": partial(vendi.score_dual, x, q=1),
            "ours": partial(vendi_score, xt, q=1.0),
            "entropy": partial(matrix_entropy, xt),
        }
        timings[(n, d)] = _best_seconds(fns, _repeats_for(fns["package"], 0.4, cap))
    return timings


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, few repeats (smoke run)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch and numpy/OpenBLAS threads (default: as set)")
    args = parser.parse_args(argv)
    if args.threads is None:
        return _run(args)
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        with threadpool_limits(args.threads):
            return _run(args)
    finally:
        torch.set_num_threads(previous)


def _run(args: argparse.Namespace) -> dict[str, float]:
    repeats = args.repeats or (2 if args.quick else 40)
    n_mnn, d_mnn = (64, 32) if args.quick else (1024, 512)
    grid = QUICK_GRID if args.quick else VENDI_GRID
    n_vs, d_vs = grid[0] if args.quick else GOAL_SIZE

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

    vs = _vendi_grid(grid, repeats)
    ratios = {size: t["package"] / t["ours"] for size, t in vs.items()}
    t_package, t_ours = vs[(n_vs, d_vs)]["package"], vs[(n_vs, d_vs)]["ours"]
    worst_gap = 0.0  # sizes with N > d only: for N <= d the package's d x d spectrum has d - N round-off "zeros"
    for n, d in (size for size in grid if size[0] > size[1]):  # that q < 1 counts (a 1e-8 relative shift)
        x = np.random.default_rng(0).normal(size=(n, d))
        for q in (0.5, 1.0, 2.0, math.inf):
            reference = vendi.score_dual(x, q="inf" if q == math.inf else q)
            worst_gap = max(worst_gap, abs(vendi_score(torch.from_numpy(x), q=q).item() - reference) / reference)

    print(f"{'what':<44}{'size':>14}{'ms':>10}")
    rows = [
        ("matrix_entropy (eigvalsh, float64)", (n_mnn, d_mnn), t_entropy),
        ("matrix_nuclear_norm fast (L1,2)", (n_mnn, d_mnn), t_fast),
        ("matrix_nuclear_norm exact (svdvals, float64)", (n_mnn, d_mnn), t_exact),
    ]
    for name, size, seconds in rows:
        print(f"{name:<44}{size!s:>14}{seconds * 1e3:>10.3f}")
    print(f"\n{'N x d (q = alpha = 1, ms)':<28}{'score_dual':>12}{'vendi_score':>13}{'matrix_entropy':>16}{'ratio':>8}")
    for (n, d), t in vs.items():
        print(
            f"{f'{n}x{d}':<28}{t['package'] * 1e3:>12.3f}{t['ours'] * 1e3:>13.3f}{t['entropy'] * 1e3:>16.3f}"
            f"{ratios[(n, d)]:>7.2f}x"
        )
    print(f"vendi_score max relative difference to the package, N > d, q in {{0.5, 1, 2, inf}}: {worst_gap:.1e}")
    results = {"mnn_speedup": t_entropy / t_fast, "vendi_speedup": t_package / t_ours, "vendi_rel_diff": worst_gap}
    results.update({f"vendi_{n}x{d}": ratio for (n, d), ratio in ratios.items()})
    print(
        f"matrix_nuclear_norm fast vs matrix_entropy at N={n_mnn}, d={d_mnn}: {results['mnn_speedup']:.2f}x (goal >= 8)"
    )
    for (n, d), ratio in ratios.items():
        print(f"vendi_score {n}×{d}: {ratio:.2f}x (goal >= 3 at 2000x64, >= 1 elsewhere)")
    return results


if __name__ == "__main__":
    main()
