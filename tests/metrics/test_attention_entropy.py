import math

import numpy as np
import pytest
import torch

from lightning_info.metrics import AttentionEntropy
from lightning_info.metrics.functional import attention_entropy


def _reference(attn: np.ndarray, valid: np.ndarray, normalize: bool) -> np.ndarray:
    """Per-head mean row entropy over valid keys, explicit loops (attn, valid: (B, H, Lq, Lk))."""
    b, h, lq, lk = attn.shape
    out = np.zeros(h)
    for head in range(h):
        values = []
        for i in range(b):
            for q in range(lq):
                keys = [k for k in range(lk) if valid[i, head, q, k]]
                if len(keys) < (2 if normalize else 1):
                    continue
                entropy = -sum(
                    attn[i, head, q, k] * math.log(attn[i, head, q, k]) for k in keys if attn[i, head, q, k] > 0
                )
                values.append(entropy / math.log(len(keys)) if normalize else entropy)
        out[head] = np.mean(values)
    return out


def _masked_softmax(scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    return torch.softmax(scores.masked_fill(~valid, float("-inf")), dim=-1).nan_to_num(0.0)


@pytest.mark.parametrize("normalize", [False, True])
def test_matches_brute_force_with_padding_mask(normalize: bool) -> None:
    torch.manual_seed(0)
    scores = torch.randn(3, 2, 5, 6, dtype=torch.float64)
    key_valid = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    valid = key_valid[:, None, None, :].expand(3, 2, 5, 6)
    attn = _masked_softmax(scores, valid)
    got = attention_entropy(attn, mask=key_valid[:, None, None, :], normalize=normalize)
    np.testing.assert_allclose(got.numpy(), _reference(attn.numpy(), valid.numpy(), normalize), rtol=1e-12)


def test_causal_mask_matches_brute_force_and_uniform_is_one() -> None:
    torch.manual_seed(1)
    causal = torch.ones(4, 4, dtype=torch.bool).tril()
    attn = _masked_softmax(torch.randn(2, 3, 4, 4, dtype=torch.float64), causal)
    valid = causal.expand(2, 3, 4, 4).numpy()
    for normalize in (False, True):
        got = attention_entropy(attn, mask="causal", normalize=normalize)
        np.testing.assert_allclose(got.numpy(), _reference(attn.numpy(), valid, normalize), rtol=1e-12)
    uniform = causal.double() / causal.sum(-1, keepdim=True)
    torch.testing.assert_close(
        attention_entropy(uniform.expand(2, 3, 4, 4), mask="causal", normalize=True), torch.ones(3, dtype=torch.float64)
    )
    # with the mask left out, row i's maximum would be taken as log(4): uniform causal rows score below 1
    assert (attention_entropy(uniform.expand(2, 3, 4, 4), normalize=True) < 0.9).all()


def test_uniform_one_hot_and_layers() -> None:
    uniform = torch.full((2, 2, 3, 5, 7), 1 / 7)  # (L, B, H, Lq, Lk)
    torch.testing.assert_close(attention_entropy(uniform, normalize=True), torch.ones(2, 3, dtype=torch.float64))
    torch.testing.assert_close(attention_entropy(uniform), torch.full((2, 3), math.log(7), dtype=torch.float64))
    one_hot = torch.nn.functional.one_hot(torch.randint(0, 7, (2, 2, 3, 5)), 7).float()
    torch.testing.assert_close(attention_entropy(one_hot, normalize=True), torch.zeros(2, 3, dtype=torch.float64))
    half = attention_entropy(uniform.to(torch.bfloat16), normalize=True)
    torch.testing.assert_close(half, torch.ones(2, 3, dtype=torch.float64), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((torch.ones(2, 3, 4),), {}, ValueError, "dimensions"),
        ((torch.full((1, 1, 2, 2), float("nan")),), {}, ValueError, "NaN"),
        ((-torch.ones(1, 1, 2, 2),), {}, ValueError, "negative"),
        ((torch.ones(1, 1, 2, 2),), {"mask": torch.ones(3, 3, dtype=torch.bool)}, ValueError, "broadcast"),
        ((torch.ones(1, 1, 2, 2),), {"mask": torch.ones(2, 2)}, TypeError, "bool"),
        ((torch.ones(1, 1, 2, 2),), {"mask": "causual"}, ValueError, "causal"),
        ((torch.ones(1, 1, 2, 1),), {"normalize": True}, ValueError, "no query row"),
    ],
)
def test_errors(args: tuple, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        attention_entropy(*args, **kwargs)


def test_metric_accumulates_rows_like_one_call() -> None:
    torch.manual_seed(2)
    causal = torch.ones(4, 4, dtype=torch.bool).tril()
    attn = torch.softmax(torch.randn(6, 2, 4, 4).masked_fill(~causal, -torch.inf), dim=-1)  # rows sum to 1 causally
    metric = AttentionEntropy(normalize=True)
    metric.update(attn[:2], mask="causal")
    metric.update(attn[2:], mask="causal")
    torch.testing.assert_close(metric.compute(), attention_entropy(attn, mask="causal", normalize=True))
    with pytest.raises(ValueError, match="layers and heads"):
        metric.update(attn[:, :1])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_unnormalised_rows_are_rejected(dtype: torch.dtype) -> None:
    # issue 14.7: unnormalised maps gave negative entropies (e.g. 2 * uniform: -0.69 per row)
    attn = torch.full((1, 2, 3, 4), 0.5, dtype=dtype)
    with pytest.raises(ValueError, match="attn_probs must sum to 1 along dim -1, got a deviation of 1"):
        attention_entropy(attn)
    with pytest.raises(ValueError, match="attn_probs must sum to 1"):
        AttentionEntropy().update(attn)
    # the tolerance follows the dtype: softmax rounding passes, a 5% deficit does not
    soft = torch.softmax(torch.randn(2, 2, 3, 16, dtype=torch.float64), dim=-1)
    assert bool(torch.isfinite(attention_entropy(soft.to(dtype))).all())
    with pytest.raises(ValueError, match="sum to 1"):
        attention_entropy((0.95 * soft).to(dtype))


def test_masked_rows_sum_to_one_over_valid_keys_and_fully_masked_rows_pass() -> None:
    valid = torch.tensor([[True, True, False], [True, False, False], [False, False, False]])
    attn = torch.tensor([[0.5, 0.5, 0.7], [1.0, 0.3, 0.0], [0.2, 0.9, 0.4]]).expand(1, 1, 3, 3)
    # mass on masked keys is ignored; the fully masked last row is left out whatever it holds
    torch.testing.assert_close(
        attention_entropy(attn, mask=valid), torch.tensor([math.log(2) / 2], dtype=torch.float64)
    )
    short = attn.clone()
    short[..., 0, 1] = 0.2  # valid keys of row 0 sum to 0.7
    with pytest.raises(ValueError, match="over their valid keys"):
        attention_entropy(short, mask=valid)


def test_compute_without_rows_raises_instead_of_nan() -> None:
    # found by tests/fuzz: 0 / 0 = NaN per head was returned silently after updates that counted no row
    metric = AttentionEntropy(normalize=True)
    metric.update(torch.ones(1, 2, 3, 1))  # single-key rows: left out with normalize
    with pytest.raises(ValueError, match=r"AttentionEntropy.compute\(\) has nothing to average"):
        metric.compute()


def test_all_rows_masked_error_names_the_arguments() -> None:
    # found by tests/fuzz: the message named no argument
    with pytest.raises(ValueError, match="every row of attn_probs is masked by mask"):
        attention_entropy(torch.zeros(1, 2, 1, 3), mask=torch.zeros(1, 3, dtype=torch.bool))
