from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins import MixedPrecision

from lightning_info.callbacks import FisherMask
from lightning_info.fisher import empirical_fisher, topk_masks
from tests.helpers.lightning import run_ddp, trainer_kwargs
from tests.helpers.models import MLPClassifier, classification_data, loader


def _adamw(params: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=0.05, weight_decay=0.1)


def _masks(model: MLPClassifier) -> dict[str, torch.Tensor]:
    return _masks_of(model.state_dict())


def _masks_of(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix("fisher_mask."): v.clone() for k, v in state.items() if "fisher_mask" in k}


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed-scaler"])
def test_fit_keeps_masked_entries_bit_identical(tmp_path: Path, wandb_offline: Any, precision: str) -> None:
    model = MLPClassifier(optimizer_factory=_adamw)
    data = loader(classification_data(64), batch_size=16)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    fisher = empirical_fisher(model, data, num_samples=32)
    expected = topk_masks(fisher, 0.1, always_train=["net.4.bias"])
    callback = FisherMask(keep_ratio=0.1, num_samples=32, always_train=["net.4.bias"])
    amp: dict[str, Any] = (
        {"precision": "bf16-mixed"}
        if precision == "bf16-mixed"  # the scaler path: unscale, then on_before_optimizer_step, clip, scaler.step
        else {"plugins": [MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))]}
    )
    kwargs = trainer_kwargs(
        tmp_path,
        max_steps=6,
        gradient_clip_val=0.5,
        accumulate_grad_batches=2,
        logger=wandb_offline(),
        log_every_n_steps=1,
        **amp,
    )
    trainer = Trainer(callbacks=[callback], **kwargs)
    trainer.fit(model, data)
    masks = _masks(model)
    assert list(masks) == [n.replace(".", "__") for n in before]
    total = sum(p.numel() for p in before.values())
    assert sum(int(m.sum()) for m in masks.values()) == int(0.1 * total)
    for name, param in model.named_parameters():
        mask = masks[name.replace(".", "__")]
        assert torch.equal(mask, expected[name])
        assert torch.equal(param[~mask], before[name][~mask]), name  # bit-identical despite weight decay
        if mask.any():
            assert bool((param[mask] != before[name][mask]).all()), name  # every kept entry moved
    assert masks["net__4__bias"].all()
    per_layer = {
        layer: sum(int(masks[f"net__{layer[4:]}__{p}"].sum()) for p in ("weight", "bias"))
        / sum(masks[f"net__{layer[4:]}__{p}"].numel() for p in ("weight", "bias"))
        for layer in ("net.0", "net.2", "net.4")
    }
    assert per_layer["net.4"] > 3 / 51  # the 3 always-trained biases
    assert float(trainer.callback_metrics["fisher/kept_frac"]) == pytest.approx(int(0.1 * total) / total)
    logged = {k: v for row in wandb_offline.history() for k, v in row.items()}
    assert logged["fisher/kept_frac"] == pytest.approx(int(0.1 * total) / total)
    for layer, fraction in per_layer.items():
        assert logged[f"fisher/kept_frac/{layer}"] == pytest.approx(fraction)
    assert logged["fisher/num_kept"] == int(0.1 * total)
    assert logged["fisher/histogram/_type"] == "histogram"
    assert sum(logged["fisher/histogram/values"]) == sum(int((f > 0).sum()) for f in fisher.values())  # log10: F > 0


def test_masks_gradients_before_clipping(tmp_path: Path) -> None:
    # one SGD step with an active norm clip: the clip must see only the kept gradient entries
    model = MLPClassifier(optimizer_factory=lambda p: torch.optim.SGD(p, lr=1.0))
    data = loader(classification_data(64), batch_size=16)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    masks = topk_masks(empirical_fisher(model, data, num_samples=64), 0.05)
    x, y = next(iter(data))
    grads = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x), y), list(model.parameters()))
    kept = {n: g * masks[n] for n, g in zip(before, grads, strict=True)}
    kept_norm = torch.sqrt(sum(g.pow(2).sum() for g in kept.values()))
    full_norm = torch.sqrt(sum(g.pow(2).sum() for g in grads))
    clip = 0.5 * float(kept_norm)
    assert full_norm > 1.5 * kept_norm  # clipping the unmasked gradient would give a visibly smaller step
    callback = FisherMask(keep_ratio=0.05, num_samples=64)
    Trainer(callbacks=[callback], **trainer_kwargs(tmp_path, max_steps=1, gradient_clip_val=clip)).fit(model, data)
    for name, param in model.named_parameters():
        step = before[name] - kept[name] * clip / (float(kept_norm) + 1e-6)
        torch.testing.assert_close(param.detach(), step, rtol=1e-5, atol=1e-7)


