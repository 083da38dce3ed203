from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(Path(path).stem + "_under_test", ROOT / path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_benchmark_smoke(monkeypatch: pytest.MonkeyPatch) -> None:
    bench = _load("benchmarks/fisher.py")
    ratios = bench.main(quick=True, memory=False)
    assert set(ratios) == {"mlp", "transformer"} and all(r > 0 for r in ratios.values())


@pytest.mark.slow
def test_example_fast(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    example = _load("examples/fish_finetune.py")
    results = example.main(["--out", str(tmp_path), "--fast"])
    assert set(results) == {"full", "fish_0.005", "random_0.005", "fish_0.02", "random_0.02", "fish_0.1", "random_0.1"}
    total = results["full"]["total_params"]
    for name in ("fish_0.005", "random_0.005"):
        assert results[name]["trained_params"] <= int(0.005 * total)
    assert (tmp_path / "results.json").exists()
