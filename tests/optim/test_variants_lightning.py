"""GSAM, LookSAM, WSAM, FriendlySAM inside a real ``Trainer.fit``: the float64 reference, clean-loss logging,
clipping once, BatchNorm once, 16-mixed, accumulation refused, exact resume, DDP, ``SharpnessMonitor``."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import Tensor, nn
from torch.func import functional_call

from lightning_info.callbacks import SharpnessMonitor
from lightning_info.optim import GSAM, WSAM, FriendlySAM, LookSAM
from tests.helpers.lightning import RecordingLogger, load_script, run_ddp, trainer_kwargs
from tests.helpers.models import MLPClassifier, TinyCNN, classification_data, loader
from tests.optim.reference import SGDReference, params_of
from tests.optim.reference_variants import variant_trajectory
from tests.optim.test_lightning import BatchNormCheck, Classifier, Exploding, _assert_params, _batches, _data, _fit

ce = nn.functional.cross_entropy

# id: (reference method, class, kwargs, closure calls in 3 steps)
VARIANTS: dict[str, tuple[str, type, dict[str, Any], int]] = {
    "gsam": ("gsam", GSAM, {"rho": 0.05, "alpha": 0.2}, 6),
    "looksam": ("looksam", LookSAM, {"rho": 0.05, "k": 2, "alpha": 0.7}, 5),
    "wsam": ("wsam", WSAM, {"rho": 0.05, "gamma": 0.9}, 6),
    "fsam": ("fsam", FriendlySAM, {"rho": 0.05, "sigma": 1.0, "lmbda": 0.9}, 6),
}
IDS = list(VARIANTS)


def _factory(variant: str, **base: Any):
    _, cls, kwargs, _ = VARIANTS[variant]
    return lambda p: cls(p, torch.optim.SGD, **kwargs, **{"lr": 0.1, "momentum": 0.9, **base})


@pytest.mark.parametrize("variant", IDS)
def test_fit_equals_the_float64_reference_clips_once_and_logs_the_clean_loss_once(tmp_path, variant) -> None:
    method, _, kwargs, calls = VARIANTS[variant]
    dataset = _data(dtype=torch.float64)
    model = Classifier(optimizer_factory=_factory(variant))
    reference = copy.deepcopy(model).double()
    expected, clean_losses, _ = variant_trajectory(
        method, reference, ce, _batches(dataset), SGDReference(lr=0.1, momentum=0.9), clip_value=0.05, **kwargs
    )
    logger = RecordingLogger()
    _fit(model, tmp_path, dataset, precision="64-true", max_steps=3, logger=logger, log_every_n_steps=1,
         gradient_clip_val=0.05)  # fmt: skip
    _assert_params(model, expected[-1], atol=1e-10)
    assert model.training_steps == calls and model.clean_training_steps == 3
    assert logger.values("train_loss") == pytest.approx(clean_losses, abs=1e-10)


@pytest.mark.parametrize("variant", IDS)
def test_batchnorm_statistics_update_once_per_step(tmp_path, variant) -> None:
    check = BatchNormCheck()
    dataset = classification_data(n=48, in_dim=64, shape=(1, 8, 8))
    _fit(TinyCNN(optimizer_factory=_factory(variant, momentum=0.0)), tmp_path, dataset, max_steps=3, callbacks=[check])
    assert check.checked == 3


def _scaler_plugin():
    from lightning_info.optim import SharpnessAwarePrecision

    return SharpnessAwarePrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))


@pytest.mark.parametrize("variant", IDS)
def test_16_mixed_needs_the_plugin_and_then_follows_the_32_bit_run(tmp_path, variant) -> None:
    with pytest.raises(TypeError, match="SharpnessAwarePrecision"):
        _fit(Classifier(optimizer_factory=_factory(variant)), tmp_path, max_steps=1,
             plugins=[MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))])  # fmt: skip
    full, half = Classifier(optimizer_factory=_factory(variant)), Classifier(optimizer_factory=_factory(variant))
    half.load_state_dict(full.state_dict())
    _fit(full, tmp_path, max_steps=3)
    trainer = _fit(half, tmp_path, max_steps=3, plugins=[_scaler_plugin()])
    assert half.training_steps == VARIANTS[variant][3]
    assert trainer.precision_plugin.scaler.get_scale() == 2.0**16  # no overflow, no skipped step
    _assert_params(half, params_of(full), atol=5e-3)  # float16 autocast; an unscaled gradient would be 65536x off
    moved = max(float((a - b).abs().max()) for a, b in zip(params_of(full).values(), params_of(Classifier(
        optimizer_factory=None)).values(), strict=True))  # fmt: skip
    assert moved > 5e-3


class StateSnapshots(Callback):
    """The weights and every optimizer state tensor at the start of every batch."""

    def __init__(self) -> None:
        self.snapshots: list[tuple[dict[str, Tensor], list[dict[str, Tensor]]]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        optimizer = trainer.optimizers[0]
        state = [{k: v.clone() for k, v in optimizer.state[p].items()} for p in pl_module.parameters()]
        self.snapshots.append((params_of(pl_module), state))


@pytest.mark.parametrize(
    ("variant", "explode_at"),
    [("gsam", 4), ("wsam", 4), ("fsam", 4), ("looksam", 4), ("looksam", 6)],
    ids=["gsam", "wsam", "fsam", "looksam-reusing", "looksam-perturbed"],
)
def test_16_mixed_skips_an_overflowing_step_with_weights_and_state_unchanged(tmp_path, variant, explode_at) -> None:
    """Closure calls of LookSAM k=3: step 0 = 1, 2; step 1 = 3; step 2 = 4 (reusing); step 3 = 5, 6 (SAM step)."""
    _, cls, kwargs, _ = VARIANTS[variant]
    kwargs = {**kwargs, "k": 3} if cls is LookSAM else kwargs
    model = Exploding(explode_at=explode_at, optimizer_factory=lambda p: cls(p, torch.optim.SGD, **kwargs, lr=0.1,
                                                                               momentum=0.9))  # fmt: skip
    states = StateSnapshots()
    trainer = _fit(model, tmp_path, max_steps=5, plugins=[_scaler_plugin()], callbacks=[states])
    skipped = {"looksam": {4: 2, 6: 3}}.get(variant, {4: 1})[explode_at]
    (w0, s0), (w1, s1) = states.snapshots[skipped], states.snapshots[skipped + 1]
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert all(set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a) for a, b in zip(s0, s1, strict=True))
    assert any(s0)  # there was state to keep (momentum, g_v, EMA)
    assert not all(torch.equal(w1[k], v) for k, v in params_of(model).items())  # the next step moved again
    assert trainer.precision_plugin.scaler.get_scale() == 2.0**15


@pytest.mark.parametrize("variant", IDS)
def test_gradient_accumulation_is_refused_before_any_update(tmp_path, variant) -> None:
    model = Classifier(optimizer_factory=_factory(variant))
    before = params_of(model)
    with pytest.raises(RuntimeError, match=r"accumulate_grad_batches.*No weight was changed"):
        _fit(model, tmp_path, max_steps=2, accumulate_grad_batches=2)
    _assert_params(model, before, atol=0)


def _resumable(variant: str):
    def factory(p):
        optimizer = _factory(variant)(p)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    torch.manual_seed(0)
    return Classifier(optimizer_factory=factory).double()  # float64 already when Lightning restores the checkpoint


class StateAtStart(Callback):
    def on_train_start(self, trainer, pl_module):
        self.state = copy.deepcopy(trainer.optimizers[0].state_dict())


@pytest.mark.parametrize("variant", IDS)
def test_resume_restores_every_state_tensor_bit_identically_and_equals_the_straight_run(tmp_path, variant) -> None:
    dataset = _data(dtype=torch.float64)
    straight = _resumable(variant)
    _fit(straight, tmp_path / "a", dataset, precision="64-true", max_steps=6)
    first = _resumable(variant)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=3)
    trainer = _fit(first, tmp_path / "b", dataset, precision="64-true", max_steps=3, enable_checkpointing=True,
                   callbacks=[checkpoint])  # fmt: skip
    saved_state = copy.deepcopy(trainer.optimizers[0].state_dict())
    path = tmp_path / "ckpt" / "last.ckpt"
    assert torch.load(path, weights_only=True)["optimizer_states"][0]["sharpness_aware"] == {"step": 3}
    resumed, at_start = _resumable(variant), StateAtStart()
    trainer = Trainer(**trainer_kwargs(tmp_path / "c", max_steps=6, max_epochs=2, precision="64-true",
                                       callbacks=[at_start]))  # fmt: skip
    trainer.fit(resumed, loader(dataset), ckpt_path=str(path))
    keys = {"looksam": "looksam_g_v", "fsam": "friendly_sam_ema"}
    for index, state in saved_state["state"].items():
        restored = at_start.state["state"][index]
        assert set(restored) == set(state) and (variant not in keys or keys[variant] in state)
        for name, value in state.items():
            assert torch.equal(restored[name], value) and restored[name].dtype == value.dtype
    _assert_params(resumed, params_of(straight), atol=0)  # bit-identical


@pytest.mark.parametrize("variant", IDS)
def test_sharpness_monitor_logs_the_variant_statistics(tmp_path, variant) -> None:
    logger = RecordingLogger()
    _fit(Classifier(optimizer_factory=_factory(variant)), tmp_path, max_steps=4, logger=logger, log_every_n_steps=1,
         callbacks=[SharpnessMonitor()])  # fmt: skip
    steps = [step for step, m in logger.rows if "sam/perturbation_norm" in m]
    assert steps == ([0, 2] if variant == "looksam" else [0, 1, 2, 3])  # LookSAM k=2: its SAM steps only
    assert logger.values("sam/perturbation_norm") == pytest.approx([0.05] * len(steps))
    rows = [m for _, m in logger.rows if "sam/perturbation_norm" in m]
    assert all(m["sam/grad_norm"] > 0 and "sam/sharpness" in m for m in rows)


def test_sharpness_monitor_shows_the_gsam_rho_schedule(tmp_path) -> None:
    def factory(p):
        optimizer = GSAM(p, torch.optim.SGD, rho=0.1, rho_min=0.02, lr=0.1)
        scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=0.0, total_iters=4)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    logger = RecordingLogger()
    _fit(Classifier(optimizer_factory=factory), tmp_path, max_steps=4, logger=logger, log_every_n_steps=1,
         callbacks=[SharpnessMonitor()])  # fmt: skip
    assert logger.values("sam/perturbation_norm") == pytest.approx([0.1, 0.08, 0.06, 0.04])


SCRIPT = """
import torch
from lightning.pytorch import Trainer, seed_everything
from torch.utils.data import Subset
from lightning_info.optim import GSAM, WSAM, FriendlySAM, LookSAM
from tests.helpers.lightning import trainer_kwargs
from tests.helpers.models import MLPClassifier, classification_data, loader

