"""lightning-info: drop-in PyTorch Lightning parts for information-theoretic training.

Importing the package loads torch only; each subpackage loads what it needs (``lightning_info.functional`` and
``lightning_info.metrics`` never load Lightning, ``lightning_info.callbacks`` does). ``LossTermCallback`` is still
importable from here: it is loaded on first access.
"""

from typing import Any

from lightning_info.utils import ActivationCapture, resolve_module_names

__version__ = "0.1.0"

__all__ = ["ActivationCapture", "LossTermCallback", "__version__", "resolve_module_names"]


def __getattr__(name: str) -> Any:
    if name == "LossTermCallback":
        from lightning_info.callbacks import LossTermCallback

        return LossTermCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
