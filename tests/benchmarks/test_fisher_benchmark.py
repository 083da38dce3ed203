import importlib.util
import sys

from tests.helpers.lightning import REPO_ROOT


def test_fisher_benchmark_runs_quick() -> None:
    spec = importlib.util.spec_from_file_location("benchmarks_fisher", REPO_ROOT / "benchmarks" / "fisher.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    ratios = module.main(quick=True, memory=False)
    assert set(ratios) == {"mlp", "transformer"} and all(r > 0 for r in ratios.values())
    assert module.extra_peak_mb("mlp", 16, 4) >= 0
