"""SDPA interception: entropies against explicit float64 softmax maps, GQA, masks, gradients, and the callbacks on a
timm-style block (fused qkv Linear + F.scaled_dot_product_attention) inside Trainer.fit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer
from torch import nn

from lightning_info.attention.sdpa import SDPAProbes, probe_of, sdpa_attention_entropy
from lightning_info.callbacks import AttentionEntropyMonitor, EntropyGuidedAttentionCallback
from tests.helpers.lightning import RecordingLogger, trainer_kwargs


def reference_entropy(q: torch.Tensor, k: torch.Tensor, allowed: torch.Tensor, scale: float) -> torch.Tensor:
    """Independent: float64 softmax over the allowed keys, -sum p log p, with k's heads repeated (GQA)."""
    q, k = q.double(), k.double()
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    logits = (q @ k.transpose(-1, -2) * scale).masked_fill(~allowed, float("-inf"))
    has_key = allowed.any(-1, keepdim=True)
    logits = torch.where(has_key, logits, 0.0)  # rows without a key: entropy 0 below
    log_p = torch.log_softmax(logits, -1).masked_fill(~allowed, 0.0)
    return -(log_p.exp() * log_p).sum(-1) * has_key.squeeze(-1)


@pytest.mark.parametrize("mask", ["causal", "bool", "additive", "none"])
@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_entropy_matches_explicit_maps(mask: str, kv_heads: int) -> None:
    torch.manual_seed(0)
    q, k = torch.randn(3, 4, 9, 8, dtype=torch.float64), torch.randn(3, kv_heads, 9, 8, dtype=torch.float64)
    padding = torch.ones(3, 9, dtype=torch.bool)
    padding[1, 6:] = False
    allowed = padding[:, None, None, :].expand(3, 1, 9, 9)
    attn_mask = None
    if mask == "causal":
        allowed = torch.ones(9, 9, dtype=torch.bool).tril().expand(3, 1, 9, 9)
    elif mask == "bool":
        attn_mask = allowed
    elif mask == "additive":
        attn_mask = torch.zeros(3, 1, 9, 9, dtype=torch.float64).masked_fill(~allowed, float("-inf"))
    else:
        allowed = torch.ones(3, 1, 9, 9, dtype=torch.bool)
    entropy, counts, rows = sdpa_attention_entropy(q, k, attn_mask, mask == "causal", scale=0.3, chunk_size=4)
    torch.testing.assert_close(entropy, reference_entropy(q, k, allowed, 0.3), rtol=1e-10, atol=1e-10)
    assert counts.shape == (3, 4, 9)
    torch.testing.assert_close(counts, allowed.sum(-1).expand(3, 4, 9))
    # padded positions (keys nobody may attend) are not counted as query rows
    expected_rows = padding[:, None, :].expand(3, 4, 9) if mask in ("bool", "additive") else torch.ones(3, 4, 9) > 0
    assert torch.equal(rows, expected_rows)


