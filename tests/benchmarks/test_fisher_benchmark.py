from tests.helpers.lightning import load_script


def test_fisher_benchmark_runs_quick() -> None:
    module = load_script("benchmarks/fisher.py")
    ratios = module.main(quick=True, memory=False)
    assert set(ratios) == {"mlp", "transformer", "gpt2", "bert"} and all(r > 0 for r in ratios.values())
    assert module.extra_peak_mb("mlp", 16, 4) >= 0
