"""Whether the current closure evaluation is an extra (auxiliary) pass of a sharpness-aware optimizer step.

The flag lives below every part so that the optimizers (which set it) and the activation capture used by the
monitors (which reads it) do not import each other. It is per thread (``threading.local``): an auxiliary pass in one
thread changes nothing in another, and ``torch.compile`` guards on its value (a ``ContextVar`` would break the graph).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_STATE = threading.local()


def in_auxiliary_pass() -> bool:
    """``True`` while a sharpness-aware optimizer evaluates an extra (perturbed) pass of the closure in this thread.

    Guard side effects of ``training_step`` or of callback hooks that must happen once per step with it, e.g. a
    torchmetrics ``Metric`` updated by hand (``self.log`` is already silenced in those passes)::

        if not in_auxiliary_pass():
            self.train_acc.update(logits, y)
    """
    return getattr(_STATE, "auxiliary", False)


def enter_pass(auxiliary: bool) -> bool:
    """Mark what follows in this thread as an auxiliary (``True``) or clean (``False``) pass.

    Returns the previous mark, which :func:`exit_pass` puts back.
    """
    previous = in_auxiliary_pass()
    _STATE.auxiliary = auxiliary
    return previous


def exit_pass(previous: bool) -> None:
    """Undo the :func:`enter_pass` that returned ``previous``."""
    _STATE.auxiliary = previous


@contextmanager
def pass_kind(auxiliary: bool) -> Iterator[None]:
    """Mark the code inside the block as an auxiliary (``True``) or clean (``False``) pass."""
    previous = enter_pass(auxiliary)
    try:
        yield
    finally:
        exit_pass(previous)
