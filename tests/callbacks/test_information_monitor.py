from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from lightning_info.callbacks import InformationMonitor, information_figures
from lightning_info.callbacks.information_monitor import INFORMATION_METRICS, register_information_metric
from lightning_info.metrics.functional import diffusion_spectral_mutual_information, matrix_entropy, vendi_score
from tests.helpers.lightning import run_ddp, trainer_kwargs
from tests.helpers.models import MLPClassifier, TinyTransformer, classification_data, loader
from tests.helpers.wandb_reader import series

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _fit(model, callbacks, tmp_path: Path, data=None, **kw) -> Trainer:
    trainer = Trainer(callbacks=callbacks, **trainer_kwargs(tmp_path, **kw))
    trainer.fit(model, loader(data or classification_data(n=96)), loader(classification_data(n=32, seed=1)))
    return trainer


def test_logs_every_n_steps_to_wandb_with_values_of_the_captured_batch(tmp_path: Path, wandb_offline) -> None:
    logger = wandb_offline()
    model = MLPClassifier(optimizer_factory=lambda p: torch.optim.SGD(p, lr=0.0))  # frozen: values recomputable
    monitor = InformationMonitor(["net.2", "net.4"], ["matrix_entropy", "vendi", "dsmi"], every_n_steps=3)
    _fit(model, [monitor], tmp_path, logger=logger, max_steps=8, limit_val_batches=0)
    rows = wandb_offline.history()
    steps = [s for s, _ in series(rows, "info/net.2/matrix_entropy")]
    assert steps == [0, 3, 6]
    # step 3 saw batch 3 (16 rows, the loader has 6 batches): recompute with the metric functions
    x, y = loader(classification_data(n=96)).dataset[48:64]
    with torch.no_grad():
        hidden, logits = model.net[:3](x), model.net(x)
    expected = {
        "info/net.2/matrix_entropy": float(matrix_entropy(hidden)),
        "info/net.2/vendi": float(vendi_score(hidden)),
        "info/net.2/dsmi": float(diffusion_spectral_mutual_information(hidden, y)),
        "info/net.4/vendi": float(vendi_score(logits)),
    }
    for key, value in expected.items():
        assert dict(series(rows, key))[3] == pytest.approx(value, rel=1e-5), key
    assert monitor.last_logged_step == 6


def test_transformer_validation_stage_and_figures(tmp_path: Path, wandb_offline) -> None:
    logger = wandb_offline()
    data = classification_data(n=64, shape=(4, 2))
    model = TinyTransformer(in_dim=2)
    monitor = InformationMonitor(
        ["encoder.layers.?"], ["dse"], stage="validation", max_samples=20, info_plane=True, num_classes=3, mi_steps=2
    )
    head = InformationMonitor(["head"], ["prediction_entropy"], every_n_steps=2)
    trainer = Trainer(callbacks=[monitor, head], **trainer_kwargs(tmp_path, logger=logger, max_epochs=2, max_steps=-1))
    trainer.fit(model, loader(data), loader(classification_data(n=48, shape=(4, 2), seed=1)))
    rows = wandb_offline.history()
    assert [s for s, _ in series(rows, "info/encoder.layers.1/dse")] == [4, 8], rows  # one per validation run
    assert [s for s, _ in series(rows, "info/head/prediction_entropy")] == [0, 2, 4, 6]
    keys = {k for row in rows for k in row}
    assert {"info/encoder.layers.0/mi_xt", "info/encoder.layers.1/mi_ty"} <= keys
    assert {"info/heatmap/_type", "info/metrics_table/_type"} <= keys  # image + table at each validation end
    assert [s for s, _ in series(rows, "info/heatmap/_type")] == [4, 8]
    assert any(k.startswith("info/plane") for k in keys), keys
    plane_values = [v for points in monitor.plane.values() for point in points for v in point[1:]]
    assert all(math.isfinite(v) for v in plane_values)
    assert [p[0] for p in monitor.plane["encoder.layers.1"]] == [4.0, 8.0]  # validation ran in inference mode
    assert monitor.capture is None and not any(m._forward_hooks for m in model.modules())