torch.set_num_threads(1)
VARIANTS = {"gsam": (GSAM, {"alpha": 0.3}), "looksam": (LookSAM, {"k": 2}), "wsam": (WSAM, {}),
            "fsam": (FriendlySAM, {"lmbda": 0.5})}
for name, (optimizer, kwargs) in VARIANTS.items():
    seed_everything(0, verbose=False)
    model = MLPClassifier(in_dim=4, hidden=5, num_classes=3, optimizer_factory=lambda p: optimizer(
        p, torch.optim.SGD, lr=0.5, **kwargs))
    initial = {k: v.detach().clone() for k, v in model.named_parameters()}
    trainer = Trainer(**trainer_kwargs(
        OUT, devices=2, strategy="ddp", max_steps=2, max_epochs=1, use_distributed_sampler=False))
    shard = Subset(classification_data(n=32, in_dim=4), range(trainer.global_rank, 32, 2))
    trainer.fit(model, loader(shard, batch_size=8))
    final = {k: v.detach().clone() for k, v in model.named_parameters()}
    torch.save({"initial": initial, "final": final}, OUT / f"{name}-rank{trainer.global_rank}.pt")
"""


def _ddp_reference(variant: str, initial: dict[str, Tensor]) -> Tensor:
    """Two SGD(lr=0.5) steps over two ranks (m-sharpness: each rank perturbs with its own gradient)."""
    model = MLPClassifier(in_dim=4, hidden=5, num_classes=3)
    names, shapes = list(initial), [v.shape for v in initial.values()]
    x, y = classification_data(n=32, in_dim=4).tensors
    shards = [[(x[r::2][8 * t : 8 * t + 8], y[r::2][8 * t : 8 * t + 8]) for t in range(2)] for r in range(2)]

    def grad(flat: Tensor, batch) -> Tensor:
        def loss(f: Tensor) -> Tensor:
            parts = torch.split(f, [s.numel() for s in shapes])
            params = {n: t.reshape(s) for n, t, s in zip(names, parts, shapes, strict=True)}
            return ce(functional_call(model, params, (batch[0],)), batch[1])

        return torch.func.grad(loss)(flat)

    theta = torch.cat([v.reshape(-1) for v in initial.values()])
    ema = [torch.zeros_like(theta)] * 2
    g_v = None
    for t in range(2):
        g = [grad(theta, shards[r][t]) for r in range(2)]
        g_p = [grad(theta + 0.05 * g[r] / g[r].norm(), shards[r][t]) for r in range(2)]
        if variant == "gsam":  # each rank's g_p - alpha g_perp, averaged
            direction = sum(gp - 0.3 * (gr - (gr @ gp) / (gp @ gp) * gp) for gr, gp in zip(g, g_p, strict=True)) / 2
        elif variant == "wsam":  # base step with the mean g, then the decoupled mean sharpness term, kappa = 9
            direction = (g[0] + g[1]) / 2 + 9 * sum(gp - gr for gr, gp in zip(g, g_p, strict=True)) / 2
        elif variant == "looksam" and t == 0:  # SAM step: g_s and g_v averaged over the ranks
            direction = (g_p[0] + g_p[1]) / 2
            g_v = sum(gp - (gr @ gp) / (gr @ gr) * gr for gr, gp in zip(g, g_p, strict=True)) / 2
        elif variant == "looksam":  # reusing step: the global batch's gradient
            mean = (g[0] + g[1]) / 2
            direction = mean + 0.7 * mean.norm() / g_v.norm() * g_v
        else:  # fsam: per-rank EMA (lambda 0.5, sigma 1), the perturbed gradients averaged
            ema = [0.5 * m + 0.5 * gr for m, gr in zip(ema, g, strict=True)]
            d = [gr - m for gr, m in zip(g, ema, strict=True)]
            direction = sum(grad(theta + 0.05 * d[r] / d[r].norm(), shards[r][t]) for r in range(2)) / 2
        theta = theta - 0.5 * direction
    return theta


@pytest.mark.slow
@pytest.mark.ddp
def test_ddp_m_sharpness_keeps_the_ranks_identical_and_equals_the_two_shard_reference(tmp_path: Path) -> None:
    run_ddp(tmp_path, SCRIPT)
    for variant in ("gsam", "looksam", "wsam", "fsam"):
        ranks = [torch.load(tmp_path / f"{variant}-rank{r}.pt") for r in range(2)]
        for key in ranks[0]["final"]:
            assert torch.equal(ranks[0]["final"][key], ranks[1]["final"][key]), variant
        final = torch.cat([v.reshape(-1) for v in ranks[0]["final"].values()])
        torch.testing.assert_close(final, _ddp_reference(variant, ranks[0]["initial"]), atol=1e-5, rtol=0)


@pytest.mark.slow
def test_the_comparison_example_runs_the_variants_fast(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    optimizers = ["gsam", "wsam", "fsam", "looksam"]
    results = load_script("examples/sam_compare.py").main(
        ["--fast", "--no-wandb", "--threads", "1", "--out", str(tmp_path), "--optimizers", *optimizers]
    )
    assert list(results) == optimizers
    for result in results.values():
        assert 0 <= result["test_acc"][0] <= 1  # 3 power iterations after 3 batches: the eigenvalue is just finite
        assert all(math.isfinite(result[m][0]) for m in ("hessian_top_eig", "worst_case_gap", "train_loss"))
    table = (tmp_path / "results.md").read_text()
    assert all(f"| {name} |" in table for name in optimizers)
    header = next((tmp_path / "gsam-noise0.2-seed0").rglob("metrics.csv")).read_text().splitlines()[0]
    assert {"sam/perturbation_norm", "sam/sharpness", "sharpness/worst_case_gap"} <= set(header.split(","))
