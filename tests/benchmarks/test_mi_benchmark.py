import torch

from tests.helpers.lightning import load_script


def test_mi_benchmark_runs_with_minimal_sizes() -> None:
    module = load_script("benchmarks/mi.py")
    threads = torch.get_num_threads()
    try:
        results = module.main(mis=(1.0,), estimators=("smile", "mine"), dim=2, steps=2, seeds=1, eval_batches=2)
    finally:
        torch.set_num_threads(threads)
    assert set(results) == {("smile", 1.0), ("mine", 1.0)}
