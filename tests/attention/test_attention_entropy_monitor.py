"""AttentionEntropyMonitor: entropy recomputed from inputs + projections, against the maps nn.MultiheadAttention
returns, and inside a real Trainer.fit."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from torch import nn

from lightning_info.attention import EntropyGuidedAttention
from lightning_info.callbacks import AttentionEntropyMonitor
from lightning_info.callbacks.attention_entropy_monitor import attention_entropy_of_call, measure_attention_entropy
from tests.attention.test_callbacks import data, make_model
from tests.helpers.lightning import RecordingLogger, trainer_kwargs


def entropy_from_maps(weights: torch.Tensor) -> torch.Tensor:
    """Independent: -sum p log p of the (batch, heads, N, N) maps nn.MultiheadAttention returns."""
    return -torch.special.xlogy(weights, weights).sum(-1)


@pytest.mark.parametrize("masks", ["padding+bool", "padding+float", "float_padding", "none"])
@pytest.mark.parametrize("batch_first", [True, False])
def test_matches_mha_attention_maps(masks: str, batch_first: bool) -> None:
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=batch_first, dtype=torch.float64)
    x = torch.randn(3, 7, 8, dtype=torch.float64)
    x = x if batch_first else x.transpose(0, 1)
    padding = torch.zeros(3, 7, dtype=torch.bool)
    padding[2, 5:] = True
    causal = nn.Transformer.generate_square_subsequent_mask(7, dtype=torch.float64)
    kwargs = {
        "padding+bool": {"key_padding_mask": padding, "attn_mask": causal.isinf()},
        "padding+float": {"key_padding_mask": padding, "attn_mask": causal},
        "float_padding": {"key_padding_mask": torch.zeros(3, 7, dtype=torch.float64).masked_fill(padding, -torch.inf)},
        "none": {},
    }[masks]
    _, weights = mha(x, x, x, average_attn_weights=False, **kwargs)
    inputs = {"query": x, "key": x, "self_attention": True, "is_causal": False, "key_padding_mask": None,
              "attn_mask": None, **kwargs}  # fmt: skip
    entropy, max_entropy, rows = attention_entropy_of_call(mha, inputs, chunk_size=3)
    torch.testing.assert_close(entropy, entropy_from_maps(weights.detach()), rtol=1e-9, atol=1e-9)
    expected_keys = (~padding).sum(-1, keepdim=True).expand(3, 7) if "padding" in masks else torch.full((3, 7), 7)
    if masks.startswith("padding+"):  # causal: row i sees keys 0..i
        expected_keys = torch.minimum(torch.arange(1, 8).expand(3, 7), expected_keys)
    torch.testing.assert_close(max_entropy[:, 0], expected_keys.double().log())
    assert rows[2, 0].tolist() == ([True] * 5 + [False] * 2 if "padding" in masks else [True] * 7)


def test_is_causal_without_mask_and_entropy_guided_temperature() -> None:
    ega = EntropyGuidedAttention(8, 2, temperature_positions=5, dtype=torch.float64)
    with torch.no_grad():
        ega.log_temperature.copy_(torch.randn(2, 5, dtype=torch.float64))
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    _, weights = ega(x, x, x, is_causal=True, average_attn_weights=False)
    inputs = {"query": x, "key": x, "self_attention": True, "key_padding_mask": None, "attn_mask": None,
              "is_causal": True}  # fmt: skip
    entropy, max_entropy, _ = attention_entropy_of_call(ega, inputs, chunk_size=2, max_samples=1)
    torch.testing.assert_close(entropy, entropy_from_maps(weights.detach())[:1], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(max_entropy[0, 0], torch.arange(1, 6, dtype=torch.float64).log())


def test_measure_attention_entropy_with_fused_encoder_in_eval() -> None:
    """need_weights=False inside nn.TransformerEncoderLayer: recomputed, equal to the maps MHA would return."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, batch_first=True).eval()
    x = torch.randn(2, 6, 16)
    summary = measure_attention_entropy(layer, lambda: layer(x))
    _, weights = layer.self_attn(x, x, x, average_attn_weights=False)
    torch.testing.assert_close(summary["self_attn"][0], entropy_from_maps(weights.detach()).mean((0, 2)))
    torch.testing.assert_close(summary["self_attn"][1], entropy_from_maps(weights.detach()).mean((0, 2)) / math.log(6))
    assert not layer.self_attn._forward_hooks  # hooks removed