def test_checkpoint_resume_restores_state(tmp_path: Path) -> None:
    data = classification_data(n=64)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=4, save_top_k=-1)
    monitor = InformationMonitor(
        ["net.2"], ["matrix_entropy"], every_n_steps=2, info_plane=True, num_classes=3, mi_estimator="smile"
    )
    other = InformationMonitor(["net.2"], ["matrix_entropy"], every_n_steps=3)  # same layers and metrics
    assert other.state_key != monitor.state_key
    _fit(MLPClassifier(), [monitor, other, checkpoint], tmp_path, data, enable_checkpointing=True, max_steps=4)
    state = monitor.state_dict()
    assert state["last_logged_step"] == 2 and len(state["plane"]["net.2"]) == 2
    ckpt = torch.load(tmp_path / "ckpt" / "epoch=0-step=4.ckpt", weights_only=True)  # plain types only
    assert ckpt["callbacks"][monitor.state_key]["last_logged_step"] == 2
    assert ckpt["callbacks"][other.state_key]["last_logged_step"] == 3

    resumed = InformationMonitor(
        ["net.2"], ["matrix_entropy"], every_n_steps=2, info_plane=True, num_classes=3, mi_estimator="smile"
    )
    logger = CSVLogger(tmp_path, name="resume")
    trainer = Trainer(callbacks=[resumed], **trainer_kwargs(tmp_path, max_steps=8, logger=logger))
    trainer.fit(MLPClassifier(), loader(data), ckpt_path=tmp_path / "ckpt" / "epoch=0-step=4.ckpt")
    assert resumed.last_logged_step == 6
    assert [p[0] for p in resumed.plane["net.2"]] == [0.0, 2.0, 4.0, 6.0]  # trajectory continues
    saved = state["estimators"]["net_2/mi_xt"]["weights"]
    assert not torch.equal(resumed.estimators["net_2/mi_xt"].g[0].weight, saved["g.0.weight"])  # trained on
    logger.save()
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        logged = [int(r["step"]) for r in csv.DictReader(f) if r.get("info/net.2/mi_xt")]
    assert logged == [4, 6]


@pytest.mark.parametrize("estimator", ["smile", "matrix"])
def test_resumed_info_plane_equals_the_uninterrupted_run(tmp_path: Path, estimator: str) -> None:
    """Regression: the random generator of the critics' row splits and minibatches was not checkpointed, so after a
    resume the estimates differed from the uninterrupted run's."""
    data = classification_data(n=64)

    def monitor() -> InformationMonitor:
        return InformationMonitor(
            ["net.2"], ["matrix_entropy"], every_n_steps=2, info_plane=True, num_classes=3, mi_estimator=estimator
        )

    torch.manual_seed(0)
    straight = monitor()
    _fit(MLPClassifier(), [straight], tmp_path / "a", data, max_steps=8, limit_val_batches=0)
    torch.manual_seed(0)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=4, save_top_k=-1)
    _fit(MLPClassifier(), [monitor(), checkpoint], tmp_path / "b", data, max_steps=4, enable_checkpointing=True,
         limit_val_batches=0)  # fmt: skip
    resumed = monitor()
    trainer = Trainer(callbacks=[resumed], **trainer_kwargs(tmp_path / "c", max_steps=8, limit_val_batches=0))
    trainer.fit(MLPClassifier(), loader(data), ckpt_path=tmp_path / "ckpt" / "epoch=0-step=4.ckpt")
    assert [p[0] for p in resumed.plane["net.2"]] == [0.0, 2.0, 4.0, 6.0]
    assert resumed.plane == straight.plane  # (step, I(X;T), I(T;Y)) identical, before and after the resume


def test_info_plane_never_touches_model_gradients(tmp_path: Path) -> None:
    torch.manual_seed(0)
    a, b = MLPClassifier(), MLPClassifier()
    b.load_state_dict(a.state_dict())
    monitor = InformationMonitor(["net.2"], [], every_n_steps=1, info_plane=True, num_classes=3, mi_steps=3)
    _fit(a, [monitor], tmp_path, max_steps=3, limit_val_batches=0)
    torch.manual_seed(0)
    _fit(b, [], tmp_path, max_steps=3, limit_val_batches=0)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert set(monitor.latest) == {"info/net.2/mi_xt", "info/net.2/mi_ty"}


