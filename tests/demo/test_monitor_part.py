from __future__ import annotations

from pathlib import Path

import pytest

from lightning_info.cli import main
from lightning_info.demo.builtin.monitor import SUMMARY_KEYS
from tests.helpers.wandb_reader import read_history, series


@pytest.mark.wandb
def test_monitor_part_logs_info_keys_and_prints_their_final_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("wandb")
    assert main(["demo", "--fast", "--parts", "monitor", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert all(key in printed for key in SUMMARY_KEYS), printed  # the summary table shows the final values
    rows = read_history(tmp_path / "latest" / "wandb")
    # --fast: 4 training steps, every_n_steps=2 -> logged at steps 0 and 2, figures at the one validation end
    assert [step for step, _ in series(rows, "info/pool/vendi")] == [0, 2]
    assert [step for step, _ in series(rows, "info/head/cmi")] == [0, 2]
    keys = {key for row in rows for key in row}
    assert {"info/encoder.layers.0/dsmi", "info/encoder.layers.1/mi_xt", "info/heatmap/_type"} <= keys
    assert any(key.startswith("info/plane") for key in keys)
