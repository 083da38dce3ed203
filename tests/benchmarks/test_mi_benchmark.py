import importlib.util

import torch

from tests.helpers.lightning import REPO_ROOT


def test_mi_benchmark_runs_with_minimal_sizes() -> None:
    spec = importlib.util.spec_from_file_location("benchmarks_mi", REPO_ROOT / "benchmarks" / "mi.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    try:
        results = module.main(mis=(1.0,), estimators=("smile", "mine"), dim=2, steps=2, seeds=1, eval_batches=2)
    finally:
        torch.set_num_threads(threads)
    assert set(results) == {("smile", 1.0), ("mine", 1.0)}
