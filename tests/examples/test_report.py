"""``examples/_report.py``: the table cells and result files shared by the example and evidence scripts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.lightning import load_script

report = load_script("examples/_report.py")


def test_mean_std_is_the_mean_and_the_sample_std() -> None:
    # [0.1, 0.3]: mean 0.2, sample std sqrt((0.1^2 + 0.1^2) / 1) = 0.14142...
    assert report.mean_std([0.1, 0.3]) == "0.200 ± 0.141"
    assert report.mean_std([0.1, 0.3], 100.0, 1) == "20.0 ± 14.1"
    assert report.mean_std([0.1, 0.3], digits=2) == "0.20 ± 0.14"


def test_mean_std_of_one_value_has_zero_std() -> None:
    assert report.mean_std([0.5]) == "0.500 ± 0.000"


def test_paired_formats_the_per_seed_differences() -> None:
    # differences [1, 2, 2]: mean 5/3, sample std sqrt((4/9 + 1/9 + 1/9) / 2) = sqrt(1/3) = 0.57735...
    assert report.paired([1.0, 2.0, 3.0], [0.0, 0.0, 1.0]) == "1.667 ± 0.577"
    assert report.paired([1.0, 2.0, 3.0], [0.0, 0.0, 1.0], digits=2) == "1.67 ± 0.58"
    assert report.paired([0.1], [0.3], 100.0, 1) == "-20.0 ± 0.0"


def test_paired_rejects_lists_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="shorter"):
        report.paired([1.0, 2.0], [1.0])


def test_write_results_prints_the_table_and_writes_both_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = {"cpu_minutes": 1.5, "results": {"a": [1, 2]}}
    report.write_results(tmp_path, "| a |\n|---|", summary)
    assert capsys.readouterr().out == "| a |\n|---|\n"
    assert (tmp_path / "results.md").read_text() == "| a |\n|---|\n"
    assert json.loads((tmp_path / "results.json").read_text()) == summary
    assert (tmp_path / "results.json").read_text() == json.dumps(summary, indent=2)
