r"""Hinton et al.'s knowledge-distillation loss: temperature-softened KL to the teacher plus cross-entropy."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from lightning_info._internal.dtypes import upcast
from lightning_info._internal.validation import check_labels, check_range, check_tensor


class KDOutput(NamedTuple):
    """What :class:`KDLoss` returns: the objective, the KL at temperature ``T`` (not scaled by ``T**2``), the CE."""

    loss: Tensor
    kd: Tensor
    ce: Tensor


class KDLoss(nn.Module):
    r"""Knowledge distillation (Hinton, Vinyals and Dean, 2015) with temperature :math:`T` and weight :math:`\alpha`.

    .. math::
        \mathcal{L} = \alpha\, T^2\, \frac{1}{N}\sum_i \mathrm{KL}\big(\mathrm{softmax}(t_i/T) \,\|\,
        \mathrm{softmax}(s_i/T)\big) + (1-\alpha)\, \frac{1}{N}\sum_i -\log \mathrm{softmax}(s_i)_{y_i},

    for student logits :math:`s`, teacher logits :math:`t` and labels :math:`y`. The :math:`T^2` factor keeps the
    gradient of the soft term of the same size as :math:`T` changes (it scales as :math:`1/T^2` otherwise). The KL is
    computed from ``log_softmax`` of both (finite for any logits), in float32 for float16/bfloat16 inputs with
    autocast disabled. The MCMI paper's student recipe is :math:`T = 4`, :math:`\alpha = 0.9`.

    Args:
        temperature: :math:`T > 0`.
        alpha: :math:`\alpha \in [0, 1]`, weight of the distillation term (1: teacher only, 0: labels only).

    Raises:
        TypeError / ValueError: ``temperature <= 0`` or ``alpha`` outside [0, 1]; at call time, student and teacher
            logits of different shapes, logits not ``(N, C)``, labels not in ``[0, C)``.

    Example:
        >>> import torch
        >>> kd = KDLoss(temperature=4.0, alpha=0.9)
        >>> student, teacher = torch.randn(8, 5, requires_grad=True), torch.randn(8, 5)
        >>> out = kd(student, teacher, torch.randint(0, 5, (8,)))
        >>> out.loss.backward()
        >>> torch.allclose(out.loss, 0.9 * 16 * out.kd + 0.1 * out.ce)
        True
    """

    def __init__(self, temperature: float = 4.0, alpha: float = 0.9) -> None:
        super().__init__()
        self.temperature = check_range("temperature", temperature, 0.0, low_inclusive=False)
        self.alpha = check_range("alpha", alpha, 0.0, 1.0)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:g}, alpha={self.alpha:g}"

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, target: Tensor) -> KDOutput:
        """Objective, KL and CE for ``(N, C)`` student and teacher logits and ``(N,)`` labels."""
        s = check_tensor("student_logits", student_logits, ndim=2, min_rows=1, finite=False)
        t = check_tensor("teacher_logits", teacher_logits, ndim=2, min_rows=1, finite=False)
        if s.shape != t.shape:
            raise ValueError(
                f"student and teacher outputs must have the same shape, got student {tuple(s.shape)} "
                f"and teacher {tuple(t.shape)}"
            )
        labels = check_labels("target", target, s.shape[0], s.shape[1]).to(s.device)
        s = upcast(s)
        t = t.to(s.dtype)
        with torch.autocast(device_type=s.device.type, enabled=False):
            temp = self.temperature
            log_ps = torch.log_softmax(s / temp, dim=1)
            log_pt = torch.log_softmax(t / temp, dim=1)
            kd = nn.functional.kl_div(log_ps, log_pt, reduction="batchmean", log_target=True)
            ce = nn.functional.cross_entropy(s, labels)
        return KDOutput(self.alpha * temp**2 * kd + (1.0 - self.alpha) * ce, kd, ce)
