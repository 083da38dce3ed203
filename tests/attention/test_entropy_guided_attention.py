"""EntropyGuidedAttention: drop-in equivalence with nn.MultiheadAttention, recorded entropies, temperature, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lightning_info.attention import EntropyGuidedAttention


def pair(batch_first: bool, **kwargs: object) -> tuple[nn.MultiheadAttention, EntropyGuidedAttention]:
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first, dtype=torch.float64, **kwargs)  # type: ignore[arg-type]
    ega = EntropyGuidedAttention(16, 4, batch_first=batch_first, dtype=torch.float64, **kwargs)  # type: ignore[arg-type]
    ega.load_state_dict(mha.state_dict(), strict=True)
    return mha, ega


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("average", [True, False])
@pytest.mark.parametrize("masks", ["none", "padding+causal", "float", "is_causal"])
def test_outputs_and_gradients_match_mha(batch_first: bool, need_weights: bool, average: bool, masks: str) -> None:
    mha, ega = pair(batch_first)
    b, n = 3, 6
    x = torch.randn(b, n, 16, dtype=torch.float64)
    x = x if batch_first else x.transpose(0, 1).contiguous()
    kwargs: dict[str, object] = {}
    causal = nn.Transformer.generate_square_subsequent_mask(n, dtype=torch.float64)
    if masks == "padding+causal":
        padding = torch.zeros(b, n, dtype=torch.bool)
        padding[1, 4:] = True
        kwargs = {"key_padding_mask": padding, "attn_mask": causal.isinf()}
    elif masks == "float":
        kwargs = {"attn_mask": torch.randn(b * 4, n, n, dtype=torch.float64)}
    elif masks == "is_causal":  # the hint with its mask, as nn.TransformerEncoderLayer passes it
        kwargs = {"attn_mask": causal, "is_causal": True}
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    out1, w1 = mha(x1, x1, x1, need_weights=need_weights, average_attn_weights=average, **kwargs)
    out2, w2 = ega(x2, x2, x2, need_weights=need_weights, average_attn_weights=average, **kwargs)
    torch.testing.assert_close(out2, out1, rtol=1e-6, atol=1e-6)
    if need_weights:
        torch.testing.assert_close(w2, w1, rtol=1e-6, atol=1e-6)
    else:
        assert w1 is None and w2 is None
    (out1.square().sum() + (0 if w1 is None else w1.sum())).backward()
    (out2.square().sum() + (0 if w2 is None else w2.sum())).backward()
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-6, atol=1e-6)
    for name, p1 in mha.named_parameters():
        torch.testing.assert_close(dict(ega.named_parameters())[name].grad, p1.grad, rtol=1e-6, atol=1e-6)


def test_cross_attention_kdim_vdim_and_unbatched_match() -> None:
    mha, ega = pair(True, kdim=5, vdim=7)
    q, k, v = torch.randn(2, 4, 16), torch.randn(2, 6, 5), torch.randn(2, 6, 7)
    q, k, v = q.double(), k.double(), v.double()
    torch.testing.assert_close(ega(q, k, v)[0], mha(q, k, v)[0])
    mha, ega = pair(True)
    x = torch.randn(5, 16, dtype=torch.float64)
    o1, w1 = mha(x, x, x)
    o2, w2 = ega(x, x, x)
    torch.testing.assert_close(o2, o1)
    torch.testing.assert_close(w2, w1)


def test_recorded_entropy_matches_returned_weights() -> None:
    ega = EntropyGuidedAttention(8, 2, temperature_init=0.7, dtype=torch.float64)
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    padding = torch.tensor([[False] * 5, [False, False, False, True, True]])
    _, w = ega(x, x, x, key_padding_mask=padding, average_attn_weights=False, is_causal=True)
    p = w.clamp_min(1e-300)
    expected = -(w * p.log()).sum(-1)
    torch.testing.assert_close(ega.last_entropy, expected)
    valid = torch.tensor([[1, 2, 3, 4, 5], [1, 2, 3, 3, 3]], dtype=torch.float64)
    torch.testing.assert_close(ega.last_max_entropy[:, 0], valid.log())
    assert ega.last_row_mask[1, 0].tolist() == [True, True, True, False, False]
    # padding only: every row of sequence 1 has 3 valid keys; its padded queries still do not count
    _, w = ega(x, x, x, key_padding_mask=padding, average_attn_weights=False)
    torch.testing.assert_close(ega.last_entropy, -(w * w.clamp_min(1e-300).log()).sum(-1))
    torch.testing.assert_close(ega.last_max_entropy[:, 0], torch.tensor([[5.0] * 5, [3.0] * 5]).double().log())
    assert ega.last_row_mask[:, 0].tolist() == [[True] * 5, [True, True, True, False, False]]
    # cross-attention (query is not key): padded keys only, every query row counts
    ega(x[:, :4], x, x, key_padding_mask=padding)
    assert ega.last_row_mask.shape == (2, 1, 4) and bool(ega.last_row_mask.all())


def test_temperature_controls_entropy() -> None:
    torch.manual_seed(1)
    x = torch.randn(2, 8, 16)
    entropies = []
    for t in (0.25, 1.0, 4.0):
        ega = EntropyGuidedAttention(16, 4, temperature_init=t)
        torch.manual_seed(0)
        nn.init.normal_(ega.in_proj_weight, std=0.5)
        ega(x, x, x)
        entropies.append(ega.last_entropy.mean().item())
        torch.testing.assert_close(ega.temperature, torch.full((4,), t))
    assert entropies[0] < entropies[1] < entropies[2] <= math.log(8)


def test_per_position_temperature_matches_loops() -> None:
    """The paper's t in R^{H x T}: row i of head h is softmax(q_i k_j / (t_{h,i} sqrt(d_k)))."""
    torch.manual_seed(0)
    ega = EntropyGuidedAttention(8, 2, temperature_positions=6, dtype=torch.float64)
    with torch.no_grad():
        ega.log_temperature.copy_(torch.randn(2, 6, dtype=torch.float64) * 0.5)
    x = torch.randn(1, 5, 8, dtype=torch.float64)
    _, weights = ega(x, x, x, is_causal=True, average_attn_weights=False)
    w_q, w_k, _ = ega.in_proj_weight.detach().chunk(3)
    b_q, b_k, _ = ega.in_proj_bias.detach().chunk(3)
    q, k = x[0] @ w_q.T + b_q, x[0] @ w_k.T + b_k
    t = ega.temperature.detach()
    for h in range(2):
        for i in range(5):
            scores = [float(q[i, 4 * h : 4 * h + 4] @ k[j, 4 * h : 4 * h + 4]) / (t[h, i] * 2.0) for j in range(i + 1)]
            z = sum(math.exp(s) for s in scores)
            probs = [math.exp(s) / z for s in scores]
            assert weights[0, h, i, : i + 1].tolist() == pytest.approx(probs, rel=1e-9)
            assert float(ega.last_entropy.detach()[0, h, i]) == pytest.approx(
                -sum(p * math.log(p) for p in probs), rel=1e-9
            )
    with pytest.raises(ValueError, match="temperature_positions=6"):
        ega(torch.randn(1, 7, 8, dtype=torch.float64), torch.randn(1, 7, 8, dtype=torch.float64),
            torch.randn(1, 7, 8, dtype=torch.float64))  # fmt: skip


