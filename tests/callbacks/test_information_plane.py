"""InformationMonitor's information plane (issue 17) and token-sequence layouts (issues 14 item 10, 16)."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor, nn

from lightning_info.callbacks import InformationMonitor
from lightning_info.functional.matrix_information import matrix_mutual_information
from lightning_info.metrics.functional import vendi_score
from tests.helpers.lightning import trainer_kwargs
from tests.helpers.models import MLPClassifier, _Base, classification_data, loader

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _frozen() -> MLPClassifier:
    torch.manual_seed(0)
    return MLPClassifier(optimizer_factory=lambda p: torch.optim.SGD(p, lr=0.0))


def test_frozen_model_on_the_same_batch_keeps_the_plane_point_fixed(tmp_path: Path) -> None:
    """Regression (issue 17): with the SMILE critic as default the point drifted 46-62% over 12 logging steps."""
    data = classification_data(n=16)  # one batch of 16 rows: every step sees the same batch
    monitor = InformationMonitor(["net.2", "net.4"], [], every_n_steps=2, info_plane=True, num_classes=3)
    trainer = Trainer(callbacks=[monitor], **trainer_kwargs(tmp_path, max_steps=24, max_epochs=-1, limit_val_batches=0))
    trainer.fit(_frozen(), loader(data))
    for layer in ("net.2", "net.4"):
        points = monitor.plane[layer]
        assert [p[0] for p in points] == [float(s) for s in range(0, 24, 2)]  # 12 logging steps
        assert all(p[1:] == points[0][1:] for p in points), points  # exactly the same (I(X;T), I(T;Y))
        assert points[0][1] > 0.0 and points[0][2] > 0.0
    x, y = data.tensors
    with torch.no_grad():
        hidden = trainer.lightning_module.net[:3](x)
    assert monitor.plane["net.2"][0][1] == pytest.approx(float(matrix_mutual_information(x, hidden)), rel=1e-9)
    assert monitor.plane["net.2"][0][2] == pytest.approx(float(matrix_mutual_information(hidden, y)), rel=1e-9)


def test_plane_is_bounded_by_thinning_and_resumes_exactly(tmp_path: Path) -> None:
    data = classification_data(n=64)

    def monitor() -> InformationMonitor:
        return InformationMonitor(["net.2"], [], every_n_steps=1, info_plane=True, num_classes=3, max_plane_points=4)

    straight = monitor()
    trainer = Trainer(callbacks=[straight], **trainer_kwargs(tmp_path / "a", max_steps=11, limit_val_batches=0))
    trainer.fit(_frozen(), loader(data))
    # 11 logging steps, at most 4 points: kept every 1st, then every 2nd, then every 4th logging step
    assert [p[0] for p in straight.plane["net.2"]] == [0.0, 4.0, 8.0]
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=5, save_top_k=-1)
    first = monitor()
    kwargs = trainer_kwargs(tmp_path / "b", max_steps=5, limit_val_batches=0, enable_checkpointing=True)
    Trainer(callbacks=[first, checkpoint], **kwargs).fit(_frozen(), loader(data))
    assert [p[0] for p in first.plane["net.2"]] == [0.0, 2.0, 4.0]
    resumed = monitor()
    trainer = Trainer(callbacks=[resumed], **trainer_kwargs(tmp_path / "c", max_steps=11, limit_val_batches=0))
    trainer.fit(_frozen(), loader(data), ckpt_path=next((tmp_path / "ckpt").glob("*step=5.ckpt")))
    assert resumed.plane == straight.plane


@pytest.mark.parametrize("name", ["info_plane", "log_figures", "batch_first"])
def test_flags_must_be_bools(name: str) -> None:
    """Regression (issue 14 item 12): ``info_plane="no"`` was accepted as True."""
    with pytest.raises(TypeError, match=f"{name} must be a bool, got str"):
        InformationMonitor(["net.2"], ["vendi"], num_classes=3, **{name: "no"})


def test_bad_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="token_reduction must be one of"):
        InformationMonitor(["net.2"], ["vendi"], token_reduction="max")
    with pytest.raises(ValueError, match="max_plane_points must be >= 2"):
        InformationMonitor(["net.2"], ["vendi"], max_plane_points=1)
    with pytest.raises(ValueError, match="mi_estimator must be one of"):
        InformationMonitor(["net.2"], ["vendi"], mi_estimator="ksg")
    with pytest.raises(TypeError, match="padding_mask"):
        InformationMonitor(["net.2"], ["vendi"], padding_mask="attention_mask")  # type: ignore[arg-type]


class SequenceFirst(_Base):
    """``(B, T, in)`` batches; the encoder runs sequence-first (``batch_first=False``): its output is ``(T, B, d)``."""

    def __init__(self) -> None:
        super().__init__(optimizer_factory=lambda p: torch.optim.SGD(p, lr=0.0))
        self.embed = nn.Linear(2, 8)
        layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=False)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(self.embed(x).transpose(0, 1)).mean(dim=0))

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return nn.functional.cross_entropy(output, target)


def _sequence_fit(tmp_path: Path, monitor: InformationMonitor, model: _Base) -> tuple[Tensor, Tensor]:
    data = classification_data(n=16, in_dim=24, shape=(12, 2))  # 16 samples of 12 tokens: T != B
    trainer = Trainer(callbacks=[monitor], **trainer_kwargs(tmp_path, max_steps=1, limit_val_batches=0))
    trainer.fit(model, loader(data))
    return data.tensors


def test_sequence_first_layer_gives_one_row_per_sample(tmp_path: Path) -> None:
    """Regression (issue 14 item 10): the T positions of a ``(T, B, d)`` output were taken as the samples."""
    torch.manual_seed(0)
    model = SequenceFirst()
    monitor = InformationMonitor(["encoder"], ["vendi"], every_n_steps=1, batch_first=False, token_reduction="mean")
    x, _ = _sequence_fit(tmp_path, monitor, model)
    with torch.no_grad():
        pooled = model.encoder(model.embed(x).transpose(0, 1)).mean(dim=0)  # (B, d): one row per sample
    assert monitor.latest["info/encoder/vendi"] == pytest.approx(float(vendi_score(pooled)), rel=1e-5)


def test_sequence_first_layer_read_batch_first_raises_a_clear_error(tmp_path: Path) -> None:
    torch.manual_seed(0)
    monitor = InformationMonitor(["encoder"], ["vendi"], every_n_steps=1)
    with pytest.raises(ValueError, match=r"batch size 16 in dim 1, not dim 0: pass batch_first=False"):
        _sequence_fit(tmp_path, monitor, SequenceFirst())
    assert monitor.capture is None


class ModelOutput(OrderedDict):  # what a Hugging Face model returns, without importing transformers
    @property
    def last_hidden_state(self) -> Tensor:
        return self["last_hidden_state"]


class HFLike(_Base):
    """An encoder returning a ``ModelOutput``-like mapping whose first value is not the hidden states."""

    def __init__(self) -> None:
        super().__init__(optimizer_factory=lambda p: torch.optim.SGD(p, lr=0.0))
        self.encoder = nn.Linear(2, 6)
        self.head = nn.Linear(6, 3)
        self.encoder.register_forward_hook(
            lambda m, args, out: ModelOutput(attentions=torch.zeros(1), last_hidden_state=out)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x).last_hidden_state[:, 0])

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return nn.functional.cross_entropy(output, target)


@pytest.mark.parametrize("reduction", ["mean", "first", "flatten"])
def test_model_output_hidden_states_and_padding_mask(tmp_path: Path, reduction: str) -> None:
    torch.manual_seed(0)
    model = HFLike()
    lengths = 1 + torch.arange(16) % 12  # sample i has lengths[i] real tokens, the rest is padding

    def mask(batch: tuple[Tensor, Tensor]) -> Tensor:
        return (torch.arange(12)[None, :] < lengths[: batch[0].shape[0], None]).long()

    monitor = InformationMonitor(["encoder"], ["vendi"], every_n_steps=1, token_reduction=reduction, padding_mask=mask)
    x, _ = _sequence_fit(tmp_path, monitor, model)
    with torch.no_grad():
        h = model.encoder(x)["last_hidden_state"]  # (B, T, d)
    real = (torch.arange(12)[None, :] < lengths[:, None]).float()[..., None]
    expected = {
        "mean": (h * real).sum(1) / real.sum(1),
        "first": h[:, 0],
        "flatten": (h * real).reshape(16, -1),
    }[reduction]
    assert monitor.latest["info/encoder/vendi"] == pytest.approx(float(vendi_score(expected)), rel=1e-5)


def test_padding_mask_of_the_wrong_shape_is_named(tmp_path: Path) -> None:
    monitor = InformationMonitor(
        ["encoder"], ["vendi"], every_n_steps=1, token_reduction="mean", padding_mask=lambda b: torch.ones(16, 5)
    )
    with pytest.raises(ValueError, match=r"padding_mask must have the \(B, T\) shape \(16, 12\)"):
        _sequence_fit(tmp_path, monitor, HFLike())
