"""Parameter-name patterns of topk_masks / FisherMask as users write them (suffix match on dotted components)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor, nn

from lightning_info.callbacks import FisherMask
from lightning_info.fisher import match_parameter_names, topk_masks
from tests.helpers.lightning import trainer_kwargs

NAMES = ["net.classifier.weight", "net.classifier.bias", "net.lm_head.weight", "head.weight", "net.enc.0.head.bias"]


def test_plain_names_match_whole_dotted_suffixes_and_globs_match_whole_names() -> None:
    match = lambda *patterns: match_parameter_names(NAMES, list(patterns), "always_train")  # noqa: E731
    assert match("classifier") == {"net.classifier.weight", "net.classifier.bias"}
    assert match("net.classifier") == match("classifier.bias") | {"net.classifier.weight"}
    assert match("head") == {"head.weight", "net.enc.0.head.bias"}  # not net.lm_head: "head" is a whole component
    assert match("0.head.bias") == {"net.enc.0.head.bias"}
    assert match("*head*") == {"net.lm_head.weight", "head.weight", "net.enc.0.head.bias"}
    assert match("head.*") == {"head.weight"}  # a glob is matched on the whole name, not as a suffix
    with pytest.raises(ValueError, match=r"always_train pattern 'classifer' matches no parameter; closest"):
        match("classifer")
    with pytest.raises(ValueError, match="pattern 'ead' matches no parameter"):  # not a suffix of whole components
        match("ead")


class _Wrapped(LightningModule):
    """A Hugging Face BERT classifier from a small config, wrapped as ``self.net``."""

    def __init__(self) -> None:
        super().__init__()
        transformers = pytest.importorskip("transformers")
        config = transformers.BertConfig(
            vocab_size=20,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=8,
            num_labels=2,
        )
        torch.manual_seed(0)
        self.net = transformers.BertForSequenceClassification(config)

    def forward(self, ids: Tensor) -> Tensor:
        return self.net(input_ids=ids).logits

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        ids, y = batch
        return nn.functional.cross_entropy(self(ids), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_fisher_mask_always_train_classifier_on_a_wrapped_hugging_face_model(tmp_path: Path) -> None:
    model = _Wrapped()
    g = torch.Generator().manual_seed(0)
    ids, y = torch.randint(0, 20, (16, 6), generator=g), torch.randint(0, 2, (16,), generator=g)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(ids, y), batch_size=8)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    callback = FisherMask(keep_ratio=0.05, num_samples=16, always_train=["classifier"])
    Trainer(**trainer_kwargs(tmp_path, max_steps=2), callbacks=[callback]).fit(model, data)
    masks = {
        k.removeprefix("fisher_mask.").replace("__", "."): v
        for k, v in model.state_dict().items()
        if k.startswith("fisher_mask.")
    }
    assert set(masks) == set(before)
    assert masks["net.classifier.weight"].all() and masks["net.classifier.bias"].all()
    for name, p in model.named_parameters():
        if name.startswith("net.classifier."):
            assert not torch.equal(p, before[name]), name  # trained entirely
    assert sum(int(v.sum()) for v in masks.values()) == int(0.05 * sum(p.numel() for p in before.values()))
    fisher_masks = topk_masks({n: torch.rand_like(p) for n, p in before.items()}, 0.05, always_train=["classifier"])
    assert fisher_masks["net.classifier.weight"].all() and fisher_masks["net.classifier.bias"].all()
