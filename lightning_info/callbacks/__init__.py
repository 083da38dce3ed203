"""Lightning callbacks: loss terms, monitors and masks that plug into any ``LightningModule``.

``MCMICallback`` (the MCMI teacher's loss term) lives with the rest of the distillation parts in
:mod:`lightning_info.distill`.
"""

from lightning_info.callbacks.attention_entropy_monitor import AttentionEntropyMonitor
from lightning_info.callbacks.cs_ib import CSIBCallback
from lightning_info.callbacks.entropy_guided_attention import EntropyGuidedAttentionCallback
from lightning_info.callbacks.fisher_mask import FisherMask
from lightning_info.callbacks.information_monitor import InformationMonitor
from lightning_info.callbacks.loss_term import LossTermCallback
from lightning_info.callbacks.sharpness_monitor import SharpnessMonitor

__all__ = [
    "AttentionEntropyMonitor",
    "CSIBCallback",
    "EntropyGuidedAttentionCallback",
    "FisherMask",
    "InformationMonitor",
    "LossTermCallback",
    "SharpnessMonitor",
]
