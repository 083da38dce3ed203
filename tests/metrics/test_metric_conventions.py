"""Every Metric class of ``lightning_info.metrics`` follows the torchmetrics conventions the project promises."""

import pytest
import torch
from torchmetrics import Metric

import lightning_info.metrics as metrics
from lightning_info.metrics._samples import SampleMetric

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


SAMPLE_METRICS = [cls for cls in METRIC_CLASSES if issubclass(cls, SampleMetric)]


def _sample_batch(cls: type[SampleMetric], rows: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    """One batch of ``rows`` valid update arguments for each SampleMetric (a KeyError flags a new subclass)."""
    z = torch.randn(rows, 3, generator=g)
    return {
        "CauchySchwarzDivergence": (z, torch.randn(rows, 3, generator=g)),
        "CauchySchwarzQMI": (z, torch.randn(rows, 2, generator=g)),
        "DiffusionSpectralEntropy": (z,),
        "DiffusionSpectralMutualInformation": (z, torch.randint(0, 3, (rows,), generator=g)),
        "MatrixEntropy": (z,),
        "MatrixNuclearNorm": (z,),
        "VendiScore": (z,),
    }[cls.__name__]


def test_every_sample_metric_has_inputs() -> None:
    g = torch.Generator().manual_seed(0)
    assert len(SAMPLE_METRICS) >= 7
    for cls in SAMPLE_METRICS:
        _sample_batch(cls, 2, g)


@pytest.mark.parametrize("cls", SAMPLE_METRICS, ids=lambda cls: cls.__name__)
def test_forward_keeps_max_samples(cls: type[SampleMetric]) -> None:
    # issue 14.9: torchmetrics' forward merged the batch state without the cap (240 rows kept with a cap of 100)
    g = torch.Generator().manual_seed(0)
    batches = [_sample_batch(cls, 30, g) for _ in range(8)]
    by_forward, by_update = cls(max_samples=100), cls(max_samples=100)
    with pytest.warns(UserWarning, match="keeps the first max_samples=100 rows"):
        for batch in batches:
            by_forward(*batch)
            by_update.update(*batch)
    for state in by_forward._defaults:
        kept = getattr(by_forward, state)
        assert sum(chunk.shape[0] for chunk in kept) == 100, state
        torch.testing.assert_close(torch.cat(kept), torch.cat(getattr(by_update, state)), rtol=0, atol=0)
    torch.testing.assert_close(by_forward.compute(), by_update.compute(), rtol=0, atol=0)


@pytest.mark.parametrize("cls", SAMPLE_METRICS, ids=lambda cls: cls.__name__)
def test_merge_state_keeps_max_samples(cls: type[SampleMetric]) -> None:
    g = torch.Generator().manual_seed(1)
    first, second = cls(max_samples=50), cls(max_samples=50)
    first.update(*_sample_batch(cls, 40, g))
    second.update(*_sample_batch(cls, 40, g))
    with pytest.warns(UserWarning, match="keeps the first max_samples=50 rows"):
        first.merge_state(second)
    for state in first._defaults:
        assert sum(chunk.shape[0] for chunk in getattr(first, state)) == 50, state


def _metric_kwargs(cls: type[Metric]) -> dict[str, object]:
    return {"num_classes": 3} if cls.__name__ == "ConditionalMutualInformation" else {}


@pytest.mark.parametrize("cls", METRIC_CLASSES, ids=lambda cls: cls.__name__)
def test_scriptable(cls: type[Metric]) -> None:
    # issue 20: ShannonEntropy, AttentionEntropy and ConditionalMutualInformation had string state annotations
    torch.jit.script(cls(**_metric_kwargs(cls)))
