"""Smoke tests of the evidence scripts (``examples/evidence/``): each runs in ``--fast`` mode and writes its table."""

import json
from pathlib import Path

import pytest

from tests.helpers.lightning import load_script


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
