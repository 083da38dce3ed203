import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers.lightning import REPO_ROOT, load_script


@pytest.mark.slow
def test_entropy_guided_lm_fast(tmp_path: Path) -> None:
    module = load_script("examples/entropy_guided_lm.py")
    results = module.main(["--fast", "--steps", "3", "--logger", "csv", "--out", str(tmp_path)])
    assert set(results) == {"baseline", "ln_free", "ln_free_entropy"}
    assert (tmp_path / "entropy_per_layer.png").stat().st_size > 1000
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert "| ln_free_entropy |" in (tmp_path / "results.md").read_text()
    for result in results.values():
        assert len(result["normalized_entropy"]) == 2  # layers of the --fast model
        assert all(0.0 <= h <= 1.0 + 1e-6 for layer in result["normalized_entropy"] for h in layer)
    logged = (tmp_path / "ln_free_entropy").rglob("metrics.csv")
    header = next(logged).read_text().splitlines()[0]
    assert "attn_entropy/layer1/head1" in header and "attn_entropy/reg" in header


@pytest.mark.slow
def test_entropy_guided_lm_lightning_cli_config(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        str(REPO_ROOT / "examples" / "entropy_guided_lm.py"),
        "fit",
        "--config",
        str(REPO_ROOT / "examples" / "configs" / "entropy_guided_lm.yaml"),
        "--trainer.fast_dev_run=true",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--trainer.enable_progress_bar=false",
        "--data.num_chars=20000",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_char_lm_activation() -> None:
    module = load_script("examples/entropy_guided_lm.py")
    model = module.CharLM(d_model=8, heads=2, layers=1, context=4, activation="relu")
    assert isinstance(model.blocks[0].ffn[1], torch.nn.ReLU)
    assert isinstance(module.CharLM(d_model=8, heads=2, layers=1, context=4).blocks[0].ffn[1], torch.nn.GELU)
    with pytest.raises(ValueError, match=r"activation.*'tanh'"):
        module.CharLM(d_model=8, heads=2, layers=1, context=4, activation="tanh")
