"""Bias and variance of the MI estimators on 20-d correlated Gaussians with known MI (SMILE's staircase).

``y = rho x + sqrt(1 - rho^2) eps`` per dimension, ``I(X; Y) = -d/2 log(1 - rho^2)`` nats for MI 2, 4, 6, 8, 10.
For each (estimator, MI, seed) a fresh separable critic is trained with Adam (batch 64) by
``estimate_mutual_information``; the table reports the mean estimate over seeds, its bias and its variance (the
variance of the per-batch estimate of the trained critic, averaged over seeds). InfoNCE cannot exceed log(64) = 4.16.

Run: ``python benchmarks/mi.py`` (``--quick`` for a smoke run). Uses one CPU thread (the matrices are small).
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from lightning_info.metrics import MutualInformationEstimator
from lightning_info.metrics.mutual_information import ESTIMATORS

BATCH = 64


def correlated_gaussians(mi: float, dim: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples with ``I(X; Y) = mi`` nats."""
    rho = math.sqrt(1.0 - math.exp(-2.0 * mi / dim))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    return x, rho * x + math.sqrt(1.0 - rho**2) * torch.randn(n, dim, generator=g)


def run_one(estimator: str, mi: float, dim: int, steps: int, seed: int, eval_batches: int) -> list[float]:
    """Train a critic on fresh batches (the paper's protocol) and return its estimates on ``eval_batches`` batches."""
    torch.manual_seed(seed)
    model = MutualInformationEstimator(dim, dim, estimator=estimator)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = correlated_gaussians(mi, dim, BATCH * (steps + eval_batches), seed)
    for step in range(steps):
        batch = slice(step * BATCH, (step + 1) * BATCH)
        loss = -model(x[batch], y[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    estimates = []
    with torch.no_grad():
        for k in range(steps, steps + eval_batches):
            batch = slice(k * BATCH, (k + 1) * BATCH)
            estimates.append(float(model(x[batch], y[batch])))
    return estimates


def main(
    mis: tuple[float, ...] = (2.0, 4.0, 6.0, 8.0, 10.0),
    estimators: tuple[str, ...] = ESTIMATORS,
    dim: int = 20,
    steps: int = 1500,
    seeds: int = 2,
    eval_batches: int = 64,
) -> dict[tuple[str, float], tuple[float, float]]:
    """Print the bias/variance table and the target lines; return ``{(estimator, mi): (bias, variance)}``."""
    torch.set_num_threads(1)
    print(f"MI estimators on {dim}-d correlated Gaussians, batch {BATCH}, {steps} Adam steps, {seeds} seed(s)")
    print(f"{'estimator':>9} {'MI':>5} {'mean':>7} {'bias':>7} {'var':>8} {'s/run':>6}")
    results: dict[tuple[str, float], tuple[float, float]] = {}
    for estimator in estimators:
        for mi in mis:
            start = time.perf_counter()
            runs = [run_one(estimator, mi, dim, steps, seed, eval_batches) for seed in range(seeds)]
            elapsed = (time.perf_counter() - start) / seeds
            mean = sum(sum(r) / len(r) for r in runs) / seeds
            variance = sum(float(torch.tensor(r).var()) for r in runs) / seeds
            results[(estimator, mi)] = (mean - mi, variance)
            print(f"{estimator:>9} {mi:>5.1f} {mean:>7.3f} {mean - mi:>+7.3f} {variance:>8.4f} {elapsed:>6.1f}")
    top = max(mis)
    if "smile" in estimators and "mine" in estimators:
        ratio = results[("smile", top)][1] / max(results[("mine", top)][1], 1e-12)
        print(f"SMILE / MINE estimate variance at MI {top:g}: {ratio:.3f}x (goal <= 1)")
    if "smile" in estimators and "infonce" in estimators:
        ratio = abs(results[("smile", top)][0]) / max(abs(results[("infonce", top)][0]), 1e-12)
        print(f"SMILE / InfoNCE |bias| at MI {top:g}: {ratio:.3f}x (goal <= 1)")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="MI 2 and 6, 200 steps, one seed")
    args = parser.parse_args()
    if args.quick:
        main(mis=(2.0, 6.0), steps=200, seeds=1, eval_batches=16)
    else:
        main()
