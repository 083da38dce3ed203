from tests.helpers.lightning import load_script


def test_cs_ib_benchmark_runs_with_minimal_sizes() -> None:
    module = load_script("benchmarks/cs_ib.py")
    assert module.main(sizes=(16,), d=4, target_n=16, repeats=1, min_seconds=0.0) > 0
    _, _, rel_diff = module.speedup_vs_broadcast(24, 3, repeats=1, min_seconds=0.0)
    assert rel_diff < 1e-4  # the broadcast reference computes the same loss
