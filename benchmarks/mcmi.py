"""MCMI teacher step cost relative to a cross-entropy step, and the class centroids with one index_add vs a loop.

Run: ``python benchmarks/mcmi.py`` (``--quick`` for a smoke run, ``--threads N``). A CIFAR-100-sized MLP teacher
(3072 -> 512 -> 512 -> 100, batch 128) on CPU; each step is forward + backward + SGD. Timings are the best of
``repeats`` rounds, the objectives interleaved within each round (still noisy on shared machines).
"""

from __future__ import annotations

import argparse
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
    in_dim: int, hidden: int, num_classes: int, batch: int, repeats: int, steps: int = 5
) -> dict[str, float]:
    """Seconds per training step (``steps`` steps per timing) with each objective."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(batch, in_dim)
    y = torch.randint(0, num_classes, (batch,))
    batch_loss = MCMILoss(num_classes, lam=0.2)
    ema_loss = MCMILoss(num_classes, lam=0.2, centroids="ema")
    objectives: dict[str, Callable[[Tensor], Tensor]] = {
        "CE": lambda z: nn.functional.cross_entropy(z, y),
        "MCMI batch centroids": lambda z: batch_loss(z, y).loss,
        "MCMI ema centroids": lambda z: ema_loss(z, y).loss,
        "MCMI loop over classes": lambda z: (
            nn.functional.cross_entropy(z, y) - 0.2 * loop_centroid_cmi(z, y, num_classes)
        ),
    }

    def runner(objective: Callable[[Tensor], Tensor]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(steps):
                optimizer.zero_grad()
                objective(model(x)).backward()
                optimizer.step()

        return run

    runs = {name: runner(objective) for name, objective in objectives.items()}
    best = dict.fromkeys(runs, float("inf"))
    for run in runs.values():  # warm-up
        run()
    for _ in range(repeats):  # interleaved, so that a change of machine load hits every objective alike
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: seconds / steps for name, seconds in best.items()}


def main(
    in_dim: int = 3072, hidden: int = 512, num_classes: int = 100, batch: int = 128, repeats: int = 7
) -> dict[str, float]:
    """Print the table and the goal lines; return the ratios to the CE step."""
    print(
        f"MLP {in_dim}-{hidden}-{hidden}-{num_classes}, batch {batch}, fwd+bwd+SGD, CPU threads="
        f"{torch.get_num_threads()} (best of {repeats})"
    )
    times = step_times(in_dim, hidden, num_classes, batch, repeats)
    ratios = {name: seconds / times["CE"] for name, seconds in times.items()}
    print(f"{'objective':<24} {'ms/step':>9} {'vs CE':>7}")
    for name, seconds in times.items():
        print(f"{name:<24} {1e3 * seconds:>9.3f} {ratios[name]:>6.2f}x")
    print(f"MCMI teacher step (batch centroids) vs CE step: {ratios['MCMI batch centroids']:.2f}x (goal <= 1.1)")
    print(f"MCMI teacher step (ema centroids) vs CE step: {ratios['MCMI ema centroids']:.2f}x (goal <= 1.1)")
    return ratios


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small model, few repeats (smoke run)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.quick:
        main(in_dim=64, hidden=32, num_classes=10, batch=32, repeats=2)
    else:
        main()