def test_gradient_matches_float64_autograd_of_explicit_maps() -> None:
    torch.manual_seed(1)
    q = torch.randn(2, 4, 11, 8, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 2, 11, 8, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(2, 4, 11, dtype=torch.float64)
    causal = torch.ones(11, 11, dtype=torch.bool).tril()
    (sdpa_attention_entropy(q, k, is_causal=True, chunk_size=3)[0] * weights).sum().backward()
    got = q.grad.clone(), k.grad.clone()
    q.grad = k.grad = None
    (reference_entropy(q, k, causal, 8**-0.5) * weights).sum().backward()
    torch.testing.assert_close(got[0], q.grad, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(got[1], k.grad, rtol=1e-9, atol=1e-10)
    assert torch.autograd.gradcheck(
        lambda a, b: sdpa_attention_entropy(a, b, is_causal=True, chunk_size=4)[0], (q[:1, :, :5], k[:1, :, :5])
    )


@pytest.mark.parametrize("mask", ["causal", "bool", "additive", "none"])
@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_analytic_backward_equals_float64_autograd_of_explicit_maps(mask: str, kv_heads: int) -> None:
    """The chunk's analytic gradient -p (log p + H) against autograd through full softmax maps, with padding (and a
    query row that may attend to nothing: no gradient, no NaN), causal rows, GQA and several chunks."""
    torch.manual_seed(2)
    q = torch.randn(3, 4, 9, 8, dtype=torch.float64, requires_grad=True)
    k = torch.randn(3, kv_heads, 9, 8, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(3, 4, 9, dtype=torch.float64)
    allowed = torch.ones(3, 1, 9, 9, dtype=torch.bool)
    allowed[1, ..., 6:] = False  # padded keys
    allowed[2, :, 4] = False  # query row 4 of sample 2 may attend to nothing
    attn_mask = None
    if mask == "causal":
        allowed = torch.ones(9, 9, dtype=torch.bool).tril().expand(3, 1, 9, 9)
    elif mask == "bool":
        attn_mask = allowed
    elif mask == "additive":
        attn_mask = torch.zeros(3, 1, 9, 9, dtype=torch.float64).masked_fill(~allowed, float("-inf"))
    else:
        allowed = torch.ones(3, 1, 9, 9, dtype=torch.bool)
    (sdpa_attention_entropy(q, k, attn_mask, mask == "causal", scale=0.3, chunk_size=4)[0] * weights).sum().backward()
    got = q.grad.clone(), k.grad.clone()
    q.grad = k.grad = None
    (reference_entropy(q, k, allowed, 0.3) * weights).sum().backward()
    torch.testing.assert_close(got[0], q.grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got[1], k.grad, rtol=1e-10, atol=1e-10)
    assert got[0].abs().sum() > 0 and got[1].abs().sum() > 0


@pytest.mark.parametrize(("num_queries", "num_keys"), [(5, 11), (11, 5), (10, 10)])
def test_causal_chunks_skip_the_masked_keys_exactly(num_queries: int, num_keys: int) -> None:
    """Causal chunks compute only keys 0..stop-1 (SDPA's top-left causal mask, rows and keys of different lengths):
    values and gradients equal the explicit float64 maps, and no chunk multiplies more keys than its rows can see."""
    torch.manual_seed(3)
    q = torch.randn(2, 4, num_queries, 8, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 2, num_keys, 8, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(2, 4, num_queries, dtype=torch.float64)
    allowed = torch.ones(num_queries, num_keys, dtype=torch.bool).tril()
    widths: list[int] = []
    matmul = torch.Tensor.__matmul__

    def recording(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        widths.append(b.shape[-1])
        return matmul(a, b)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.Tensor, "__matmul__", recording)
        entropy = sdpa_attention_entropy(q, k, is_causal=True, scale=0.3, chunk_size=3)[0]
    assert widths == [min(start + 3, num_queries, num_keys) for start in range(0, num_queries, 3)]
    (entropy * weights).sum().backward()
    got = q.grad.clone(), k.grad.clone()
    q.grad = k.grad = None
    reference = reference_entropy(q, k, allowed, 0.3)
    torch.testing.assert_close(entropy, reference, rtol=1e-10, atol=1e-10)
    (reference * weights).sum().backward()
    torch.testing.assert_close(got[0], q.grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got[1], k.grad, rtol=1e-10, atol=1e-10)


def test_a_learnt_additive_mask_gets_its_gradient() -> None:
    """An additive mask that requires gradient (e.g. a learnt bias) keeps autograd (checkpointed chunks)."""
    torch.manual_seed(3)
    q, k = torch.randn(2, 2, 7, 4, dtype=torch.float64), torch.randn(2, 2, 7, 4, dtype=torch.float64)
    bias = torch.randn(1, 2, 7, 7, dtype=torch.float64, requires_grad=True)
    sdpa_attention_entropy(q, k, bias, chunk_size=3)[0].sum().backward()
    got = bias.grad.clone()
    bias.grad = None
    p = torch.softmax(q @ k.transpose(-1, -2) / 2 + bias, -1)
    (-torch.special.xlogy(p, p).sum(-1)).sum().backward()
    torch.testing.assert_close(got, bias.grad, rtol=1e-10, atol=1e-10)


def test_regularizer_memory_is_bounded_by_the_chunk() -> None:
    """Saved for backward: views of the inputs and the chunks' entropies, never B x H x N x N logits."""
    q = torch.randn(1, 2, 512, 16, requires_grad=True)
    k = torch.randn(1, 2, 512, 16, requires_grad=True)
    saved: dict[int, int] = {}  # storage -> bytes (a view of q or k costs nothing more)

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        entropy = sdpa_attention_entropy(q, k, is_causal=True, chunk_size=64)[0]
    full_map = 2 * 512 * 512 * 4
    assert sum(saved.values()) < full_map / 8, (saved, full_map)
    entropy.sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()


class TimmAttention(nn.Module):
    """timm's ViT Attention: one fused qkv Linear and F.scaled_dot_product_attention."""

    def __init__(self, dim: int = 16, num_heads: int = 4) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.norm, self.attn, self.mlp = nn.LayerNorm(dim), TimmAttention(dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm(x))
        return x + self.mlp(x)


class ViTLike(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.Sequential(Block(), Block())
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x).mean(1))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader() -> torch.utils.data.DataLoader:
    x, y = torch.randn(32, 6, 16), torch.randint(0, 3, (32,))
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)


def test_probe_entropy_equals_explicit_map_of_the_block() -> None:
    torch.manual_seed(0)
    model = ViTLike().double().train()
    probes = SDPAProbes(model)
    assert [p.name for p in probes.probes] == ["blocks.0.attn", "blocks.1.attn"]
    probes.start("monitor")
    x = torch.randn(4, 6, 16, dtype=torch.float64)
    model(x)
    summaries = probes.summaries()
    attn = model.blocks[0].attn
    qkv = attn.qkv(model.blocks[0].norm(x)).reshape(4, 6, 3, 4, 4).permute(2, 0, 3, 1, 4)
    expected = reference_entropy(qkv[0], qkv[1], torch.ones(6, 6, dtype=torch.bool), 0.5).mean((0, 2))
    torch.testing.assert_close(summaries[0][0], expected.detach(), rtol=1e-9, atol=1e-9)
    probes.release("monitor")
    assert probe_of(attn) is None and not attn._forward_pre_hooks


def test_sdpa_calls_outside_the_probed_module_are_untouched() -> None:
    model = ViTLike().train()
    probes = SDPAProbes(model, modules=["blocks.0.attn"])
    probes.start("monitor")
    q = torch.randn(1, 2, 3, 4)
    F.scaled_dot_product_attention(q, q, q)
    model(torch.randn(2, 6, 16))
    assert probes.probes[0].calls == 1
    probes.release("monitor")


def test_callbacks_with_defaults_in_trainer_fit(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, logger = ViTLike(), RecordingLogger()
    reference = ViTLike()
    reference.load_state_dict(model.state_dict())
    x = torch.randn(2, 6, 16)
    before = reference(x)
    callback = EntropyGuidedAttentionCallback()
    trainer = Trainer(**trainer_kwargs(tmp_path, max_steps=0, logger=logger, callbacks=[callback]))
    trainer.fit(model, _loader())
    torch.testing.assert_close(model(x), before, rtol=0, atol=1e-6)  # t = 1 at step 0: outputs unchanged
    names = [n for n, _ in model.named_parameters()]
    assert "blocks.0.attn.log_temperature" in names and "blocks.1.attn.entropy_threshold" in names

    monitor = AttentionEntropyMonitor(every_n_steps=2)
    callback = EntropyGuidedAttentionCallback(log_every_n_steps=2)
    trainer = Trainer(**trainer_kwargs(tmp_path, max_steps=4, logger=logger, callbacks=[monitor, callback]))
    trainer.fit(model, _loader())
    series = logger.series()
    for key in ("attn_entropy/layer0/head0", "attn_entropy/layer1/head3", "attn_entropy/overload_frac",
                "attn_entropy/collapse_frac", "attn_entropy/temperature/layer1/head3"):  # fmt: skip
        assert key in series, key
    assert "attn_entropy/reg" in trainer.callback_metrics
    temperature = model.blocks[0].attn.log_temperature
    assert temperature.grad is not None and bool(temperature.grad.abs().sum() > 0)


def test_module_that_never_calls_sdpa_is_named() -> None:
    class Manual(nn.Module):
        num_heads = 1

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # the SDPA name is in the code but the call never happens, as in a fused-kernel branch
            if False:
                return F.scaled_dot_product_attention(x, x, x)
            return torch.softmax(x @ x.transpose(-1, -2), -1) @ x

    model = nn.Sequential(Manual()).train()
    probes = SDPAProbes(model)
    probes.start("monitor")
    model(torch.randn(1, 1, 3, 4))
    with pytest.raises(RuntimeError, match=r"'0' \(Manual\).*scaled_dot_product_attention.*Hugging Face and SDPA"):
        probes.summaries()
    probes.release("monitor")


def test_model_without_any_attention_is_refused() -> None:
    with pytest.raises(ValueError, match=r"Sequential has no attention module.*modules="):
        SDPAProbes(nn.Sequential(nn.Linear(2, 2)))
