"""Every Metric class of ``lightning_info.metrics`` follows the torchmetrics conventions the project promises."""

import pytest
from torchmetrics import Metric

import lightning_info.metrics as metrics

METRIC_CLASSES = [
    cls for name in metrics.__all__ if isinstance(cls := getattr(metrics, name), type) and issubclass(cls, Metric)
]


@pytest.mark.parametrize("cls", METRIC_CLASSES, ids=lambda cls: cls.__name__)
def test_flags_declared_and_docstring_complete(cls: type[Metric]) -> None:
    for flag in ("is_differentiable", "higher_is_better", "full_state_update"):
        assert flag in vars(cls), f"{cls.__name__} does not declare {flag}"
    doc = cls.__doc__ or ""
    assert ":math:" in doc or ".. math::" in doc, f"{cls.__name__}: no formula"
    for section in ("Args:", "Raises:", "Example:", ">>> "):
        assert section in doc, f"{cls.__name__}: no {section!r}"


def test_every_metric_is_listed() -> None:
    assert len(METRIC_CLASSES) >= 9  # Shannon, attention, matrix, MNN, Vendi, DSE, DSMI, CS divergence, CS-QMI
