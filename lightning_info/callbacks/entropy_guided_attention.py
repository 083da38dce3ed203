"""Entropy-guided attention for any LightningModule: swap in learnable-temperature attention, add the regularizer."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from typing_extensions import override

from lightning_info._internal.validation import check_range
from lightning_info.attention.entropy_guided_attention import EntropyGuidedAttention
from lightning_info.attention.functional import head_entropy_summary
from lightning_info.callbacks.attention_entropy_monitor import entropy_summary_metrics, log_to_loggers
from lightning_info.callbacks.loss_term import LossTermCallback
from lightning_info.losses.entropy_regularizer import EntropyRegularizer

__all__ = ["EntropyGuidedAttentionCallback"]


class EntropyGuidedAttentionCallback(LossTermCallback):
    r"""Entropy-guided attention (Jha & Reagen, 2025) for a model built from ``nn.MultiheadAttention``.

    At ``setup`` (before ``configure_optimizers``, so the new parameters reach the optimizer) every
    ``nn.MultiheadAttention`` of the module is replaced by an :class:`~lightning_info.attention.EntropyGuidedAttention`
    with the same weights (learnable temperature :math:`t_h` and threshold :math:`\theta_h` per head); this covers
    ``nn.TransformerEncoderLayer``/``DecoderLayer`` (their fused inference path is switched off for these modules, and
    ``nn.TransformerEncoder``'s nested-tensor path too). During training
    :math:`w \cdot \mathcal{L}_{\text{ent}}` (:class:`~lightning_info.losses.EntropyRegularizer`) is added to the loss.
    The swapped modules stay after training (the model keeps working and its checkpoints hold the temperatures).

    Logged keys: ``attn_entropy/reg`` (the unweighted penalty, every step), and every ``log_every_n_steps``
    ``attn_entropy/layer{i}/head{j}`` (mean row entropy, nats), ``attn_temperature/layer{i}/head{j}``,
    ``attn_entropy/overload_frac`` / ``attn_entropy/collapse_frac`` (fraction of heads whose mean normalised entropy
    :math:`H / \log(\#\text{valid keys})` is above ``overload_threshold`` / below ``collapse_threshold``); at each
    training epoch end, a layer x head heatmap of the mean entropy to W&B (``attn_entropy/heatmap``) when a
    ``WandbLogger`` is used.

    Args:
        weight: :math:`\lambda`, the multiplier of the regularizer (paper: 1e-5 with its summed penalty; the default
            mean-over-rows penalty needs about 0.1).
        replace: swap ``nn.MultiheadAttention`` modules; with ``False`` only existing ``EntropyGuidedAttention``
            modules are used.
        target_fraction: :math:`\theta` initial value (and target when ``learnable_threshold=False``), in [0, 1].
        tolerance: :math:`\gamma`, band half-width as a fraction of the maximal entropy, in [0, 1] (paper: 0.2).
        reduction: ``"mean"`` or ``"sum"`` over rows (see :class:`~lightning_info.losses.EntropyRegularizer`).
        max_entropy: ``"row"`` or ``"context"`` (see :class:`~lightning_info.losses.EntropyRegularizer`).
        learnable_temperature: train the per-head temperatures of swapped modules.
        temperature_init: initial temperature of swapped modules (> 0).
        learnable_threshold: train the per-head thresholds :math:`\theta_h` of swapped modules (as in the paper).
        overload_threshold: normalised entropy above which a head counts as overloaded, in (0, 1].
        collapse_threshold: normalised entropy below which a head counts as collapsed, in [0, 1).
        log_every_n_steps: log per-head statistics every this many steps (``None``: the trainer's setting).

    Raises:
        ValueError: a bad argument; at ``setup``, a module without any (swappable) attention.

    Example:
        >>> callback = EntropyGuidedAttentionCallback(weight=0.1, target_fraction=0.5, tolerance=0.2)
    """

    def __init__(
        self,
        weight: float = 0.1,
        replace: bool = True,
        target_fraction: float = 0.5,
        tolerance: float = 0.2,
        reduction: str = "mean",
        max_entropy: str = "row",
        learnable_temperature: bool = True,
        temperature_init: float = 1.0,
        learnable_threshold: bool = True,
        overload_threshold: float = 0.9,
        collapse_threshold: float = 0.1,
        log_every_n_steps: int | None = None,
    ) -> None:
        super().__init__(weight, log_key="attn_entropy/reg")
        self.regularizer = EntropyRegularizer(target_fraction, tolerance, reduction, max_entropy)
        self.replace = replace
        self.learnable_temperature = learnable_temperature
        self.temperature_init = check_range("temperature_init", temperature_init, 0.0, low_inclusive=False)
        self.learnable_threshold = learnable_threshold
        self.overload_threshold = check_range("overload_threshold", overload_threshold, 0.0, 1.0, low_inclusive=False)
        self.collapse_threshold = check_range("collapse_threshold", collapse_threshold, 0.0, 1.0, high_inclusive=False)
        if log_every_n_steps is not None and (isinstance(log_every_n_steps, bool) or log_every_n_steps < 1):
            raise ValueError(f"log_every_n_steps must be a positive int or None, got {log_every_n_steps!r}")
        self.log_every_n_steps = log_every_n_steps
        self.attention: list[EntropyGuidedAttention] = []
        self._epoch_sum: Tensor | None = None
        self._epoch_count = 0

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(log_key=self.log_key)

    def _swap(self, pl_module: LightningModule) -> int:
        swapped = 0
        for parent in list(pl_module.modules()):
            for child_name, child in list(parent.named_children()):
                if type(child) is not nn.MultiheadAttention:
                    continue
                if child.bias_k is not None or child.add_zero_attn:
                    rank_zero_warn(
                        f"EntropyGuidedAttentionCallback: {child_name!r} uses add_bias_kv/add_zero_attn; kept"
                    )
                    continue
                new = EntropyGuidedAttention(
                    child.embed_dim, child.num_heads, dropout=child.dropout, bias=child.in_proj_bias is not None,
                    kdim=child.kdim, vdim=child.vdim, batch_first=child.batch_first,
                    learnable_temperature=self.learnable_temperature, temperature_init=self.temperature_init,
                    threshold_init=self.regularizer.target_fraction, learnable_threshold=self.learnable_threshold,
                    device=child.out_proj.weight.device, dtype=child.out_proj.weight.dtype,
                )  # fmt: skip
                new.load_state_dict(child.state_dict())
                new.train(child.training)
                setattr(parent, child_name, new)
                swapped += 1
        for module in pl_module.modules():
            if isinstance(module, nn.TransformerEncoder):
                module.use_nested_tensor = False  # nested inputs would reach the swapped attention
        return swapped

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.replace:
            self._swap(pl_module)
        self.attention = [m for m in pl_module.modules() if isinstance(m, EntropyGuidedAttention)]
        if not self.attention:
            raise ValueError(
                f"{type(pl_module).__name__} has no EntropyGuidedAttention"
                + ("" if self.replace else " (replace=False)")
                + " and no swappable nn.MultiheadAttention"
            )
        super().setup(trainer, pl_module, stage)

    @override
    def compute_loss_term(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> Tensor | None:
        recorded = [m for m in self.attention if m.last_entropy is not None]
        if not recorded:
            return None
        term = self.regularizer.forward_modules(recorded)
        summaries = [head_entropy_summary(m.last_entropy, m.last_max_entropy, m.last_row_mask) for m in recorded]  # type: ignore[arg-type]
        means = torch.stack([mean for mean, _ in summaries]) if len({s[0].numel() for s in summaries}) == 1 else None
        if means is not None:
            self._epoch_sum = means.cpu() if self._epoch_sum is None else self._epoch_sum + means.cpu()
            self._epoch_count += 1
        every = self.log_every_n_steps or int(getattr(trainer, "log_every_n_steps", 50))
        if trainer.global_step % every == 0:
            metrics = entropy_summary_metrics(summaries, self.overload_threshold, self.collapse_threshold)
            for layer, module in enumerate(recorded):
                for head, value in enumerate(module.temperature.detach().tolist()):
                    metrics[f"attn_temperature/layer{layer}/head{head}"] = value
            log_to_loggers(trainer, metrics, trainer.global_step)
        for module in recorded:
            module.clear_entropy()  # the term keeps the graph it needs
        return term

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._epoch_sum, self._epoch_count = None, 0

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._epoch_sum is None or not trainer.is_global_zero:
            return
        from lightning.pytorch.loggers import WandbLogger

        loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
        if loggers:
            image = _heatmap(self._epoch_sum / self._epoch_count, trainer.current_epoch)
            for logger in loggers:
                logger.log_image(key="attn_entropy/heatmap", images=[image], step=trainer.global_step)

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        for module in self.attention:
            module.clear_entropy()
        super().teardown(trainer, pl_module, stage)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"epoch_sum": self._epoch_sum, "epoch_count": self._epoch_count}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._epoch_sum = state_dict.get("epoch_sum")
        self._epoch_count = int(state_dict.get("epoch_count", 0))


def _heatmap(matrix: Tensor, epoch: int) -> Any:
    """Render a layer x head matrix of mean entropies as an RGB array (matplotlib, no pyplot)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(1.0 + 0.5 * matrix.shape[1], 1.0 + 0.4 * matrix.shape[0]), dpi=100)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    shown = axes.imshow(matrix.float().numpy(), cmap="viridis", aspect="auto")
    figure.colorbar(shown, ax=axes, label="entropy (nats)")
    axes.set_xlabel("head")
    axes.set_ylabel("layer")
    axes.set_title(f"attention entropy, epoch {epoch}")
    figure.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
