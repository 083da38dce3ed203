"""SAM, GAM and CS-IB inside ``Trainer.fit`` on Hugging Face models built from small configs (random init, no
downloads): every step equals an independent float64 reference, and CS-IB adds ``beta * I_CS`` on a BERT pooler."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_info.callbacks import CSIBCallback
from lightning_info.losses.functional import cs_qmi
from lightning_info.optim import GAM, SAM
from tests.helpers.lightning import RecordingLogger, trainer_kwargs
from tests.optim.reference import SGDReference, gam_direction, loss_and_grad, params_of, sam_trajectory

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
pytestmark = pytest.mark.usefixtures("one_thread")

ce = nn.functional.cross_entropy
Factory = Callable[[Any], torch.optim.Optimizer]


def bert_classifier() -> nn.Module:
    config = transformers.BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=64, num_labels=3,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=16,
    )  # fmt: skip
    return transformers.BertForSequenceClassification(config)


def gpt2_classifier() -> nn.Module:
    config = transformers.GPT2Config(
        n_layer=2, n_head=4, n_embd=32, vocab_size=64, n_positions=16, num_labels=3, pad_token_id=0,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    return transformers.GPT2ForSequenceClassification(config)


class HFClassifier(LightningModule):
    """A Hugging Face sequence classifier wrapped as ``self.net``; the batch is ``(token ids, labels)``."""

    def __init__(self, net: nn.Module, optimizer_factory: Factory) -> None:
        super().__init__()
        self.net = net
        self.optimizer_factory = optimizer_factory

    def forward(self, ids: Tensor) -> Tensor:
        return self.net(input_ids=ids).logits

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        ids, labels = batch
        loss = ce(self(ids), labels)
        self.log("train_loss", loss, on_step=True, on_epoch=False)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.parameters())


def token_batches(steps: int = 3, batch_size: int = 6, length: int = 8) -> list[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randint(1, 64, (batch_size, length), generator=g), torch.randint(0, 3, (batch_size,), generator=g))
        for _ in range(steps)
    ]


def fit(model: LightningModule, tmp_path: Path, batches: list[Any], **kwargs: Any) -> Trainer:
    trainer = Trainer(**trainer_kwargs(tmp_path, **{"max_steps": len(batches), **kwargs}))
    ids, targets = (torch.cat(parts) for parts in zip(*batches, strict=True))
    trainer.fit(model, DataLoader(TensorDataset(ids, targets), batch_size=len(batches[0][0])))  # the same batches
    return trainer


def assert_params(model: nn.Module, expected: dict[str, Tensor], atol: float) -> None:
    for name, value in model.named_parameters():
        torch.testing.assert_close(value.detach(), expected[name], atol=atol, rtol=0, msg=name)


MODELS = {"bert": bert_classifier, "gpt2": gpt2_classifier}


@pytest.mark.parametrize("name", list(MODELS))
def test_sam_in_fit_equals_the_float64_reference(tmp_path: Path, name: str) -> None:
    torch.manual_seed(0)
    model = HFClassifier(MODELS[name](), lambda p: SAM(p, torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)).double()
    batches = token_batches()
    expected, clean_losses = sam_trajectory(
        copy.deepcopy(model), ce, batches, SGDReference(lr=0.1, momentum=0.9), rho=0.05
    )
    logger = RecordingLogger()
    fit(model, tmp_path, batches, precision="64-true", logger=logger, log_every_n_steps=1)
    assert_params(model, expected[-1], atol=1e-10)
    assert logger.values("train_loss") == pytest.approx(clean_losses, abs=1e-10)  # the clean pass, once per step


def gam_trajectory(
    model: nn.Module, batches: list[tuple[Tensor, Tensor]], lr: float, rho: float, alpha: float, r: float
) -> dict[str, Tensor]:
    """Plain SGD along GAM's direction (``reference.gam_direction``) on the flattened parameters."""
    params = params_of(model)
    names, shapes = list(params), [v.shape for v in params.values()]

    def unflatten(flat: Tensor) -> dict[str, Tensor]:
        parts = torch.split(flat, [s.numel() for s in shapes])
        return {k: t.reshape(s) for k, t, s in zip(names, parts, shapes, strict=True)}

    theta = torch.cat([v.reshape(-1) for v in params.values()])
    for batch in batches:

        def grad(flat: Tensor, batch: tuple[Tensor, Tensor] = batch) -> Tensor:
            _, grads = loss_and_grad(model, ce, unflatten(flat), batch)
            return torch.cat([g.reshape(-1) for g in grads.values()])

        theta = theta - lr * gam_direction(grad, theta, rho, alpha, r)
    return unflatten(theta)