def test_fit_logs_on_schedule_and_hooks_only_while_logging(tmp_path: Path) -> None:
    model = make_model()
    hooked_steps: list[int] = []

    class HookSpy(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if model.encoder.layers[0].self_attn._forward_hooks:
                hooked_steps.append(trainer.global_step)

    monitor = AttentionEntropyMonitor(every_n_steps=2, chunk_size=2)
    logger = RecordingLogger()
    trainer = Trainer(callbacks=[HookSpy(), monitor], **trainer_kwargs(tmp_path, logger=logger, max_steps=4,
                                                                       log_every_n_steps=1))  # fmt: skip
    trainer.fit(model, data())
    assert type(model.encoder.layers[0].self_attn) is nn.MultiheadAttention
    logged = [m for _, m in logger.rows if "attn_entropy/layer1/head1" in m]
    assert [step for step, m in logger.rows if "attn_entropy/layer1/head1" in m] == [0, 2]
    assert hooked_steps == [1, 3]  # HookSpy runs first: the hooks of steps 0 and 2, seen after their optimizer step
    assert not model.encoder.layers[0].self_attn._forward_hooks
    for row in logged:
        assert 0.0 <= row["attn_entropy/overload_frac"] <= 1.0 and 0.0 <= row["attn_entropy/collapse_frac"] <= 1.0
        assert 0.0 < row["attn_entropy/layer0/head0"] <= math.log(6) + 1e-6
        assert 0.0 < row["attn_entropy/normalized_mean"] <= 1.0 + 1e-6


def test_bad_arguments_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="every_n_steps"):
        AttentionEntropyMonitor(every_n_steps=0)
    with pytest.raises(TypeError, match="modules"):
        AttentionEntropyMonitor(modules="encoder")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="collapse_threshold"):
        AttentionEntropyMonitor(collapse_threshold=1.0)
    with pytest.raises(ValueError, match=r"not an nn\.MultiheadAttention"):
        Trainer(callbacks=[AttentionEntropyMonitor(modules=["embed"])], **trainer_kwargs(tmp_path)).fit(
            make_model(), data()
        )
    with pytest.raises(ValueError, match="no submodule"):
        Trainer(callbacks=[AttentionEntropyMonitor(modules=["encoder.nothing"])], **trainer_kwargs(tmp_path)).fit(
            make_model(), data()
        )


@pytest.mark.parametrize("module_class", [nn.MultiheadAttention, EntropyGuidedAttention])
def test_measures_with_the_weights_of_the_call(module_class: type) -> None:
    # sharded engines hold the full weights only during the forward (FSDP2 reshards them, FSDP1 frees the views):
    # the monitor measures with what the call used, whatever the parameters hold afterwards
    torch.manual_seed(0)
    attention = module_class(8, 2, batch_first=True).double()
    x = torch.randn(3, 5, 8, dtype=torch.double)
    expected = measure_attention_entropy(attention, lambda: attention(x, x, x))[""]

    def run_then_change() -> None:
        attention(x, x, x)
        with torch.no_grad():
            for parameter in attention.parameters():
                parameter.mul_(3.0)

    got = measure_attention_entropy(attention, run_then_change)[""]
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    changed = measure_attention_entropy(attention, lambda: attention(x, x, x))[""]
    assert not torch.allclose(changed[0], expected[0])  # the test can fail: the weights matter
