"""Every Metric keeps working when its states were reset inside inference mode (``trainer.validate``/``test``) and it
is then updated outside it (a later ``trainer.fit`` or a plain loop): torch refuses in-place updates of inference
tensors there, so a Metric must not update its states in place."""

from __future__ import annotations

import pytest
import torch

from lightning_info.metrics import (
    AttentionEntropy,
    CauchySchwarzDivergence,
    ConditionalMutualInformation,
    MatrixEntropy,
    ShannonEntropy,
    VendiScore,
)


def _probs(n: int, c: int) -> torch.Tensor:
    return torch.softmax(torch.randn(n, c, generator=torch.Generator().manual_seed(n)), dim=1)


CASES = [
    (lambda: ConditionalMutualInformation(3), lambda: (_probs(6, 3), torch.tensor([0, 1, 2, 0, 1, 2]))),
    (ShannonEntropy, lambda: (_probs(5, 4),)),
    (AttentionEntropy, lambda: (_probs(8, 4).reshape(1, 2, 4, 4),)),
    (MatrixEntropy, lambda: (torch.randn(6, 3),)),
    (VendiScore, lambda: (torch.randn(6, 3),)),
    (CauchySchwarzDivergence, lambda: (torch.randn(6, 2), torch.randn(6, 2))),
]


@pytest.mark.parametrize(("make", "inputs"), CASES, ids=lambda v: getattr(v, "__name__", ""))
def test_update_outside_inference_mode_after_a_reset_inside_it(make, inputs) -> None:
    metric = make()
    with torch.inference_mode():
        metric.update(*inputs())
        metric.reset()
    metric.update(*inputs())
    metric.update(*inputs())
    assert bool(torch.isfinite(metric.compute()).all())