@pytest.mark.parametrize("name", list(MODELS))
def test_gam_in_fit_equals_the_float64_reference(tmp_path: Path, name: str) -> None:
    torch.manual_seed(0)
    model = HFClassifier(MODELS[name](), lambda p: GAM(p, torch.optim.SGD, rho=0.05, alpha=0.5, lr=0.1)).double()
    batches = token_batches(steps=2)
    expected = gam_trajectory(copy.deepcopy(model), batches, lr=0.1, rho=0.05, alpha=0.5, r=0.01)
    fit(model, tmp_path, batches, precision="64-true")
    assert_params(model, expected, atol=1e-10)


class HFRegressor(LightningModule):
    """A BERT encoder with a linear regression head on its pooled output; the batch is ``(token ids, targets)``."""

    def __init__(self, lr: float) -> None:
        super().__init__()
        self.net = bert_classifier().bert
        self.head = nn.Linear(32, 1)
        self.lr = lr

    def forward(self, ids: Tensor) -> Tensor:
        return self.head(self.net(input_ids=ids).pooler_output).squeeze(-1)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        ids, y = batch
        return nn.functional.mse_loss(self(ids), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def regression_batches(steps: int = 2) -> list[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(2)
    return [(torch.randint(1, 64, (16, 8), generator=g), torch.randn(16, generator=g)) for _ in range(steps)]


def test_csib_on_the_pooled_layer_of_a_bert_encoder_adds_beta_times_the_qmi(tmp_path: Path) -> None:
    """x = the encoder input (embedded tokens: a kernel cannot compare ids), t = the pooler output."""
    torch.manual_seed(0)
    model = HFRegressor(lr=0.0)  # lr 0: every step sees the same model, so both steps have a closed-form expectation
    batches = regression_batches()
    expected = []
    with torch.no_grad():
        for ids, y in batches:
            x = model.net.embeddings(input_ids=ids)
            t = model.net(input_ids=ids).pooler_output
            expected.append(float(nn.functional.mse_loss(model(ids), y) + 0.5 * cs_qmi(x, t, "silverman", "median")))
    losses: list[float] = []

    class Record(CSIBCallback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    callback = Record("net.pooler", input_layer="net.encoder", beta=0.5)
    trainer = fit(model, tmp_path, batches, callbacks=[callback])
    assert losses == pytest.approx(expected, rel=1e-5)
    assert {"csib/compression", "csib/prediction"} <= set(trainer.callback_metrics)
    assert int(callback.target_stats.count) == 32  # type: ignore[union-attr]


def test_csib_gradient_reaches_the_encoder_and_not_the_head(tmp_path: Path) -> None:
    torch.manual_seed(0)
    base = HFRegressor(lr=0.1)
    with_term = copy.deepcopy(base)
    batches = regression_batches(steps=1)
    fit(base, tmp_path / "base", batches)
    fit(with_term, tmp_path / "term", batches, callbacks=[CSIBCallback("net.pooler", input_layer="net.encoder",
                                                                       beta=1.0)])  # fmt: skip
    torch.testing.assert_close(base.head.weight, with_term.head.weight, rtol=0, atol=0)  # the term skips the head
    assert not torch.allclose(base.net.pooler.dense.weight, with_term.net.pooler.dense.weight)
    assert not torch.allclose(base.net.encoder.layer[0].attention.self.query.weight,
                              with_term.net.encoder.layer[0].attention.self.query.weight)  # fmt: skip
