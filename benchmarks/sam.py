"""Time per training step of the SAM family relative to their base optimizer (same model, same data).

SAM, every-k SAM, GAM, GSAM, WSAM, FriendlySAM and LookSAM.

Run: ``python benchmarks/sam.py`` (``--quick`` for a smoke run, ``--rounds``, ``--threads``). A small CNN
(conv-BN-ReLU x2, dropout, linear) on random 32x32 images, SGD with momentum as the base optimizer, the plain
PyTorch closure loop (no Lightning, so the optimizers' own overhead is not hidden by the trainer's).

Method: each round times every configuration between two base steps (base, sam, base, every-2, base, ...), and its
ratio is its step time over the mean of the two base steps around it, so load that drifts during a round cancels to
first order; an every-k measurement is k consecutive steps (one full cycle). The table gives the median over rounds
and the interquartile range of the per-round ratios (the run-to-run noise of one round on this machine). Two floor
rows time the closure alone 2 and 4 times plus one base step: what SAM's and GAM's passes cost with no
sharpness-aware code at all; "overhead over the passes" is the optimizer's own cost. Wall-clock timings on a shared
machine are noisy (the header prints the load average); the CPU-time ratio beside them is steadier there. The goal
lines use wall time. Goals: SAM <= 2.05x, every-k SAM <= (1 + 1/k) * 1.05, GAM <= 4 * 1.05 (its passes), GSAM and
WSAM <= 2.05x, FriendlySAM <= 2.1x, LookSAM k=5 <= 1.26x (1 + 1/k passes).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from lightning_info.optim import GAM, GSAM, SAM, WSAM, FriendlySAM, LookSAM


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
    if name == "sam":
        optimizer = SAM(model.parameters(), torch.optim.SGD, rho=0.05, **kwargs)
    elif name.startswith("every-"):
        steps = int(name.split("-")[1])
        optimizer = SAM(model.parameters(), torch.optim.SGD, rho=0.05, interval=steps, **kwargs)
    elif name == "gam":
        optimizer = GAM(model.parameters(), torch.optim.SGD, **kwargs)
    elif name == "gsam":
        optimizer = GSAM(model.parameters(), torch.optim.SGD, rho=0.05, alpha=0.1, **kwargs)
    elif name == "wsam":
        optimizer = WSAM(model.parameters(), torch.optim.SGD, rho=0.05, gamma=0.9, **kwargs)
    elif name == "fsam":
        optimizer = FriendlySAM(model.parameters(), torch.optim.SGD, rho=0.05, sigma=1.0, lmbda=0.9, **kwargs)
    elif name.startswith("looksam-"):
        steps = int(name.split("-")[1])
        optimizer = LookSAM(model.parameters(), torch.optim.SGD, rho=0.05, k=steps, alpha=0.7, **kwargs)
    else:  # "base" and the floors: the base optimizer
        optimizer = torch.optim.SGD(model.parameters(), **kwargs)
    passes = int(name.split()[0]) if name.endswith("passes") else 0

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    def run() -> None:
        for _ in range(steps):
            optimizer.step(closure)

    def floor() -> None:  # the closure `passes` times, then one base step: the passes with no optimizer code
        for _ in range(passes):
            closure()
        optimizer.step()

    return (floor if passes else run), steps


GOALS = {"sam": 2.05, "every-2": 1.5 * 1.05, "every-5": 1.2 * 1.05, "every-10": 1.1 * 1.05, "gam": 4 * 1.05}
GOALS.update({"gsam": 2.05, "wsam": 2.05, "fsam": 2.1, "looksam-5": 1.2 * 1.05})
FLOORS = {"sam": "2 passes", "gam": "4 passes"}  # the floor row of each multi-pass optimizer


def main(
    quick: bool = False, width: int = 16, batch: int = 64, size: int = 32, rounds: int = 40
) -> dict[str, tuple[float, float]]:
    """Print the table and the goal lines; return ``{config: (ratio to base, goal)}`` (floors: goal ``nan``)."""
    if quick:  # tiny tensors: one intra-op thread avoids thread-pool wake-ups dominating on a busy machine
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return main(width=4, batch=8, size=8, rounds=1)
        finally:
            torch.set_num_threads(threads)
    names = ["sam", "every-2", "every-5", "every-10", "gam", "gsam", "wsam", "fsam", "looksam-5", *FLOORS.values()]
    steppers = {name: _stepper(name, width, batch, size) for name in ["base", *names]}
    best = dict.fromkeys(steppers, float("inf"))  # wall time per step, best round
    ratios: dict[str, list[float]] = {name: [] for name in names}
    cpu_ratios: dict[str, list[float]] = {name: [] for name in names}

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
        before = timed("base")
        for name in names:  # base, config, base, config, ..., base: every config between two base steps
            wall, cpu = timed(name)
            after = timed("base")
            ratios[name].append(wall / ((before[0] + after[0]) / 2))
            cpu_ratios[name].append(cpu / max((before[1] + after[1]) / 2, 1e-9))
            before = after
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"# SAM family cost per training step (CPU, {torch.get_num_threads()} threads, load average {load})")
    print(f"# CNN width {width}, batch {batch} of {size}x{size} images, SGD(momentum) base, {rounds} rounds;")
    print("# ratio = median over rounds of (step time / mean of the base steps around it); ms / step = best round")
    print("| optimizer | ms / step | ratio to base | IQR of the rounds | CPU-time ratio | goal |")
    print("|---|---|---|---|---|---|")
    print(f"| base | {best['base'] * 1e3:.2f} | 1 | - | 1 | - |")
    results = {}
    for name in names:
        ratio, cpu_ratio = statistics.median(ratios[name]), statistics.median(cpu_ratios[name])
        goal = GOALS.get(name, float("nan"))
        results[name] = (ratio, goal)
        low, _, high = statistics.quantiles(ratios[name], n=4) if rounds > 1 else (ratio, ratio, ratio)
        target = f"<= {goal:.3f}" if name in GOALS else "(floor: no optimizer code)"
        row = f"| {name} | {best[name] * 1e3:.2f} | {ratio:.3f}x | {low:.3f} - {high:.3f} | {cpu_ratio:.3f}x |"
        print(f"{row} {target} |")
    print()
    for name, floor in FLOORS.items():
        overhead = results[name][0] / results[floor][0] - 1
        print(f"{name.upper()} overhead over its {floor} alone: {overhead:+.1%}")
    labels = {"sam": "SAM", "every-2": "every-2 SAM", "every-5": "every-5 SAM", "every-10": "every-10 SAM"}
    labels.update({"gam": "GAM (4 passes)", "gsam": "GSAM", "wsam": "WSAM", "fsam": "FriendlySAM"})
    labels["looksam-5"] = "LookSAM k=5"
    for name, label in labels.items():
        ratio, goal = results[name]
        print(f"{label} step time vs base: {ratio:.3f}x (goal <= {goal:.3f})")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 round (smoke run)")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    main(quick=args.quick, rounds=args.rounds)
