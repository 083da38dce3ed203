"""Capture activations of submodules named by dotted path or glob, without editing the model.

Used by every part that needs to see inside the user's model (``InformationMonitor``, ``CSIBCallback``,
``MCMICallback``, ``AttentionEntropyMonitor``).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from lightning_info.utils import ActivationCapture
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> with ActivationCapture(model, ["0", "2"], max_samples=3) as capture:
    ...     _ = model(torch.randn(5, 4))
    >>> {name: tuple(t.shape) for name, t in capture.captured.items()}
    {'0': (3, 8), '2': (3, 2)}
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from lightning_info._internal.passes import in_auxiliary_pass
from lightning_info._internal.validation import check_choice, check_int

Extractor = Callable[[nn.Module, tuple[Any, ...], dict[str, Any], Any], Any]


def resolve_module_names(model: nn.Module, patterns: Iterable[str]) -> list[str]:
    """Expand dotted names and globs (``fnmatch``: ``encoder.layers.*.attn``) to module names, in model order.

    Raises:
        TypeError: if ``patterns`` is a plain string or holds a non-string.
        ValueError: if a pattern matches no module; the message lists the closest names.
    """
    if isinstance(patterns, str):
        raise TypeError(f"layers must be a list of module names, got the string {patterns!r}; wrap it in a list")
    names = [name for name, _ in model.named_modules()]
    matched: set[str] = set()
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise TypeError(f"module names must be str, got {type(pattern).__name__} ({pattern!r})")
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)] if any(c in pattern for c in "*?[") else []
        if pattern in names:
            hits.append(pattern)
        if not hits:
            close = difflib.get_close_matches(pattern, [n for n in names if n], n=5, cutoff=0.4)
            hint = f"; closest names: {close}" if close else ""
            raise ValueError(f"no submodule of {type(model).__name__} matches {pattern!r}{hint}")
        matched.update(hits)
    return [n for n in names if n in matched]


def _first_tensor(value: Any) -> Tensor | None:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for item in value:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def _extract_output(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
    return _first_tensor(output)


def _extract_input(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
    return _first_tensor(args) if args else _first_tensor(list(kwargs.values()))


class ActivationCapture:
    """Forward hooks on named submodules that keep what the modules computed in the last forward pass.

    Args:
        model: the model to hook.
        layers: dotted module names as in ``model.named_modules()``, or globs (``"encoder.layers.*.self_attn"``).
        capture: ``"output"`` keeps the first tensor of each module's output (``nn.MultiheadAttention`` returns a
            tuple: its attention output is kept), ``"input"`` the first positional input.
        extract: instead of ``capture``, a function ``(module, args, kwargs, output) -> value`` choosing what to keep
            (any object; ``max_samples`` and ``detach`` apply only when it returns a tensor).
        detach: keep detached tensors (monitoring). ``False`` keeps the graph so a loss term can backpropagate.
        every_pass: capture in every closure evaluation of a sharpness-aware optimizer step, its extra (perturbed)
            passes included (what a loss term needs); ``False`` captures the clean pass only (what a monitor
            needs). Default: ``not detach``.
        max_samples: keep at most this many rows (dim 0) of each tensor; ``None`` keeps all.
        accumulate: concatenate along dim 0 over successive forward passes (up to ``max_samples``) instead of
            keeping only the last one; call :meth:`clear` to start again.

    Raises:
        ValueError: a layer name matches nothing (the message lists close matches), or ``max_samples < 1``.

    The hooks are only active between :meth:`attach` and :meth:`remove` (or inside ``with``); ``enabled = False``
    skips capturing while staying attached. With ``every_pass=False`` (the default for detached captures) the extra
    passes of a sharpness-aware optimizer step (:func:`~lightning_info.optim.in_auxiliary_pass`) are skipped, so a
    monitor sees each step's clean forward once; loss terms follow every pass, since the term's gradient at the
    perturbed weights is part of the step.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Iterable[str],
        *,
        capture: Literal["output", "input"] = "output",
        extract: Extractor | None = None,
        detach: bool = True,
        every_pass: bool | None = None,
        max_samples: int | None = None,
        accumulate: bool = False,
    ) -> None:
        check_choice("capture", capture, ("output", "input"))
        if max_samples is not None:
            check_int("max_samples", max_samples, min_value=1)
        self.model = model
        self.names = resolve_module_names(model, layers)
        self.extract: Extractor = extract or (_extract_output if capture == "output" else _extract_input)
        self.detach = detach
        self.every_pass = not detach if every_pass is None else every_pass
        self.max_samples = max_samples
        self.accumulate = accumulate
        self.enabled = True
        self.captured: dict[str, Any] = {}
        self._handles: list[RemovableHandle] = []

    @property
    def attached(self) -> bool:
        """Whether the hooks are registered."""
        return bool(self._handles)

    def attach(self) -> ActivationCapture:
        """Register the hooks (idempotent)."""
        if not self._handles:
            modules = dict(self.model.named_modules())
            for name in self.names:
                hook = self._make_hook(name)
                self._handles.append(modules[name].register_forward_hook(hook, with_kwargs=True))
        return self

    def remove(self) -> None:
        """Remove the hooks and drop what was captured."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.clear()

    def clear(self) -> None:
        """Forget captured values (the hooks stay)."""
        self.captured.clear()

    def __enter__(self) -> ActivationCapture:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _make_hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            if not self.enabled or (not self.every_pass and in_auxiliary_pass()):
                return  # monitoring sees each step once: not the extra passes of a sharpness-aware optimizer
            value = self.extract(module, args, kwargs, output)
            if isinstance(value, Tensor):
                value = self._store_tensor(name, value)
            self.captured[name] = value

        return hook

    def _store_tensor(self, name: str, value: Tensor) -> Tensor:
        if self.detach:
            value = value.detach()
        previous = self.captured.get(name)
        if self.accumulate and isinstance(previous, Tensor) and value.ndim > 0:
            if self.max_samples is not None and previous.shape[0] >= self.max_samples:
                return previous
            value = torch.cat([previous, value], dim=0)
        if self.max_samples is not None and value.ndim > 0:
            value = value[: self.max_samples]
        return value
