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

MLP rows (``--mlp 0.1M,1M,10M``, ``--mlp-only``): SAM and its 2-pass floor on 64-h-h-10 ReLU MLPs of 0.1M / 1M / 10M
weights, batch 128, one thread. Their matmuls are small, so SAM's own work (norms, snapshot, perturbation, restore,
the finiteness check, Python between the passes) shows; it is stated as "passes over the weights": SAM's step minus
the floor, over the time of one ``torch._foreach_add_`` over all weights. Goals: <= 2.3x at 0.1M, <= 2.1x at 1M and
10M (the two passes alone are ~1.9x: the base step includes one SGD update, the floor two closures and one update).
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


def _mlp(hidden: int) -> nn.Module:
    """64 -> hidden -> hidden -> 10 with ReLU: ``74 * hidden + hidden**2 + 10`` weights, little compute per weight."""
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def _cnn_stepper(name: str, width: int, batch: int, size: int) -> tuple[Callable[[], None], int]:
    torch.manual_seed(0)
    model = _model(width)
    return _stepper(name, model, torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch,)))


def _mlp_stepper(name: str, hidden: int, batch: int) -> tuple[Callable[[], None], int]:
    torch.manual_seed(0)
    model = _mlp(hidden)
    return _stepper(name, model, torch.randn(batch, 64), torch.randint(0, 10, (batch,)))


def _stepper(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[Callable[[], None], int]:
    """A function doing one optimizer step (closure included) and the steps per timed round (k for every-k)."""
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


MLP_HIDDEN = {"0.1M": 280, "1M": 960, "10M": 3100}  # 64-h-h-10 MLPs of 0.10M / 0.99M / 9.85M weights
MLP_GOALS = {"0.1M": 2.3, "1M": 2.1, "10M": 2.1}  # SAM / base on them (the 2 passes alone: ~1.9x)


class _Timings:
    """Per-round ratios of each configuration to the base steps around it (wall and CPU time)."""

    def __init__(self, steppers: dict[str, tuple[Callable[[], None], int]], names: list[str], rounds: int) -> None:
        self.best = dict.fromkeys(steppers, float("inf"))  # wall time per step, best round
        self.base: list[tuple[float, float]] = []  # (wall, CPU) of every base step
        self.ratios: dict[str, list[float]] = {name: [] for name in names}
        self.cpu_ratios: dict[str, list[float]] = {name: [] for name in names}

        def timed(name: str) -> tuple[float, float]:
            run, steps = steppers[name]
            start, start_cpu = time.perf_counter(), time.process_time()
            run()
            wall, cpu = (time.perf_counter() - start) / steps, (time.process_time() - start_cpu) / steps
            self.best[name] = min(self.best[name], wall)
            if name == "base":
                self.base.append((wall, cpu))
            return wall, cpu

        for run, _ in steppers.values():
            run()  # warm-up
        for _ in range(rounds):
            before = timed("base")
            for name in names:  # base, config, base, config, ..., base: every config between two base steps
                wall, cpu = timed(name)
                after = timed("base")
                self.ratios[name].append(wall / ((before[0] + after[0]) / 2))
                self.cpu_ratios[name].append(cpu / max((before[1] + after[1]) / 2, 1e-9))
                before = after

    def row(self, name: str, label: str, target: str) -> tuple[float, float]:
        """Print the table row of ``name``; return its median wall and CPU-time ratios."""
        ratio, cpu_ratio = statistics.median(self.ratios[name]), statistics.median(self.cpu_ratios[name])
        rounds = len(self.ratios[name])
        low, _, high = statistics.quantiles(self.ratios[name], n=4) if rounds > 1 else (ratio, ratio, ratio)
        cells = f"{self.best[name] * 1e3:.2f} | {ratio:.3f}x | {low:.3f} - {high:.3f} | {cpu_ratio:.3f}x"
        print(f"| {label} | {cells} | {target} |")
        return ratio, cpu_ratio


def _header(rounds: int) -> None:
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"# CPU, {torch.get_num_threads()} threads, load average {load}, SGD(momentum) base, {rounds} rounds;")
    print("# ratio = median over rounds of (step time / mean of the base steps around it); ms / step = best round")
    print("| optimizer | ms / step | ratio to base | IQR of the rounds | CPU-time ratio | goal |")
    print("|---|---|---|---|---|---|")


def _weight_pass(model: nn.Module) -> tuple[float, float]:
    """Median (wall, CPU) seconds of one ``torch._foreach_add_`` over all weights: "one pass over the weights"."""
    with torch.no_grad():
        weights = [p.detach() for p in model.parameters()]
        others = [torch.zeros_like(w) for w in weights]
        times = []
        for _ in range(21):
            start, start_cpu = time.perf_counter(), time.process_time()
            torch._foreach_add_(weights, others, alpha=0.0)
            times.append((time.perf_counter() - start, time.process_time() - start_cpu))
    return statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)


