"""Lightning callbacks: loss terms, monitors and masks that plug into any ``LightningModule``."""

from lightning_info.callbacks.attention_entropy_monitor import AttentionEntropyMonitor
from lightning_info.callbacks.cs_ib import CSIBCallback
from lightning_info.callbacks.entropy_guided_attention import EntropyGuidedAttentionCallback
from lightning_info.callbacks.fisher_mask import FisherMask
from lightning_info.callbacks.information_monitor import InformationMonitor
from lightning_info.callbacks.loss_term import LossTermCallback

__all__ = ["LossTermCallback"]
__all__ += ["CSIBCallback"]
__all__ += ["FisherMask"]
__all__ += ["AttentionEntropyMonitor", "EntropyGuidedAttentionCallback"]
__all__ += ["InformationMonitor"]
