"""SAM, ASAM, every-k SAM, GAM and the SAM variants on DDP, FSDP2 and FSDP1 (2 CPU processes) against the one-process
global batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.distributed.engines import CASES, ENGINES, reference
from tests.helpers.lightning import run_ddp

SCRIPT = """
import torch
import torch.distributed as dist
from torch import nn
from lightning_info.optim import SAM
from tests.distributed.engines import CASES, ENGINES, IN_DIM, fit

torch.set_num_threads(1)
rank = None
for engine, cases in [(engine, list(CASES)) for engine in ENGINES] + [("fsdp1_flat", ["sam", "gam"])]:
    for case in cases:
        weights = fit(engine, CASES[case], OUT)
        rank = dist.get_rank()
        torch.save(weights, OUT / f"{engine}-{case}-rank{rank}.pt")

# refusals, outside Trainer.fit (an exception in fit makes Lightning's launcher kill the other rank)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FullyShardedDataParallel, fully_shard

x, y = torch.randn(8, IN_DIM), torch.randint(0, 3, (8,))
errors = {}
for engine in ("fsdp2", "fsdp1"):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(IN_DIM, 6), nn.ReLU(), nn.Linear(6, 3))
    if engine == "fsdp2":
        fully_shard(model, mesh=init_device_mesh("cpu", (2,)))
    else:
        model = FullyShardedDataParallel(model, device_id=torch.device("cpu"), use_orig_params=True)
    optimizer = SAM(model.parameters(), torch.optim.SGD, lr=0.1, sync_perturbation=False)
    before = [p.detach().clone() for p in model.parameters()]

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    try:
        optimizer.step(closure)
        errors[engine] = "no error"
    except (ValueError, RuntimeError) as error:
        errors[engine] = f"{type(error).__name__}: {error}"
    unchanged = all(torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))
    errors[engine + "_unchanged"] = str(unchanged)
# FSDP1 around part of the model: the parameters outside it would be counted once per rank
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(IN_DIM, 6), nn.ReLU(), nn.Linear(6, 3))
model[0] = FullyShardedDataParallel(model[0], device_id=torch.device("cpu"), use_orig_params=True)
optimizer = SAM(model.parameters(), torch.optim.SGD, lr=0.1, sync_perturbation=True)
before = [p.detach().clone() for p in model.parameters()]
try:
    optimizer.step(closure)
    errors["fsdp1_partial"] = "no error"
except RuntimeError as error:
    errors["fsdp1_partial"] = f"{type(error).__name__}: {error}"
errors["fsdp1_partial_unchanged"] = str(all(torch.equal(a, b.detach()) for a, b in zip(before, model.parameters())))
import types

from lightning_info.callbacks import FisherMask

try:
    FisherMask(keep_ratio=0.5).on_train_start(types.SimpleNamespace(strategy=None), model)  # not DeepSpeed
    errors["fisher_fsdp1"] = "no error"
except RuntimeError as error:
    errors["fisher_fsdp1"] = str(error)
torch.save(errors, OUT / f"errors-rank{rank}.pt")
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One launch of 2 processes that runs every engine and case (the module took 110-150 s on 2 busy cores)."""
    root = tmp_path_factory.mktemp("distributed")
    run_ddp(root, SCRIPT, timeout=600)
    return root


@pytest.mark.slow
@pytest.mark.ddp
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", list(CASES))
def test_equals_the_single_process_global_batch(runs: Path, engine: str, case: str) -> None:
    check_against_reference(runs, engine, case)


@pytest.mark.slow
@pytest.mark.ddp
@pytest.mark.parametrize("case", ["sam", "gam"])
def test_fsdp1_flat_parameters_equal_the_single_process_global_batch(runs: Path, case: str) -> None:
    """FSDP1 with ``use_orig_params=False``: the optimizer steps the padded flat-parameter shards."""
    check_against_reference(runs, "fsdp1_flat", case)


def check_against_reference(runs: Path, engine: str, case: str) -> None:
    expected = reference(CASES[case])
    ranks = [torch.load(runs / f"{engine}-{case}-rank{r}.pt") for r in range(2)]
    assert set(ranks[0]) == set(expected)
    for key, value in expected.items():
        assert torch.equal(ranks[0][key], ranks[1][key]), key  # ranks identical
        torch.testing.assert_close(ranks[0][key], value, atol=1e-5, rtol=0, msg=lambda m, key=key: f"{key}: {m}")
    if case != "sgd":  # the sharpness-aware step is not the plain one
        plain = reference(CASES["sgd"])
        assert max((expected[k] - plain[k]).abs().max().item() for k in plain) > 1e-4


@pytest.mark.slow
@pytest.mark.ddp
def test_refusals_name_the_engine_and_leave_the_weights(runs: Path) -> None:
    for rank in range(2):
        errors = torch.load(runs / f"errors-rank{rank}.pt")
        assert errors["fsdp2"].startswith("ValueError: SAM(sync_perturbation=False) cannot run with sharded"), errors
        assert "Set sync_perturbation=True" in errors["fsdp2"]
        assert errors["fsdp1"].startswith("ValueError: SAM(sync_perturbation=False) cannot run under FSDP1"), errors
        assert "Set sync_perturbation=True" in errors["fsdp1"]
        assert errors["fsdp1_partial"].startswith("RuntimeError: SAM: 2 of its 4 parameters are outside every FSDP1")
        assert errors["fsdp2_unchanged"] == errors["fsdp1_unchanged"] == errors["fsdp1_partial_unchanged"] == "True"
        assert errors["fisher_fsdp1"].startswith("FisherMask does not support FSDP1"), errors["fisher_fsdp1"]
