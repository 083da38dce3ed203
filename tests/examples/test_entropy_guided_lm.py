import importlib.util
from pathlib import Path

import pytest

from tests.helpers.lightning import REPO_ROOT


@pytest.mark.slow
def test_entropy_guided_lm_fast(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "example_entropy_guided_lm", REPO_ROOT / "examples" / "entropy_guided_lm.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.main(["--fast", "--steps", "3", "--logger", "csv", "--out", str(tmp_path)])
    assert set(results) == {"baseline", "ln_free", "ln_free_entropy"}
    assert (tmp_path / "entropy_per_layer.png").exists() and (tmp_path / "results.json").exists()
    for result in results.values():
        assert all(0.0 <= h <= 1.0 + 1e-6 for layer in result["normalized_entropy"] for h in layer)
