from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_info.fisher import empirical_fisher, fisher_importance, nll_from_logits, topk_masks
from lightning_info.fisher.linear_shortcut import find_exact_linears
from tests.helpers.models import TinyCNN, TinyTransformer, classification_data, loader


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3))


def _data(n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)


def _reference_float64(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Hand-written backprop of -log softmax(W2 tanh(W1 x + b1) + b2)[y], one sample at a time, in float64."""
    W1, b1 = model[0].weight.double(), model[0].bias.double()
    W2, b2 = model[2].weight.double(), model[2].bias.double()
    out = {k: torch.zeros_like(v) for k, v in {"0.weight": W1, "0.bias": b1, "2.weight": W2, "2.bias": b2}.items()}
    for xi, yi in zip(x.double(), y, strict=True):
        h = torch.tanh(W1 @ xi + b1)
        p = torch.softmax(W2 @ h + b2, dim=0)
        d_logits = p - torch.nn.functional.one_hot(yi, 3).double()
        d_pre = (W2.T @ d_logits) * (1 - h**2)
        out["2.weight"] += torch.outer(d_logits, h) ** 2
        out["2.bias"] += d_logits**2
        out["0.weight"] += torch.outer(d_pre, xi) ** 2
        out["0.bias"] += d_pre**2
    return out


def _shortcut_params(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> set[str]:
    """The parameters ``mode="auto"`` takes the Linear shortcut for (checked on the first sample, as it does)."""
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    one_sample = lambda: nn.functional.cross_entropy(model(x[:1]), y[:1], reduction="sum")  # noqa: E731
    return {name for lin in find_exact_linears(model.eval(), params, one_sample).values() for name in lin.names}


@pytest.mark.parametrize("mode", ["auto", "vmap", "loop"])
def test_matches_float64_reference(mode: str) -> None:
    model = _mlp()
    x, y = _data()
    # uneven batches and chunks: 24 samples as 10 + 14, chunks of 4, only the first 20 used
    batches = [(x[:10], y[:10]), (x[10:], y[10:])]
    fisher = empirical_fisher(model, batches, num_samples=20, mode=mode, chunk_size=4)  # type: ignore[arg-type]
    reference = _reference_float64(model, x[:20], y[:20])
    assert list(fisher) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    for name, ref in reference.items():
        torch.testing.assert_close(fisher[name].double(), ref, rtol=1e-5, atol=1e-7)
    assert _shortcut_params(model, x, y) == set(reference)  # "auto" is the shortcut for every parameter here


class _Mixed(nn.Module):
    """Every kind of parameter the shortcut must leave to vmap, and four layers it may take."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens = nn.Linear(4, 6)  # applied to (N, 3, 4) tokens: a sum over tokens per sample (token-wise shortcut)
        self.norm = nn.LayerNorm(6)
        self.conv = nn.Conv1d(6, 6, 2)
        self.shared = nn.Linear(6, 6)  # called twice
        self.reused = nn.Linear(6, 6)  # its weight is also read directly
        self.enc, self.dec = nn.Linear(6, 6), nn.Linear(6, 6)
        self.dec.weight = self.enc.weight  # tied: one parameter, two layers
        self.parametrized = nn.Linear(6, 6)  # the weight is computed from another tensor; the bias is still exact
        torch.nn.utils.parametrize.register_parametrization(self.parametrized, "weight", _Double())
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, 6))
        self.scaled = _ScaledLinear(6, 6)  # a subclass with its own forward
        self.direct = nn.Linear(6, 6)  # never called, its weight read once by the parent's forward
        self.unused = nn.Linear(6, 6)  # never called: zero Fisher
        self.side = nn.Linear(6, 2)  # called once, but the output ignores it: zero Fisher, shortcut or not
        self.mid = nn.Linear(6, 6)  # called with a keyword input, a user hook doubles its output
        self.mid.register_forward_hook(lambda module, args, output: 2 * output)
        self.head = nn.Linear(6, 3)
        self.head.bias.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(torch.tanh(self.tokens(x)))
        h = self.conv(h.transpose(1, 2)).mean(-1)
        h = torch.tanh(self.shared(torch.tanh(self.shared(h))))
        h = torch.tanh(self.reused(h)) + 0.3 * h @ self.reused.weight
        h = torch.tanh(self.dec(torch.tanh(self.enc(h))))
        h = torch.tanh(self.parametrized(h)) * self.scale
        h = torch.tanh(self.scaled(h)) + torch.tanh(h @ self.direct.weight.T)
        self.side(h)
        return self.head(torch.tanh(self.mid(input=h)))