def test_sgd_momentum_and_full_freeze_of_tensors(tmp_path: Path) -> None:
    # keep only the head: the other tensors get grad=None (no optimizer state) and are still restored exactly
    model = MLPClassifier(optimizer_factory=lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.5))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    head = sum(p.numel() for n, p in model.named_parameters() if n.startswith("net.4"))
    ratio = head / sum(p.numel() for p in model.parameters()) + 1e-9
    trainer = Trainer(callbacks=[FisherMask(ratio, num_samples=16, include=["net.4"])], **trainer_kwargs(tmp_path))
    trainer.fit(model, loader(classification_data()))
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]) != name.startswith("net.4"), name
    state = trainer.optimizers[0].state
    assert {id(p) for p in state} == {id(model.net[4].weight), id(model.net[4].bias)}


def test_resume_reuses_masks_without_recomputing(tmp_path: Path) -> None:
    data = loader(classification_data(64), batch_size=16)
    model = MLPClassifier(optimizer_factory=_adamw)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first = FisherMask(keep_ratio=0.2, num_samples=32)
    Trainer(callbacks=[first, checkpoint], **trainer_kwargs(tmp_path, max_steps=2, enable_checkpointing=True)).fit(
        model, data
    )
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert first.num_computations == 1
    torch.manual_seed(123)
    fresh = MLPClassifier(optimizer_factory=_adamw)  # different init: recomputing would give other masks
    second = FisherMask(keep_ratio=0.2, num_samples=32)
    trainer = Trainer(callbacks=[second], **trainer_kwargs(tmp_path, max_steps=5))
    trainer.fit(fresh, data, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert second.num_computations == 0 and trainer.global_step == 5
    masks = _masks(fresh)
    for name, param in fresh.named_parameters():
        mask = masks[name.replace(".", "__")]
        assert torch.equal(mask, saved["state_dict"][f"fisher_mask.{name.replace('.', '__')}"])
        assert torch.equal(param[~mask], saved["state_dict"][name][~mask])
    # validate from the checkpoint with a fresh module: the masks load (strictly) without training
    third = MLPClassifier()
    Trainer(callbacks=[FisherMask(keep_ratio=0.2)], **trainer_kwargs(tmp_path)).validate(
        third, data, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"), verbose=False
    )
    assert all(torch.equal(m, _masks(third)[k]) for k, m in masks.items())


def test_recompute_every_n_epochs(tmp_path: Path) -> None:
    model = MLPClassifier(optimizer_factory=_adamw)
    callback = FisherMask(keep_ratio=0.2, num_samples=16, recompute_every_n_epochs=1)
    trainer = Trainer(callbacks=[callback], **trainer_kwargs(tmp_path, max_steps=-1, max_epochs=3))
    trainer.fit(model, loader(classification_data(32)))
    assert callback.num_computations == 3 and callback.computed_at_epoch == 2
    assert callback.state_dict() == {"computed_at_epoch": 2, "keep_ratio": 0.2}


def test_recompute_after_resuming_from_an_epoch_s_last_batch(tmp_path: Path) -> None:
    """Regression: resumed from a checkpoint written on the last batch of epoch 0 (every_n_train_steps), Lightning
    skips on_train_epoch_start of epoch 1, so the masks due at epoch 1 were never recomputed."""
    data = loader(classification_data(32), batch_size=16)  # 2 batches per epoch

    def run(root: Path, max_steps: int, callbacks: list[Any], ckpt_path: Path | None = None):
        torch.manual_seed(0)
        mask, model = FisherMask(keep_ratio=0.2, num_samples=16, recompute_every_n_epochs=1), MLPClassifier()
        kwargs = trainer_kwargs(root, max_steps=max_steps, enable_checkpointing=bool(callbacks))
        Trainer(callbacks=[mask, *callbacks], **kwargs).fit(model, data, ckpt_path=ckpt_path)
        return mask, model

    straight, straight_model = run(tmp_path / "a", 4, [])
    run(tmp_path / "b", 2, [ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2)])
    resumed, resumed_model = run(tmp_path / "c", 4, [], tmp_path / "ckpt" / "epoch=0-step=2.ckpt")
    assert straight.num_computations == 2 and resumed.num_computations == 1  # epoch 1's, not epoch 0's again
    assert resumed.computed_at_epoch == straight.computed_at_epoch == 1
    for key, mask in _masks(straight_model).items():
        assert torch.equal(_masks(resumed_model)[key], mask)
    for got, expected in zip(resumed_model.parameters(), straight_model.parameters(), strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"keep_ratio must be in \(0, 1\], got 1.5"):
        FisherMask(keep_ratio=1.5)
    with pytest.raises(ValueError, match=r"keep_ratio must be in \(0, 1\], got 0"):
        FisherMask(keep_ratio=0)
    with pytest.raises(ValueError, match="num_samples must be >= 1, got 0"):
        FisherMask(num_samples=0)
    with pytest.raises(ValueError, match="recompute_every_n_epochs must be >= 1"):
        FisherMask(recompute_every_n_epochs=0)
    with pytest.raises(ValueError, match="stage_dataloader must be one of"):
        FisherMask(stage_dataloader="val")
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        FisherMask(loss_fn=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="always_train must be a list"):
        FisherMask(always_train="head")  # type: ignore[arg-type]
    frozen = MLPClassifier()
    frozen.net.requires_grad_(False)
    with pytest.raises(ValueError, match="has no trainable parameters"):
        Trainer(callbacks=[FisherMask()], **trainer_kwargs(tmp_path)).fit(frozen, loader(classification_data()))
    bad_loss = FisherMask(num_samples=8, loss_fn=lambda out, y: out.sum(0))
    with pytest.raises(ValueError, match="one scalar per sample"):
        Trainer(callbacks=[bad_loss], **trainer_kwargs(tmp_path)).fit(MLPClassifier(), loader(classification_data()))


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_identical_masks(tmp_path: Path) -> None:
    run_ddp(
        tmp_path,
        """
        import torch
        from lightning.pytorch import Trainer
        from lightning_info.callbacks import FisherMask
        from tests.helpers.lightning import trainer_kwargs
        from tests.helpers.models import MLPClassifier, classification_data, loader

        torch.manual_seed(0)
        model = MLPClassifier(optimizer_factory=lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1))
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        callback = FisherMask(keep_ratio=0.1, num_samples=32)
        trainer = Trainer(callbacks=[callback], **trainer_kwargs(OUT, devices=2, strategy="ddp", max_steps=3))
        trainer.fit(model, loader(classification_data(64), batch_size=8))
        masks = {k: v for k, v in model.state_dict().items() if k.startswith("fisher_mask.")}
        unchanged = all(torch.equal(p[~masks["fisher_mask." + n.replace(".", "__")]],
                                    before[n][~masks["fisher_mask." + n.replace(".", "__")]])
                        for n, p in model.named_parameters())
        torch.save({"masks": masks, "unchanged": unchanged, "w": model.net[0].weight.detach()},
                   OUT / f"rank{trainer.global_rank}.pt")
        """,
    )
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert r0["unchanged"] and r1["unchanged"]
    assert r0["masks"].keys() == r1["masks"].keys() and len(r0["masks"]) == 6
    for key in r0["masks"]:
        assert torch.equal(r0["masks"][key], r1["masks"][key])
    assert torch.equal(r0["w"], r1["w"])


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_masks_from_rank_dependent_scores_are_rank_0_s(tmp_path: Path) -> None:
    """Scores that differ per rank (an overridden ``compute_scores``, e.g. an unseeded random control): every rank
    trains rank 0's masks (the broadcast), not its own."""
    run_ddp(
        tmp_path,
        """
        import torch
        from lightning.pytorch import Trainer
        from lightning_info.callbacks import FisherMask
        from tests.helpers.lightning import trainer_kwargs
        from tests.helpers.models import MLPClassifier, classification_data, loader

        class RankScores(FisherMask):
            def compute_scores(self, trainer, pl_module):
                generator = torch.Generator().manual_seed(trainer.global_rank)
                scores = {n: torch.rand(p.shape, generator=generator) for n, p in pl_module.named_parameters()}
                torch.save(scores, OUT / f"scores{trainer.global_rank}.pt")
                return scores

        torch.set_num_threads(1)
        torch.manual_seed(0)
        model = MLPClassifier()
        trainer = Trainer(callbacks=[RankScores(keep_ratio=0.1)],
                          **trainer_kwargs(OUT, devices=2, strategy="ddp", max_steps=1))
        trainer.fit(model, loader(classification_data(16), batch_size=8))
        torch.save(model.state_dict(), OUT / f"rank{trainer.global_rank}.pt")
        """,
    )
    scores = [torch.load(tmp_path / f"scores{r}.pt") for r in range(2)]
    expected = [topk_masks(s, 0.1) for s in scores]
    assert any(not torch.equal(expected[0][n], expected[1][n]) for n in expected[0])  # the ranks disagree
    for rank in range(2):
        masks = _masks_of(torch.load(tmp_path / f"rank{rank}.pt"))
        assert masks.keys() == {n.replace(".", "__") for n in expected[0]}
        for name, mask in expected[0].items():
            assert torch.equal(masks[name.replace(".", "__")], mask)


