"""Command line: ``lightning-info demo [--parts P] [--optimizer O] [--fast] [--seed N] [--out DIR] [--no-wandb]``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    """The ``lightning-info`` argument parser."""
    from lightning_info.demo import PARTS

    parser = argparse.ArgumentParser(prog="lightning-info", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="train a small transformer on scikit-learn digits with the library's parts")
    available = ", ".join(f"{p.name} ({p.help})" for p in PARTS.values()).replace("%", "%%")  # argparse formats help
    demo.add_argument(
        "--parts",
        default=None,
        help=f"comma-separated parts to use (default: every default part). Available: {available or 'none yet'}",
    )
    demo.add_argument("--fast", action="store_true", help="a few steps only (seconds; used by the tests)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", type=Path, default=Path("runs"), help="output folder (W&B run, report, figures)")
    demo.add_argument("--no-wandb", action="store_true", help="log to CSV instead of a W&B offline run")
    demo.add_argument("--max-epochs", type=int, default=25)
    demo.add_argument(
        "--optimizer",
        choices=["sam", "asam", "gam", "base"],
        default=None,
        help="use this optimizer part instead of any sam/asam/gam in the parts (base: the model's plain AdamW)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lightning-info`` console script."""
    args = build_parser().parse_args(argv)
    from lightning_info.demo import PARTS, DemoConfig, run_demo

    if args.parts is None:
        parts = [p.name for p in PARTS.values() if p.default]
    else:
        parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if args.optimizer is not None:
        from lightning_info.demo.builtin.sam import OPTIMIZER_PARTS

        parts = [p for p in parts if p not in OPTIMIZER_PARTS] + ([] if args.optimizer == "base" else [args.optimizer])
    try:
        config = DemoConfig(
            parts=parts,
            out=args.out,
            seed=args.seed,
            fast=args.fast,
            wandb=not args.no_wandb,
            max_epochs=args.max_epochs,
        )
    except ValueError as error:
        build_parser().error(str(error))
    run_demo(config)
    return 0
