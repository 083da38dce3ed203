r"""The MCMI teacher objective: cross-entropy minus :math:`\lambda` times the conditional mutual information."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor, nn

from lightning_info._internal.dtypes import upcast
from lightning_info._internal.passes import in_auxiliary_pass
from lightning_info._internal.validation import check_choice, check_int, check_labels, check_range, check_tensor
from lightning_info.functional.cmi import (
    DEFAULT_EPS,
    centroids_from_statistics,
    check_eps,
    class_statistics,
)


class MCMIOutput(NamedTuple):
    """What :class:`MCMILoss` returns: the objective and its two parts (for logging)."""

    loss: Tensor
    ce: Tensor
    cmi: Tensor


def check_logits(name: str, logits: object, num_classes: int) -> Tensor:
    """Check ``(N, num_classes)`` floating-point logits (finiteness is left to the loss-term checks)."""
    z = check_tensor(name, logits, ndim=2, min_rows=1, finite=False)
    if z.shape[1] != num_classes:
        raise ValueError(f"{name} must have shape (N, {num_classes}), got {tuple(z.shape)}")
    return z


class _MCMIObjective(torch.autograd.Function):
    r"""``(loss, ce, cmi)`` of the logits ``z`` in one autograd node, its backward written from the derivatives.

    With :math:`p` the CE's softmax, :math:`P^T` the CMI's and :math:`D_i = P^T_i \odot (\log P^T_i - \log Q_{y_i}
    - \mathrm{KL}_i)` (the centroids held fixed, see :class:`MCMILoss`): :math:`\partial\,\mathrm{CE} / \partial z =
    (p - \mathrm{onehot}(y)) / N` and :math:`\partial\,\mathrm{CMI} / \partial z = D / (N T)`. Only the gradients
    of the outputs that are back-propagated are built. A dozen autograd nodes fewer than the plain formula: on small
    models the loss is what an MCMI step adds. Under ``create_graph=True`` (e.g. ``GAM(hvp="exact")``) the backward
    rebuilds :math:`p` and :math:`D` from ``z`` with differentiable operations, so second derivatives are those of
    the plain formula (the centroids held fixed).
    """

    @staticmethod
    def forward(
        ctx: Any, z: Tensor, values: tuple[Tensor, Tensor, Tensor], p_ce: Tensor, d: Tensor, labels: Tensor,
        log_q: Tensor, lam: float, temperature: float,
    ) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
        ctx.save_for_backward(z, p_ce, d, labels, log_q)
        ctx.lam, ctx.temperature = lam, temperature
        ctx.set_materialize_grads(False)
        return values  # computed outside autograd: not inputs of this node, so no copy is needed

    @staticmethod
    def backward(ctx: Any, d_loss: Tensor | None, d_ce: Tensor | None, d_cmi: Tensor | None) -> tuple[Any, ...]:
        z, p_ce, d, labels, log_q = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: the same factors as differentiable functions of z
            p_ce, d = _gradient_factors(z, labels, log_q, ctx.temperature)
        n = p_ce.shape[0]
        rows = labels[:, None]
        grad = None
        if d_loss is not None:  # (p - onehot - lam / T * D) / N
            grad = torch.add(p_ce, d, alpha=-ctx.lam / ctx.temperature).scatter_add_(1, rows, _minus_ones(p_ce))
            grad.mul_(d_loss / n)
        if d_ce is not None:
            term = p_ce.scatter_add(1, rows, _minus_ones(p_ce)).mul_(d_ce / n)
            grad = term if grad is None else grad.add_(term)
        if d_cmi is not None:
            term = d * (d_cmi / (n * ctx.temperature))
            grad = term if grad is None else grad.add_(term)
        return grad, None, None, None, None, None, None, None


def _gradient_factors(z: Tensor, labels: Tensor, log_q: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """``(p, D)`` of :class:`_MCMIObjective` from the logits with differentiable operations (double backward)."""
    log_p = torch.log_softmax(z if temperature == 1.0 else z / temperature, dim=1)
    p = log_p.exp()
    excess = log_p - log_q.index_select(0, labels)
    d = p * (excess - (p * excess).sum(dim=1, keepdim=True))
    return (p if temperature == 1.0 else torch.softmax(z, dim=1)), d


def _full_precision(device_type: str) -> AbstractContextManager[Any]:
    """Autocast disabled, entered only where it is enabled (the context itself costs a few microseconds)."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return nullcontext()


def _minus_ones(like: Tensor) -> Tensor:
    return torch.full((like.shape[0], 1), -1.0, dtype=like.dtype, device=like.device)