def test_bf16_autocast_records_float32_entropy() -> None:
    ega = EntropyGuidedAttention(16, 4)
    x = torch.randn(2, 7, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = ega(x, x, x, is_causal=True, need_weights=False)
    assert out.dtype == torch.bfloat16 and ega.last_entropy is not None
    assert ega.last_entropy.dtype == torch.float32 and torch.isfinite(ega.last_entropy).all()
    reference = EntropyGuidedAttention(16, 4)
    reference.load_state_dict(ega.state_dict())
    reference(x, x, x, is_causal=True)
    torch.testing.assert_close(ega.last_entropy, reference.last_entropy, atol=0.05, rtol=0.05)


def test_load_state_dict_roundtrip_keeps_temperature_and_learnable_flags() -> None:
    a = EntropyGuidedAttention(8, 2, temperature_init=2.0, learnable_threshold=True)
    b = EntropyGuidedAttention(8, 2, learnable_temperature=False)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b.temperature, torch.full((2,), 2.0))
    assert not b.log_temperature.requires_grad and a.entropy_threshold.requires_grad


def test_transformer_encoder_layer_fast_path_does_not_bypass_module() -> None:
    layer = nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, dropout=0.0, batch_first=True)
    mha = layer.self_attn
    ega = EntropyGuidedAttention(16, 4)
    ega.load_state_dict(mha.state_dict())
    x = torch.randn(2, 5, 16)
    layer.eval()
    with torch.no_grad():
        expected = layer(x)
        layer.self_attn = ega
        got = layer(x)
    assert ega.last_entropy is not None and ega.last_entropy.shape == (2, 4, 5)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="divisible"):
        EntropyGuidedAttention(10, 3)
    with pytest.raises(ValueError, match="temperature_init"):
        EntropyGuidedAttention(8, 2, temperature_init=0.0)
    with pytest.raises(ValueError, match="threshold_init"):
        EntropyGuidedAttention(8, 2, threshold_init=1.5)
    ega = EntropyGuidedAttention(8, 2)
    x = torch.randn(2, 5, 8)
    with pytest.raises(ValueError, match="key_padding_mask"):
        ega(x, x, x, key_padding_mask=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="attn_mask"):
        ega(x, x, x, attn_mask=torch.zeros(4, 5))
    with pytest.raises(ValueError, match="temperature_positions"):
        EntropyGuidedAttention(8, 2, temperature_positions=0)
    nested = torch.nested.nested_tensor([torch.randn(3, 8), torch.randn(2, 8)])
    with pytest.raises(ValueError, match="enable_nested_tensor=False"):
        ega(nested, nested, nested)


