r"""Knowledge distillation with MCMI teachers (Ye et al., ICLR 2024): losses, a teacher callback, a student module.

- :class:`MCMILoss`: the teacher objective :math:`\mathrm{CE} - \lambda\,\mathrm{CMI}` (batch or running centroids).
- :class:`MCMICallback`: adds :math:`-\lambda\,\mathrm{CMI}` to any classifier ``LightningModule``'s loss.
- :class:`KDLoss`: Hinton distillation loss for the student.
- :class:`DistillationModule`: a ``LightningModule`` training a student from a frozen teacher.

The losses are plain ``nn.Module``s; ``MCMICallback`` and ``DistillationModule`` are the Lightning glue.
"""

from lightning_info.distill.kd_loss import KDLoss, KDOutput
from lightning_info.distill.mcmi_callback import MCMICallback
from lightning_info.distill.mcmi_loss import MCMILoss, MCMIOutput
from lightning_info.distill.module import DistillationModule

__all__ = ["DistillationModule", "KDLoss", "KDOutput", "MCMICallback", "MCMILoss", "MCMIOutput"]
