import importlib.util

from tests.helpers.lightning import REPO_ROOT


def test_sam_benchmark_runs_quick(capsys) -> None:
    spec = importlib.util.spec_from_file_location("benchmarks_sam", REPO_ROOT / "benchmarks" / "sam.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.main(quick=True)
    assert set(results) == {"base", "sam", "every-2", "every-5", "every-10", "gam"}
    assert all(ratio > 0 for ratio, _ in results.values())
    printed = capsys.readouterr().out
    assert "SAM step time vs base: " in printed and "(goal <= 2.050)" in printed
