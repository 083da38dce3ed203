"""The demo's outputs: a history of logged values, the summary table, a Markdown report and figures."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger
from typing_extensions import override


class MetricsHistory(Logger):
    """An in-memory logger beside the real one: keeps every scalar logged, with its step, for the figures."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, float]] = []

    @property
    @override
    def name(self) -> str:
        return "history"

    @property
    @override
    def version(self) -> str:
        return "0"

    @override
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    @override
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.rows.append({**{k: float(v) for k, v in metrics.items()}, "step": float(step or 0)})

    def latest(self) -> dict[str, float]:
        """The last logged value of every key."""
        values: dict[str, float] = {}
        for row in self.rows:
            values.update(row)
        values.pop("step", None)
        return values

    def series(self, key: str) -> tuple[list[float], list[float]]:
        """``(steps, values)`` of one key."""
        pairs = [(row["step"], row[key]) for row in self.rows if key in row]
        return [p[0] for p in pairs], [p[1] for p in pairs]


def format_table(summary: dict[str, float]) -> str:
    """A two-column text table ``metric | value``."""
    width = max([len("metric"), *map(len, summary)])
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  ----------"]
    lines += [f"{key:<{width}}  {value:.4g}" for key, value in summary.items()]
    return "\n".join(lines)


def write_report(out: Path, summary: dict[str, float], history: MetricsHistory, run_location: str) -> list[Path]:
    """Write ``summary.md`` and ``loss_curves.png`` (when matplotlib is installed) under ``out``; return the files."""
    out.mkdir(parents=True, exist_ok=True)
    files = []
    figure = _plot_curves(out / "loss_curves.png", history)
    if figure is not None:
        files.append(figure)
    report = out / "summary.md"
    rows = "\n".join(f"| `{key}` | {value:.4g} |" for key, value in summary.items())
    images = "\n".join(f"![{f.stem}]({f.name})" for f in files)
    report.write_text(
        f"# lightning-info demo\n\nRun: `{run_location}`\n\n| metric | value |\n|---|---|\n{rows}\n\n{images}\n"
    )
    files.append(report)
    return files


def _plot_curves(path: Path, history: MetricsHistory) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.5))
    for key in ("train_loss", "val_loss"):
        steps, values = history.series(key)
        if steps:
            ax_loss.plot(steps, values, label=key, marker="." if key.startswith("val") else None)
    steps, values = history.series("val_acc")
    if steps:
        ax_acc.plot(steps, values, marker="o", label="val_acc")
    for ax, title in ((ax_loss, "loss"), (ax_acc, "validation accuracy")):
        ax.set_xlabel("global step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
