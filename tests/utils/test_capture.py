from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_info.utils import ActivationCapture, resolve_module_names
from tests.helpers.models import TinyTransformer


def test_glob_matches_in_model_order() -> None:
    model = TinyTransformer(num_layers=3)
    names = resolve_module_names(model, ["encoder.layers.*.self_attn", "head"])
    assert names == [f"encoder.layers.{i}.self_attn" for i in range(3)] + ["head"]


def test_names_come_in_model_order_not_pattern_or_sorted_order() -> None:
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(11)])
    assert resolve_module_names(model, ["10", "9"]) == ["9", "10"]  # sorted as strings, "10" < "9"
    assert resolve_module_names(model, ["1?", "9"]) == ["9", "10"]


def test_missing_name_lists_close_matches() -> None:
    model = TinyTransformer()
    with pytest.raises(ValueError, match=r"matches 'encoder.layer.0.self_attn'.*encoder\.layers\.0\.self_attn"):
        ActivationCapture(model, ["encoder.layer.0.self_attn"])
    with pytest.raises(ValueError, match=r"matches 'nothing_like_it'$"):
        ActivationCapture(model, ["nothing_like_it"])
    with pytest.raises(TypeError, match="wrap it in a list"):
        ActivationCapture(model, "head")


def test_captures_outputs_and_inputs_detached() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh())
    x = torch.randn(6, 4, requires_grad=True)
    with ActivationCapture(model, ["0"]) as out_capture, ActivationCapture(model, ["1"], capture="input") as inp:
        y = model(x)
    expected = x @ model[0].weight.T + model[0].bias
    torch.testing.assert_close(out_capture.captured["0"], expected.detach())
    torch.testing.assert_close(inp.captured["1"], expected.detach())
    assert not out_capture.captured["0"].requires_grad
    assert torch.allclose(y, torch.tanh(expected))


def test_input_passed_by_keyword_is_captured() -> None:
    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(input=x)

    model, x = Outer(), torch.randn(6, 4)
    with ActivationCapture(model, ["inner"], capture="input") as capture:
        model(x)
    torch.testing.assert_close(capture.captured["inner"], x)


def test_the_first_tensor_is_found_after_items_without_one() -> None:
    class Pair(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[object, torch.Tensor]:
            return (None, [2.0]), 3.0 * x

    model, x = nn.Sequential(Pair()), torch.randn(5, 2)
    with ActivationCapture(model, ["0"]) as capture:
        model(x)
    torch.testing.assert_close(capture.captured["0"], 3.0 * x)


def test_multihead_attention_tuple_output_keeps_attention_output() -> None:
    model = TinyTransformer()
    capture = ActivationCapture(model, ["encoder.layers.0.self_attn"]).attach()
    model(torch.randn(5, 4, 8))
    assert capture.captured["encoder.layers.0.self_attn"].shape == (5, 4, 16)
    capture.remove()


def test_differentiable_capture_keeps_graph() -> None:
    model = nn.Sequential(nn.Linear(4, 3))
    with ActivationCapture(model, ["0"], detach=False) as capture:
        model(torch.randn(2, 4))
    capture.captured["0"].sum().backward()
    assert model[0].weight.grad is not None


def test_sample_cap_and_accumulate() -> None:
    model = nn.Sequential(nn.Linear(4, 3))
    capture = ActivationCapture(model, ["0"], max_samples=5, accumulate=True).attach()
    first, second = torch.randn(3, 4), torch.randn(3, 4)
    model(first)
    model(second)
    model(torch.randn(3, 4))  # already full: ignored
    expected = model[0](torch.cat([first, second]))[:5].detach()
    torch.testing.assert_close(capture.captured["0"], expected)
    capture.clear()
    model(first)
    assert capture.captured["0"].shape == (3, 3)
    last = ActivationCapture(model, ["0"], max_samples=2).attach()
    model(first)
    model(second)
    torch.testing.assert_close(last.captured["0"], model[0](second)[:2].detach())


def test_remove_and_disable() -> None:
    model = nn.Sequential(nn.Linear(4, 3))
    capture = ActivationCapture(model, ["0"]).attach()
    assert capture.attached and len(model[0]._forward_hooks) == 1
    capture.attach()  # attaching again is a no-op: one hook, not two
    assert len(model[0]._forward_hooks) == 1
    capture.enabled = False
    model(torch.randn(2, 4))
    assert capture.captured == {}
    capture.remove()
    assert not capture.attached and len(model[0]._forward_hooks) == 0
    model(torch.randn(2, 4))
    assert capture.captured == {}


def test_remove_drops_what_was_captured() -> None:
    model = nn.Sequential(nn.Linear(4, 3))
    capture = ActivationCapture(model, ["0"]).attach()
    model(torch.randn(2, 4))
    assert set(capture.captured) == {"0"}
    capture.remove()
    assert capture.captured == {}


def test_custom_extract() -> None:
    model = TinyTransformer()
    capture = ActivationCapture(
        model, ["encoder.layers.*.self_attn"], extract=lambda m, args, kwargs, out: (args[0].shape, kwargs)
    ).attach()
    model(torch.randn(2, 4, 8))
    shape, kwargs = capture.captured["encoder.layers.1.self_attn"]
    assert shape == (2, 4, 16) and kwargs["need_weights"] is False


def test_bad_arguments() -> None:
    model = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(ValueError, match="max_samples must be >= 1, got 0"):
        ActivationCapture(model, ["0"], max_samples=0)
    with pytest.raises(ValueError, match=r"capture must be one of \['output', 'input'\], got 'grad'"):
        ActivationCapture(model, ["0"], capture="grad")  # type: ignore[arg-type]


def test_detached_capture_skips_sharpness_aware_extra_passes() -> None:
    """A monitor (detached) keeps the clean pass of a SAM step; a loss term (attached) follows every pass."""
    from lightning_info.optim import SAM

    model = nn.Sequential(nn.Linear(4, 3))
    monitor = ActivationCapture(model, ["0"], accumulate=True).attach()
    term = ActivationCapture(model, ["0"], detach=False, accumulate=True).attach()
    optimizer = SAM(model.parameters(), torch.optim.SGD, rho=0.5, lr=0.1)
    x = torch.randn(5, 4)
    clean_output = model(x).detach()
    monitor.clear()
    term.clear()

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = model(x).pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    assert monitor.captured["0"].shape == (5, 3)  # one pass: the clean one, at the weights before the step
    torch.testing.assert_close(monitor.captured["0"], clean_output)
    assert term.captured["0"].shape == (10, 3)  # clean + perturbed pass
    assert not torch.allclose(term.captured["0"][5:], clean_output)


def test_every_pass_overrides_the_detach_default() -> None:
    """A detached capture can follow every pass (an input a loss term needs), an attached one the clean pass only."""
    from lightning_info._internal.passes import pass_kind

    model = nn.Sequential(nn.Linear(4, 3))
    follow = ActivationCapture(model, ["0"], every_pass=True).attach()
    clean_only = ActivationCapture(model, ["0"], detach=False, every_pass=False).attach()
    with pass_kind(auxiliary=True):
        model(torch.randn(2, 4))
    assert "0" in follow.captured and not follow.captured["0"].requires_grad
    assert clean_only.captured == {}
