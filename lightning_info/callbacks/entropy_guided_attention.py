"""Entropy-guided attention for any LightningModule: swap in learnable-temperature attention, add the regularizer."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from typing_extensions import override

from lightning_info._internal.passes import in_auxiliary_pass
from lightning_info._internal.sharding import is_dtensor, sharding_engine
from lightning_info._internal.validation import check_bool, check_int, check_range
from lightning_info.attention.entropy_guided_attention import EntropyGuidedAttention
from lightning_info.attention.sdpa import EntropyRecorder, SDPAProbes
from lightning_info.callbacks._logging import log_figure, log_scalars
from lightning_info.callbacks.attention_entropy_monitor import Summary, check_thresholds, entropy_summary_metrics
from lightning_info.callbacks.loss_term import LossTermCallback
from lightning_info.functional.attention import head_entropy_summary
from lightning_info.losses.entropy_regularizer import EntropyRegularizer

__all__ = ["EntropyGuidedAttentionCallback"]

_SUMMARY_KEYS = ("attn_entropy/normalized_mean", "attn_entropy/overload_frac", "attn_entropy/collapse_frac")


class EntropyGuidedAttentionCallback(LossTermCallback):
    r"""Entropy-guided attention (Jha & Reagen, 2025) for a model built from ``nn.MultiheadAttention``.

    At ``setup`` (before ``configure_optimizers``, so the new parameters reach the optimizer) every
    ``nn.MultiheadAttention`` of the module is replaced by an :class:`~lightning_info.attention.EntropyGuidedAttention`
    with the same weights (learnable temperature :math:`t` and threshold :math:`\theta_h` per head and layer); this
    covers ``nn.TransformerEncoderLayer``/``DecoderLayer`` (their fused inference path is never taken for these
    modules, and ``nn.TransformerEncoder``'s nested-tensor path is switched off). During training
    :math:`\lambda \cdot \mathcal{L}_{\text{ent}}` (:class:`~lightning_info.losses.EntropyRegularizer`) is added to
    the loss through :class:`~lightning_info.callbacks.LossTermCallback`. The swapped modules stay after training
    (the model keeps working and its checkpoints hold the temperatures and thresholds).

    Logged keys (``i`` indexes the attention modules in model order; with SAM/GAM all of them, and the heatmap's
    epoch sums, come from each step's clean pass, while the penalty is added in every pass):

    - every step, through ``pl_module.log`` (so also in ``trainer.callback_metrics``): ``attn_entropy/reg`` (the
      unweighted penalty), ``attn_entropy/normalized_mean`` (mean :math:`H / \log(\#\text{valid keys})` of all
      heads), ``attn_entropy/overload_frac`` / ``attn_entropy/collapse_frac`` (fraction of heads whose mean
      normalised entropy is above ``overload_threshold`` / below ``collapse_threshold``; defaults 3/4 and 1/4, the
      paper's outer entropy bins of Fig. 2a, see :class:`~lightning_info.callbacks.AttentionEntropyMonitor`);
    - on the steps where Lightning logs (every ``log_every_n_steps`` optimizer steps), straight to the loggers:
      ``attn_entropy/layer{i}/head{j}`` (mean row entropy, nats), ``attn_entropy/layer{i}/mean`` and
      ``attn_entropy/temperature/layer{i}/head{j}`` (mean over query positions with ``temperature_positions``);
    - at each training epoch end, to every logger: ``attn_entropy/heatmap``, the layer x head image of the epoch's
      mean entropy (an image in W&B, TensorBoard and MLflow; a PNG under ``<log_dir>/figures/`` for the others,
      e.g. ``CSVLogger``).

    Args:
        weight: :math:`\lambda`, the multiplier of the regularizer (paper: 1e-5 with its summed penalty; the default
            mean-over-rows penalty needs about :math:`10^{-5} \cdot B \cdot T`, e.g. 0.1).
        replace: swap ``nn.MultiheadAttention`` modules; with ``False`` only existing ``EntropyGuidedAttention``
            modules are used.
        target_fraction: :math:`\theta` initial value (and target when ``learnable_threshold=False``), in [0, 1].
        tolerance: :math:`\gamma`, band half-width as a fraction of the maximal entropy, in [0, 1] (paper: 0.2).
        reduction: ``"mean"`` or ``"sum"`` (see :class:`~lightning_info.losses.EntropyRegularizer`).
        max_entropy: ``"row"`` or ``"context"`` (see :class:`~lightning_info.losses.EntropyRegularizer`).
        granularity: ``"row"`` or ``"head"`` (see :class:`~lightning_info.losses.EntropyRegularizer`).
        learnable_temperature: train the temperatures of swapped modules.
        temperature_init: initial temperature of swapped modules (> 0; 1 keeps the model's function at the start).
        temperature_positions: ``None`` (one temperature per head) or the maximal sequence length ``T`` for the
            paper's one temperature per head and query position.
        learnable_threshold: train the per-head thresholds :math:`\theta_h` of swapped modules (as in the paper).
        overload_threshold: normalised entropy above which a head counts as overloaded, in (0, 1].
        collapse_threshold: normalised entropy below which a head counts as collapsed, in [0, 1).
        log_every_n_steps: per-head logging period in optimizer steps (``None``: the trainer's setting).

    Sharded models: the swap runs in ``setup``, before Lightning's ``configure_model``, so FSDP2's ``fully_shard``
    shards the swapped modules; training equals the one-process global batch (``docs/sam.md``, "Scaling out").

    Raises:
        ValueError: a bad argument; at ``setup``, a module without any (swappable) attention.
        RuntimeError: at fit start, a model wrapped in FSDP1 (``FullyShardedDataParallel``; use FSDP2).

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
        granularity: str = "row",
        learnable_temperature: bool = True,
        temperature_init: float = 1.0,
        temperature_positions: int | None = None,
        learnable_threshold: bool = True,
        overload_threshold: float = 0.75,
        collapse_threshold: float = 0.25,
        log_every_n_steps: int | None = None,
    ) -> None:
        super().__init__(weight, log_key="attn_entropy/reg")
        self.regularizer = EntropyRegularizer(target_fraction, tolerance, reduction, max_entropy, granularity)
        self.replace = check_bool("replace", replace)
        self.learnable_temperature = check_bool("learnable_temperature", learnable_temperature)
        self.temperature_init = check_range("temperature_init", temperature_init, 0.0, low_inclusive=False)
        if temperature_positions is not None:
            temperature_positions = check_int("temperature_positions", temperature_positions, min_value=1)
        self.temperature_positions = temperature_positions
        self.learnable_threshold = check_bool("learnable_threshold", learnable_threshold)
        self.overload_threshold, self.collapse_threshold = check_thresholds(overload_threshold, collapse_threshold)
        if log_every_n_steps is not None:
            log_every_n_steps = check_int("log_every_n_steps", log_every_n_steps, min_value=1)
        self.log_every_n_steps = log_every_n_steps
        self.attention: list[EntropyRecorder] = []
        self._sdpa: SDPAProbes | None = None  # models without nn.MultiheadAttention: SDPA / Hugging Face attention
        self._epoch_sum: Tensor | None = None  # (layers, max heads) sums of per-step head means, and their counts
        self._epoch_count: Tensor | None = None
        self._epoch = -1  # the training epoch the sums belong to
        self._logged_step = -1

    def _swap(self, pl_module: LightningModule) -> None:
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
                    temperature_positions=self.temperature_positions, threshold_init=self.regularizer.target_fraction,
                    learnable_threshold=self.learnable_threshold, device=child.out_proj.weight.device,
                    dtype=child.out_proj.weight.dtype,
                )  # fmt: skip
                new.load_state_dict(child.state_dict())
                new.train(child.training)
                setattr(parent, child_name, new)
        for module in pl_module.modules():
            if isinstance(module, nn.TransformerEncoder):
                module.use_nested_tensor = False  # nested inputs would reach the swapped attention

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.replace:
            self._swap(pl_module)
        self.attention = [m for m in pl_module.modules() if isinstance(m, EntropyGuidedAttention)]
        if not self.attention and not any(isinstance(m, nn.MultiheadAttention) for m in pl_module.modules()):
            self.attention = self._attach_sdpa(pl_module)
        if not self.attention:
            raise ValueError(
                f"{type(pl_module).__name__} has no EntropyGuidedAttention"
                + ("" if self.replace else " (replace=False)")
                + ", no swappable nn.MultiheadAttention and no module calling scaled_dot_product_attention or "
                "transformers' attention interface (see docs/attention.md, 'Hugging Face and SDPA models')"
            )
        super().setup(trainer, pl_module, stage)

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # after configure_model: FSDP1 holds each rank's slice of the temperatures outside the forward, so the logged
        # temperatures (and a monitor reading them) would be rank-local; FSDP2 (DTensors) is right
        if sharding_engine(pl_module) == "FSDP1":
            raise RuntimeError(
                "EntropyGuidedAttentionCallback does not support FSDP1 (FullyShardedDataParallel, Lightning's "
                "strategy='fsdp'): its parameters outside the forward are this rank's flat shard. Use FSDP2: "
                "ModelParallelStrategy(data_parallel_size=N, tensor_parallel_size=1) and fully_shard in configure_model"
            )

    def _attach_sdpa(self, pl_module: LightningModule) -> list[EntropyRecorder]:
        """Temperatures and recording on the SDPA / Hugging Face attention modules (``[]``: there are none)."""
        try:
            self._sdpa = SDPAProbes(pl_module)
        except ValueError:
            return []
        for probe in self._sdpa.probes:
            probe.add_temperature(
                self.temperature_init, self.temperature_positions, self.learnable_temperature,
                self.regularizer.target_fraction, self.learnable_threshold,
            )  # fmt: skip
        self._sdpa.start("regularize")
        return list(self._sdpa.probes)

    @override
    def compute_loss_term(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> Tensor | None:
        if self._sdpa is not None:
            self._sdpa.summaries()  # raises if a module ran without exposing q/k to SDPA
        recorded = [m for m in self.attention if m.last_entropy is not None]
        if not recorded:
            return None
        term = self.regularizer.forward_modules(recorded)
        if not in_auxiliary_pass():  # monitoring once per step, from the clean pass (SAM/GAM's extra passes: the term)
            self._monitor(trainer, pl_module)
        for module in recorded:
            module.clear_entropy()  # the term keeps the graph it needs
        return term

    def _monitor(self, trainer: Trainer, pl_module: LightningModule) -> None:
        summaries = [_summary(m) for m in self.attention]
        metrics = entropy_summary_metrics(summaries, self.overload_threshold, self.collapse_threshold)
        for key in _SUMMARY_KEYS:
            pl_module.log(key, metrics[key], on_step=True, on_epoch=False)
        self._accumulate(summaries, trainer.current_epoch)
        every = self.log_every_n_steps or int(getattr(trainer, "log_every_n_steps", 50))
        step = trainer.global_step
        if (step + 1) % every == 0 and step != self._logged_step:  # Lightning's cadence; once per optimizer step
            self._logged_step = step
            for layer, module in enumerate(self.attention):
                temperature = module.temperature.detach()
                if is_dtensor(temperature):  # FSDP2 shards the temperatures after the forward (all ranks log)
                    temperature = temperature.full_tensor()  # type: ignore[attr-defined]
                per_head = temperature if temperature.ndim == 1 else temperature.mean(-1)
                for head, value in enumerate(per_head.tolist()):
                    metrics[f"attn_entropy/temperature/layer{layer}/head{head}"] = value
            log_scalars(trainer, {k: v for k, v in metrics.items() if k not in _SUMMARY_KEYS}, step)

    def _accumulate(self, summaries: list[Summary | None], epoch: int) -> None:
        heads = max(m.num_heads for m in self.attention)
        means = torch.zeros(len(summaries), heads)
        seen = torch.zeros(len(summaries), heads)
        for layer, summary in enumerate(summaries):
            if summary is not None:
                means[layer, : summary[0].numel()] = summary[0].float().cpu()
                seen[layer, : summary[0].numel()] = 1.0
        # a new epoch starts new sums: tracked here, not in on_train_epoch_start, which Lightning skips for the epoch
        # after a resume from a checkpoint written on the previous epoch's last batch (every_n_train_steps)
        old = self._epoch_sum, self._epoch_count
        if self._epoch != epoch or old[0] is None or old[1] is None or old[0].shape != means.shape:
            self._epoch_sum, self._epoch_count, self._epoch = means, seen, epoch
        else:
            self._epoch_sum, self._epoch_count = old[0] + means, old[1] + seen

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._epoch_sum is None or self._epoch_count is None or self._epoch != trainer.current_epoch:
            return  # nothing recorded in this epoch
        if not trainer.is_global_zero or not trainer.loggers:
            return
        mean = self._epoch_sum / self._epoch_count.clamp_min(1.0)
        figure = _heatmap(mean.masked_fill(self._epoch_count == 0, float("nan")), trainer.current_epoch)
        log_figure(trainer, "attn_entropy/heatmap", figure, trainer.global_step)

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._release()
        super().teardown(trainer, pl_module, stage)

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._release()
        super().on_exception(trainer, pl_module, exception)

    def _release(self) -> None:
        for module in self.attention:
            module.clear_entropy()
        if self._sdpa is not None:  # the temperatures stay on the model, applied in every later forward
            self._sdpa.release("regularize")
            self._sdpa = None

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"epoch_sum": self._epoch_sum, "epoch_count": self._epoch_count, "epoch": self._epoch}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._epoch_sum = state_dict.get("epoch_sum")
        self._epoch_count = state_dict.get("epoch_count")
        self._epoch = int(state_dict.get("epoch", -1))


def _summary(module: EntropyRecorder) -> Summary | None:
    """Per-head mean entropy and mean normalised entropy of what ``module`` recorded (``None``: nothing)."""
    if module.last_entropy is None or module.last_max_entropy is None:
        return None
    return head_entropy_summary(module.last_entropy, module.last_max_entropy, module.last_row_mask)


def _heatmap(matrix: Tensor, epoch: int) -> Any:
    """A layer x head matrix of mean entropies as a ``matplotlib.figure.Figure`` (no pyplot).

    One integer tick per head and per layer (readable at any size: the figure grows with them, from a minimum).
    """
    from matplotlib.figure import Figure

    layers, heads = matrix.shape
    figure = Figure(figsize=(max(4.0, 2.0 + 0.5 * heads), max(2.5, 1.4 + 0.4 * layers)), dpi=100)
    axes = figure.add_subplot()
    shown = axes.imshow(matrix.float().numpy(), cmap="viridis", aspect="auto")
    figure.colorbar(shown, ax=axes, label="entropy (nats)")
    axes.set_xticks(range(heads), [str(h) for h in range(heads)], fontsize=8)
    axes.set_yticks(range(layers), [str(i) for i in range(layers)], fontsize=8)
    axes.set_xlabel("head")
    axes.set_ylabel("layer")
    axes.set_title(f"attention entropy, epoch {epoch}")
    figure.tight_layout()
    return figure
