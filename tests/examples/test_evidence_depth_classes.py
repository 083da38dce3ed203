"""Smoke tests of the MCMI-many-classes and EGA-depth evidence scripts (``--fast``), and the mixture's Bayes oracle."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers.lightning import REPO_ROOT, load_script


@pytest.mark.slow
def test_mcmi_many_classes_fast_runs(tmp_path: Path) -> None:
    script = load_script("examples/evidence/mcmi_many_classes.py")
    results = script.main(["--fast", "--no-wandb", "--out", str(tmp_path)])
    names = ["no teacher", "CE", "MCMI ema lam=0.25", "MCMI batch lam=0.25", "Bayes oracle"]
    assert list(results["rows"]) == names
    assert results["chosen_lam"] == {"ema": 0.25, "batch": 0.25}
    assert all(len(v) == 2 for row in results["rows"].values() for v in row.values())
    assert "teacher_kl_bayes" not in results["rows"]["no teacher"]
    assert results["rows"]["Bayes oracle"]["teacher_kl_bayes"] == pytest.approx([0.0, 0.0], abs=1e-5)
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == results["rows"]
    assert "| MCMI ema lam=0.25 * |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "mcmi.png").is_file()


def test_mcmi_many_classes_oracle_is_the_bayes_posterior() -> None:
    """The oracle's softmax equals Bayes' rule written out with Gaussian densities (float64, equal priors)."""
    script = load_script("examples/evidence/mcmi_many_classes.py")
    means = script.class_means().double()
    assert means.shape == (100, 32)
    x = means[torch.tensor([0, 7, 99])] + torch.randn(3, 32, generator=torch.Generator().manual_seed(0)).double()
    log_density = -0.5 * ((x[:, None, :] - means[None]) ** 2).sum(-1)  # log N(x; mu_c, I) up to a constant
    expected = torch.softmax(log_density, dim=1)
    oracle = script.bayes_oracle().double()
    torch.testing.assert_close(torch.softmax(oracle(x), dim=1), expected)


@pytest.mark.slow
def test_ega_depth_fast_runs(tmp_path: Path) -> None:
    script = load_script("examples/evidence/ega_depth.py")
    results = script.main(["--fast", "--no-wandb", "--out", str(tmp_path)])
    assert list(results) == list(script.CONFIGS)
    for res in results.values():
        assert len(res["val_loss"]) == 2 and len(res["normalized_entropy"]) == 2
        assert all(len(layers) == 3 for layers in res["normalized_entropy"])  # the --fast model's depth
        assert all(0.0 <= f <= 1.0 for f in res["overload_all"] + res["collapse_last2"])
    assert json.loads((tmp_path / "results.json").read_text())["results"] == results
    assert "| ln_free_entropy |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "entropy_depth.png").is_file()
    logged = (tmp_path / "ln_free_entropy-seed0").rglob("metrics.csv")
    assert "attn_entropy/reg" in next(logged).read_text().splitlines()[0]


def test_ega_depth_head_fractions() -> None:
    script = load_script("examples/evidence/ega_depth.py")
    entropy = [[0.9, 0.5], [0.8, 0.1], [0.2, 0.3], [0.1, 0.05]]  # 4 layers x 2 heads
    fractions = script.head_fractions(entropy)
    assert fractions["overload_all"] == 2 / 8 and fractions["collapse_all"] == 4 / 8
    assert fractions["overload_first2"] == 2 / 4 and fractions["collapse_first2"] == 1 / 4
    assert fractions["overload_last2"] == 0.0 and fractions["collapse_last2"] == 3 / 4


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "config", "extra"),
    [
        (
            "examples/evidence/mcmi_many_classes.py",
            "mcmi_many_classes.yaml",
            ["--data.n_train=500", "--data.n_val=200"],
        ),
        ("examples/entropy_guided_lm.py", "ega_depth.yaml", ["--data.num_chars=20000"]),
    ],
)
def test_evidence_lightning_cli_configs(tmp_path: Path, script: str, config: str, extra: list[str]) -> None:
    cmd = [
        sys.executable,
        str(REPO_ROOT / script),
        "fit",
        "--config",
        str(REPO_ROOT / "examples" / "configs" / config),
        "--trainer.fast_dev_run=true",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--trainer.enable_progress_bar=false",
        *extra,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
