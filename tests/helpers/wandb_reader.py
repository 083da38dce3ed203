"""The suite's W&B offline reader: the package's own (:mod:`lightning_info.demo.wandb_offline`), one copy."""

from lightning_info.demo.wandb_offline import OfflineRun, read_history, read_run, run_files, series

__all__ = ["OfflineRun", "read_history", "read_run", "run_files", "series"]
