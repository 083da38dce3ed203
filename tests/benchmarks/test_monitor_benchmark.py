import importlib.util

from tests.helpers.lightning import REPO_ROOT


def test_monitor_benchmark_runs_with_minimal_sizes() -> None:
    spec = importlib.util.spec_from_file_location("benchmarks_monitor", REPO_ROOT / "benchmarks" / "monitor.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(steps=2, every_n_steps=1, repeats=1) > 0
