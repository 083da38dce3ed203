import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.lightning import REPO_ROOT, load_script


@pytest.mark.slow
def test_example_fast_runs_and_logs_the_attention_and_information_keys(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("sklearn")
    results = load_script("examples/hf_finetune.py").main(["--fast", "--no-wandb", "--out", str(tmp_path)])
    assert set(results) == {"val_acc", "test_acc"}
    assert all(0 <= value <= 1 for value in results.values())
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert (tmp_path / "pretrained.pt").is_file()
    [metrics] = list(tmp_path.rglob("metrics.csv"))
    header = set(metrics.read_text().splitlines()[0].split(","))
    attention = {f"attn_entropy/layer{i}/head{j}" for i in range(2) for j in range(4)}  # 2 layers x 4 heads
    info = {f"info/net.bert.encoder/{name}" for name in ("matrix_entropy", "vendi", "dse")}
    assert attention | info | {"attn_entropy/normalized_mean", "fisher/kept_frac/net.classifier"} <= header
    rows = [dict(zip(metrics.read_text().splitlines()[0].split(","), line.split(","), strict=True))
            for line in metrics.read_text().splitlines()[1:]]  # fmt: skip
    head_kept = [float(r["fisher/kept_frac/net.classifier"]) for r in rows if r["fisher/kept_frac/net.classifier"]]
    assert head_kept == [1.0]  # always_train=["classifier"] matched the wrapped net.classifier by suffix
    entropies = [float(r[key]) for r in rows for key in attention if r[key]]
    assert len(entropies) == 3 * len(attention)  # every_n_steps=1 in --fast: each of the 3 steps
    assert all(0 <= h <= 2.2 for h in entropies)  # within [0, log 9]: 9 tokens


@pytest.mark.slow
def test_example_lightning_cli_config_fast_dev_run(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("sklearn")
    pytest.importorskip("jsonargparse")
    cmd = [
        sys.executable,
        str(REPO_ROOT / "examples" / "hf_finetune.py"),
        "fit",
        "--config",
        str(REPO_ROOT / "examples" / "configs" / "hf_finetune.yaml"),
        "--trainer.fast_dev_run=true",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--trainer.enable_progress_bar=false",
        "--model.fisher_samples=32",
        "--model.pretrained=null",
    ]
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "OMP_NUM_THREADS": "1",
    }
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Running in `fast_dev_run` mode" in result.stderr + result.stdout


def test_digits_become_a_cls_token_then_one_token_per_binarised_row() -> None:
    import torch

    images = torch.zeros(1, 8, 8)
    images[0, 0] = 1.0  # every pixel of row 0 on: bits 11111111 = 255
    images[0, 1, 0] = 0.6  # only the first pixel of row 1 above 0.5: 1
    images[0, 2, 7] = 0.4  # below the threshold: an empty row
    ids = load_script("examples/hf_finetune.py").digits_to_token_ids(images)
    assert ids.tolist() == [[0, 256, 2, 1, 1, 1, 1, 1, 1]]  # [CLS] = 0, a row with bits b is b + 1
