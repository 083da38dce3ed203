from __future__ import annotations

from pathlib import Path

import pytest

from lightning_info.cli import main
from lightning_info.demo import PARTS, DemoConfig
from tests.helpers.wandb_reader import read_history, series


@pytest.mark.wandb
def test_fast_demo_logs_to_wandb_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("wandb")
    assert main(["demo", "--fast", "--parts", "", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "wandb sync " in printed and "test_acc" in printed
    rows = read_history(tmp_path / "wandb")
    losses = series(rows, "train_loss")
    assert losses and all(0 < value < 10 for _, value in losses)
    assert len(losses) == 4  # --fast: 4 training steps, each logged
    # one validation at the end, logged at Lightning's step of the last training batch
    assert [step for step, _ in series(rows, "val_acc")] == [losses[-1][0]]
    assert (tmp_path / "summary.md").read_text().count("| `test_acc` |") == 1
    assert (tmp_path / "loss_curves.png").stat().st_size > 1000


def test_fast_demo_csv_fallback(tmp_path: Path) -> None:
    assert main(["demo", "--fast", "--parts", "", "--no-wandb", "--out", str(tmp_path)]) == 0
    metrics = list(tmp_path.rglob("metrics.csv"))
    assert len(metrics) == 1 and "train_loss" in metrics[0].read_text().splitlines()[0]


def test_unknown_part_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--parts", "nonsense"])
    assert exit_info.value.code == 2
    assert "unknown demo parts ['nonsense']" in capsys.readouterr().err
    with pytest.raises(ValueError, match="available"):
        DemoConfig(parts=["nonsense"])


def test_every_part_runs_fast(tmp_path: Path) -> None:
    for name in PARTS:
        summary = main(["demo", "--fast", "--parts", name, "--no-wandb", "--out", str(tmp_path / name)])
        assert summary == 0


def test_optimizer_flag_swaps_the_sharpness_aware_part(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--fast", "--optimizer", "gam", "--parts", "sam", "--no-wandb", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "[demo] parts: gam" in printed and "sam/first_order_flatness" in printed
    header = next(tmp_path.rglob("metrics.csv")).read_text().splitlines()[0]
    assert "sam/first_order_flatness" in header and "sam/sharpness" not in header
    with pytest.raises(ValueError, match="another part already set"):
        main(["demo", "--fast", "--parts", "sam,asam", "--no-wandb", "--out", str(tmp_path / "two")])


def test_help_lists_every_part(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert all(f"{name} (" in printed for name in PARTS)


def test_attention_and_monitor_parts_write_their_figures(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    assert main(["demo", "--fast", "--parts", "attention,monitor", "--no-wandb", "--out", str(tmp_path)]) == 0
    for name in ("loss_curves.png", "attention_entropy.png", "information_plane.png"):
        assert (tmp_path / name).stat().st_size > 1000, name
        assert f"![{name[:-4]}]({name})" in (tmp_path / "summary.md").read_text()
