"""Lightning callbacks: loss terms, monitors and masks that plug into any ``LightningModule``."""

from lightning_info.callbacks.loss_term import LossTermCallback

__all__ = ["LossTermCallback"]
