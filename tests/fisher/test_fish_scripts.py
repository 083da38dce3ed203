from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers.lightning import REPO_ROOT as ROOT
from tests.helpers.lightning import load_script


@pytest.mark.slow
def test_example_fast(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    example = load_script("examples/fish_finetune.py")
    results = example.main(["--out", str(tmp_path), "--fast"])
    methods = results["methods"]
    assert list(methods) == [
        "full fine-tuning", "FISH 0.5%", "random 0.5%", "FISH 2%", "random 2%", "FISH 10%", "random 10%"
    ]  # fmt: skip
    total = results["total_params"]
    for ratio in ("0.5", "2", "10"):
        for method in ("FISH", "random"):
            assert 0 < methods[f"{method} {ratio}%"]["trained"][0] <= int(float(ratio) / 100 * total)
    assert methods["full fine-tuning"]["trained"][0] > 0.9 * total
    assert "| FISH 0.5% | 130 (0.5%) |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "pretrained.pt").exists()


@pytest.mark.slow
def test_example_lightning_cli_config(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    example = load_script("examples/fish_finetune.py")
    torch.save(example.DigitsMLP().state_dict(), tmp_path / "pretrained.pt")
    cmd = [
        sys.executable,
        str(ROOT / "examples" / "fish_finetune.py"),
        "fit",
        "--config",
        str(ROOT / "examples" / "configs" / "fish_finetune.yaml"),
        "--trainer.fast_dev_run=true",
        f"--model.pretrained={tmp_path / 'pretrained.pt'}",
        "--trainer.enable_progress_bar=false",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = result.stdout + result.stderr  # the FisherMask from the YAML set up its mask buffers on the model
    assert re.search(r"fisher_mask\s*[|│]\s*_MaskBuffers", summary)  # plain or Rich model summary


@pytest.mark.slow
def test_lightning_cli_config_pretrains_when_the_model_file_is_missing(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    pretrained = tmp_path / "fresh" / "pretrained.pt"
    cmd = [
        sys.executable,
        str(ROOT / "examples" / "fish_finetune.py"),
        "fit",
        "--config",
        str(ROOT / "examples" / "configs" / "fish_finetune.yaml"),
        "--trainer.fast_dev_run=true",
        f"--model.pretrained={pretrained}",
        "--trainer.enable_progress_bar=false",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"[fish_finetune] {pretrained} does not exist: pretraining on classes 0-4 first" in result.stdout
    assert pretrained.is_file() and re.search(r"fisher_mask\s*[|│]\s*_MaskBuffers", result.stdout + result.stderr)


def test_demo_part_reports_kept_fraction(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    from lightning_info.demo import PARTS, DemoConfig, run_demo

    assert not PARTS["fisher"].default
    summary = run_demo(DemoConfig(parts=["fisher"], out=tmp_path, fast=True, wandb=False))
    assert summary["fisher/kept_frac"] == pytest.approx(0.1, abs=1e-3)
