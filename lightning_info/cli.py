"""Command line of ``lightning-info``.

``lightning-info demo [--parts P] [--optimizer O] [--fast] [--seed N] [--threads N] [--out DIR] [--no-wandb]`` trains
the demo; ``lightning-info report RUN_DIR [--out DIR]`` writes a finished demo run's report again from its W&B
offline files (no account needed).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    """The ``lightning-info`` argument parser."""
    from lightning_info.demo import PARTS
    from lightning_info.demo.run import default_threads

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
    demo.add_argument("--seed", type=int, default=0, help="random seed, in [0, 2**32 - 1] (default: 0)")
    demo.add_argument(
        "--out",
        type=Path,
        default=Path("runs"),
        help="output folder; each run writes a timestamped folder inside it (W&B runs, report, figures), "
        "and OUT/latest links to the newest (default: runs)",
    )
    demo.add_argument("--no-wandb", action="store_true", help="log to CSV instead of W&B offline runs")
    demo.add_argument("--max-epochs", type=int, default=25, help="epochs of the main stage (default: 25)")
    demo.add_argument(
        "--threads",
        type=int,
        default=default_threads(),
        help="torch threads (torch.set_num_threads); the default, 1 on machines with up to 2 usable cores, else half "
        "of them up to 8, suits the demo's tiny models (default here: %(default)s)",
    )
    demo.add_argument(
        "--optimizer",
        choices=["sam", "asam", "gam", "base"],
        default=None,
        help="use this optimizer part instead of any sam/asam/gam in the parts (base: the model's plain AdamW)",
    )
    report = commands.add_parser(
        "report", help="write a finished demo run's summary.md and figures from its W&B offline runs (no account)"
    )
    report.add_argument("run_dir", type=Path, help="the run's folder, e.g. runs/latest")
    report.add_argument("--out", type=Path, default=None, help="where to write the report (default: RUN_DIR/report)")
    for command in (demo, report):  # usage errors found after parsing print the subcommand's usage
        command.set_defaults(error=command.error)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lightning-info`` console script; usage errors exit with argparse's code 2."""
    args = build_parser().parse_args(argv)
    if args.command == "report":
        return _report(args)
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
            threads=args.threads,
        )
    except (ValueError, TypeError) as error:
        args.error(str(error))
    run_demo(config)
    return 0


def _report(args: argparse.Namespace) -> int:
    from lightning_info.demo.report import report_run

    if not args.run_dir.is_dir():
        args.error(f"run_dir must be a demo run's folder, got {args.run_dir}")
    try:
        files = report_run(args.run_dir, args.out)
    except FileNotFoundError as error:
        args.error(str(error))
    print(f"[report] {', '.join(str(f) for f in files)}")
    print((files[-1]).read_text())
    return 0
