"""``register_information_metric`` never replaces a metric silently."""

from __future__ import annotations

import pytest
import torch

from lightning_info.callbacks.information_monitor import INFORMATION_METRICS, register_information_metric


def test_built_in_metrics_cannot_be_replaced() -> None:
    before = INFORMATION_METRICS["vendi"]
    with pytest.raises(ValueError, match="'vendi' is a built-in information metric"):
        register_information_metric("vendi", lambda z, _: z.sum())
    with pytest.raises(ValueError, match="'vendi' is a built-in information metric"):
        register_information_metric("vendi", lambda z, _: z.sum(), overwrite=True)
    assert INFORMATION_METRICS["vendi"] is before


def test_a_user_metric_is_replaced_only_with_overwrite() -> None:
    register_information_metric("rows", lambda z, _: torch.tensor(float(z.shape[0])))
    try:
        first = INFORMATION_METRICS["rows"]
        with pytest.raises(ValueError, match="'rows' is registered already; pass overwrite=True"):
            register_information_metric("rows", lambda z, _: z.sum())
        assert INFORMATION_METRICS["rows"] is first
        register_information_metric("rows", lambda z, _: z.sum(), overwrite=True)
        assert INFORMATION_METRICS["rows"] is not first
    finally:
        del INFORMATION_METRICS["rows"]


def test_flags_must_be_bools() -> None:
    with pytest.raises(TypeError, match="needs_targets must be a bool, got str"):
        register_information_metric("x", lambda z, _: z.sum(), needs_targets="yes")  # type: ignore[arg-type]
    assert "x" not in INFORMATION_METRICS
