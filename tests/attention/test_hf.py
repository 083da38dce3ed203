"""Hugging Face transformers (GPT-2, BERT, Llama with GQA, built from small configs; no downloads): the entropy
parts against eager attention maps, unchanged logits at step 0, and the callbacks with defaults in Trainer.fit."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer
from torch import nn

from lightning_info.attention.sdpa import SDPAProbes
from lightning_info.callbacks import AttentionEntropyMonitor, EntropyGuidedAttentionCallback
from tests.helpers.lightning import RecordingLogger, trainer_kwargs

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()


def gpt2() -> nn.Module:
    config = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=64, bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config)


def llama() -> nn.Module:
    config = transformers.LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=64, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config)


def bert() -> nn.Module:
    config = transformers.BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=64, num_labels=3
    )
    return transformers.BertForSequenceClassification(config)


MODELS: dict[str, Callable[[], nn.Module]] = {"gpt2": gpt2, "llama": llama, "bert": bert}


def no_dropout(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    if hasattr(model.config, "attn_pdrop"):
        model.config.attn_pdrop = 0.0
    return model.train()


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(0, 64, (3, 9))
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 6:] = 0  # right padding
    mask[2, 3:] = 0
    return ids, mask


def eager_head_entropy(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """Independent reference: eager maps (output_attentions=True), -sum p log p per row, mean over the real tokens."""
    model.set_attn_implementation("eager")
    attentions = model(ids, attention_mask=mask, output_attentions=True).attentions
    real = mask.bool()[:, None, :].double()
    out = []
    for maps in attentions:
        p = maps.double()
        row = -torch.special.xlogy(p, p).sum(-1)  # (batch, heads, N)
        out.append((row * real).sum((0, 2)) / real.sum((0, 2)))
    return out


@pytest.mark.parametrize("name", list(MODELS))
def test_entropy_equals_eager_maps_with_padding(name: str) -> None:
    torch.manual_seed(0)
    model = no_dropout(MODELS[name]())
    ids, mask = batch()
    probes = SDPAProbes(model)
    assert model.config._attn_implementation == "lightning_info"
    probes.start("monitor")
    model(ids, attention_mask=mask)
    got = [s[0] for s in probes.summaries() if s is not None]
    probes.release("monitor")
    assert model.config._attn_implementation == "sdpa"  # restored
    expected = eager_head_entropy(model, ids, mask)
    assert len(got) == len(expected) == 2
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g.double(), e, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", list(MODELS))
def test_temperature_leaves_logits_unchanged_then_changes_entropy(name: str) -> None:
    torch.manual_seed(0)
    model = no_dropout(MODELS[name]())
    ids, mask = batch()
    before = model(ids, attention_mask=mask).logits
    probes = SDPAProbes(model)
    for probe in probes.probes:
        probe.add_temperature()
    torch.testing.assert_close(model(ids, attention_mask=mask).logits, before, rtol=0, atol=1e-6)
    probes.start("monitor")
    model(ids, attention_mask=mask)
    cold = [s[0] for s in probes.summaries() if s is not None]
    with torch.no_grad():
        for probe in probes.probes:
            probe.module.log_temperature.fill_(3.0)  # t = e^3: near-uniform rows
    model(ids, attention_mask=mask)
    hot = [s[0] for s in probes.summaries() if s is not None]
    assert all(bool((h > c).all()) for h, c in zip(hot, cold, strict=True))
    probes.release("monitor")
    assert model.config._attn_implementation == "lightning_info"  # kept: the temperature is part of the model


class HFModule(LightningModule):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.net = MODELS[name]()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        ids, mask, labels = batch
        if self.name == "bert":
            return self.net(ids, attention_mask=mask, labels=labels).loss
        return self.net(ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


def loader() -> torch.utils.data.DataLoader:
    ids = torch.randint(0, 64, (16, 12))
    mask = torch.ones(16, 12, dtype=torch.long)
    mask[::3, 8:] = 0
    labels = torch.randint(0, 3, (16,))
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(ids, mask, labels), batch_size=4)


@pytest.mark.parametrize("name", list(MODELS))
def test_callbacks_with_defaults_in_trainer_fit(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    module, logger = HFModule(name), RecordingLogger()
    callbacks = [AttentionEntropyMonitor(), EntropyGuidedAttentionCallback()]
    trainer = Trainer(**trainer_kwargs(tmp_path, max_steps=2, logger=logger, log_every_n_steps=1, callbacks=callbacks))
    trainer.fit(module, loader())
    series = logger.series()
    for key in ("attn_entropy/layer0/head0", "attn_entropy/layer1/head3", "attn_entropy/overload_frac",
                "attn_entropy/collapse_frac", "attn_entropy/temperature/layer1/head3"):  # fmt: skip
        assert key in series, key
    assert "attn_entropy/reg" in trainer.callback_metrics
    names = dict(module.named_parameters())
    temperature = [p for n, p in names.items() if n.endswith("log_temperature")]
    assert len(temperature) == 2 and all(p.requires_grad for p in temperature)
    assert any(bool((p != 0).any()) for p in temperature)  # trained by the optimizer (AdamW saw them)


def test_regularizer_gradient_matches_float64_eager_computation() -> None:
    """d(penalty)/d(temperature) through the probe equals autograd through explicit float64 eager maps."""
    from lightning_info.losses import EntropyRegularizer

    torch.manual_seed(0)
    model = no_dropout(llama()).double()
    ids, mask = batch()
    probes = SDPAProbes(model)
    for probe in probes.probes:
        probe.add_temperature(threshold_init=0.9)
        with torch.no_grad():
            probe.module.log_temperature.uniform_(-0.5, 0.5)
    probes.start("regularize")
    model(ids, attention_mask=mask)
    regularizer = EntropyRegularizer(target_fraction=0.9, tolerance=0.0)
    regularizer.forward_modules(probes.probes).backward()
    got = [p.module.log_temperature.grad.clone() for p in probes.probes]
    probes.release("regularize")

    captured: list[torch.Tensor] = []

    def eager_with_temperature(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                               attention_mask: torch.Tensor | None, scaling: float, **kwargs: Any) -> Any:  # fmt: skip
        key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
        value = value.repeat_interleave(query.shape[1] // value.shape[1], dim=1)
        t = module.log_temperature.exp()[:, None, None]
        logits = query @ key.transpose(-1, -2) * scaling / t
        allowed = torch.ones(query.shape[-2], key.shape[-2], dtype=torch.bool).tril() & mask.bool()[:, None, None, :]
        logits = logits.masked_fill(~allowed, float("-inf"))
        log_p = torch.log_softmax(logits, -1)
        p = log_p.exp()
        captured.append(-(p * log_p.masked_fill(~allowed, 0.0)).sum(-1))
        return (p @ value).transpose(1, 2), None

    transformers.AttentionInterface.register("test_eager_t", eager_with_temperature)
    transformers.masking_utils.AttentionMaskInterface.register("test_eager_t", transformers.masking_utils.sdpa_mask)
    model.set_attn_implementation("test_eager_t")
    for probe in probes.probes:
        probe.module.log_temperature.grad = None
    model(ids, attention_mask=mask)
    counts = torch.minimum(torch.arange(1, 10).expand(3, 9), mask.sum(-1, keepdim=True)).double()
    real = mask.bool()
    total = torch.zeros((), dtype=torch.float64)
    for entropy in captured:  # row penalty: (H - 0.9 log n)^2, mean over real rows, mean over heads and layers
        deviation = entropy - 0.9 * counts.log()[:, None, :]
        total = total + (deviation.square() * real[:, None, :]).sum((0, 2)).div(real.sum()).mean() / len(captured)
    total.backward()
    for g, probe in zip(got, probes.probes, strict=True):
        torch.testing.assert_close(g, probe.module.log_temperature.grad, rtol=1e-7, atol=1e-10)


def test_fused_kernel_implementation_is_refused_with_the_alternative() -> None:
    model = gpt2()
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match=r"GPT2LMHeadModel.*flash_attention_2.*attn_implementation='sdpa'.*Hugging"):
        SDPAProbes(model)


def test_unprobed_modules_still_get_sdpa() -> None:
    from lightning_info.attention.hf import lightning_info_attention

    q = torch.randn(1, 2, 4, 8)
    out, weights = lightning_info_attention(nn.Module(), q, q, q, None, scaling=0.5, is_causal=True)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, q, q, is_causal=True, scale=0.5).transpose(1, 2))
    assert weights is None
