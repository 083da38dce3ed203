"""Whether the current closure evaluation is an extra (auxiliary) pass of a sharpness-aware optimizer step.

The flag lives below every part so that the optimizers (which set it) and the activation capture used by the
monitors (which reads it) do not import each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

_AUXILIARY = ContextVar("lightning_info_auxiliary_pass", default=False)


def in_auxiliary_pass() -> bool:
    """``True`` while a sharpness-aware optimizer evaluates an extra (perturbed) pass of the closure.

    Guard side effects of ``training_step`` or of callback hooks that must happen once per step with it, e.g. a
    torchmetrics ``Metric`` updated by hand (``self.log`` is already silenced in those passes)::

        if not in_auxiliary_pass():
            self.train_acc.update(logits, y)
    """
    return _AUXILIARY.get()


def enter_pass(auxiliary: bool) -> Token[bool]:
    """Mark what follows as an auxiliary (``True``) or clean (``False``) pass; undo with :func:`exit_pass`."""
    return _AUXILIARY.set(auxiliary)


def exit_pass(token: Token[bool]) -> None:
    """Undo the :func:`enter_pass` that returned ``token``."""
    _AUXILIARY.reset(token)


@contextmanager
def pass_kind(auxiliary: bool) -> Iterator[None]:
    """Mark the code inside the block as an auxiliary (``True``) or clean (``False``) pass."""
    token = enter_pass(auxiliary)
    try:
        yield
    finally:
        exit_pass(token)
