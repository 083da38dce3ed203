"""MCMI, CS-IB, entropy-guided attention, a plain loss term and the monitors on DDP, FSDP2 and FSDP1 (2 CPU processes).

One launch trains every part under every engine (``tests.distributed.engines.PARTS``) and saves each rank's final
weights and logged values. A part is either *right* (the weights and the global values equal the one-process run on
the global batch, atol 1e-5) or *rank-local* as documented (each rank's value is that of its own batch: equal to
DDP's on the same rank), or refused with a clear error.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests.distributed.engines import ENGINES, PARTS, fit_part
from tests.helpers.lightning import run_ddp

SCRIPT = """
import torch
import torch.distributed as dist
from tests.distributed.engines import ENGINES, PARTS, ShardedTransformer, fit_part

torch.set_num_threads(1)
for engine in ENGINES:
    for part in PARTS:
        if engine == "fsdp1" and part == "ega":
            continue  # refused at fit start (below): an exception in fit makes Lightning kill the other rank
        weights, logged = fit_part(engine, part, OUT)
        torch.save({"weights": weights, "logged": logged}, OUT / f"{engine}-{part}-rank{dist.get_rank()}.pt")

from torch.distributed.fsdp import FullyShardedDataParallel
from lightning_info.callbacks import EntropyGuidedAttentionCallback

model = ShardedTransformer("none")
callback = EntropyGuidedAttentionCallback(weight=0.1)
callback.setup(None, model, "fit")
model.encoder = FullyShardedDataParallel(model.encoder, device_id=torch.device("cpu"), use_orig_params=True)
try:
    callback.on_fit_start(None, model)
    error = "no error"
except RuntimeError as raised:
    error = str(raised)
torch.save(error, OUT / f"ega-fsdp1-error-rank{dist.get_rank()}.pt")
"""

#: parts whose training equals the one-process global batch on these engines (the others are rank-local or refused)
RIGHT = {
    "loss_term": ENGINES, "mcmi_ema": ENGINES, "ega": ("ddp", "fsdp2"),
    "info_monitor": ENGINES, "attn_monitor": ENGINES,  # monitors do not change the training
}  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One launch of 2 processes that runs every engine and part."""
    root = tmp_path_factory.mktemp("distributed_parts")
    run_ddp(root, SCRIPT, timeout=900)
    return root


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict, dict]]:
    """Every part on one process with the global batch (16 samples a step)."""
    root = tmp_path_factory.mktemp("reference")
    return {part: fit_part("none", part, root) for part in PARTS}


def load(runs: Path, engine: str, part: str) -> list[dict]:
    return [torch.load(runs / f"{engine}-{part}-rank{rank}.pt") for rank in range(2)]


def assert_weights(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert set(got) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, atol=1e-5, rtol=0, msg=f"{key}: weights differ")


def assert_series(got: dict[int, float], expected: dict[int, float], what: str) -> None:
    assert set(got) == set(expected) == set(range(4)), what
    for step, value in expected.items():
        assert math.isclose(got[step], value, abs_tol=1e-5), f"{what} at step {step}: {got[step]} != {value}"


@pytest.mark.slow
@pytest.mark.ddp
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("part", list(PARTS))
def test_weights_and_values(runs: Path, references: dict, engine: str, part: str) -> None:
    if engine == "fsdp1" and part == "ega":
        pytest.skip("refused on FSDP1 (test_entropy_guided_attention_refuses_fsdp1)")
    ranks = load(runs, engine, part)
    for key, value in ranks[0]["weights"].items():
        assert torch.equal(value, ranks[1]["weights"][key]), key  # ranks identical
    weights, logged = references[part]
    if engine in RIGHT.get(part, ()):
        assert_weights(ranks[0]["weights"], weights)
    else:  # rank-local (CS-IB's kernels): DDP's training, not the global batch's
        assert_weights(ranks[0]["weights"], load(runs, "ddp", part)[0]["weights"])
        assert max((ranks[0]["weights"][k] - weights[k]).abs().max().item() for k in weights) > 1e-4
    per_rank = [r["logged"] for r in ranks]
    ddp = [r["logged"] for r in load(runs, "ddp", part)]

    def mean(key: str) -> dict[int, float]:
        return {step: (per_rank[0][key][step] + per_rank[1][key][step]) / 2 for step in per_rank[0][key]}

    if part == "loss_term":
        if engine == "fsdp1":  # rank-local: a term of FSDP1's parameters sees this rank's flat shard
            total = {s: per_rank[0]["l2/penalty"][s] + per_rank[1]["l2/penalty"][s] for s in range(4)}
            assert_series(total, logged["l2/penalty"], "sum over ranks of l2/penalty")
        else:  # the penalty of the full weights on every rank
            for rank in range(2):
                assert_series(per_rank[rank]["l2/penalty"], logged["l2/penalty"], f"l2/penalty rank {rank}")
    elif part == "mcmi_ema":  # global centroids (all-reduced): each rank's CMI is the mean over its own samples
        assert_series(mean("mcmi/cmi"), logged["mcmi/cmi"], "mean over ranks of mcmi/cmi")
    elif part == "ega":
        assert_series(mean("attn_entropy/reg"), logged["attn_entropy/reg"], "mean over ranks of attn_entropy/reg")
        for key in [k for k in logged if k.startswith("attn_entropy/temperature/")]:
            for rank in range(2):
                assert_series(per_rank[rank][key], logged[key], f"{key} rank {rank}")
    elif part == "csib":  # rank-local: the kernels of each rank's own batch
        for rank in range(2):
            assert_series(per_rank[rank]["csib/compression"], ddp[rank]["csib/compression"], f"rank {rank}")
    elif part in ("info_monitor", "attn_monitor"):  # rank-local: each rank's batch (InformationMonitor: rank 0 only)
        keys = [k for k in logged if k.startswith(("info/", "attn_entropy/"))]
        assert keys
        assert not any(k.startswith("info/") for k in per_rank[1])
        for rank in range(2):
            for key in [k for k in keys if k in ddp[rank]]:
                assert_series(per_rank[rank][key], ddp[rank][key], f"{key} rank {rank}")
        assert any(
            abs(per_rank[0][k][s] - logged[k][s]) > 1e-4 for k in keys for s in range(4)
        )  # not the global batch's values


@pytest.mark.slow
@pytest.mark.ddp
def test_entropy_guided_attention_refuses_fsdp1(runs: Path) -> None:
    for rank in range(2):
        error = torch.load(runs / f"ega-fsdp1-error-rank{rank}.pt")
        assert error.startswith("EntropyGuidedAttentionCallback does not support FSDP1"), error
        assert "ModelParallelStrategy" in error