def mlp_rows(sizes: dict[str, int], batch: int, rounds: int) -> dict[str, tuple[float, float]]:
    """SAM on matmul-light MLPs, one thread: ratio to base, the 2-pass floor and SAM's own cost in weight passes.

    Returns ``{"sam mlp <size>": (ratio, goal), "2 passes mlp <size>": (ratio, nan)}``.
    """
    results: dict[str, tuple[float, float]] = {}
    if not sizes:
        return results
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        print(f"\n# SAM on 64-h-h-10 ReLU MLPs, batch {batch}, 1 thread (little compute per weight)")
        _header(rounds)
        own_lines = []
        for size, hidden in sizes.items():
            names = ["sam", "2 passes"]
            steppers = {name: _mlp_stepper(name, hidden, batch) for name in ["base", *names]}
            timings = _Timings(steppers, names, rounds if hidden < 2000 else max(3, rounds // 4))
            goal = MLP_GOALS.get(size, 2.05)
            sam, sam_cpu = timings.row("sam", f"SAM, MLP {size}", f"<= {goal:.3f}")
            floor, floor_cpu = timings.row("2 passes", f"2 passes, MLP {size}", "(floor: no optimizer code)")
            results[f"sam mlp {size}"], results[f"2 passes mlp {size}"] = (sam, goal), (floor, float("nan"))
            base_wall = statistics.median(t[0] for t in timings.base)
            base_cpu = statistics.median(t[1] for t in timings.base)
            model = _mlp(hidden)
            weights = sum(p.numel() for p in model.parameters())
            add_wall, add_cpu = _weight_pass(model)
            own_wall, own_cpu = (sam - floor) * base_wall, (sam_cpu - floor_cpu) * base_cpu
            own_lines.append(
                f"SAM's own cost, MLP {size} ({weights:,} weights): {own_wall * 1e3:+.3f} ms per step = "
                f"{own_wall / add_wall:+.1f} passes over the weights (one torch._foreach_add_ over them: "
                f"{add_wall * 1e3:.3f} ms); CPU time {own_cpu / max(add_cpu, 1e-9):+.1f} passes; "
                f"{sam / floor - 1:+.1%} over the 2 passes alone"
            )
        print()
        for line in own_lines:
            print(line)
        for size in sizes:
            ratio, goal = results[f"sam mlp {size}"]
            print(f"SAM step time vs base, MLP {size}: {ratio:.3f}x (goal <= {goal:.3f})")
    finally:
        torch.set_num_threads(threads)
    return results


def main(
    quick: bool = False,
    width: int = 16,
    batch: int = 64,
    size: int = 32,
    rounds: int = 40,
    mlp: dict[str, int] | None = None,
    mlp_batch: int = 128,
) -> dict[str, tuple[float, float]]:
    """Print the tables and the goal lines; return ``{config: (ratio to base, goal)}`` (floors: goal ``nan``).

    ``mlp``: ``{label: hidden width}`` of the MLP rows (default :data:`MLP_HIDDEN`; ``{}``: none).
    """
    if quick:  # tiny tensors: one intra-op thread avoids thread-pool wake-ups dominating on a busy machine
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return main(width=4, batch=8, size=8, rounds=1, mlp={"tiny": 8}, mlp_batch=8)
        finally:
            torch.set_num_threads(threads)
    names = ["sam", "every-2", "every-5", "every-10", "gam", "gsam", "wsam", "fsam", "looksam-5", *FLOORS.values()]
    steppers = {name: _cnn_stepper(name, width, batch, size) for name in ["base", *names]}
    timings = _Timings(steppers, names, rounds)
    print("# SAM family cost per training step")
    print(f"# CNN width {width}, batch {batch} of {size}x{size} images")
    _header(rounds)
    print(f"| base | {timings.best['base'] * 1e3:.2f} | 1 | - | 1 | - |")
    results = {}
    for name in names:
        goal = GOALS.get(name, float("nan"))
        target = f"<= {goal:.3f}" if name in GOALS else "(floor: no optimizer code)"
        results[name] = (timings.row(name, name, target)[0], goal)
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
    results.update(mlp_rows(MLP_HIDDEN if mlp is None else mlp, mlp_batch, rounds))
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 round (smoke run)")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads of the CNN rows")
    parser.add_argument("--mlp", default=",".join(MLP_HIDDEN), help="MLP rows (comma-separated of 0.1M,1M,10M; '')")
    parser.add_argument("--mlp-only", action="store_true", help="the MLP rows only")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    chosen = {size: MLP_HIDDEN[size] for size in args.mlp.split(",") if size}
    if args.mlp_only:
        mlp_rows(chosen, 128, args.rounds)
    else:
        main(quick=args.quick, rounds=args.rounds, mlp=chosen)
