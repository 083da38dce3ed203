"""Chunked attention entropy from queries/keys against an independent float64 brute force."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_info.attention.functional import (
    attention_entropy_from_qk,
    entropy_from_logits,
    head_entropy_summary,
    head_entropy_totals,
    merge_attention_masks,
    mha_mask_views,
    row_entropy_bounds,
)


def brute_entropy(q, k, allowed, temperature, scale):
    """Loops: softmax over allowed keys, H = -sum p log p (float64); also the number of allowed keys."""
    b, h, n_q, _ = q.shape
    out = torch.zeros(b, h, n_q, dtype=torch.float64)
    counts = torch.zeros(b, h, n_q, dtype=torch.long)
    for bi in range(b):
        for hi in range(h):
            for i in range(n_q):
                scores = [
                    float(q[bi, hi, i] @ k[bi, hi, j]) * scale / temperature[hi]
                    for j in range(k.shape[2])
                    if allowed[bi, i, j]
                ]
                counts[bi, hi, i] = len(scores)
                if not scores:
                    continue
                m = max(scores)
                z = sum(math.exp(s - m) for s in scores)
                out[bi, hi, i] = -sum(math.exp(s - m) / z * math.log(math.exp(s - m) / z) for s in scores)
    return out, counts


@pytest.mark.parametrize("chunk_size", [1, 3, 100])
def test_matches_brute_force_with_padding_and_causal(chunk_size: int) -> None:
    b, h, n, d = 2, 3, 7, 4
    q, k = torch.randn(b, h, n, d, dtype=torch.float64) * 2, torch.randn(b, h, n, d, dtype=torch.float64) * 2
    temperature = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    padding = torch.zeros(b, n, dtype=torch.bool)
    padding[1, 5:] = True
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    allowed = causal[None] & ~padding[:, None, :]
    expected, expected_counts = brute_entropy(q, k, allowed, temperature.tolist(), 1 / math.sqrt(d))
    got = attention_entropy_from_qk(q, k, allowed[:, None], temperature, chunk_size=chunk_size)  # True = attend
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    # the causal flag + an additive padding mask, and the causal flag + key_mask, give the same (and the counts)
    additive = torch.zeros(b, 1, 1, n, dtype=torch.float64).masked_fill(padding[:, None, None], -torch.inf)
    got2 = attention_entropy_from_qk(q, k, additive, temperature, chunk_size=chunk_size, causal=True)
    torch.testing.assert_close(got2, expected, rtol=1e-10, atol=1e-10)
    got3, counts = attention_entropy_from_qk(
        q, k, temperature=temperature, chunk_size=chunk_size, key_mask=~padding[:, None], causal=True,
        return_counts=True,
    )  # fmt: skip
    torch.testing.assert_close(got3, expected, rtol=1e-10, atol=1e-10)
    assert torch.equal(counts, expected_counts)


def test_uniform_is_log_n_and_one_hot_is_zero() -> None:
    n = 9
    q, k = torch.zeros(1, n, 4), torch.randn(1, n, 4)
    torch.testing.assert_close(attention_entropy_from_qk(q, k), torch.full((1, n), math.log(n)))
    logits = torch.full((3, n), -1e4)
    logits[:, 2] = 1e4
    torch.testing.assert_close(entropy_from_logits(logits), torch.zeros(3), atol=1e-6, rtol=0)
    # a key far ahead of the others: one-hot rows from q/k as well
    k = torch.zeros(1, n, 4)
    k[0, 3] = 1e3
    torch.testing.assert_close(attention_entropy_from_qk(torch.ones(1, n, 4), k), torch.zeros(1, n), atol=1e-6, rtol=0)


def test_float32_large_logits_stable_and_empty_rows_zero_with_finite_grad() -> None:
    q = (torch.randn(2, 5, 8) * 100).requires_grad_()
    k = torch.randn(2, 5, 8) * 100
    mask = torch.ones(2, 5, 5, dtype=torch.bool)
    mask[0, 3] = False  # row with no valid key
    ent = attention_entropy_from_qk(q, k, mask, chunk_size=2)
    assert torch.isfinite(ent).all() and ent[0, 3] == 0
    ent.sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()


def test_temperature_gradient_matches_float64_finite_difference() -> None:
    q, k = torch.randn(1, 2, 6, 4, dtype=torch.float64), torch.randn(1, 2, 6, 4, dtype=torch.float64)
    t = torch.tensor([0.7, 1.3], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: attention_entropy_from_qk(q, k, temperature=t, chunk_size=4), (t,))


def test_mha_masks_merge_and_row_bounds() -> None:
    padding = torch.tensor([[False, False, True]])
    views = mha_mask_views(padding, None, batch_size=1, num_heads=2, num_queries=3, num_keys=3)
    mask = merge_attention_masks(*views, num_queries=3, num_keys=3, is_causal=True)
    assert mask is not None and mask.shape == (1, 1, 3, 3)
    counts = (mask > -torch.inf).sum(-1)
    assert counts.tolist() == [[[1, 2, 2]]]
    max_entropy, rows = row_entropy_bounds(counts, padding, self_attention=True)
    torch.testing.assert_close(max_entropy, torch.tensor([[[0.0, math.log(2), math.log(2)]]]))
    assert rows.tolist() == [[[True, True, False]]]  # the padded query does not count
    assert row_entropy_bounds(counts, padding, self_attention=False)[1].tolist() == [[[True, True, True]]]


def test_head_entropy_totals_and_summary_match_loops() -> None:
    entropy = torch.rand(2, 3, 4, dtype=torch.float64)
    counts = torch.tensor([[1, 2, 3, 4], [0, 2, 2, 5]]).view(2, 1, 4)
    max_entropy = torch.log(counts.clamp_min(1).double())
    rows = torch.tensor([[True, True, True, False], [True, True, True, True]]).view(2, 1, 4) & (counts > 0)
    mean, normalized = head_entropy_summary(entropy, max_entropy, rows)
    for h in range(3):
        cells = [(b, i) for b in range(2) for i in range(4) if rows[b, 0, i]]
        assert mean[h].item() == pytest.approx(sum(float(entropy[b, h, i]) for b, i in cells) / len(cells))
        cells = [(b, i) for b, i in cells if counts[b, 0, i] >= 2]
        ratio = [float(entropy[b, h, i]) / math.log(int(counts[b, 0, i])) for b, i in cells]
        assert normalized[h].item() == pytest.approx(sum(ratio) / len(ratio))
    # a leading layer dimension is kept
    total, count = head_entropy_totals(entropy.expand(5, 2, 3, 4), max_entropy, rows)
    assert total.shape == count.shape == (5, 3)


def test_bad_inputs_raise_clear_errors() -> None:
    q, k = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    with pytest.raises(ValueError, match="mask of shape"):
        attention_entropy_from_qk(q, k, torch.ones(2, 4, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="key_mask of shape"):
        attention_entropy_from_qk(q, k, key_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="key_mask"):
        attention_entropy_from_qk(q, k, key_mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match="chunk_size"):
        attention_entropy_from_qk(q, k, chunk_size=0)
    with pytest.raises(ValueError, match="same last dimension"):
        attention_entropy_from_qk(q, torch.randn(2, 5, 3))
    with pytest.raises(TypeError, match="mask"):
        attention_entropy_from_qk(q, k, torch.ones(2, 5, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match="temperature"):
        attention_entropy_from_qk(q, k, temperature=torch.ones(3))
    with pytest.raises(ValueError, match="q contains NaN"):
        attention_entropy_from_qk(torch.full((2, 5, 4), float("nan")), k)
    with pytest.raises(ValueError, match="key_padding_mask must have shape"):
        mha_mask_views(torch.zeros(2, 4, dtype=torch.bool), None, batch_size=2, num_heads=1, num_queries=5, num_keys=5)
    with pytest.raises(ValueError, match="attn_mask must have shape"):
        mha_mask_views(None, torch.zeros(3, 5), batch_size=2, num_heads=1, num_queries=5, num_keys=5)


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf"), torch.tensor([1.0, 0.0])])
def test_temperature_must_be_positive_and_finite(temperature: object) -> None:
    # issue 14.12: temperature <= 0 was accepted (t = 0: NaN rows; t < 0: the entropy of the reversed softmax)
    q, k = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)
    with pytest.raises(ValueError, match="temperature must"):
        attention_entropy_from_qk(q, k, temperature=temperature)


def test_scale_must_be_finite() -> None:
    q, k = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)
    with pytest.raises(ValueError, match="scale must be finite"):
        attention_entropy_from_qk(q, k, scale=float("nan"))
    with pytest.raises(TypeError, match="scale must be a real number"):
        attention_entropy_from_qk(q, k, scale="1")  # type: ignore[arg-type]


def test_no_query_or_no_key_raises() -> None:
    # found by tests/fuzz: IndexError from amax (no key) and torch.cat's message (no query)
    for q, k in (
        (torch.randn(1, 2, 0, 4), torch.randn(1, 2, 3, 4)),
        (torch.randn(1, 2, 3, 4), torch.randn(1, 2, 0, 4)),
    ):
        with pytest.raises(ValueError, match="q and k must have at least one query and one key"):
            attention_entropy_from_qk(q, k)
