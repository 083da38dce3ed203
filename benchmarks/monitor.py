"""InformationMonitor overhead: training time with vs. without the monitor on the demo transformer (sklearn digits).

The demo's ``DigitsTransformer`` (8 row-tokens of 8 pixels, d_model 32, 2 layers), batch 64, ``Trainer.fit`` for a
fixed number of steps with no logger; the monitor watches the two encoder layers and the pooled representation
with matrix entropy, Vendi score, DSE and DSMI every ``every_n_steps`` steps. Runs alternate (plain, monitored) and
the best of ``repeats`` is kept for each.

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


def main(steps: int = 400, every_n_steps: int = 50, repeats: int = 3) -> float:
    """Print the timings and the overhead line; return monitored / plain training time."""
    plain, monitored = [], []
    with TemporaryDirectory() as root:
        for _ in range(repeats):
            plain.append(_fit_seconds(steps, [], Path(root)))
            monitor = InformationMonitor(LAYERS, METRICS, every_n_steps=every_n_steps)
            monitored.append(_fit_seconds(steps, [monitor], Path(root)))
    best_plain, best_monitored = min(plain), min(monitored)
    print(f"DigitsTransformer, batch 64, {steps} steps, CPU threads={torch.get_num_threads()} (best of {repeats})")
    print(f"{'run':>10} {'seconds':>8} {'ms/step':>8}")
    print(f"{'plain':>10} {best_plain:>8.2f} {1e3 * best_plain / steps:>8.2f}")
    print(f"{'monitored':>10} {best_monitored:>8.2f} {1e3 * best_monitored / steps:>8.2f}")
    ratio = best_monitored / best_plain
    print(
        f"monitor overhead at every_n_steps={every_n_steps} ({len(LAYERS)} layers x {len(METRICS)} metrics): "
        f"{ratio:.3f}x (goal <= 1.05)"
    )
    return ratio


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100 steps, one repeat")
    args = parser.parse_args()
    if args.quick:
        main(steps=100, repeats=1)
    else:
        main()
