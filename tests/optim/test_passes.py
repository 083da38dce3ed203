"""The auxiliary passes of a sharpness-aware step leave BatchNorm's running statistics alone and nothing else."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lightning_info.optim._passes import ClosurePasses


class ScaledBatchNorm(nn.BatchNorm1d):
    """A subclass with its own ``forward`` (as ``SyncBatchNorm`` has): the copy-and-restore path."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return 2.0 * super().forward(input)


@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.BatchNorm1d(3),
        lambda: nn.BatchNorm1d(3, momentum=None),  # cumulative average: num_batches_tracked drives the update
        lambda: nn.BatchNorm2d(3, affine=False),
        lambda: ScaledBatchNorm(3),
        lambda: nn.SyncBatchNorm(3),  # its forward updates the buffers itself (not through _BatchNorm.forward)
    ],
    ids=["bn1d", "bn1d-cumulative", "bn2d-no-affine", "subclass-forward", "syncbatchnorm"],
)
def test_auxiliary_pass_output_and_gradient_equal_a_training_call_and_statistics_stay(make) -> None:
    torch.manual_seed(0)
    bn = make()
    with torch.no_grad():
        bn(torch.randn(8, 3, 4, 4) if isinstance(bn, nn.BatchNorm2d) else torch.randn(8, 3) + 1.0)  # non-trivial stats
    x = torch.randn(*((6, 3, 4, 4) if isinstance(bn, nn.BatchNorm2d) else (6, 3)), dtype=torch.float64) * 3 + 0.5
    bn = bn.double()
    reference = copy.deepcopy(bn)
    x_ref = x.clone().requires_grad_()
    expected = reference(x_ref)
    expected.pow(3).sum().backward()
    before = {name: buffer.clone() for name, buffer in bn.named_buffers()}
    x_aux = x.clone().requires_grad_()
    out: list[torch.Tensor] = []

    def closure() -> torch.Tensor:
        y = bn(x_aux)
        y.pow(3).sum().backward()
        out.append(y.detach())
        return y.sum()

    with ClosurePasses(closure, reuse_rng=False, defer_clipping=False) as passes:
        passes.auxiliary()
    assert torch.equal(out[0], expected.detach())
    assert torch.equal(x_aux.grad, x_ref.grad)
    for name, buffer in bn.named_buffers():
        assert torch.equal(buffer, before[name]), name
    assert not torch.equal(reference.running_mean, before["running_mean"])  # a training call does update them
    # outside the pass BatchNorm is itself again (the forward wrappers stay installed, but only act inside passes)
    assert torch.equal(bn(x), expected.detach())
    for (name, buffer), updated in zip(bn.named_buffers(), reference.buffers(), strict=True):
        assert torch.equal(buffer, updated), name


def test_clean_pass_updates_the_running_statistics_as_usual() -> None:
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(3)
    reference = copy.deepcopy(bn)
    x = torch.randn(5, 3)
    reference(x)
    with ClosurePasses(lambda: bn(x).sum(), reuse_rng=False, defer_clipping=False) as passes:
        passes.clean()
    for (name, buffer), expected in zip(bn.named_buffers(), reference.buffers(), strict=True):
        assert torch.equal(buffer, expected), name
