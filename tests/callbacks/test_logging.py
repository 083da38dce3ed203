"""log_scalars / log_figure: every logger gets what it can take (TensorBoard and CSV read back from disk)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger

from lightning_info.callbacks import EntropyGuidedAttentionCallback, InformationMonitor
from lightning_info.callbacks._logging import figure_path, log_figure, log_scalars
from tests.helpers.lightning import RecordingLogger, trainer_kwargs
from tests.helpers.models import TinyTransformer, classification_data, loader

pytest.importorskip("matplotlib")


def _figure() -> Any:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(2, 1.5), dpi=50)
    figure.add_subplot().imshow([[0.0, 1.0], [2.0, 3.0]])
    return figure


def _tensorboard(root: Path) -> Any:
    pytest.importorskip("tensorboard")
    from lightning.pytorch.loggers import TensorBoardLogger

    return TensorBoardLogger(root, name="tb")


def _events(logger: Any) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger.experiment.flush()
    accumulator = EventAccumulator(logger.log_dir, size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


def test_scalars_and_figures_reach_tensorboard_csv_and_loggers_without_a_folder(tmp_path: Path) -> None:
    tensorboard, csv, recording = _tensorboard(tmp_path), CSVLogger(tmp_path, name="csv"), RecordingLogger()
    trainer = Trainer(logger=[tensorboard, csv, recording], default_root_dir=tmp_path)
    log_scalars(trainer, {"part/a": 1.5, "part/b": -2.0}, step=3)
    log_figure(trainer, "part/heatmap", _figure(), step=3)
    log_figure(trainer, "part/heatmap", _figure(), step=7)

    events = _events(tensorboard)
    assert [(e.step, e.value) for e in events.Scalars("part/a")] == [(3, 1.5)]
    assert [(e.step, e.value) for e in events.Scalars("part/b")] == [(3, -2.0)]
    images = events.Images("part/heatmap")
    assert [e.step for e in images] == [3, 7]
    assert (images[0].width, images[0].height) == (100, 75)  # 2 x 1.5 inches at 50 dpi
    assert images[0].encoded_image_string.startswith(b"\x89PNG")

    csv.save()
    rows = (Path(csv.log_dir) / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",") == ["part/a", "part/b", "step"] and rows[1].split(",") == ["1.5", "-2.0", "3"]
    for step in (3, 7):
        path = Path(csv.log_dir) / "figures" / f"part_heatmap_step{step}.png"
        assert path == figure_path(csv.log_dir, "part/heatmap", step)
        assert path.read_bytes().startswith(b"\x89PNG")
    assert recording.rows == [(3, {"part/a": 1.5, "part/b": -2.0})]  # no figure, no error


def test_figure_goes_to_mlflow_as_an_artifact(tmp_path: Path) -> None:
    calls: list[tuple[Any, ...]] = []

    class Client:  # the MlflowClient method log_figure uses
        def log_figure(self, run_id: str, figure: Any, artifact_file: str) -> None:
            calls.append((run_id, figure, artifact_file))

    class FakeMLFlowLogger(MLFlowLogger):  # no mlflow install needed: the client is replaced
        def __init__(self) -> None:
            Logger.__init__(self)

        @property
        def experiment(self) -> Any:
            return Client()

        @property
        def run_id(self) -> str:
            return "run-1"

    figure = _figure()
    trainer = Trainer(logger=[FakeMLFlowLogger()], default_root_dir=tmp_path)
    log_figure(trainer, "info/heatmap", figure, step=4)
    assert calls == [("run-1", figure, "info/heatmap_step4.png")]


def test_monitor_figures_reach_tensorboard_and_csv_in_a_real_fit(tmp_path: Path) -> None:
    """Regression: info/heatmap and attn_entropy/heatmap went to a WandbLogger only."""
    tensorboard, csv = _tensorboard(tmp_path), CSVLogger(tmp_path, name="csv")
    data = classification_data(n=32, shape=(4, 2))
    monitor = InformationMonitor(["encoder.layers.?"], ["vendi"], stage="validation", max_samples=16)
    attention = EntropyGuidedAttentionCallback(weight=0.1)
    kwargs = trainer_kwargs(tmp_path, logger=[tensorboard, csv], max_epochs=2, max_steps=-1, log_every_n_steps=1)
    Trainer(callbacks=[monitor, attention], **kwargs).fit(
        TinyTransformer(in_dim=2), loader(data), loader(classification_data(n=16, shape=(4, 2), seed=1))
    )
    events = _events(tensorboard)
    assert [e.step for e in events.Images("info/heatmap")] == [2, 4]  # each validation run
    assert [e.step for e in events.Images("attn_entropy/heatmap")] == [2, 4]  # each training epoch end
    assert [e.step for e in events.Scalars("info/encoder.layers.1/vendi")] == [2, 4]
    figures = sorted(p.name for p in (Path(csv.log_dir) / "figures").iterdir())
    assert figures == [f"{key}_step{step}.png" for key in ("attn_entropy_heatmap", "info_heatmap") for step in (2, 4)]


def test_scalars_and_figures_reach_a_real_mlflow_file_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real ``MLFlowLogger`` on a file store in a temporary folder: the metrics and the figure artifact are read
    back with mlflow's own client."""
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow 3.x keeps the file store behind this switch
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    logger = MLFlowLogger(experiment_name="lightning-info", tracking_uri=uri)
    trainer = Trainer(logger=[logger], default_root_dir=tmp_path)
    log_scalars(trainer, {"part/a": 1.5}, step=3)
    log_figure(trainer, "info/heatmap", _figure(), step=4)
    client = MlflowClient(tracking_uri=uri)
    [metric] = client.get_metric_history(logger.run_id, "part/a")
    assert (metric.value, metric.step) == (1.5, 3)
    artifacts = [a.path for a in client.list_artifacts(logger.run_id, "info")]
    assert artifacts == ["info/heatmap_step4.png"]
