from tests.helpers.lightning import load_script


def test_metrics_benchmark_quick_runs() -> None:
    module = load_script("benchmarks/metrics.py")
    results = module.main(["--quick"])
    assert results["vendi_rel_diff"] < 1e-6
    assert results["mnn_speedup"] > 0 and results["vendi_speedup"] > 0
