"""Every part at once, logged to a W&B offline run and read back: each documented key at the right steps, no other.

The documented keys are the tables of docs/entropy_guided_attention.md, docs/metrics.md (InformationMonitor),
docs/fisher.md, docs/mcmi.md and docs/sam.md. "The right step" is the x-axis ``trainer/global_step``: per-step keys
at the index of the optimizer step whose batch they describe (Lightning's own ``train_loss`` convention), and the
values are cross-checked between parts that see the same batch, so a key logged from another pass or step fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers.wandb_reader import series
from tests.integration.all_parts import (
    INFO_EVERY,
    INFO_LAYERS,
    INFO_METRICS,
    KEEP_RATIO,
    RHO,
    dataset,
    fit,
    make_callbacks,
)

STEPS = 6  # two epochs of 3 batches, a validation run after each
EPOCH_ENDS = [3, 6]  # trainer.global_step at the end of each training epoch / validation run
# Lightning logs validation metrics (pl_module.log in validation: val_loss, mcmi/val_cmi) before it counts the
# epoch's last step, i.e. at trainer.global_step - 1; the parts that log validation figures themselves use
# trainer.global_step, the optimizer steps taken, as documented in docs/metrics.md.
LIGHTNING_VAL_STEPS = [2, 5]
MEDIA = ("attn_entropy/heatmap", "fisher/histogram", "info/metrics_table", "info/heatmap", "info/plane_table")


def _expected(fisher_layers: list[str]) -> dict[str, list[int]]:
    every_step = list(range(STEPS))
    expected = dict.fromkeys(
        ["train_loss", "mcmi/cmi", "mcmi/ce", "sam/grad_norm", "sam/perturbation_norm", "sam/sharpness"]
        + [f"attn_entropy/{k}" for k in ("reg", "normalized_mean", "overload_frac", "collapse_frac")]
        + [f"attn_entropy/layer{i}/mean" for i in range(2)]
        + [f"attn_entropy/layer{i}/head{j}" for i in range(2) for j in range(2)]
        + [f"attn_entropy/temperature/layer{i}/head{j}" for i in range(2) for j in range(2)],
        every_step,
    )
    info_steps = list(range(0, STEPS, INFO_EVERY))
    for layer in INFO_LAYERS:
        expected.update({f"info/{layer}/{m}": info_steps for m in (*INFO_METRICS, "mi_xt", "mi_ty")})
    expected.update({key: [0] for key in ("fisher/kept_frac", "fisher/num_kept", "fisher/histogram")})
    expected.update({f"fisher/kept_frac/{layer}": [0] for layer in fisher_layers})
    # info/plane is a wandb.plot.scatter: W&B stores its data table under "info/plane_table"
    expected.update({key: EPOCH_ENDS for key in ("attn_entropy/heatmap", "info/metrics_table", "info/heatmap")})
    expected["info/plane_table"] = EPOCH_ENDS
    expected.update({key: LIGHTNING_VAL_STEPS for key in ("val_loss", "mcmi/val_cmi")})
    return expected


def _steps(rows: list[dict[str, Any]], key: str) -> list[int]:
    if key in MEDIA:  # media and tables are nested: "<key>/_type", ...
        return [step for step, _ in series(rows, f"{key}/_type")]
    return [step for step, _ in series(rows, key)]


@pytest.mark.wandb
@pytest.mark.slow
def test_every_documented_key_is_in_the_wandb_run_at_its_step(tmp_path: Path, wandb_offline: Any) -> None:
    # batch centroids: MCMICallback's mcmi/cmi is then the CMI of the batch, which InformationMonitor's "cmi" of the
    # head recomputes independently on the same (clean-pass) logits
    trainer, model, recorder, _ = fit(tmp_path / "run", max_steps=STEPS, parts=make_callbacks(centroids="batch"),
                                      val_data=dataset(seed=1), logger=[wandb_offline()])  # fmt: skip
    rows = wandb_offline.history()
    fisher_layers = sorted({name.rpartition(".")[0] for name, _ in model.named_parameters()})
    expected = _expected(fisher_layers)

    for key, steps in expected.items():
        assert _steps(rows, key) == steps, key
    logged = {k.split("/_")[0] if "/_" in k else k for row in rows for k in row if not k.startswith("_")}
    logged = {k for k in logged if not any(k.startswith(f"{m}/") for m in MEDIA)}
    assert logged - set(expected) == {"epoch", "trainer/global_step"}  # nothing undocumented

    # the values W&B stored are the ones the parts logged (an in-memory logger saw the same calls)
    for key, values in recorder.series().items():
        assert dict(series(rows, key)) == values, key
    # parts that see the same batch agree, step by step
    by_step = {key: dict(series(rows, key)) for key in ("train_loss", "mcmi/ce", "mcmi/cmi", "info/head/cmi")}
    for step, loss in by_step["train_loss"].items():
        assert by_step["mcmi/ce"][step] == pytest.approx(loss, rel=1e-6)  # MCMI's captured logits: the clean pass's
    for step, cmi in by_step["info/head/cmi"].items():
        assert by_step["mcmi/cmi"][step] == pytest.approx(cmi, rel=1e-5, abs=1e-7)  # the monitor: that step's batch
    assert all(v == pytest.approx(RHO) for _, v in series(rows, "sam/perturbation_norm"))
    total = sum(p.numel() for p in model.parameters())
    [(_, kept)] = series(rows, "fisher/num_kept")
    assert kept == int(KEEP_RATIO * total)
    assert series(rows, "attn_entropy/temperature/layer0/head0")[0] == (0, 1.0)  # logged before step 0's update
    assert trainer.global_step == STEPS
