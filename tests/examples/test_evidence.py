"""Smoke tests of the evidence scripts (``examples/evidence/``): each runs in ``--fast`` mode and writes its table."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers.lightning import REPO_ROOT, load_script


@pytest.mark.slow
def test_cs_ib_heavy_tails_fast_runs(tmp_path: Path) -> None:
    script = load_script("examples/evidence/cs_ib_heavy_tails.py")
    results = script.main(["--fast", "--no-wandb", "--out", str(tmp_path)])
    assert set(results) == set(script.NOISES)
    assert all(set(by_loss) == set(script.LOSSES) for by_loss in results.values())
    assert all(len(r["test_rmse"]) == 2 and len(r["pgd_rmse"]) == 2 for b in results.values() for r in b.values())
    assert json.loads((tmp_path / "results.json").read_text())["results"] == results
    table = (tmp_path / "results.md").read_text()
    assert "| outliers10 | CS-IB beta=0.01 |" in table
    assert (tmp_path / "rmse.png").is_file()


@pytest.mark.slow
def test_fish_shift_fast_runs(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    script = load_script("examples/evidence/fish_shift.py")
    results = script.main(["--fast", "--no-wandb", "--out", str(tmp_path)])
    assert list(results) == list(script.METHODS)
    assert all(len(r["test_acc"]) == 2 for r in results.values())
    assert json.loads((tmp_path / "results.json").read_text())["results"] == results
    assert "| FISH 0.5% |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "accuracy.png").is_file()


@pytest.mark.slow
def test_sam_label_noise_fast_runs(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    script = load_script("examples/evidence/sam_label_noise.py")
    results = script.main(["--fast", "--no-wandb", "--out", str(tmp_path)])
    assert list(results) == ["symmetric 0.6", "asymmetric 0.4"]
    assert all(list(by_opt) == list(script.OPTIMIZERS) for by_opt in results.values())
    assert all(len(r["test_acc"]) == 2 and len(r["hessian_top_eig"]) == 2 for b in results.values() for r in b.values())
    assert json.loads((tmp_path / "results.json").read_text())["results"] == results
    assert "| symmetric 0.6 | asam | 1 |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "accuracy.png").is_file()


def test_corrupt_flips_the_requested_fraction_to_other_classes() -> None:
    script = load_script("examples/evidence/sam_label_noise.py")
    y = torch.arange(10).repeat(2000)
    noisy = script.corrupt(y, "symmetric", 0.6, torch.Generator().manual_seed(0))
    flipped = noisy != y
    assert abs(flipped.float().mean().item() - 0.6) < 0.02  # a flip never lands on the true class
    counts = torch.bincount((noisy - y)[flipped] % 10, minlength=10)  # offsets 1..9, uniform
    assert counts[0] == 0 and counts[1:].min() > 0.8 * counts[1:].float().mean()
    asym = script.corrupt(y, "asymmetric", 0.4, torch.Generator().manual_seed(0))
    assert torch.equal(asym[asym != y], (y[asym != y] + 1) % 10)
    with pytest.raises(ValueError, match="kind"):
        script.corrupt(y, "pairwise", 0.4, torch.Generator())


def test_random_shift_moves_each_image_by_at_most_one_pixel_with_zero_fill() -> None:
    script = load_script("examples/evidence/sam_label_noise.py")
    x = torch.zeros(500, 8, 8)
    x[:, 3, 4] = 1.0  # one lit pixel per image
    shifted = script.random_shift(x)
    rows, cols = shifted.nonzero()[:, 1], shifted.nonzero()[:, 2]
    assert shifted.sum(dim=(1, 2)).eq(1).all()  # the pixel stays inside the image
    assert set(rows.tolist()) == {2, 3, 4} and set(cols.tolist()) == {3, 4, 5}  # all 9 offsets occur


def test_top_hessian_eigenvalue_matches_the_dense_hessian() -> None:
    script = load_script("examples/evidence/sam_label_noise.py")
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 4).double()
    x, y = torch.randn(20, 3, dtype=torch.float64), torch.randint(0, 4, (20,))
    params = tuple(model.parameters())

    def loss(w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(x @ w.T + b, y)

    blocks = torch.autograd.functional.hessian(loss, params)
    n = [p.numel() for p in params]
    dense = torch.cat([torch.cat([blocks[i][j].reshape(n[i], n[j]) for j in range(2)], 1) for i in range(2)], 0)
    expected = torch.linalg.eigvalsh(dense).abs().max().item()  # cross-entropy's Hessian is PSD
    assert script.top_hessian_eigenvalue(model, x, y, iterations=200) == pytest.approx(expected, rel=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "model_class", "datamodule_class"),
    [
        ("sam_label_noise", "NoisyDigitsMLP", "NoisyDigits"),
        ("cs_ib_heavy_tails", "Regressor", "HeavyTailData"),
        ("fish_shift", "WideMLP", "ShiftedDigits"),
    ],
)
def test_evidence_lightning_cli_config_instantiates_and_fits_one_batch(
    name: str, model_class: str, datamodule_class: str, tmp_path: Path
) -> None:
    pytest.importorskip("wandb")  # the configs log to W&B offline
    pytest.importorskip("sklearn")
    from lightning.pytorch.cli import LightningCLI

    script = load_script(f"examples/evidence/{name}.py")
    path = REPO_ROOT / "examples" / "configs" / f"evidence_{name}.yaml"
    cli = LightningCLI(
        getattr(script, model_class),
        getattr(script, datamodule_class),
        args=["--config", str(path), f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.fast_dev_run=true"],
        run=False,
    )
    spec = yaml.safe_load(path.read_text())
    assert {k: cli.model.hparams[k] for k in spec["model"]} == spec["model"]
    assert all(getattr(cli.datamodule, k) == v for k, v in spec["data"].items())
    assert cli.config["trainer"]["max_epochs"] == spec["trainer"]["max_epochs"]
    expected = [c["class_path"].rsplit(".", 1)[1] for c in spec["trainer"].get("callbacks", [])]
    assert set(expected) <= {type(c).__name__ for c in cli.trainer.callbacks}  # type: ignore[attr-defined]
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.state.finished and cli.trainer.global_step == 1
