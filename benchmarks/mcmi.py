"""MCMI teacher step cost relative to a cross-entropy step, and the class centroids with one index_add vs a loop.

Run: ``python benchmarks/mcmi.py`` (``--quick`` for a smoke run, ``--rounds``, ``--threads N``). A CIFAR-100-sized
MLP teacher (3072 -> 512 -> 512 -> 100, batch 128) on CPU; each step is forward + backward + SGD. Each round times
every objective between two cross-entropy steps (CE, MCMI, CE, MCMI-ema, CE, ...), ``steps`` steps each, and its
ratio is its time over the mean of the two CE timings around it; the table gives the median over rounds and the
interquartile range (the noise of one round on a shared machine). The loss alone (forward + backward on the logits)
is timed too: it is what the MCMI objective adds to any model.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from lightning_info.distill import MCMILoss


def loop_centroid_cmi(logits: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """The CMI with a Python loop over classes for the centroids (what a direct transcription does)."""
    p = torch.softmax(logits, dim=1)
    q = torch.zeros(num_classes, p.shape[1], dtype=p.dtype)
    for c in range(num_classes):
        members = target == c
        if members.any():
            q[c] = p[members].mean(0)
    return (p * (p.clamp_min(1e-8).log() - q[target].clamp_min(1e-8).log())).sum(1).mean()


def step_times(
    in_dim: int, hidden: int, num_classes: int, batch: int, rounds: int, steps: int = 5
) -> dict[str, list[float]]:
    """Per-round ratios of each objective's step time to the CE steps timed around it (CE itself: 1)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(batch, in_dim)
    y = torch.randint(0, num_classes, (batch,))
    objectives = _objectives(num_classes, y)

    def runner(objective: Callable[[Tensor], Tensor]) -> Callable[[], float]:
        def run() -> float:
            start = time.perf_counter()
            for _ in range(steps):
                optimizer.zero_grad()
                objective(model(x)).backward()
                optimizer.step()
            return time.perf_counter() - start

        return run

    runs = {name: runner(objective) for name, objective in objectives.items()}
    return _paired_ratios(runs, rounds)


def loss_times(num_classes: int, batch: int, rounds: int, calls: int = 50) -> dict[str, list[float]]:
    """Per-round ratios of each loss's forward + backward on ``(batch, num_classes)`` logits to cross-entropy's."""
    torch.manual_seed(0)
    logits = torch.randn(batch, num_classes)
    y = torch.randint(0, num_classes, (batch,))

    def runner(objective: Callable[[Tensor], Tensor]) -> Callable[[], float]:
        def run() -> float:
            start = time.perf_counter()
            for _ in range(calls):
                objective(logits.detach().requires_grad_()).backward()
            return time.perf_counter() - start

        return run

    runs = {name: runner(objective) for name, objective in _objectives(num_classes, y).items()}
    return _paired_ratios(runs, rounds)


def _objectives(num_classes: int, y: Tensor) -> dict[str, Callable[[Tensor], Tensor]]:
    batch_loss = MCMILoss(num_classes, lam=0.2)
    ema_loss = MCMILoss(num_classes, lam=0.2, centroids="ema")
    return {
        "CE": lambda z: nn.functional.cross_entropy(z, y),
        "MCMI batch centroids": lambda z: batch_loss(z, y).loss,
        "MCMI ema centroids": lambda z: ema_loss(z, y).loss,
        "MCMI loop over classes": lambda z: (
            nn.functional.cross_entropy(z, y) - 0.2 * loop_centroid_cmi(z, y, num_classes)
        ),
    }


def _paired_ratios(runs: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    for run in runs.values():  # warm-up
        run()
    ratios: dict[str, list[float]] = {name: [] for name in runs}
    ratios["CE"] = [1.0] * rounds
    for _ in range(rounds):
        before = runs["CE"]()
        for name, run in runs.items():
            if name == "CE":
                continue
            seconds = run()
            after = runs["CE"]()
            ratios[name].append(seconds / ((before + after) / 2))
            before = after
    return ratios


def main(
    in_dim: int = 3072, hidden: int = 512, num_classes: int = 100, batch: int = 128, rounds: int = 30
) -> dict[str, float]:
    """Print the tables and the goal lines; return the median step-time ratios to the CE step."""
    print(
        f"MLP {in_dim}-{hidden}-{hidden}-{num_classes}, batch {batch}, fwd+bwd+SGD, CPU threads="
        f"{torch.get_num_threads()}, {rounds} rounds (median, IQR of the rounds)"
    )
    results = {}
    for title, ratios in [
        ("training step", step_times(in_dim, hidden, num_classes, batch, rounds)),
        ("loss alone (fwd+bwd on the logits)", loss_times(num_classes, batch, rounds)),
    ]:
        print(f"{title:<36} {'vs CE':>7} {'IQR':>15}")
        for name, values in ratios.items():
            median = statistics.median(values)
            low, _, high = statistics.quantiles(values, n=4) if len(values) > 1 else (median, median, median)
            print(f"  {name:<34} {median:>6.2f}x {low:>6.2f} - {high:.2f}")
            if title == "training step":
                results[name] = median
    print(f"MCMI teacher step (batch centroids) vs CE step: {results['MCMI batch centroids']:.2f}x (goal <= 1.1)")
    print(f"MCMI teacher step (ema centroids) vs CE step: {results['MCMI ema centroids']:.2f}x (goal <= 1.1)")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small model, two rounds (smoke run)")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.quick:
        main(in_dim=64, hidden=32, num_classes=10, batch=32, rounds=2)
    else:
        main(rounds=args.rounds)
