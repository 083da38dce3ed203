"""The exact Linear shortcut on token-wise layers (attention projections, FFNs, Hugging Face Conv1D), in float64."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from lightning_info.fisher import empirical_fisher
from lightning_info.fisher.linear_shortcut import find_exact_linears

transformers = pytest.importorskip("transformers")


class _Block(nn.Module):
    """Pre-norm attention (separate q/k/v/o Linear layers, SDPA with a key padding mask) + FFN."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.ff1, self.ff2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, h: Tensor, keep: Tensor) -> Tensor:
        n, t, d = h.shape
        x = self.norm1(h)
        q, k, v = (lin(x).view(n, t, self.heads, d // self.heads).transpose(1, 2) for lin in (self.q, self.k, self.v))
        mask = keep[:, None, None, :]  # padded keys are never attended to
        att = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        h = h + self.o(att.transpose(1, 2).reshape(n, t, d))
        return h + self.ff2(torch.tanh(self.ff1(self.norm2(h))))


class _TokenClassifier(nn.Module):
    """Embedding -> 2 blocks -> per-token logits; inputs ``(ids, keep)``, ``keep`` False on padding."""

    def __init__(self, vocab: int = 11, d: int = 8, heads: int = 2, classes: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(_Block(d, heads) for _ in range(2))
        self.head = nn.Linear(d, classes)

    def forward(self, ids: Tensor, keep: Tensor) -> Tensor:
        h = self.embed(ids)
        for block in self.blocks:
            h = block(h, keep)
        return self.head(h)


def _token_nll(output: Tensor, target: Tensor) -> Tensor:
    """Sum over the tokens of one sample of -log p(y_t); padded tokens (target -100) are ignored."""
    return nn.functional.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1), reduction="sum")


def _reference(model: nn.Module, samples: list[tuple[tuple[Tensor, ...], Tensor]], loss: Callable[..., Tensor]) -> dict:
    """The definition: one forward/backward per sample, squared gradients summed (float64)."""
    params = dict(model.named_parameters())
    out = {name: torch.zeros_like(p) for name, p in params.items()}
    for inputs, target in samples:
        grads = torch.autograd.grad(loss(model(*inputs), target), list(params.values()), allow_unused=True)
        for name, g in zip(params, grads, strict=True):
            if g is not None:
                out[name] += g.square()
    return out


def _shortcut_names(model: nn.Module, inputs: tuple[Tensor, ...], target: Tensor, loss: Callable[..., Tensor]) -> set:
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    one = tuple(t[:1] for t in inputs)
    found = find_exact_linears(model.eval(), params, lambda: loss(model(*one), target[:1]))
    return {name for lin in found.values() for name in lin.names}


def _check(model: nn.Module, inputs: tuple[Tensor, ...], target: Tensor, loss: Callable[..., Any], chunk: int) -> dict:
    n = target.shape[0]
    auto = empirical_fisher(model, [(inputs, target)], loss_fn=loss, num_samples=n, chunk_size=chunk)
    samples = [(tuple(t[i : i + 1] for t in inputs), target[i : i + 1]) for i in range(n)]
    reference = _reference(model, samples, loss)
    assert list(auto) == list(reference)
    for name, ref in reference.items():
        torch.testing.assert_close(auto[name], ref, rtol=1e-10, atol=1e-12, msg=name)
    return auto


@pytest.mark.parametrize("padded", [False, True], ids=["no_padding", "padding"])
def test_token_wise_shortcut_on_a_transformer_equals_the_batch_1_loop(padded: bool) -> None:
    torch.manual_seed(0)
    model = _TokenClassifier().double()
    g = torch.Generator().manual_seed(4)
    n, t = 9, 6
    ids = torch.randint(0, 11, (n, t), generator=g)
    lengths = torch.randint(2, t + 1, (n,), generator=g) if padded else torch.full((n,), t)
    keep = torch.arange(t) < lengths[:, None]
    target = torch.randint(0, 3, (n, t), generator=g).masked_fill(~keep, -100)
    linears = {
        f"blocks.{i}.{p}.{w}" for i in range(2) for p in ("q", "k", "v", "o", "ff1", "ff2") for w in ("weight", "bias")
    }
    expected = linears | {"head.weight", "head.bias", "embed.weight"}
    assert _shortcut_names(model, (ids, keep), target, _token_nll) == expected
    auto = _check(model, (ids, keep), target, _token_nll, chunk=4)
    assert all(auto[name].gt(0).any() for name in linears)
    if padded:  # the Fisher differs from the one with padding tokens scored: the mask and the ignored targets count
        unmasked = empirical_fisher(model, [((ids, torch.ones_like(keep)), target.clamp(min=0))], _token_nll, n)
        assert not torch.allclose(auto["blocks.0.q.weight"], unmasked["blocks.0.q.weight"], rtol=1e-3)


def test_token_counts_may_differ_between_chunks() -> None:
    """Batches padded to different lengths give chunks with different T: each gets probes of its own shape."""
    torch.manual_seed(1)
    model = _TokenClassifier().double()
    g = torch.Generator().manual_seed(5)
    batches, samples = [], []
    for t in (5, 3, 7):
        ids, keep = torch.randint(0, 11, (4, t), generator=g), torch.ones(4, t, dtype=torch.bool)
        target = torch.randint(0, 3, (4, t), generator=g)
        batches.append(((ids, keep), target))
        samples += [((ids[i : i + 1], keep[i : i + 1]), target[i : i + 1]) for i in range(4)]
    auto = empirical_fisher(model, batches, loss_fn=_token_nll, num_samples=12, chunk_size=4)
    reference = _reference(model, samples, _token_nll)
    for name, ref in reference.items():
        torch.testing.assert_close(auto[name], ref, rtol=1e-10, atol=1e-12, msg=name)


class _Keywords(nn.Module):
    """Calls a Hugging Face model as ``model(input_ids=ids, attention_mask=mask)``.

    The padding mask is passed in 4-D, ``(N, 1, 1, T)`` boolean: transformers builds a 2-D mask into that form with
    value checks (``mask.all()``) that ``vmap`` refuses as data-dependent control flow, and uses a 4-D one as given.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: Tensor, mask: Tensor | None = None) -> Any:
        return self.model(input_ids=ids, attention_mask=None if mask is None else mask[:, None, None, :].bool())


def _sequence_nll(output: Any, target: Tensor) -> Tensor:
    return nn.functional.cross_entropy(output.logits, target, reduction="sum")


@pytest.mark.parametrize("arch", ["gpt2", "bert"])
def test_hugging_face_classifiers_take_the_shortcut_for_every_projection(arch: str) -> None:
    """GPT-2's Conv1D (weight stored transposed) and BERT's Linear layers, attention and FFN, and the token, position
    (and BERT's segment) embeddings; BERT with padding (its word embedding has ``padding_idx`` 0).

    GPT-2 runs without padding: under vmap, its padding warning reads the ids (``pad_token_id in input_ids``,
    data-dependent control flow, which vmap refuses), so ``pad_token_id`` is ``None``.
    """
    torch.manual_seed(0)
    common = {"vocab_size": 13, "num_labels": 3, "bos_token_id": 0, "eos_token_id": 0}
    if arch == "gpt2":
        config = transformers.GPT2Config(n_embd=8, n_layer=2, n_head=2, n_positions=8, pad_token_id=None, **common)
        model = transformers.GPT2ForSequenceClassification(config)
        per_layer = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
        prefix = "model.transformer.h"
        embeddings = {"model.transformer.wte.weight", "model.transformer.wpe.weight"}
    else:
        config = transformers.BertConfig(
            hidden_size=8,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=16,
            max_position_embeddings=8,
            pad_token_id=0,
            **common,
        )
        model = transformers.BertForSequenceClassification(config)
        parts = ("self.query", "self.key", "self.value", "output.dense")
        per_layer = (*(f"attention.{p}" for p in parts), "intermediate.dense", "output.dense")
        prefix = "model.bert.encoder.layer"
        embeddings = {f"model.bert.embeddings.{e}_embeddings.weight" for e in ("word", "position", "token_type")}
    model = _Keywords(model).double()
    g = torch.Generator().manual_seed(6)
    n, t = 6, 5
    lengths = torch.tensor([5, 3, 5, 2, 4, 5]) if arch == "bert" else torch.full((n,), t)
    mask = (torch.arange(t) < lengths[:, None]).long()
    ids = torch.randint(1, 13, (n, t), generator=g) * mask  # right padding with pad_token_id 0
    inputs = (ids, mask) if arch == "bert" else (ids,)
    target = torch.randint(0, 3, (n,), generator=g)
    names = _shortcut_names(model, inputs, target, _sequence_nll)
    expected = {f"{prefix}.{i}.{p}.{w}" for i in range(2) for p in per_layer for w in ("weight", "bias")}
    expected |= embeddings
    assert expected <= names
    _check(model, inputs, target, _sequence_nll, chunk=4)


class _Embedded(nn.Module):
    """Token embedding (optionally with ``padding_idx`` or other options) + position embedding -> mean -> logits.

    ``tied``: the head reuses the token embedding's weight (``logits = h @ E^T``, as a language model's head does).
    """

    def __init__(self, tied: bool = False, **options: Any) -> None:
        super().__init__()
        self.tokens, self.positions = nn.Embedding(7, 4, **options), nn.Embedding(5, 4)
        self.mix = nn.Linear(4, 4)
        self.head = None if tied else nn.Linear(4, 7)

    def forward(self, ids: Tensor) -> Tensor:
        h = torch.tanh(self.mix(self.tokens(ids) + self.positions(torch.arange(ids.shape[1]))))
        pooled = h.mean(1)
        return pooled @ self.tokens.weight.T if self.head is None else self.head(pooled)


def _ids(n: int = 10, t: int = 5) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, 7, (n, t), generator=g)
    ids[0] = torch.tensor([3, 3, 3, 1, 3])  # repeated ids within one sample: their gradients add before squaring
    return ids, torch.randint(0, 7, (n,), generator=g)


@pytest.mark.parametrize("padding_idx", [None, 3])
def test_embedding_shortcut_equals_the_batch_1_loop(padding_idx: int | None) -> None:
    torch.manual_seed(0)
    model = _Embedded(padding_idx=padding_idx).double()
    ids, target = _ids()
    assert {"tokens.weight", "positions.weight"} <= _shortcut_names(model, (ids,), target, _sequence_loss)
    auto = _check(model, (ids,), target, _sequence_loss, chunk=4)
    if padding_idx is not None:
        assert not auto["tokens.weight"][padding_idx].any()
    assert auto["tokens.weight"].gt(0).sum() >= 6 * 4 - (4 if padding_idx is not None else 0)


def test_embedding_shortcut_squares_the_sum_over_a_samples_tokens_with_the_same_id() -> None:
    """The per-token squares (computed here independently) differ from the Fisher where a sample repeats an id."""
    torch.manual_seed(0)
    model = _Embedded().double()
    ids, target = _ids()
    auto = empirical_fisher(model, [(ids, target)], loss_fn=_sequence_loss, num_samples=10)
    per_token = torch.zeros(7, 4, dtype=torch.float64)
    for i in range(10):
        e = model.tokens(ids[i : i + 1])
        h = torch.tanh(model.mix(e + model.positions(torch.arange(5))))
        (delta,) = torch.autograd.grad(_sequence_loss(model.head(h.mean(1)), target[i : i + 1]), e)
        per_token.index_add_(0, ids[i], delta[0].square())
    assert not torch.allclose(auto["tokens.weight"][3], per_token[3], rtol=1e-3)  # row 3: sample 0 repeats it


@pytest.mark.parametrize(
    "options", [{"tied": True}, {"max_norm": 1.0}, {"scale_grad_by_freq": True}], ids=["tied", "max_norm", "freq"]
)
def test_embeddings_the_shortcut_cannot_handle_keep_vmap_and_stay_exact(options: dict[str, Any]) -> None:
    """A weight the head reuses (two uses), a renormalised weight, a frequency-scaled gradient: no shortcut."""
    torch.manual_seed(0)
    model = _Embedded(**options).double()
    ids, target = _ids()
    names = _shortcut_names(model, (ids,), target, _sequence_loss)
    assert "tokens.weight" not in names and "positions.weight" in names
    if "max_norm" not in options:  # max_norm renormalises the weight in place at every forward: no fixed reference
        _check(model, (ids,), target, _sequence_loss, chunk=4)


def _sequence_loss(output: Tensor, target: Tensor) -> Tensor:
    return nn.functional.cross_entropy(output, target, reduction="sum")
