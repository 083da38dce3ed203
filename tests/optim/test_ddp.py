"""2-process CPU DDP (gloo): the perturbation passes with and without gradient all-reduce, against references."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call

from tests.helpers.lightning import run_ddp
from tests.helpers.models import MLPClassifier, classification_data
from tests.optim.reference import gam_direction

SCRIPT = """
import torch
from lightning.pytorch import Trainer, seed_everything
from torch.utils.data import Subset
from lightning_info.optim import GAM, SAM
from tests.helpers.lightning import trainer_kwargs
from tests.helpers.models import MLPClassifier, classification_data, loader

torch.set_num_threads(1)  # two ranks on two cores: no intra-op thread contention
for name, optimizer, sync in [("sam", SAM, False), ("sam", SAM, True), ("gam", GAM, False)]:
    seed_everything(0, verbose=False)
    model = MLPClassifier(in_dim=4, hidden=5, num_classes=3, optimizer_factory=lambda p: optimizer(
        p, torch.optim.SGD, lr=0.5, sync_perturbation=sync))
    initial = {k: v.detach().clone() for k, v in model.named_parameters()}
    trainer = Trainer(**trainer_kwargs(
        OUT, devices=2, strategy="ddp", max_steps=2, max_epochs=1, use_distributed_sampler=False))
    shard = Subset(classification_data(n=32, in_dim=4), range(trainer.global_rank, 32, 2))  # rank r: r, r+2, ...
    trainer.fit(model, loader(shard, batch_size=8))
    final = {k: v.detach().clone() for k, v in model.named_parameters()}
    torch.save({"initial": initial, "final": final}, OUT / f"{name}-{sync}-rank{trainer.global_rank}.pt")
"""


def _shards():
    x, y = classification_data(n=32, in_dim=4).tensors
    return [[(x[r::2][8 * t : 8 * t + 8], y[r::2][8 * t : 8 * t + 8]) for t in range(2)] for r in range(2)]


def _grad_fn(model: nn.Module, names, shapes, batch):
    def loss(flat: Tensor) -> Tensor:
        parts = torch.split(flat, [s.numel() for s in shapes])
        params = {n: t.reshape(s) for n, t, s in zip(names, parts, shapes, strict=True)}
        return nn.functional.cross_entropy(functional_call(model, params, (batch[0],)), batch[1])

    return torch.func.grad(loss)


def _reference(initial: dict[str, Tensor], optimizer: str, sync: bool) -> Tensor:
    """Two SGD(lr=0.5) steps of SAM/GAM over two ranks: DDP averages the gradients it syncs."""
    model = MLPClassifier(in_dim=4, hidden=5, num_classes=3)
    names, shapes = list(initial), [v.shape for v in initial.values()]
    theta = torch.cat([v.reshape(-1) for v in initial.values()])
    shards = _shards()
    for t in range(2):
        grads = [_grad_fn(model, names, shapes, shards[r][t]) for r in range(2)]

        def mean_grad(x: Tensor, grads=grads) -> Tensor:
            return (grads[0](x) + grads[1](x)) / 2

        if optimizer == "sam":
            local = [mean_grad(theta)] * 2 if sync else [g(theta) for g in grads]
            direction = sum(g(theta + 0.05 * lg / lg.norm()) for g, lg in zip(grads, local, strict=True)) / 2
        elif sync:
            direction = gam_direction(mean_grad, theta, rho=0.05, alpha=0.1, r=0.01)
        else:
            direction = sum(gam_direction(g, theta, rho=0.05, alpha=0.1, r=0.01) for g in grads) / 2
        theta = theta - 0.5 * direction
    return theta


@pytest.mark.slow
@pytest.mark.ddp
def test_perturbation_all_reduce_is_an_option_and_weights_stay_identical(tmp_path: Path) -> None:
    run_ddp(tmp_path, SCRIPT)
    finals = {}
    for optimizer, sync in [("sam", False), ("sam", True), ("gam", False)]:  # GAM's sync=True is plain DDP syncing
        ranks = [torch.load(tmp_path / f"{optimizer}-{sync}-rank{r}.pt") for r in range(2)]
        for key in ranks[0]["final"]:
            assert torch.equal(ranks[0]["final"][key], ranks[1]["final"][key])  # identical across ranks
        final = torch.cat([v.reshape(-1) for v in ranks[0]["final"].values()])
        expected = _reference(ranks[0]["initial"], optimizer, sync)
        torch.testing.assert_close(final, expected, atol=1e-5, rtol=0)
        finals[optimizer, sync] = final
    assert (finals["sam", False] - finals["sam", True]).abs().max() > 1e-4  # the option matters
