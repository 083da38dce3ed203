import importlib.util

from tests.helpers.lightning import REPO_ROOT


def test_cs_ib_benchmark_runs_with_minimal_sizes() -> None:
    spec = importlib.util.spec_from_file_location("benchmarks_cs_ib", REPO_ROOT / "benchmarks" / "cs_ib.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(sizes=(16,), d=4, target_n=16, repeats=1, min_seconds=0.0) > 0
    _, _, rel_diff = module.speedup_vs_broadcast(24, 3, repeats=1, min_seconds=0.0)
    assert rel_diff < 1e-4  # the broadcast reference computes the same loss