class MCMILoss(nn.Module):
    r"""Maximum-CMI teacher objective (Ye et al., ICLR 2024): :math:`\mathrm{CE} - \lambda\,\mathrm{CMI}`.

    .. math::
        \mathcal{L} = \frac{1}{N}\sum_i -\log P_{x_i}(y_i)\big|_{T=1}
        \;-\; \lambda\,\frac{1}{N}\sum_i \mathrm{KL}\big(P^{T}_{x_i} \,\|\, Q_{y_i}\big),
        \qquad P^{T}_{x} = \mathrm{softmax}(z_x / T),

    with :math:`Q_c` the centroid of class :math:`c` (see
    :func:`~lightning_info.functional.cmi`). Training a teacher with it (warm start
    from a cross-entropy teacher, :math:`\lambda \approx 0.1`-:math:`0.25`, :math:`T = 1`) makes its soft labels a
    better estimate of the Bayes conditional distribution for distillation.

    Centroids:

    - ``"batch"``: the class means of this batch's :math:`P^T`. They are held fixed in the backward pass, which
      gives the exact gradient (the gradient through an exact class mean is the same constant for every output
      and cancels through the softmax; only entries clamped at :math:`\epsilon` differ). The batch CMI lies in
      :math:`[0, \log K]`, so the objective is bounded below by :math:`-\lambda \log K`. Under DDP each process
      uses its own batch (use ``"ema"`` for centroids shared by all processes). A class with a single sample in
      the batch contributes 0: with many classes and small batches prefer ``"ema"``.
    - ``"ema"``: running class centroids kept in the buffers ``class_centroids`` ``(C, C)`` and ``class_seen``
      ``(C,)`` (saved with the module's ``state_dict``). In training mode each call first updates them with the
      batch, :math:`Q_c \leftarrow m\,Q_c + (1-m)\,\bar P_c` for the classes present (a class seen for the first
      time starts at its batch mean, so there is no bias towards 0), then uses them as constants. The batch
      statistics are summed over the processes with one ``all_reduce`` when ``torch.distributed`` is initialised,
      so every rank holds and uses the same centroids; every rank must then call the loss the same number of times
      (as DDP training does). Because :math:`Q_c \ge (1-m)\,P_{x_i}/n_c` for each sample of class :math:`c`, every
      KL term is at most :math:`\log\big(n_c / (1-m)\big)`: the term cannot grow without limit, unlike centroids
      frozen between epochs. In eval mode the stored centroids are used without update (classes never seen fall
      back to the batch mean); so are they in the extra passes of a sharpness-aware optimizer step
      (:func:`~lightning_info.optim.in_auxiliary_pass`: SAM, GAM), so the centroids move once per step, from the
      clean pass, and the perturbed loss uses the same constant centroids as the clean one.

    The gradient is the derivative written out, in one autograd node (``_MCMIObjective``); with
    ``backward(create_graph=True)`` it is rebuilt from differentiable operations, so second derivatives (e.g.
    ``GAM(hvp="exact")``) are those of the plain formula with the centroids held fixed.

    Log-probabilities are clamped at :math:`\log\epsilon` (every KL term is at most :math:`\log(1/\epsilon)`).
    float16/bfloat16 logits are computed in float32 with autocast disabled.

    Args:
        num_classes: number of classes :math:`C` (>= 2).
        lam: :math:`\lambda \ge 0`, weight of the CMI.
        temperature: :math:`T > 0` of the distributions in the CMI (the CE uses the raw logits).
        centroids: ``"batch"`` or ``"ema"``.
        momentum: :math:`m \in [0, 1)` of the running centroids (``"ema"``).
        eps: clamp :math:`\epsilon \in (0, 1)` inside the logarithms.
        sync_dist: sum the running-centroid statistics over processes (``"ema"``, when distributed is initialised).

    Raises:
        TypeError / ValueError: an argument of the wrong type or out of range (``lam < 0``, ``temperature <= 0``,
            ...); at call time, logits not of shape ``(N, C)``, labels not in ``[0, C)``.

    Example:
        >>> import torch
        >>> loss_fn = MCMILoss(num_classes=3, lam=0.2)
        >>> logits = torch.randn(8, 3, requires_grad=True)
        >>> out = loss_fn(logits, torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]))
        >>> out.loss.backward()
        >>> torch.allclose(out.loss, out.ce - 0.2 * out.cmi)
        True
    """

    class_centroids: Tensor
    class_seen: Tensor

    def __init__(
        self,
        num_classes: int,
        lam: float = 0.2,
        temperature: float = 1.0,
        centroids: str = "batch",
        momentum: float = 0.9,
        eps: float = DEFAULT_EPS,
        sync_dist: bool = True,
    ) -> None:
        super().__init__()
        self.num_classes = check_int("num_classes", num_classes, min_value=2)
        self.lam = check_range("lam", lam, 0.0)
        self.temperature = check_range("temperature", temperature, 0.0, low_inclusive=False)
        self.centroids = check_choice("centroids", centroids, ("batch", "ema"))
        self.momentum = check_range("momentum", momentum, 0.0, 1.0, high_inclusive=False)
        self.eps = check_eps(eps)
        if not isinstance(sync_dist, bool):
            raise TypeError(f"sync_dist must be a bool, got {type(sync_dist).__name__}")
        self.sync_dist = sync_dist
        if self.centroids == "ema":
            self.register_buffer("class_centroids", torch.zeros(num_classes, num_classes))
            self.register_buffer("class_seen", torch.zeros(num_classes, dtype=torch.bool))

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, lam={self.lam:g}, temperature={self.temperature:g}, "
            f"centroids={self.centroids!r}" + (f", momentum={self.momentum:g}" if self.centroids == "ema" else "")
        )

    def forward(self, logits: Tensor, target: Tensor) -> MCMIOutput:
        """Objective, CE and CMI for ``(N, C)`` logits and ``(N,)`` integer labels."""
        z = check_logits("logits", logits, self.num_classes)
        labels = check_labels("target", target, z.shape[0], self.num_classes, check_values=False).to(z.device)
        z = upcast(z)
        zd = z.detach()  # everything below is computed outside autograd; _MCMIObjective supplies the gradient
        with _full_precision(z.device.type):
            log_p = torch.log_softmax(zd if self.temperature == 1.0 else zd / self.temperature, dim=1)
            p = log_p.exp()
            q = self._centroids(p, labels)  # checks the labels' range
            log_p_ce = log_p if self.temperature == 1.0 else torch.log_softmax(zd, dim=1)
            ce = nn.functional.nll_loss(log_p_ce, labels)
            log_q = q.clamp_min_(self.eps).log_()
            d = log_p.sub_(log_q.index_select(0, labels))  # log P_i - log Q_{y_i}, (N, C)
            pd = p * d
            kl = pd.sum(dim=1)
            cmi = kl.mean()
            loss = torch.sub(ce, cmi, alpha=self.lam)
        if not (torch.is_grad_enabled() and z.requires_grad):
            return MCMIOutput(loss, ce, cmi)
        d = pd.addcmul_(p, kl[:, None], value=-1.0)  # P (log P - log Q - KL): the CMI's gradient times N T
        p_ce = p if self.temperature == 1.0 else log_p_ce.exp()
        outputs = _MCMIObjective.apply(z, (loss, ce, cmi), p_ce, d, labels, log_q, self.lam, self.temperature)
        return MCMIOutput(*outputs)

    def _centroids(self, p: Tensor, labels: Tensor) -> Tensor:  # p is detached: no graph is recorded
        if self.centroids == "batch":
            # held fixed: for the exact class means the gradient through Q_c is a constant per sample, which the
            # softmax cancels, so this is the full gradient of the batch CMI at a fraction of the cost
            return centroids_from_statistics(*class_statistics(p, labels, self.num_classes))
        return self._running_centroids(p, labels)

    def _running_centroids(self, p: Tensor, labels: Tensor) -> Tensor:
        sums, counts = class_statistics(p, labels, self.num_classes)
        stored = self.class_centroids.to(p.dtype)
        if not self.training or in_auxiliary_pass():
            # eval, or an extra pass of a sharpness-aware step: the stored centroids (which that step's clean pass has
            # just updated with this batch), without another update, as BatchNorm's running statistics
            return torch.where(self.class_seen[:, None], stored, centroids_from_statistics(sums, counts))
        if self.sync_dist and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            stats = torch.cat([sums, counts[:, None]], dim=1)
            dist.all_reduce(stats)
            sums, counts = stats[:, :-1], stats[:, -1]
        present = counts > 0
        batch_mean = centroids_from_statistics(sums, counts)
        # m Q + (1 - m) mean for a class seen before, its batch mean the first time, unchanged when absent
        weight = self.class_seen.to(stored.dtype).mul_(self.momentum)[:, None]
        updated = torch.where(present[:, None], torch.lerp(batch_mean, stored, weight), stored)
        self.class_centroids.copy_(updated)
        self.class_seen |= present
        return updated
