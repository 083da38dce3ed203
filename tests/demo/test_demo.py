from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

from lightning_info.cli import main
from lightning_info.demo import PARTS, DemoConfig, DemoContext
from lightning_info.demo.run import default_threads
from tests.helpers.wandb_reader import read_history, read_run, run_files, series


@pytest.mark.wandb
def test_fast_demo_logs_to_wandb_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("wandb")
    assert main(["demo", "--fast", "--parts", "", "--threads", "1", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "wandb sync " in printed and "test_acc" in printed
    assert "[demo 1/1] digits transformer, 1 epoch\n" in printed and "torch threads: 1" in printed
    assert re.search(r"  1  digits transformer\s+1\s+\d+\.\ds\n\s+total\s+\d+\.\ds", printed), printed
    tmp_path = tmp_path / "latest"  # the run's own folder
    [run] = [read_run(f) for f in run_files(tmp_path / "wandb")]
    assert run.name == "digits transformer" and run.group == f"demo-{tmp_path.resolve().name}"
    settings = {"parts": [], "optimizer": "adamw", "max_epochs": 25, "seed": 0, "fast": True, "threads": 1}
    assert settings.items() <= run.config.items()  # the demo's settings
    assert {"d_model": 32, "nhead": 4, "num_layers": 2, "stage": "digits transformer"}.items() <= run.config.items()
    assert run.summary["demo_stage"]["index"] == 1 and run.summary["demo_summary"]["test_acc"] >= 0
    text = (tmp_path / "summary.md").read_text()
    assert text.index("## Settings") < text.index("| `seed` | 0 |") < text.index("## Results")
    assert "| `parts` | none |" in text and "| 1 | digits transformer | 1 |" in text
    rows = read_history(tmp_path / "wandb")
    losses = series(rows, "train_loss")
    assert losses and all(0 < value < 10 for _, value in losses)
    assert len(losses) == 4  # --fast: 4 training steps, each logged
    # one validation at the end, logged at Lightning's step of the last training batch
    assert [step for step, _ in series(rows, "val_acc")] == [losses[-1][0]]
    assert text.count("| `test_acc` |") == 1
    assert (tmp_path / "loss_curves.png").stat().st_size > 1000


def test_fast_demo_csv_fallback_and_reruns_keep_their_folders(tmp_path: Path) -> None:
    environ, threads = dict(os.environ), torch.get_num_threads()
    for _ in range(2):
        assert main(["demo", "--fast", "--parts", "", "--no-wandb", "--out", str(tmp_path)]) == 0
    # the process is left as it was (issue 14 item 12: PL_GLOBAL_SEED and WANDB_MODE stayed set)
    assert dict(os.environ) == environ and torch.get_num_threads() == threads
    folders = sorted(p for p in tmp_path.iterdir() if not p.is_symlink())
    assert len(folders) == 2 and all((f / "summary.md").exists() for f in folders)
    assert (tmp_path / "latest").resolve() == folders[-1].resolve()  # names sort by time (-2 within one second)
    metrics = list(folders[0].rglob("metrics.csv"))
    assert len(metrics) == 1 and "train_loss" in metrics[0].read_text().splitlines()[0]
    assert "stage: digits transformer" in (metrics[0].parent / "hparams.yaml").read_text()


@pytest.mark.wandb
def test_stages_are_runs_of_one_group_and_report_rewrites_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("wandb")
    assert main(["demo", "--fast", "--parts", "csib", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    names = ["digits transformer", "CS-IB regressor (diabetes)", "MSE regressor (diabetes)"]
    assert all(f"[demo {i}/3] {name}, " in printed for i, name in enumerate(names, 1))
    run_dir = (tmp_path / "latest").resolve()
    runs = sorted((read_run(f) for f in run_files(run_dir)), key=lambda r: r.summary["demo_stage"]["index"])
    assert [r.name for r in runs] == names and {r.group for r in runs} == {f"demo-{run_dir.name}"}
    assert all(r.config["parts"] == ["csib"] and r.config["stage"] == r.name for r in runs)
    assert runs[1].config["beta"] == 0.01 and runs[2].config["csib"] is False  # the regressors' hyper-parameters
    assert "diabetes_mse_test_rmse" in runs[2].summary["demo_summary"]  # the MSE baseline is in W&B too
    assert series(runs[1].history, "csib/compression") and runs[0].history[0]["trainer/global_step"] == 0

    assert main(["report", str(tmp_path / "latest"), "--out", str(tmp_path / "again")]) == 0
    original, again = ((d / "summary.md").read_text().splitlines() for d in (run_dir, tmp_path / "again"))
    assert [line for line in again if not line.startswith("Run:")] == [
        line for line in original if not line.startswith("Run:")
    ]
    assert (tmp_path / "again" / "loss_curves.png").stat().st_size > 1000


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--parts", "sam,gam"], "parts ['sam', 'gam'] each set the optimizer: use one of ['asam', 'gam', 'sam']"),
        (["--seed", "-5"], "seed must be in [0, 4294967295], got -5"),
        (["--threads", "0"], "threads must be >= 1, got 0"),
        (["--max-epochs", "0"], "max_epochs must be >= 1, got 0"),
        (["--out", "FILE"], "out must be a folder"),
    ],
)
def test_bad_options_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    (tmp_path / "FILE").write_text("")
    argv = [str(tmp_path / "FILE") if a == "FILE" else a for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--fast", "--no-wandb", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: lightning-info demo") and message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == [tmp_path / "FILE"]  # nothing ran


def test_report_of_a_folder_without_runs_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for run_dir in (tmp_path, tmp_path / "missing"):
        with pytest.raises(SystemExit) as exit_info:
            main(["report", str(run_dir)])
        assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "no W&B offline demo run" in err and "run_dir must be a demo run's folder" in err


@pytest.mark.parametrize(("cores", "threads"), [(1, 1), (2, 1), (4, 2), (6, 3), (64, 8)])
def test_default_threads_follow_the_usable_cores(monkeypatch: pytest.MonkeyPatch, cores: int, threads: int) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert default_threads() == threads


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
    with pytest.raises(SystemExit) as exit_info:  # two optimizer parts: a usage error before anything runs
        main(["demo", "--fast", "--parts", "sam,asam", "--no-wandb", "--out", str(tmp_path / "two")])
    assert exit_info.value.code == 2 and not (tmp_path / "two").exists()
    assert "parts ['sam', 'asam'] each set the optimizer" in capsys.readouterr().err
    with pytest.raises(ValueError, match="another part already set"):  # a context configured by hand
        ctx = DemoContext(fast=True, seed=0)
        PARTS["sam"].configure(ctx)
        PARTS["asam"].configure(ctx)


def test_help_lists_every_part(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert all(f"{name} (" in printed for name in PARTS)


def test_attention_and_monitor_parts_write_their_figures(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    assert main(["demo", "--fast", "--parts", "attention,monitor", "--no-wandb", "--out", str(tmp_path)]) == 0
    tmp_path = tmp_path / "latest"
    for name in ("loss_curves.png", "attention_entropy.png", "information_plane.png"):
        assert (tmp_path / name).stat().st_size > 1000, name
        assert f"![{name[:-4]}]({name})" in (tmp_path / "summary.md").read_text()
