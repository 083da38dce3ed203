import importlib.util

from tests.helpers.lightning import REPO_ROOT


def test_attention_entropy_benchmark_runs_quick() -> None:
    path = REPO_ROOT / "benchmarks" / "attention_entropy.py"
    spec = importlib.util.spec_from_file_location("benchmarks_attention_entropy", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.main(["--quick"])
    assert set(results) == {"memory_ratio", "time_ratio", "ega_vs_mha_weights", "ega_vs_mha_fused"}
