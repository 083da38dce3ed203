import importlib.util

from tests.helpers.lightning import load_script


def test_attention_entropy_benchmark_runs_quick() -> None:
    module = load_script("benchmarks/attention_entropy.py")
    results = module.main(["--quick"])
    expected = {"memory_ratio", "time_ratio", "ega_vs_mha_weights", "ega_vs_mha_fused"}
    if importlib.util.find_spec("transformers") is not None:  # the Hugging Face rows (GPT-2 config)
        expected |= {"hf_monitor_overhead", "hf_regularizer_overhead"}
    assert set(results) == expected
    assert all(value > 0 for value in results.values())
