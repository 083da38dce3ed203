import importlib.util
import math

from tests.helpers.lightning import load_script


def test_attention_entropy_benchmark_runs_quick() -> None:
    module = load_script("benchmarks/attention_entropy.py")
    results = module.main(["--quick"])
    memory = {"memory_ratio", "sdpa_monitor_memory_ratio", "sdpa_regularizer_memory_ratio"}
    expected = memory | {"time_ratio", "ega_vs_mha_weights", "ega_vs_mha_fused"}
    if importlib.util.find_spec("transformers") is not None:  # the Hugging Face rows (GPT-2 config)
        expected |= {"hf_monitor_overhead", "hf_regularizer_overhead"}
    assert set(results) == expected
    # the quick run is a smoke test: a 64 KiB map cannot raise the peak RSS of a test process that peaked higher
    # earlier (growth 0 -> memory ratio 0, as in a fresh-clone CI run), so those ratios are only checked to be finite
    assert all(results[key] >= 0 and math.isfinite(results[key]) for key in memory)
    assert all(value > 0 for key, value in results.items() if key not in memory)
