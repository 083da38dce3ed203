import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.lightning import REPO_ROOT, load_script


@pytest.mark.slow
def test_example_fast_runs_and_logs_the_sharpness_keys(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    results = load_script("examples/sam_compare.py").main(
        ["--fast", "--no-wandb", "--threads", "1", "--out", str(tmp_path)]
    )
    assert set(results) == {"sgd", "sam", "gam"}
    assert all(len(r["test_acc"]) == 1 and 0 <= r["test_acc"][0] <= 1 for r in results.values())
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert "| gam |" in (tmp_path / "results.md").read_text()

    def header(run: str) -> str:
        return next((tmp_path / run).rglob("metrics.csv")).read_text().splitlines()[0]

    expected = {"sam/perturbation_norm", "sam/sharpness", "sharpness/worst_case_gap"}
    assert expected <= set(header("sam-noise0.2-seed0").split(","))
    assert "sam/first_order_flatness" in header("gam-noise0.2-seed0")
    sgd = header("sgd-noise0.2-seed0")
    assert "sharpness/hessian_top_eig" in sgd and "sam/perturbation_norm" not in sgd


@pytest.mark.slow
def test_example_lightning_cli_config_fast_dev_run(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    cmd = [
        sys.executable,
        str(REPO_ROOT / "examples" / "sam_compare.py"),
        "fit",
        "--config",
        str(REPO_ROOT / "examples" / "configs" / "sam_compare.yaml"),
        "--trainer.fast_dev_run=true",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--trainer.enable_progress_bar=false",
        "--model.optimizer=gam",
        "--model.sharpness_samples=16",
        "--model.power_iterations=2",
    ]
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "OMP_NUM_THREADS": "1",
    }
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Running in `fast_dev_run` mode" in result.stderr + result.stdout
