"""``python -m lightning_info demo`` runs the demo, like the ``lightning-info`` console script."""

from lightning_info.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
