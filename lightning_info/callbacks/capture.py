"""The lifecycle of a callback's :class:`~lightning_info.utils.ActivationCapture` hooks, written once.

Every callback that looks inside the user's model (``InformationMonitor``, ``AttentionEntropyMonitor``,
``CSIBCallback``, ``MCMICallback``) holds its captures here: attached when the callback asks, dropped from
what they captured when it asks, and removed from the model at every ``teardown`` **and** when training raises
(``on_exception``, after which Lightning calls no ``teardown``), so a failed fit never leaves hooks on a model and
the callback can be reused on another one.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from typing_extensions import override

from lightning_info._internal.capture import ActivationCapture

__all__ = ["CaptureCallback"]


class CaptureCallback(Callback):
    """Base class (mixin) of callbacks that hook the model with :class:`~lightning_info.utils.ActivationCapture`.

    :attr:`captures` maps a name of the subclass's choosing to an attached capture. Subclasses call
    :meth:`attach_captures` (usually at ``setup``), read ``self.captures[name].captured``, and call
    :meth:`clear_captures` / :meth:`remove_captures` as they need. At ``teardown`` and ``on_exception`` (after the
    other bases' own handling, through ``super()``) :meth:`release` removes every hook; a subclass that keeps more
    per-run state extends :meth:`release` rather than both hooks. Put it first among the bases:
    ``class MyCallback(CaptureCallback, LossTermCallback)``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.captures: dict[str, ActivationCapture] = {}

    def attach_captures(self, **captures: ActivationCapture) -> None:
        """Remove the hooks held so far, then attach ``captures`` and hold them under their keyword names."""
        self.remove_captures()
        self.captures = {name: capture.attach() for name, capture in captures.items()}

    def clear_captures(self) -> None:
        """Forget what every held capture captured (the hooks stay)."""
        for capture in self.captures.values():
            capture.clear()

    def remove_captures(self, *names: str) -> None:
        """Remove the hooks of the captures ``names`` (all when none is given) and stop holding them."""
        for name in names or list(self.captures):
            capture = self.captures.pop(name, None)
            if capture is not None:
                capture.remove()

    def release(self) -> None:
        """End of a run (``teardown`` of any stage, or ``on_exception``): remove every hook."""
        self.remove_captures()

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().teardown(trainer, pl_module, stage)
        self.release()

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        super().on_exception(trainer, pl_module, exception)
        self.release()
