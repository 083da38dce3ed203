"""lightning-info: drop-in PyTorch Lightning parts for information-theoretic training."""

from lightning_info.callbacks import LossTermCallback
from lightning_info.utils import ActivationCapture, resolve_module_names

__version__ = "0.1.0"

__all__ = ["ActivationCapture", "LossTermCallback", "__version__", "resolve_module_names"]