class _ScaledLinear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * super().forward(x)


class _Double(nn.Module):
    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return 2 * w


def test_auto_takes_the_shortcut_only_where_exact_and_equals_vmap_on_a_mixed_model() -> None:
    torch.manual_seed(0)
    model = _Mixed()
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(30, 3, 4, generator=g), torch.randint(0, 3, (30,), generator=g)
    exact = {"tokens.weight", "tokens.bias", "side.weight", "side.bias", "mid.weight", "mid.bias", "head.weight"}
    exact.add("parametrized.bias")
    assert _shortcut_params(model, x, y) == exact
    batches = [(x[:13], y[:13]), (x[13:], y[13:])]
    auto = empirical_fisher(model, batches, num_samples=30, chunk_size=7)
    fast = empirical_fisher(model, batches, num_samples=30, chunk_size=7, mode="vmap")
    slow = empirical_fisher(model, batches, num_samples=30, mode="loop")
    assert list(auto) == list(fast) and "head.bias" not in auto and "enc.weight" in auto and "dec.weight" not in auto
    for name in auto:
        torch.testing.assert_close(auto[name], fast[name], rtol=1e-5, atol=1e-8)
        torch.testing.assert_close(auto[name], slow[name], rtol=1e-4, atol=1e-8)
    assert not auto["unused.weight"].any() and not auto["side.weight"].any() and not auto["side.bias"].any()
    assert auto["mid.weight"].gt(0).all() and auto["head.weight"].gt(0).all() and auto["scale"].gt(0).all()


