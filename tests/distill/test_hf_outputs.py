"""MCMICallback on a Hugging Face classifier: the captured layer returns a ModelOutput, whose logits are used."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor, nn

from lightning_info._internal.outputs import output_tensor
from lightning_info.distill import MCMICallback
from lightning_info.metrics.functional import conditional_mutual_information
from tests.helpers.lightning import trainer_kwargs

transformers = pytest.importorskip("transformers")


def test_output_tensor_prefers_the_named_field_then_the_first_tensor() -> None:
    a, b = torch.zeros(1), torch.ones(1)
    out = transformers.modeling_outputs.SequenceClassifierOutput(loss=a, logits=b)
    assert output_tensor(out, "logits") is b and output_tensor({"x": a, "logits": b}, "logits") is b
    assert output_tensor((None, [a, b]), "logits") is a and output_tensor(b, "logits") is b
    assert output_tensor((None, "text"), "logits") is None


class _Bert(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        config = transformers.BertConfig(
            vocab_size=20, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=8, num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        )  # fmt: skip
        torch.manual_seed(0)
        self.net = transformers.BertForSequenceClassification(config)
        self.seen: list[tuple[Tensor, Tensor]] = []

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        ids, y = batch
        logits = self.net(input_ids=ids).logits
        self.seen.append((logits.detach().clone(), y))
        return nn.functional.cross_entropy(logits, y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


class _Logged(Callback):
    def __init__(self) -> None:
        self.cmi: list[float] = []

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        self.cmi.append(float(trainer.callback_metrics["mcmi/cmi"]))


def test_mcmi_reads_the_logits_of_a_model_output(tmp_path: Path) -> None:
    model = _Bert()
    g = torch.Generator().manual_seed(0)
    ids, y = torch.randint(0, 20, (24, 6), generator=g), torch.randint(0, 3, (24,), generator=g)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(ids, y), batch_size=8)
    logged = _Logged()
    callback = MCMICallback(num_classes=3, lam=0.2, layer="net", log_validation=False)
    Trainer(**trainer_kwargs(tmp_path, max_steps=3), callbacks=[callback, logged]).fit(model, data)
    assert len(logged.cmi) == 3
    for value, (logits, labels) in zip(logged.cmi, model.seen, strict=True):  # the batch CMI of the step's logits
        expected = conditional_mutual_information(torch.softmax(logits.double(), dim=1), labels, 3)
        assert value == pytest.approx(float(expected), rel=1e-4, abs=1e-6)
