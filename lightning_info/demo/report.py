"""The demo's outputs: a history of logged values, the summary and stage tables, a Markdown report and figures.

:func:`report_run` writes the same report again from a run's W&B offline files alone (``lightning-info report``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
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


SETTINGS = ("parts", "optimizer", "max_epochs", "seed", "fast", "threads")
"""The demo's settings, in the order ``summary.md`` lists them (logged as hyper-parameters of every stage's run)."""

StageTime = tuple[str, int, float]
"""``(stage name, epochs, wall time in seconds)``."""


def format_table(summary: Mapping[str, float]) -> str:
    """A two-column text table ``metric | value``."""
    width = max([len("metric"), *map(len, summary)])
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  ----------"]
    lines += [f"{key:<{width}}  {value:.4g}" for key, value in summary.items()]
    return "\n".join(lines)


def format_stages(stages: Sequence[StageTime]) -> str:
    """A text table of the stages: number, name, epochs and wall time, with the total."""
    width = max([len("stage"), len("total"), *(len(name) for name, _, _ in stages)])
    lines = [f"  #  {'stage':<{width}}  epochs  wall time", f"---  {'-' * width}  ------  ---------"]
    lines += [
        f"{i:>3}  {name:<{width}}  {epochs:>6}  {seconds:>8.1f}s" for i, (name, epochs, seconds) in enumerate(stages, 1)
    ]
    lines.append(f"     {'total':<{width}}  {'':>6}  {sum(s for _, _, s in stages):>8.1f}s")
    return "\n".join(lines)


def _setting(value: Any) -> str:
    return ", ".join(map(str, value)) or "none" if isinstance(value, list | tuple) else str(value)


def write_report(
    out: Path,
    summary: Mapping[str, float],
    history: MetricsHistory,
    run_location: str,
    settings: Mapping[str, Any],
    stages: Sequence[StageTime],
) -> list[Path]:
    """Write ``summary.md`` (settings, results, stages) and the figures under ``out``; return the files.

    Figures need matplotlib: ``loss_curves.png`` always, ``attention_entropy.png`` (last logged entropy per layer and
    head, ``attn_entropy/layer{i}/head{j}``) and ``information_plane.png`` (the ``info/<layer>/mi_xt`` /
    ``mi_ty`` trajectory of every layer) when those keys were logged.
    """
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for name, plot in (
        ("loss_curves.png", _plot_curves),
        ("attention_entropy.png", _plot_attention_entropy),
        ("information_plane.png", _plot_information_plane),
    ):
        figure = plot(out / name, history)
        if figure is not None:
            files.append(figure)
    report = out / "summary.md"
    setting_rows = "\n".join(f"| `{key}` | {_setting(value)} |" for key, value in settings.items())
    rows = "\n".join(f"| `{key}` | {value:.4g} |" for key, value in summary.items())
    stage_rows = "\n".join(
        f"| {i} | {name} | {epochs} | {seconds:.1f} |" for i, (name, epochs, seconds) in enumerate(stages, 1)
    )
    total = sum(seconds for _, _, seconds in stages)
    images = "\n".join(f"![{f.stem}]({f.name})" for f in files)
    report.write_text(
        f"# lightning-info demo\n\nRun: `{run_location}`\n\n## Settings\n\n| setting | value |\n|---|---|\n"
        f"{setting_rows}\n\n## Results\n\n| metric | value |\n|---|---|\n{rows}\n\n"
        f"## Stages\n\n| # | stage | epochs | wall time (s) |\n|---|---|---|---|\n{stage_rows}\n"
        f"| | total | | {total:.1f} |\n\n{images}\n"
    )
    files.append(report)
    return files


def history_from_rows(rows: Sequence[Mapping[str, Any]]) -> MetricsHistory:
    """A :class:`MetricsHistory` of W&B history rows (numbers only, at ``trainer/global_step``, else ``_step``)."""
    history = MetricsHistory()
    for row in rows:
        step = row.get("trainer/global_step", row.get("_step", 0))
        numbers = {
            key: value
            for key, value in row.items()
            if not key.startswith("_") and key != "trainer/global_step" and isinstance(value, int | float)
        }
        if numbers:
            history.log_metrics(numbers, step=int(step))
    return history


def report_run(run_dir: Path, out: Path | None = None) -> list[Path]:
    """Write the report of a finished demo run again from its W&B offline runs alone (no account, no network).

    ``run_dir`` is the run's folder (the demo's ``--out/<timestamp>`` or ``--out/latest``); every stage's run under
    it is read, in stage order. The report goes to ``out`` (default ``run_dir/report``); returns its files.

    Raises:
        FileNotFoundError: no W&B demo stage run under ``run_dir``.
    """
    from lightning_info.demo.wandb_offline import read_run, run_files

    runs = [run for run in map(read_run, run_files(run_dir)) if "demo_stage" in run.summary]
    if not runs:
        raise FileNotFoundError(f"no W&B offline demo run (run-*.wandb with a demo stage) under {run_dir}")
    runs.sort(key=lambda run: run.summary["demo_stage"]["index"])
    summary: dict[str, float] = {}
    for run in runs:
        summary.update(run.summary.get("demo_summary", {}))
    stages = [(s["name"], s["epochs"], s["seconds"]) for s in (run.summary["demo_stage"] for run in runs)]
    settings = {key: runs[0].config[key] for key in SETTINGS if key in runs[0].config}
    location = str(runs[0].path.parent.parent)  # .../wandb/offline-run-*/run-*.wandb -> .../wandb
    return write_report(
        out or run_dir / "report", summary, history_from_rows(runs[0].history), location, settings, stages
    )


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _plot_curves(path: Path, history: MetricsHistory) -> Path | None:
    plt = _pyplot()
    if plt is None:
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
    return _save(fig, path, plt)


def _plot_attention_entropy(path: Path, history: MetricsHistory) -> Path | None:
    cells = {}
    for key, value in history.latest().items():
        match = re.fullmatch(r"attn_entropy/layer(\d+)/head(\d+)", key)
        if match:
            cells[int(match[1]), int(match[2])] = value
    plt = _pyplot()
    if plt is None or not cells:
        return None
    layers, heads = 1 + max(i for i, _ in cells), 1 + max(j for _, j in cells)
    grid = [[cells.get((i, j), math.nan) for j in range(heads)] for i in range(layers)]
    fig, ax = plt.subplots(figsize=(1.2 * heads + 2.5, 0.8 * layers + 1.5))
    image = ax.imshow(grid, cmap="magma", aspect="auto")
    for i in range(layers):
        for j in range(heads):
            bright = image.norm(grid[i][j]) > 0.6  # dark text on the light end of the colour map
            ax.text(j, i, f"{grid[i][j]:.2f}", ha="center", va="center", color="black" if bright else "white")
    ax.set_xticks(range(heads), [f"head {j}" for j in range(heads)])
    ax.set_yticks(range(layers), [f"layer {i}" for i in range(layers)])
    ax.set_title("attention entropy (nats), last logged step")
    fig.colorbar(image, ax=ax)
    return _save(fig, path, plt)


def _plot_information_plane(path: Path, history: MetricsHistory) -> Path | None:
    layers = sorted({key[len("info/") : -len("/mi_xt")] for key in history.latest() if key.endswith("/mi_xt")})
    plt = _pyplot()
    if plt is None or not layers:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for layer in layers:
        xt_steps, xt = history.series(f"info/{layer}/mi_xt")
        ty = dict(zip(*history.series(f"info/{layer}/mi_ty"), strict=True))
        points = [(x, ty[step]) for step, x in zip(xt_steps, xt, strict=True) if step in ty]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=layer)
            ax.annotate("end", points[-1], fontsize=7)
    ax.set_xlabel("I(X; T) (nats)")
    ax.set_ylabel("I(T; Y) (nats)")
    ax.set_title("information plane (side-critic estimates over training)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path, plt)


def _save(fig: Any, path: Path, plt: Any) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
