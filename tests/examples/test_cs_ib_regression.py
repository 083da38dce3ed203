import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.lightning import REPO_ROOT, load_script


@pytest.mark.slow
def test_example_fast_runs(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    results = load_script("examples/cs_ib_regression.py").main(["--fast", "--out", str(tmp_path)])
    assert set(results) == {"MSE", "CS-IB beta=0.01"}
    assert all(len(r["rmse"]) == 1 for r in results.values())
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert "| CS-IB beta=0.01 |" in (tmp_path / "results.md").read_text()


@pytest.mark.slow
def test_example_lightning_cli_config_fast_dev_run(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    pytest.importorskip("jsonargparse")
    cmd = [
        sys.executable,
        str(REPO_ROOT / "examples" / "cs_ib_regression.py"),
        "fit",
        "--config",
        str(REPO_ROOT / "examples" / "configs" / "cs_ib_regression.yaml"),
        "--trainer.fast_dev_run=true",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--trainer.enable_progress_bar=false",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "Running in `fast_dev_run` mode: will run the requested loop using 1 batch(es)" in output