def test_gradient_accumulation_captures_every_micro_batch_of_the_step(tmp_path: Path) -> None:
    model = MLPClassifier(optimizer_factory=lambda p: torch.optim.SGD(p, lr=0.0))
    monitor = InformationMonitor(["net.2"], ["matrix_entropy", "dsmi"], every_n_steps=2)
    _fit(model, [monitor], tmp_path, max_steps=3, limit_val_batches=0, accumulate_grad_batches=2)
    assert monitor.last_logged_step == 2
    x, y = loader(classification_data(n=96)).dataset[64:96]  # optimizer step 2 = micro-batches 4 and 5 (32 rows)
    with torch.no_grad():
        hidden = model.net[:3](x)
    assert monitor.latest["info/net.2/matrix_entropy"] == pytest.approx(float(matrix_entropy(hidden)), rel=1e-5)
    assert monitor.latest["info/net.2/dsmi"] == pytest.approx(
        float(diffusion_spectral_mutual_information(hidden, y)), rel=1e-5, abs=1e-6
    )


def test_bf16_mixed_activations_reach_the_metrics(tmp_path: Path) -> None:
    register_information_metric("is_bf16", lambda z, _: torch.tensor(float(z.dtype == torch.bfloat16)))
    try:
        names = ["matrix_entropy", "matrix_nuclear_norm", "vendi", "dse", "dsmi", "prediction_entropy", "is_bf16"]
        monitor = InformationMonitor(["net.4"], names, every_n_steps=1)
        _fit(MLPClassifier(), [monitor], tmp_path, max_steps=2, limit_val_batches=0, precision="bf16-mixed")
    finally:
        del INFORMATION_METRICS["is_bf16"]
    assert monitor.latest.pop("info/net.4/is_bf16") == 1.0  # autocast outputs, computed in float32/float64
    assert len(monitor.latest) == 6 and all(math.isfinite(v) for v in monitor.latest.values())


def test_undefined_metric_is_skipped_with_a_warning(tmp_path: Path) -> None:
    model = MLPClassifier()
    with torch.no_grad():  # dead ReLU: net.3 outputs zeros for every input, and stays dead
        model.net[2].weight.zero_()
        model.net[2].bias.fill_(-1.0)
    monitor = InformationMonitor(["net.3", "net.4"], ["matrix_entropy"], every_n_steps=1)
    with pytest.warns(UserWarning, match="matrix_entropy of 'net.3' skipped: z has only all-zero rows"):
        _fit(model, [monitor], tmp_path, max_steps=3, limit_val_batches=0)
    assert set(monitor.latest) == {"info/net.4/matrix_entropy"} and monitor.last_logged_step == 2


def test_info_plane_rejects_targets_out_of_range(tmp_path: Path) -> None:
    monitor = InformationMonitor(["net.2"], [], every_n_steps=1, info_plane=True, num_classes=2)  # data: 3 classes
    with pytest.raises(ValueError, match=r"targets must hold class indices in \[0, 1\], got 2"):
        _fit(MLPClassifier(), [monitor], tmp_path, max_steps=1, limit_val_batches=0)


def test_figures_table_and_heatmap_optional(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    logged: list[dict] = []

    class Experiment:
        def log(self, payload: dict) -> None:
            logged.append(payload)

    def Logger() -> SimpleNamespace:  # a trainer whose one logger is a W&B logger with no run
        logger = WandbLogger(offline=True, save_dir=str(tmp_path))
        logger._experiment = Experiment()
        return SimpleNamespace(loggers=[logger], is_global_zero=True)

    latest = {"info/b/vendi": 2.0, "info/a/vendi": 1.0, "info/a/dse": 0.5}
    rows, names, grid = information_figures.metric_grid(latest, ["a", "b"])
    assert (rows, names) == (["a", "b"], ["dse", "vendi"]) and grid[0] == [0.5, 1.0] and math.isnan(grid[1][0])
    plane = {"a": [[0.0, 1.0, 0.5], [5.0, 1.2, 0.7]]}
    information_figures.log_information_figures(Logger(), latest, plane, ["a", "b"], step=5)  # type: ignore[arg-type]
    assert set(logged[-1]) == {"info/metrics_table", "info/heatmap", "info/plane", "trainer/global_step"}
    find_spec = information_figures.importlib.util.find_spec
    monkeypatch.setattr(
        information_figures.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else find_spec(name),
    )
    information_figures.log_information_figures(Logger(), latest, {}, ["a", "b"], step=7)  # type: ignore[arg-type]
    assert set(logged[-1]) == {"info/metrics_table", "trainer/global_step"}  # no matplotlib: no image, no plane


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"metrics must be one of .* got 'entropyy'"):
        InformationMonitor(["net.0"], ["entropyy"])
    with pytest.raises(ValueError, match="every_n_steps must be >= 1, got 0"):
        InformationMonitor(["net.0"], every_n_steps=0)
    with pytest.raises(ValueError, match="stage must be one of"):
        InformationMonitor(["net.0"], stage="test")
    with pytest.raises(ValueError, match="need the batch targets, but targets=False"):
        InformationMonitor(["net.0"], ["dsmi"], targets=False)
    with pytest.raises(ValueError, match="info_plane=True needs num_classes"):
        InformationMonitor(["net.0"], info_plane=True)
    with pytest.raises(ValueError, match="layers must be a non-empty list"):
        InformationMonitor("net.0")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="targets must be a bool or a callable"):
        InformationMonitor(["net.0"], targets="y")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name must be a non-empty str without '/'"):
        register_information_metric("a/b", lambda z, y: z.sum())
    with pytest.raises(TypeError, match="fn must be callable"):
        register_information_metric("ok", 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"no submodule of MLPClassifier matches 'net.9'"):
        _fit(MLPClassifier(), [InformationMonitor(["net.9"])], tmp_path)


