from pathlib import Path

from lightning_info.demo import PARTS, DemoContext
from lightning_info.demo.report import MetricsHistory


def test_mcmi_stage_logs_the_teacher_terms_and_returns_the_summary(tmp_path: Path) -> None:
    history = MetricsHistory()
    ctx = DemoContext(fast=True, seed=0, out=tmp_path, loggers=[history])
    PARTS["mcmi"].configure(ctx)
    [stage] = ctx.extra_stages
    summary = stage(ctx)
    names = ("teacher_ce_test_acc", "teacher_mcmi_test_acc", "student_from_ce_test_acc", "student_from_mcmi_test_acc")
    assert {f"mcmi/{name}" for name in names} <= summary.keys()
    assert all(0.0 <= summary[f"mcmi/{name}"] <= 1.0 for name in names)
    logged = {key for row in history.rows for key in row}
    assert {"mcmi/cmi", "mcmi/ce", "mcmi/val_cmi", "mcmi/teacher_mcmi_test_cmi"} <= logged
