import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers.lightning import REPO_ROOT, load_script

SCRIPT = REPO_ROOT / "examples" / "mcmi_distillation.py"


@pytest.mark.slow
def test_example_fast_runs_and_logs_every_result(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    results = load_script("examples/mcmi_distillation.py").main(["--fast", "--no-wandb", "--out", str(tmp_path)])
    assert list(results) == ["no teacher", "CE", "MCMI lam=0.1"]
    assert set(results["CE"]) == {"teacher_acc", "teacher_cmi", "student_acc_frac0.05"}
    assert set(results["no teacher"]) == {"student_acc_frac0.05"}
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert "| MCMI lam=0.1 |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "teacher_mcmi.pt").exists() and (tmp_path / "teacher_ce.pt").exists()
    [metrics] = list(tmp_path.rglob("metrics.csv"))
    assert "mcmi_lam0.1/teacher_cmi" in metrics.read_text().splitlines()[0]


@pytest.mark.slow
def test_example_lightning_cli_config(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    teacher = load_script("examples/mcmi_distillation.py").MLP(
        hidden=(128, 128), dropout=0.1
    )  # the YAML's teacher architecture
    torch.save(teacher.state_dict(), tmp_path / "teacher.pt")
    cmd = [
        sys.executable,
        str(SCRIPT),
        "fit",
        "--config",
        str(REPO_ROOT / "examples" / "configs" / "mcmi_distillation.yaml"),
        "--trainer.fast_dev_run=true",
        f"--model.teacher_checkpoint={tmp_path / 'teacher.pt'}",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    # the progress bar shows the val metrics: TQDM writes `distill/val_teacher_acc=0.07`; Lightning picks its Rich bar
    # when `rich` is installed (transformers brings it), which cuts long names to the column width
    output = result.stdout + result.stderr
    assert "distill/val_teacher_acc=" in output or re.search(r"distill/val_teache(r_acc|…)", output)