def test_registry_adds_metrics(tmp_path: Path) -> None:
    register_information_metric("row_count", lambda z, y: torch.tensor(float(z.shape[0] + y.max())), needs_targets=True)
    try:
        monitor = InformationMonitor(["net.0"], ["row_count"], every_n_steps=2)
        _fit(MLPClassifier(), [monitor], tmp_path, max_steps=1, limit_val_batches=0)
        assert monitor.latest == {"info/net.0/row_count": 16.0 + 2.0}
    finally:
        del INFORMATION_METRICS["row_count"]


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_two_processes(tmp_path: Path) -> None:
    run_ddp(
        tmp_path,
        """
        import json, torch
        from lightning.pytorch import Trainer
        from lightning.pytorch.loggers import CSVLogger
        from lightning_info.callbacks import InformationMonitor
        from tests.helpers.lightning import trainer_kwargs
        from tests.helpers.models import MLPClassifier, classification_data, loader

        torch.manual_seed(0)
        monitor = InformationMonitor(["net.2"], ["matrix_entropy", "dsmi"], every_n_steps=2)
        trainer = Trainer(callbacks=[monitor], **trainer_kwargs(OUT, devices=2, strategy="ddp", max_steps=5,
                                                                logger=CSVLogger(OUT, name="ddp")))
        trainer.fit(MLPClassifier(), loader(classification_data()))
        (OUT / f"rank{trainer.global_rank}.json").write_text(json.dumps(
            {"latest": monitor.latest, "last": monitor.last_logged_step}))
        """,
    )
    import json

    rank0 = json.loads((tmp_path / "rank0.json").read_text())
    rank1 = json.loads((tmp_path / "rank1.json").read_text())
    assert rank0["last"] == 4 and set(rank0["latest"]) == {"info/net.2/matrix_entropy", "info/net.2/dsmi"}
    assert rank1 == {"latest": {}, "last": -1}  # only rank 0 computes
    (metrics,) = list(tmp_path.glob("ddp/*/metrics.csv"))
    with open(metrics) as f:
        assert [int(r["step"]) for r in csv.DictReader(f) if r.get("info/net.2/dsmi")] == [0, 2, 4]


def test_cmi_on_a_layer_that_is_not_the_logits_is_named(tmp_path: Path) -> None:
    """Regression (issue 14 item 12): "cmi" on a 16-wide hidden layer silently took 16 as the number of classes."""
    monitor = InformationMonitor(["net.2"], ["cmi"], every_n_steps=1, num_classes=3)
    with pytest.warns(UserWarning, match=r"'cmi' reads layer 'net.2' as \(N, num_classes\) logits, but it gives 16"):
        _fit(MLPClassifier(), [monitor], tmp_path, max_steps=1, limit_val_batches=0)
    right = InformationMonitor(["net.4"], ["cmi"], every_n_steps=1, num_classes=3)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*'cmi' reads layer")
        _fit(MLPClassifier(), [right], tmp_path, max_steps=1, limit_val_batches=0)
    assert 0.0 <= right.latest["info/net.4/cmi"] <= math.log(3)
