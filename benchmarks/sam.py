"""Time per training step of SAM, every-k SAM and GAM relative to their base optimizer (same model, same data).

Run: ``python benchmarks/sam.py`` (``--quick`` for a smoke run). A small CNN (conv-BN-ReLU x2, dropout, linear) on
random 32x32 images, SGD with momentum as the base optimizer, the plain PyTorch closure loop (no Lightning, so the
optimizers' own overhead is not hidden by the trainer's). In every round each configuration is timed right after a
base step, and the ratio is the median over rounds of these paired ratios (robust to load drifting during the run);
an every-k measurement is k consecutive steps (one full cycle). Wall-clock timings are noisy on a shared
machine (the header prints the load average); the process CPU-time ratio beside them is steadier there, especially
with ``--threads 1``; the goal lines use wall time. Goals: SAM <= 2.05x, every-k SAM <= (1 + 1/k) * 1.05,
GAM <= 4 * 1.05 (its passes).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from lightning_info.optim import GAM, SAM


def _model(width: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Dropout(0.1),
        nn.Linear(32 * width, 10),
    )


def _stepper(name: str, width: int, batch: int, size: int) -> tuple[Callable[[], None], int]:
    """A function doing one optimizer step (closure included) and the steps per timed round (k for every-k)."""
    torch.manual_seed(0)
    model = _model(width)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch,))
    kwargs = {"lr": 0.01, "momentum": 0.9}
    steps = 1
    optimizer: torch.optim.Optimizer
    if name == "base":
        optimizer = torch.optim.SGD(model.parameters(), **kwargs)
    elif name == "sam":
        optimizer = SAM(model.parameters(), torch.optim.SGD, rho=0.05, **kwargs)
    elif name.startswith("every-"):
        steps = int(name.split("-")[1])
        optimizer = SAM(model.parameters(), torch.optim.SGD, rho=0.05, interval=steps, **kwargs)
    else:
        optimizer = GAM(model.parameters(), torch.optim.SGD, **kwargs)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    def run() -> None:
        for _ in range(steps):
            optimizer.step(closure)

    return run, steps


def main(
    quick: bool = False, width: int = 16, batch: int = 64, size: int = 32, rounds: int = 15
) -> dict[str, tuple[float, float]]:
    """Print the table and the goal lines; return ``{config: (ratio to base, goal)}``."""
    if quick:  # tiny tensors: one intra-op thread avoids thread-pool wake-ups dominating on a busy machine
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return main(width=4, batch=8, size=8, rounds=1)
        finally:
            torch.set_num_threads(threads)
    configs = {"base": 1.0, "sam": 2.05, "every-2": 1.5 * 1.05, "every-5": 1.2 * 1.05, "every-10": 1.1 * 1.05}
    configs["gam"] = 4 * 1.05
    steppers = {name: _stepper(name, width, batch, size) for name in configs}
    best = dict.fromkeys(configs, float("inf"))  # wall time per step, best round
    ratios: dict[str, list[float]] = {name: [] for name in configs}  # paired with the base step timed just before
    cpu_ratios: dict[str, list[float]] = {name: [] for name in configs}

    def timed(name: str) -> tuple[float, float]:
        run, steps = steppers[name]
        start, start_cpu = time.perf_counter(), time.process_time()
        run()
        wall, cpu = (time.perf_counter() - start) / steps, (time.process_time() - start_cpu) / steps
        best[name] = min(best[name], wall)
        return wall, cpu

    for run, _ in steppers.values():
        run()  # warm-up
    for _ in range(rounds):
        for name in configs:
            base_wall, base_cpu = timed("base")
            wall, cpu = timed(name)
            ratios[name].append(wall / base_wall)
            cpu_ratios[name].append(cpu / max(base_cpu, 1e-9))
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"# SAM family cost per training step (CPU, {torch.get_num_threads()} threads, load average {load})")
    print(f"# CNN width {width}, batch {batch} of {size}x{size} images, SGD(momentum) base, {rounds} rounds;")
    print("# ratio = median over rounds of (step time / base step timed just before it); ms / step = best round")
    print("| optimizer | ms / step | ratio to base | CPU-time ratio | goal |")
    print("|---|---|---|---|---|")
    results = {}
    for name, goal in configs.items():
        ratio, cpu_ratio = statistics.median(ratios[name]), statistics.median(cpu_ratios[name])
        results[name] = (ratio, goal)
        target = "-" if name == "base" else f"<= {goal:.3f}"
        print(f"| {name} | {best[name] * 1e3:.2f} | {ratio:.3f}x | {cpu_ratio:.3f}x | {target} |")
    print()
    labels = {"sam": "SAM", "every-2": "every-2 SAM", "every-5": "every-5 SAM", "every-10": "every-10 SAM"}
    labels["gam"] = "GAM (4 passes)"
    for name, label in labels.items():
        ratio, goal = results[name]
        print(f"{label} step time vs base: {ratio:.3f}x (goal <= {goal:.3f})")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 round (smoke run)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    main(quick=args.quick, rounds=args.rounds)
