"""Our metric test helper: the checks torchmetrics makes of its own Metrics, for a Metric + functional + reference.

A :class:`MetricCase` names a Metric class and its arguments, a function that makes the ``i``-th batch of update
arguments, the functional twin (the value of the metric on every batch concatenated) and an independent float64
reference (numpy, written from the definition). :func:`check_metric` runs every single-process check;
:func:`ddp_script` is the code of one 2-rank spawned run that checks a list of cases in both ``dist_sync_on_step``
modes (run it with :func:`tests.helpers.lightning.run_ddp`, which fails on a timeout instead of hanging).
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

Batch = tuple[Any, ...]


@dataclass
class MetricCase:
    metric: type[Metric]
    kwargs: dict[str, Any]
    batch: Callable[[int], Batch]  # i -> the i-th batch's update arguments (float64 tensors where floating)
    functional: Callable[..., Tensor]  # value on the concatenated batches
    reference: Callable[..., float] | None = None  # independent float64 value on the concatenated batches
    num_batches: int = 3
    atol: float = 1e-9
    half_atol: float = 5e-2  # float16 inputs against the float64 value
    update_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.metric.__name__


def concatenated(case: MetricCase, batches: list[Batch]) -> Batch:
    return tuple(torch.cat([b[i] for b in batches]) for i in range(len(batches[0])))


def _value(t: Tensor) -> Tensor:
    return t.detach().double().cpu()


def check_class_vs_functional(case: MetricCase) -> None:
    batches = [case.batch(i) for i in range(case.num_batches)]
    metric = case.metric(**case.kwargs)
    for b in batches:
        metric.update(*b, **case.update_kwargs)
    got, joined = _value(metric.compute()), concatenated(case, batches)
    torch.testing.assert_close(got, _value(case.functional(*joined)), atol=case.atol, rtol=0)
    if case.reference is not None:
        expected = torch.as_tensor(case.reference(*[t.numpy() for t in joined]), dtype=torch.float64)
        torch.testing.assert_close(got, expected.reshape(got.shape), atol=1e-6, rtol=1e-6)


def check_forward_vs_update(case: MetricCase) -> None:
    """``forward`` returns the batch's own value and accumulates exactly what ``update`` does."""
    batches = [case.batch(i) for i in range(case.num_batches)]
    by_forward, by_update = case.metric(**case.kwargs), case.metric(**case.kwargs)
    for b in batches:
        step_value = by_forward(*b, **case.update_kwargs)
        by_update.update(*b, **case.update_kwargs)
        torch.testing.assert_close(_value(step_value), _value(case.functional(*b)), atol=case.atol, rtol=0)
    torch.testing.assert_close(_value(by_forward.compute()), _value(by_update.compute()), atol=0, rtol=0)


def check_half_precision(case: MetricCase) -> None:
    """float16 inputs on the CPU: a finite value close to the float64 one."""
    batches = [case.batch(i) for i in range(case.num_batches)]
    full, half = case.metric(**case.kwargs), case.metric(**case.kwargs)
    for b in batches:
        full.update(*b, **case.update_kwargs)
        half.update(*[t.half() if t.is_floating_point() else t for t in b], **case.update_kwargs)
    value = _value(half.compute())
    assert bool(torch.isfinite(value).all()), value
    torch.testing.assert_close(value, _value(full.compute()), atol=case.half_atol, rtol=case.half_atol)


def check_pickle_clone_and_script(case: MetricCase) -> None:
    """A pickled, a ``clone()``d and a deep-copied metric continue exactly; the metric can be ``torch.jit.script``ed."""
    batches = [case.batch(i) for i in range(case.num_batches)]
    metric = case.metric(**case.kwargs)
    metric.update(*batches[0], **case.update_kwargs)
    copies = [pickle.loads(pickle.dumps(metric)), metric.clone(), copy.deepcopy(metric)]
    for other in [metric, *copies]:
        for b in batches[1:]:
            other.update(*b, **case.update_kwargs)
    expected = _value(metric.compute())
    for other in copies:
        torch.testing.assert_close(_value(other.compute()), expected, atol=0, rtol=0)
    torch.jit.script(case.metric(**case.kwargs))


def check_metric(case: MetricCase) -> None:
    check_class_vs_functional(case)
    check_forward_vs_update(case)
    check_half_precision(case)
    check_pickle_clone_and_script(case)


def ddp_script(cases_module: str, cases_function: str) -> str:
    """Code of a 2-rank gloo run (``torch.multiprocessing`` spawn) checking every case in both sync modes.

    Rank ``r`` updates with the batches ``r, r + 2, ...``; the synced ``compute()`` must equal the functional value on
    every batch (in rank order), and with ``dist_sync_on_step=True`` ``forward`` must return the value on the batch
    of both ranks. Each rank writes ``ok<rank>`` when done.
    """
    return f"""
import os, torch, torch.distributed as dist, torch.multiprocessing as mp
from {cases_module} import {cases_function} as make_cases
from tests.helpers.metric_tester import ddp_check

def run(rank):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(OUT_PORT))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    for case in make_cases():
        ddp_check(case, rank)
    (OUT / f"ok{{rank}}").write_text("ok")
    dist.destroy_process_group()

if __name__ == "__main__":
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        OUT_PORT = s.getsockname()[1]
    os.environ["OUT_PORT"] = str(OUT_PORT)
    mp.spawn(run, nprocs=2)
else:
    OUT_PORT = int(os.environ["OUT_PORT"])
"""


def ddp_check(case: MetricCase, rank: int) -> None:
    """One rank of the 2-rank check of ``case`` (see :func:`ddp_script`)."""
    world = 2
    batches = [case.batch(i) for i in range(2 * case.num_batches)]
    mine = batches[rank::world]
    for sync_on_step in (False, True):
        metric = case.metric(**case.kwargs, dist_sync_on_step=sync_on_step)
        for i, b in enumerate(mine):
            step_value = metric(*b, **case.update_kwargs)
            if sync_on_step:  # the batch of both ranks, in rank order
                both = concatenated(case, [batches[world * i], batches[world * i + 1]])
                expected = _value(case.functional(*both))
                torch.testing.assert_close(_value(step_value), expected, atol=case.atol, rtol=0, msg=case.id)
        ordered = [batches[world * i + r] for r in range(world) for i in range(len(mine))]
        expected = _value(case.functional(*concatenated(case, ordered)))
        torch.testing.assert_close(_value(metric.compute()), expected, atol=case.atol, rtol=0, msg=case.id)
