"""Every part at once under SAM in 32, bf16-mixed and 16-mixed (GradScaler): finite, masks hold, temperatures learn.

The three runs train the same model on the same batches; the mixed-precision runs are also compared with the
float32 one, step by step, so a part that behaves differently under autocast or under the GradScaler path (which
bypasses ``optimizer.step``) shows up as a difference far above the rounding of the low-precision format.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from lightning_info.optim import SharpnessAwarePrecision
from tests.integration.all_parts import RHO, Snapshots, fit, params_of

STEPS = 6

# Tolerances against the float32 run, per step, relative (measured maxima over the 6 steps in brackets). bfloat16 has
# an 8-bit significand (one rounding = 2^-9 = 2e-3 relative); float16 an 11-bit one (2^-12 = 2.4e-4). The errors of
# several steps add up, hence the factors: bf16 [train_loss 1.0e-3, mcmi/cmi 6.2e-3, attn_entropy/reg 1.7e-3,
# sam/grad_norm 3.3e-3; parameters 1.4e-3 absolute], 16-mixed [8e-5, 1.2e-3, 4.7e-4, 3.1e-4; 1.6e-4]. A part that
# computes something else in a precision is far outside: before SharpnessAwarePrecision ran on_before_optimizer_step
# after every pass, the FisherMask gradient mask missed the 16-mixed perturbation and sam/grad_norm was 10% off.
TOLERANCES = {"bf16-mixed": (3e-2, 5e-3), "16-mixed": (5e-3, 1e-3)}  # (relative for logged values, absolute params)
COMPARED = ("train_loss", "mcmi/cmi", "attn_entropy/reg", "sam/grad_norm")  # sam/sharpness: a difference, left out


def _precision(name: str) -> dict[str, Any]:
    if name == "16-mixed":  # Lightning turns "16-mixed" into bf16 on CPU: the GradScaler path needs the plugin
        return {"plugins": [SharpnessAwarePrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))]}
    return {"precision": name}


def _run(root: Path, name: str) -> dict[str, Any]:
    snapshots = Snapshots()
    trainer, model, recorder, _ = fit(root, max_steps=STEPS, callbacks=[snapshots], **_precision(name))
    assert trainer.global_step == STEPS
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    return {
        "series": recorder.series(),
        "params": params_of(model),
        "snapshots": snapshots,
        "model": model,
        "scale": None if scaler is None else scaler.get_scale(),
    }


@pytest.fixture(scope="module")
def float32_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _run(tmp_path_factory.mktemp("float32"), "32")


@pytest.mark.parametrize("name", ["32", "bf16-mixed", "16-mixed"])
def test_all_parts_under_sam_in_each_precision(tmp_path: Path, float32_run: dict[str, Any], name: str) -> None:
    run = float32_run if name == "32" else _run(tmp_path, name)
    series, model, snapshots = run["series"], run["model"], run["snapshots"]

    # every logged value finite, every part logged, the same keys in every precision
    assert set(series) == set(float32_run["series"])
    for key, values in series.items():
        assert all(math.isfinite(v) for v in values.values()), key
    assert sorted(series["train_loss"]) == list(range(STEPS))
    assert all(v == pytest.approx(RHO) for v in series["sam/perturbation_norm"].values())
    if name == "16-mixed":
        assert run["scale"] == 2.0**16  # no step was skipped for overflow: all 6 steps are comparable

    # FisherMask: frozen entries bit-identical despite SGD momentum and weight decay; every kept entry moved
    masks, initial = snapshots.masks, snapshots.initial
    frozen = sum(int((~m).sum()) for m in masks.values())
    assert frozen > 0.5 * sum(m.numel() for m in masks.values())
    for param_name, param in model.named_parameters():
        mask = masks[param_name]
        assert torch.equal(param.detach()[~mask], initial[param_name][~mask]), param_name
        assert bool((param.detach()[mask] != initial[param_name][mask]).all()), param_name

    # EntropyGuidedAttention: the temperatures (trained entirely: always_train) start at 1 and move
    for layer in model.encoder.layers:
        assert bool((layer.self_attn.temperature.detach() - 1.0).abs().gt(1e-4).all())
    for layer in range(2):
        for head in range(2):
            logged = series[f"attn_entropy/temperature/layer{layer}/head{head}"]
            assert logged[0] == 1.0 and logged[STEPS - 1] != 1.0

    if name == "32":
        return
    rel, atol = TOLERANCES[name]
    reference = float32_run["series"]
    for key in COMPARED:
        for step, value in reference[key].items():
            assert series[key][step] == pytest.approx(value, rel=rel), (key, step)
    for param_name, value in float32_run["params"].items():
        torch.testing.assert_close(run["params"][param_name], value, rtol=0, atol=atol)
