from tests.helpers.lightning import load_script


def test_attention_entropy_benchmark_runs_quick() -> None:
    module = load_script("benchmarks/attention_entropy.py")
    results = module.main(["--quick"])
    assert set(results) == {"memory_ratio", "time_ratio", "ega_vs_mha_weights", "ega_vs_mha_fused"}