def test_eval_mode_keeps_no_graph_in_last_entropy() -> None:
    """Regression: outside training the stored entropies held the last forward's whole graph."""
    attn = EntropyGuidedAttention(16, 4, batch_first=True)
    x = torch.randn(2, 5, 16)
    attn.train()
    attn(x, x, x)
    assert attn.last_entropy is not None and attn.last_entropy.grad_fn is not None  # the regularizer needs it
    attn.eval()
    attn(x, x, x)
    assert attn.last_entropy is not None and attn.last_entropy.grad_fn is None
    assert not attn.last_entropy.requires_grad


def test_the_regularizer_uses_the_thresholds_of_the_forward() -> None:
    # FSDP2 frees the full thresholds after the forward (FSDP1 leaves a rank's slice): the forward keeps a copy
    from lightning_info.losses import EntropyRegularizer

    torch.manual_seed(0)
    attention = EntropyGuidedAttention(8, 2, batch_first=True, threshold_init=0.3, learnable_threshold=True).double()
    x = torch.randn(3, 5, 8, dtype=torch.double)
    attention(x, x, x)
    regularizer = EntropyRegularizer(tolerance=0.0)
    expected = regularizer.forward_modules([attention])
    with torch.no_grad():
        attention.entropy_threshold.fill_(0.9)  # after the forward: not the thresholds the forward used
    assert attention.last_threshold is not None
    torch.testing.assert_close(attention.last_threshold, torch.full((2,), 0.3, dtype=torch.double))
    got = regularizer.forward_modules([attention])
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
    got.backward()
    assert attention.entropy_threshold.grad is not None and attention.entropy_threshold.grad.abs().sum() > 0
    attention.clear_entropy()
    assert attention.last_threshold is None
