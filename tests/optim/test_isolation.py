"""The extra passes of a sharpness-aware step touch only their own thread: other threads' BatchNorm, ``torch.compile``.

Regressions: the extra passes' BatchNorm freeze was a class-attribute swap of ``_BatchNorm.forward``, visible to every
thread (a BatchNorm model training in another thread lost about half of its statistics updates) and invisible to a
``torch.compile``d graph (the running statistics moved twice per SAM step).
"""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from lightning_info.optim import GAM, SAM, in_auxiliary_pass


def _bn_model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))


def _closure(model, optimizer, x, y):
    def closure():
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    return closure


def test_extra_passes_leave_a_batchnorm_model_in_another_thread_alone() -> None:
    sam_model, other = _bn_model(0), _bn_model(1)
    optimizer = SAM(sam_model.parameters(), torch.optim.SGD, rho=0.05, lr=0.01)
    x, y = torch.randn(16, 3), torch.randn(16, 2)
    started, stop = threading.Event(), threading.Event()
    steps = [0]
    errors: list[BaseException] = []

    def train() -> None:
        try:
            while not stop.is_set():
                optimizer.step(_closure(sam_model, optimizer, x, y))
                steps[0] += 1
                started.set()
        except BaseException as error:  # reported by the main thread
            errors.append(error)
            started.set()

    worker = threading.Thread(target=train)
    worker.start()
    started.wait(timeout=60)
    forwards, flagged = 0, 0
    try:
        with torch.no_grad():
            while (forwards < 400 or steps[0] < 20) and worker.is_alive():  # both loops run concurrently
                other(torch.randn(8, 3))
                forwards += 1
                flagged += in_auxiliary_pass()  # what silences ``self.log`` in a pass: never set in this thread
    finally:
        stop.set()
        worker.join(timeout=60)
    assert not errors, errors
    assert int(other[1].num_batches_tracked) == forwards  # every forward in train mode, none lost
    assert flagged == 0
    assert int(sam_model[1].num_batches_tracked) == steps[0]  # once per SAM step, from the clean pass


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("optimizer_class", [SAM, GAM], ids=["sam", "gam"])
def test_compiled_model_updates_batchnorm_statistics_once_per_step(optimizer_class) -> None:
    torch._dynamo.reset()
    model = _bn_model()
    compiled = torch.compile(model, backend="aot_eager")
    optimizer = optimizer_class(model.parameters(), torch.optim.SGD, lr=0.1)
    bn = model[1]
    g = torch.Generator().manual_seed(3)
    for step in range(3):
        x, y = torch.randn(16, 3, generator=g), torch.randn(16, 2, generator=g)
        with torch.no_grad():  # the clean pass's batch statistics, at the step's weights
            h = model[0](x)
            mean = (1 - bn.momentum) * bn.running_mean + bn.momentum * h.mean(0)
            var = (1 - bn.momentum) * bn.running_var + bn.momentum * h.var(0, unbiased=True)
        optimizer.step(_closure(compiled, optimizer, x, y))
        assert int(bn.num_batches_tracked) == step + 1
        torch.testing.assert_close(bn.running_mean, mean, atol=1e-6, rtol=0)
        torch.testing.assert_close(bn.running_var, var, atol=1e-6, rtol=0)
