import importlib.util

from tests.helpers.lightning import REPO_ROOT


def test_metrics_benchmark_quick_runs() -> None:
    spec = importlib.util.spec_from_file_location("benchmarks_metrics", REPO_ROOT / "benchmarks" / "metrics.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.main(["--quick"])
    assert results["vendi_rel_diff"] < 1e-6
    assert results["mnn_speedup"] > 0 and results["vendi_speedup"] > 0
