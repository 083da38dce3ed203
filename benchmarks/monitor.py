"""InformationMonitor overhead: training time with vs. without the monitor on the demo transformer (sklearn digits).

The demo's ``DigitsTransformer`` (8 row-tokens of 8 pixels, d_model 32, 2 layers), batch 64, ``Trainer.fit`` for a
fixed number of steps with no logger, three ways: plain; with one monitor on the two encoder layers and the pooled
representation computing matrix entropy, Vendi score, DSE and DSMI every ``every_n_steps`` steps; and with the demo
part's monitors (``lightning_info/demo/builtin/monitor.py``: the same layers with matrix entropy, Vendi, DSMI and
the info-plane critics, plus prediction entropy and CMI of the head). Runs alternate and the best of ``repeats`` is
kept for each.

Run: ``python benchmarks/monitor.py`` (``--quick`` for a smoke run). CPU timings; noisy on shared machines.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import torch
from lightning.pytorch import Callback, Trainer

from lightning_info.callbacks import InformationMonitor
from lightning_info.demo.data import load_digits_tokens
from lightning_info.demo.model import DigitsTransformer
from lightning_info.demo.parts import PARTS, DemoContext

LAYERS = ["encoder.layers.0", "encoder.layers.1", "pool"]
METRICS = ["matrix_entropy", "vendi", "dse", "dsmi"]


def _fit_seconds(steps: int, callbacks: list[Callback], root: Path) -> float:
    torch.manual_seed(0)
    trainer = Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=str(root),
        callbacks=callbacks,
    )
    train = load_digits_tokens().loader("train", batch_size=64, shuffle=True)
    start = time.perf_counter()
    trainer.fit(DigitsTransformer(), train)
    return time.perf_counter() - start


def _demo_monitors(every_n_steps: int) -> list[Callback]:
    ctx = DemoContext(fast=False, seed=0)
    PARTS["monitor"].configure(ctx)
    for callback in ctx.callbacks:
        assert isinstance(callback, InformationMonitor)
        callback.every_n_steps = every_n_steps
    return ctx.callbacks


def main(steps: int = 400, every_n_steps: int = 50, repeats: int = 3) -> float:
    """Print the timings and the overhead lines; return monitored / plain training time (the metrics monitor)."""
    runs: dict[str, list[float]] = {"plain": [], "metrics": [], "demo part": []}
    with TemporaryDirectory() as root:
        for _ in range(repeats):
            runs["plain"].append(_fit_seconds(steps, [], Path(root)))
            monitor = InformationMonitor(LAYERS, METRICS, every_n_steps=every_n_steps)
            runs["metrics"].append(_fit_seconds(steps, [monitor], Path(root)))
            runs["demo part"].append(_fit_seconds(steps, _demo_monitors(every_n_steps), Path(root)))
    best = {name: min(times) for name, times in runs.items()}
    print(f"DigitsTransformer, batch 64, {steps} steps, CPU threads={torch.get_num_threads()} (best of {repeats})")
    print(f"{'run':>10} {'seconds':>8} {'ms/step':>8}")
    for name, seconds in best.items():
        print(f"{name:>10} {seconds:>8.2f} {1e3 * seconds / steps:>8.2f}")
    ratio = best["metrics"] / best["plain"]
    print(
        f"monitor overhead at every_n_steps={every_n_steps} ({len(LAYERS)} layers x {len(METRICS)} metrics): "
        f"{ratio:.3f}x (goal <= 1.05)"
    )
    demo_ratio = best["demo part"] / best["plain"]
    print(f"demo part's monitors (with info plane) at every_n_steps={every_n_steps}: {demo_ratio:.3f}x (goal <= 1.05)")
    return ratio


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100 steps, one repeat")
    args = parser.parse_args()
    if args.quick:
        main(steps=100, repeats=1)
    else:
        main()
