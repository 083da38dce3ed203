from tests.helpers.lightning import load_script


def test_monitor_benchmark_runs_with_minimal_sizes() -> None:
    module = load_script("benchmarks/monitor.py")
    assert module.main(steps=2, every_n_steps=1, repeats=1) > 0