def test_failed_fit_leaves_no_optimizer_post_hook(tmp_path: Path) -> None:
    """Regression (issue 14, item 5): after a fit that raised, FisherMask's step post-hook stayed on the optimizer
    and kept writing the frozen entries back at every later step the user took with it."""

    class Failing(MLPClassifier):
        def configure_optimizers(self) -> torch.optim.Optimizer:
            self.optimizer = super().configure_optimizers()
            return self.optimizer

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            if self.global_step == 1:  # after one masked step
                raise RuntimeError("boom")
            return super().training_step(batch, batch_idx)

    model = Failing()
    trainer = Trainer(callbacks=[FisherMask(keep_ratio=0.1, num_samples=16)], **trainer_kwargs(tmp_path, max_steps=3))
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(model, loader(classification_data(32)))
    assert not _masks(model)["net__0__weight"].all()  # the masks were set: some entries were frozen
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    model.optimizer.step()
    for name, param in model.named_parameters():
        assert bool((param != before[name]).all()), name  # nothing writes frozen entries back any more


def test_resume_with_another_keep_ratio_warns_that_the_masks_are_recomputed(tmp_path: Path) -> None:
    """Regression (issue 14 item 12): the checkpointed masks were silently discarded."""
    data = loader(classification_data(64), batch_size=16)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first = FisherMask(keep_ratio=0.2, num_samples=32)
    kwargs = trainer_kwargs(tmp_path, max_steps=2, enable_checkpointing=True)
    Trainer(callbacks=[first, checkpoint], **kwargs).fit(MLPClassifier(optimizer_factory=_adamw), data)
    second = FisherMask(keep_ratio=0.5, num_samples=32)
    trainer = Trainer(callbacks=[second], **trainer_kwargs(tmp_path, max_steps=3))
    with pytest.warns(UserWarning, match=r"FisherMask\(keep_ratio=0.5\).*kept fraction 0\.19.*DISCARDED"):
        trainer.fit(MLPClassifier(optimizer_factory=_adamw), data, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert second.num_computations == 1
    masks = _masks(trainer.lightning_module)
    kept = sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
    assert kept == pytest.approx(0.5, abs=0.02)