def test_token_wise_shortcut_squares_the_sum_over_tokens() -> None:
    """A Linear on (N, T, d) tokens has per-sample gradient sum_t delta_t a_t^T, whose square is not the sum over
    tokens of (delta_t a_t^T)^2 (computed here independently): the token-wise shortcut must give the former."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Flatten(), nn.Linear(15, 3))
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(12, 3, 4, generator=g), torch.randint(0, 3, (12,), generator=g)
    assert _shortcut_params(model, x, y) == {"0.weight", "0.bias", "3.weight", "3.bias"}
    auto = empirical_fisher(model, [(x, y)], num_samples=12, chunk_size=5)
    fast = empirical_fisher(model, [(x, y)], num_samples=12, chunk_size=5, mode="vmap")
    for name in auto:
        torch.testing.assert_close(auto[name], fast[name], rtol=1e-5, atol=1e-8)
    per_token = torch.zeros(5, 4, dtype=torch.float64)
    for xi, yi in zip(x.double(), y, strict=True):
        z = model[0].double()(xi.unsqueeze(0))
        loss = nn.functional.cross_entropy(model[1:].double()(z), yi.unsqueeze(0), reduction="sum")
        (delta,) = torch.autograd.grad(loss, z)
        per_token += delta[0].square().T @ xi.square()
    model.float()
    assert not torch.allclose(auto["0.weight"].double(), per_token, rtol=0.1)


def test_auto_fails_loudly_if_the_model_changes_after_the_check() -> None:
    class Changing(nn.Module):
        def __init__(self, later_calls: int) -> None:
            super().__init__()
            self.fc, self.later_calls, self.forwards = nn.Linear(5, 5), later_calls, 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.forwards += 1
            for _ in range(1 if self.forwards == 1 else self.later_calls):
                x = self.fc(x)
            return x[:, :3]

    x, y = _data(8)
    with pytest.raises(RuntimeError, match=r"layers \['fc'\] did not run in this forward; use mode='vmap'"):
        empirical_fisher(Changing(later_calls=0), [(x, y)], num_samples=8)
    with pytest.raises(RuntimeError, match="'fc' ran twice in a forward but once when it was checked; use mode='vmap'"):
        empirical_fisher(Changing(later_calls=2), [(x, y)], num_samples=8)


def test_is_not_the_squared_mean_gradient() -> None:
    model = _mlp()
    x, y = _data()
    fisher = empirical_fisher(model, [(x, y)], num_samples=24)
    loss = nn.functional.cross_entropy(model(x), y, reduction="sum")
    grads = torch.autograd.grad(loss, list(model.parameters()))
    # per-sample sum of squares >= square of the sum (Cauchy-Schwarz), strictly here, by a large factor
    for (name, f), g in zip(fisher.items(), grads, strict=True):
        assert bool((f >= g.pow(2) / 24 - 1e-6).all())
        assert f.sum() > 3 * (g.pow(2) / 24).sum(), name
        assert not torch.allclose(f, g.pow(2), rtol=0.1)


@pytest.mark.parametrize(
    ("model", "shape"),
    [(TinyTransformer(in_dim=2), (4, 2)), (TinyCNN(), (1, 8, 8))],
    ids=["transformer", "cnn_batchnorm"],
)
def test_vmap_equals_loop_on_transformer_and_batchnorm(model: nn.Module, shape: tuple[int, ...]) -> None:
    data = classification_data(20, in_dim=8 if len(shape) == 2 else 64, shape=shape)
    model.train()
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    fast = empirical_fisher(model, loader(data, 8), num_samples=20, chunk_size=6)
    slow = empirical_fisher(model, loader(data, 8), num_samples=20, mode="loop")
    for name in fast:
        torch.testing.assert_close(fast[name], slow[name], rtol=1e-4, atol=1e-7)
    assert all(m.training for m in model.modules())  # train flags restored
    for key, value in model.state_dict().items():  # BatchNorm running stats untouched
        torch.testing.assert_close(value, buffers[key], rtol=0, atol=0)


def test_parameters_the_output_does_not_use_get_zero_fisher_in_vmap_mode() -> None:
    """Regression: vmap returns a sample-independent gradient (here zero) expanded over the batch, which the in-place
    accumulation could not write to (found with EntropyGuidedAttention's entropy_threshold, which only its
    regularizer reads)."""
    from lightning_info.attention import EntropyGuidedAttention

    class WithUnused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = EntropyGuidedAttention(4, 2, learnable_threshold=True)
            self.head = nn.Linear(4, 3)
            self.unused = nn.Parameter(torch.ones(2, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.attn(x, x, x, need_weights=False)[0].mean(1))

    torch.manual_seed(0)
    model = WithUnused()
    x, y = torch.randn(10, 3, 4), torch.randint(0, 3, (10,))
    fast = empirical_fisher(model, [(x, y)], num_samples=10, chunk_size=4)
    slow = empirical_fisher(model, [(x, y)], num_samples=10, mode="loop")
    for name in fast:
        torch.testing.assert_close(fast[name], slow[name], rtol=1e-4, atol=1e-7)
    assert not fast["unused"].any() and not fast["attn.entropy_threshold"].any()
    assert fast["attn.log_temperature"].gt(0).all() and fast["head.weight"].gt(0).all()


@pytest.mark.parametrize("mode", ["vmap", "loop"])
def test_sampled_labels_same_in_all_modes_and_differ_from_empirical(mode: str) -> None:
    model = _mlp()
    x, y = _data()
    a = empirical_fisher(model, [(x, y)], label="sampled", num_samples=24, generator=torch.Generator().manual_seed(3))
    generator = torch.Generator().manual_seed(3)
    b = empirical_fisher(model, [(x, y)], label="sampled", mode=mode, num_samples=24, generator=generator)  # type: ignore[arg-type]
    e = empirical_fisher(model, [(x, y)], num_samples=24)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-7)
    assert not torch.allclose(a["2.bias"], e["2.bias"])


def test_sampled_labels_estimate_the_true_fisher() -> None:
    # last-layer bias: d(-log p_y)/d b = p - e_y, so E_{y ~ p}[(p_c - [y = c])^2] = p_c (1 - p_c) exactly
    model = _mlp()
    x, _ = _data(6)
    repeats = 2000
    xs = x.repeat_interleave(repeats, 0)
    batches = [(xs, torch.zeros(len(xs), dtype=torch.long))]  # the data labels must be ignored
    g = torch.Generator().manual_seed(0)
    fisher = empirical_fisher(model, batches, label="sampled", num_samples=len(xs), chunk_size=512, generator=g)
    with torch.no_grad():
        p = torch.softmax(model(x).double(), -1)
    true_fisher = repeats * (p * (1 - p)).sum(0)
    torch.testing.assert_close(fisher["2.bias"].double(), true_fisher, rtol=0.05, atol=0)
    empirical = empirical_fisher(model, batches, num_samples=len(xs), chunk_size=512)  # all labels 0: far off
    assert (empirical["2.bias"].double() - true_fisher).abs().max() > 0.2 * true_fisher.max()


def test_loop_mode_under_no_grad_and_vmap_failure_message() -> None:
    model = _mlp()
    x, y = _data(8)
    reference = empirical_fisher(model, [(x, y)], num_samples=8, mode="loop")
    with torch.no_grad():  # e.g. called from a no_grad hook: both modes still differentiate
        for mode in ("loop", "vmap", "auto"):
            fisher = empirical_fisher(model, [(x, y)], num_samples=8, mode=mode)  # type: ignore[arg-type]
            torch.testing.assert_close(fisher["0.weight"], reference["0.weight"])

    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(5, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.linear(x)
            return out if out.sum().item() > 0 else -out  # .item(): vmap cannot batch this

    with pytest.raises(RuntimeError, match=r"vmap could not compute per-sample gradients.*use mode='loop'"):
        empirical_fisher(DataDependent(), [(x, y)], num_samples=8)
    assert empirical_fisher(DataDependent(), [(x, y)], num_samples=8, mode="loop")["linear.weight"].sum() > 0


def test_frozen_parameters_are_skipped_and_tuple_inputs() -> None:
    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(5, 3), nn.Linear(5, 3)

        def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return self.a(u) + self.b(v)

    model = TwoInputs()
    model.b.requires_grad_(False)
    x, y = _data(8)
    # two batches of 5 and 3 rows in chunks of 3: a chunk joins the tuple inputs of both batches
    split = [((x[:5], x.flip(0)[:5]), y[:5]), ((x[5:], x.flip(0)[5:]), y[5:])]
    fast = empirical_fisher(model, split, num_samples=8, chunk_size=3)
    slow = empirical_fisher(model, [((x, x.flip(0)), y)], num_samples=8, mode="loop")
    assert list(fast) == ["a.weight", "a.bias"]
    for name in fast:
        torch.testing.assert_close(fast[name], slow[name])


def test_bad_inputs() -> None:
    model = _mlp()
    batches = [_data(4)]
    with pytest.raises(ValueError, match="num_samples must be >= 1, got 0"):
        empirical_fisher(model, batches, num_samples=0)
    with pytest.raises(ValueError, match="mode must be one of"):
        empirical_fisher(model, batches, mode="jit")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one scalar per sample"):
        empirical_fisher(model, batches, loss_fn=lambda out, y: out.sum(0))
    with pytest.raises(ValueError, match="one scalar per sample"):
        empirical_fisher(model, batches, loss_fn=lambda out, y: out.sum(0), mode="loop")
    with pytest.raises(ValueError, match="no trainable parameters"):
        empirical_fisher(_mlp().requires_grad_(False), batches)
    with pytest.raises(TypeError, match="each batch must be a tuple"):
        empirical_fisher(model, [torch.randn(4, 5)])
    with pytest.raises(ValueError, match="yielded no samples"):
        empirical_fisher(model, [])
    with pytest.warns(UserWarning, match="asked for num_samples=10, the batches held 4"):
        empirical_fisher(model, batches, num_samples=10)


def test_fisher_importance() -> None:
    fisher = {"w": torch.tensor([1.0, 4.0, 2.0])}
    out = fisher_importance(fisher, {"w": torch.tensor([2.0, 0.5, -1.0])})
    torch.testing.assert_close(out["w"], torch.tensor([2.0, 0.5, 1.0]))
    with pytest.raises(ValueError, match="params has no entry 'w'"):
        fisher_importance(fisher, {})


# ---------------------------------------------------------------- top-k masks


def test_topk_exact_k_global_and_ties() -> None:
    fisher = {"a": torch.tensor([[5.0, 1.0], [1.0, 1.0]]), "b": torch.tensor([1.0, 9.0, 1.0, 0.0])}
    masks = topk_masks(fisher, 0.375)  # k = floor(0.375 * 8) = 3: 9, 5 and the FIRST tied 1.0 (a[0, 1])
    assert masks["a"].tolist() == [[True, True], [False, False]]
    assert masks["b"].tolist() == [False, True, False, False]
    # global, not per layer: all kept entries can come from one tensor
    masks = topk_masks({"small": torch.zeros(10), "big": torch.arange(10.0) + 1}, 0.25)
    assert int(masks["small"].sum()) == 0 and masks["big"].tolist() == [False] * 5 + [True] * 5
    # all ties: exactly k, the first k in order
    masks = topk_masks({"x": torch.ones(7), "y": torch.ones(5)}, 0.5)
    assert masks["x"].tolist() == [True] * 6 + [False] and int(masks["y"].sum()) == 0
    # random scores with many duplicates: always exactly k, deterministic
    g = torch.Generator().manual_seed(0)
    fisher = {f"p{i}": torch.randint(0, 4, (13, 7), generator=g).float() for i in range(5)}
    for ratio in (0.001, 0.05, 0.3, 0.999, 1.0):
        first, second = topk_masks(fisher, ratio), topk_masks(fisher, ratio)
        assert sum(int(m.sum()) for m in first.values()) == max(1, int(ratio * 5 * 91))
        assert all(torch.equal(first[n], second[n]) for n in fisher)


def test_topk_budget_is_the_floor_despite_float_rounding() -> None:
    # 0.29 * 100 == 28.999999999999996 and 0.57 * 100 == 56.99999999999999 in floats; k must be 29 and 57
    for ratio, k in ((0.29, 29), (0.57, 57), (0.015, 1), (0.0149, 1), (0.005, 1)):
        masks = topk_masks({"w": torch.arange(100.0)}, ratio)
        assert int(masks["w"].sum()) == k, ratio


def test_threshold_property_against_sorting() -> None:
    g = torch.Generator().manual_seed(1)
    fisher = {"a": torch.rand(50, generator=g), "b": torch.rand(3, 20, generator=g)}
    masks = topk_masks(fisher, 0.1)
    kept = torch.cat([fisher[n][masks[n]] for n in fisher])
    dropped = torch.cat([fisher[n][~masks[n]] for n in fisher])
    assert kept.numel() == 11 and kept.min() > dropped.max()
    torch.testing.assert_close(
        kept.sort().values, torch.cat([f.reshape(-1) for f in fisher.values()]).sort().values[-11:]
    )


def test_always_train_include_exclude() -> None:
    fisher = {
        "encoder.0.weight": torch.arange(12.0).reshape(3, 4),
        "encoder.0.bias": torch.tensor([100.0, 0.0, 0.0]),
        "head.weight": torch.zeros(2, 3),
        "head.bias": torch.zeros(2),
    }  # 23 entries
    masks = topk_masks(fisher, 0.5, always_train=["head"])  # k = 11: 8 head entries + top 3 of the rest
    assert masks["head.weight"].all() and masks["head.bias"].all()
    assert masks["encoder.0.bias"].tolist() == [True, False, False]
    assert masks["encoder.0.weight"].reshape(-1).tolist() == [False] * 10 + [True] * 2
    masks = topk_masks(fisher, 0.2, exclude=["*.bias"])  # k = 4 from the weights only
    assert not masks["encoder.0.bias"].any() and masks["encoder.0.weight"].reshape(-1)[-4:].all()
    masks = topk_masks(fisher, 0.1, include=["encoder.0.b*"])  # k = 2 from the bias only
    assert masks["encoder.0.bias"].tolist() == [True, True, False] and not masks["encoder.0.weight"].any()
    with pytest.raises(ValueError, match="always_train selects 8 entries, more than the budget k=2"):
        topk_masks(fisher, 0.1, always_train=["head"])
    with pytest.raises(ValueError, match="leave only 3; lower keep_ratio"):
        topk_masks(fisher, 0.5, include=["encoder.0.bias"])
    with pytest.raises(ValueError, match=r"exclude pattern 'haed' matches no parameter; closest parameter names"):
        topk_masks(fisher, 0.5, exclude=["haed"])
    with pytest.raises(TypeError, match="include must be a list"):
        topk_masks(fisher, 0.5, include="head")  # type: ignore[arg-type]


def test_always_train_that_exactly_fills_the_budget() -> None:
    fisher = {"body.weight": torch.arange(12.0), "head.weight": torch.zeros(4)}  # 16 entries, k = 4 = the head
    masks = topk_masks(fisher, 0.25, always_train=["head"])
    assert masks["head.weight"].all() and not masks["body.weight"].any()


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.5, float("nan")])
def test_topk_bad_keep_ratio(ratio: float) -> None:
    with pytest.raises(ValueError, match="keep_ratio must"):
        topk_masks({"a": torch.ones(3)}, ratio)


def test_topk_bad_scores() -> None:
    with pytest.raises(ValueError, match="non-empty mapping"):
        topk_masks({}, 0.5)
    with pytest.raises(ValueError, match=r"fisher\['a'\] contains NaN"):
        topk_masks({"a": torch.tensor([1.0, float("nan")])}, 0.5)
    with pytest.raises(TypeError, match="floating-point tensor"):
        topk_masks({"a": torch.ones(3, dtype=torch.long)}, 0.5)


@pytest.mark.parametrize("mode", ["vmap", "loop"])
def test_stops_drawing_batches_once_num_samples_are_seen(mode: str) -> None:
    # a training loader may be long or streaming: no batch is drawn past the one that completes num_samples
    x, y = _data(24)
    drawn: list[int] = []

    def batches():
        for i in range(0, 24, 4):
            drawn.append(i)
            yield x[i : i + 4], y[i : i + 4]

    fisher = empirical_fisher(_mlp(), batches(), num_samples=8, mode=mode)
    assert drawn == [0, 4]
    expected = _reference_float64(_mlp(), x[:8], y[:8])
    for name, value in fisher.items():
        torch.testing.assert_close(value.double(), expected[name], rtol=1e-5, atol=1e-6)


def test_the_default_loss_sums_the_token_log_likelihoods() -> None:
    # one sample of a sequence model: (tokens, classes) logits; log p(y | x) is the sum over its tokens
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    target = torch.tensor([0, 3, 1, 1, 2])
    expected = -sum(float(torch.log_softmax(logits[t], dim=0)[target[t]]) for t in range(5))
    assert float(nll_from_logits(logits, target)) == pytest.approx(expected, rel=1e-12)
