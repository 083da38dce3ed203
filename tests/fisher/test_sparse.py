from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Trainer
from torch.nn.utils import parametrize

from lightning_info.callbacks import FisherMask
from lightning_info.fisher import empirical_fisher, topk_masks, train_kept_entries_only
from tests.helpers.lightning import trainer_kwargs
from tests.helpers.models import MLPClassifier, classification_data, loader


def _adamw(params: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=0.05, weight_decay=0.1)


def test_same_training_as_the_callback_with_optimizer_state_of_size_k(tmp_path: Path) -> None:
    data = loader(classification_data(64), batch_size=16)
    dense = MLPClassifier(optimizer_factory=_adamw)
    sparse = copy.deepcopy(dense)
    before = {n: p.detach().clone() for n, p in dense.named_parameters()}
    masks = topk_masks(empirical_fisher(dense, data, num_samples=32), 0.1, always_train=["net.4.bias"])
    assert not masks["net.0.bias"].any()  # one fully frozen tensor, one fully kept, the others partly kept
    k = sum(int(m.sum()) for m in masks.values())

    train_kept_entries_only(sparse, masks)
    x = next(iter(data))[0]
    torch.testing.assert_close(sparse(x), dense(x), rtol=0, atol=0)  # same function before training
    assert sum(p.numel() for p in sparse.parameters() if p.requires_grad) == k
    kwargs = trainer_kwargs(tmp_path, max_steps=6, gradient_clip_val=0.5, accumulate_grad_batches=2)
    callback = FisherMask(keep_ratio=0.1, num_samples=32, always_train=["net.4.bias"])
    Trainer(callbacks=[callback], **kwargs).fit(dense, data)
    trainer = Trainer(**kwargs)
    trainer.fit(sparse, data)
    state = trainer.optimizers[0].state
    assert sum(s["exp_avg"].numel() + s["exp_avg_sq"].numel() for s in state.values()) == 2 * k

    for layer in (sparse.net[0], sparse.net[2], sparse.net[4]):
        for name in list(getattr(layer, "parametrizations", {})):
            parametrize.remove_parametrizations(layer, name)
    trained = dict(sparse.named_parameters())
    assert sorted(trained) == sorted(before)  # remove_parametrizations re-registers at the end
    for name, param in dense.named_parameters():
        mask = masks[name]
        assert torch.equal(trained[name][~mask], before[name][~mask]), name
        assert bool((trained[name][mask] != before[name][mask]).all()), name
        torch.testing.assert_close(trained[name], param, rtol=1e-5, atol=1e-6)  # elementwise AdamW: same steps


def test_bad_masks() -> None:
    model = MLPClassifier()
    with pytest.raises(ValueError, match=r"'net\.9\.weight', which is not a parameter"):
        train_kept_entries_only(model, {"net.9.weight": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"masks\['net.0.bias'\] has shape \(3,\), the parameter \(16,\)"):
        train_kept_entries_only(model, {"net.0.bias": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(TypeError, match=r"masks\['net.0.bias'\] must be a bool tensor, got torch.float32"):
        train_kept_entries_only(model, {"net.0.bias": torch.ones(16)})
