r"""Train only the parameters with the largest Fisher information (FISH, Sung et al., NeurIPS 2021).

When training starts, :class:`FisherMask` estimates the diagonal empirical Fisher
:math:`F_j = \sum_{i=1}^{N} (\partial_j \log p_\theta(y_i \mid x_i))^2` from per-sample gradients
(:func:`~lightning_info.fisher.empirical_fisher`), keeps the global top
:math:`k = \lfloor \text{keep\_ratio} \cdot n \rfloor` entries (:func:`~lightning_info.fisher.topk_masks`) and keeps
every other entry exactly where it was:

1. The boolean masks are buffers of a submodule ``fisher_mask`` of the LightningModule: they move with ``.to()``,
   are saved in checkpoints and are restored on resume (a load-state-dict pre-hook creates them), so a resumed run
   uses the same masks without recomputing. Loading such a checkpoint into a module without this callback
   (``Model.load_from_checkpoint``) needs ``strict=False``, or delete the ``fisher_mask.*`` keys first.
2. ``on_before_optimizer_step`` (after backward, after AMP unscaling, before gradient clipping) zeroes the masked
   gradient entries; a tensor with no kept entry gets ``grad = None``, so optimizers skip it and allocate no state
   for it (Adam's moments then cost memory only for partially kept tensors).
3. Zero gradients do not stop weight decay, momentum or Adam state from moving a weight. A step post-hook on every
   optimizer (``Optimizer.register_step_post_hook``) therefore writes the frozen entries back from a snapshot taken
   when the masks were set, so they are bit-identical whatever the optimizer does. Cost: one copy of the
   parameters that are not fully kept, and one ``torch.where`` per optimizer step. The post-hooks are removed at
   ``teardown`` and when training raises (``on_exception``), so the optimizer is left as it was.

The Fisher is estimated with the model in ``eval()`` mode (BatchNorm uses running statistics, dropout off). Under
DDP each rank uses ``ceil(num_samples / world_size)`` samples of its shard, the Fisher is summed over ranks, and the
masks are broadcast from rank 0, so every rank trains the same entries. Under FSDP2 (``fully_shard``: DTensor
parameters) the Fisher is exact as well (:func:`~lightning_info.fisher.sharded.sharded_empirical_fisher`: every rank
runs every rank's samples, one at a time, and squares its shard of each sample's gradient; ``mode`` is not used), the
global top-k is taken on the gathered Fisher, and the masks are DTensors with the parameters' placements (each rank
masks its own shard). FSDP1 and DeepSpeed are refused at train start.

``recompute_every_n_epochs=m`` is the paper's *dynamic* variant: at the start of every m-th epoch the Fisher is
re-estimated at the current weights and new masks replace the old ones (entries that become frozen stay at their
current values; the optimizer state is kept, so a newly kept entry starts from its decayed Adam moments). With
``None`` (default) the masks are fixed for the whole run, as in FISH.

Logged (any logger, at the step the masks are set): ``fisher/kept_frac/<layer>`` for every module owning trainable
parameters (e.g. ``fisher/kept_frac/encoder.layers.0.linear1``; a parameter of the LightningModule itself is its own
layer), ``fisher/kept_frac`` overall and ``fisher/num_kept``; with a ``WandbLogger`` also ``fisher/histogram``, a
histogram of :math:`\log_{10}` of the positive Fisher values. The scalars are also put in
``trainer.callback_metrics`` (for ``ModelCheckpoint``, the demo summary, or your own code).

To rank by another score, subclass and override :meth:`FisherMask.compute_scores`. To shrink the optimizer's state
with ``keep_ratio``, see :func:`~lightning_info.fisher.train_kept_entries_only` (the masks computed up front, the
frozen entries turned into buffers, no callback needed).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.strategies import DeepSpeedStrategy
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle
from typing_extensions import override

from lightning_info._internal.sharding import is_dtensor, local_shard, sharding_engine
from lightning_info._internal.validation import check_choice, check_int, check_range
from lightning_info.callbacks._logging import log_scalars
from lightning_info.fisher import empirical_fisher, topk_masks
from lightning_info.fisher.fisher import LossFn
from lightning_info.fisher.sharded import sharded_empirical_fisher

MASK_ATTRIBUTE = "fisher_mask"


def _encode(name: str) -> str:
    return name.replace(".", "__")


class _MaskBuffers(nn.Module):
    """One bool buffer per masked parameter (dots written as ``__``); loading a state dict creates missing ones."""

    def __init__(self) -> None:
        super().__init__()
        self.register_load_state_dict_pre_hook(self._create_buffers)

    def _create_buffers(self, module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        for key, value in state_dict.items():
            local = key[len(prefix) :]
            if key.startswith(prefix) and local and "." not in local and isinstance(value, Tensor):
                self.register_buffer(local, torch.empty_like(value))

    def set(self, masks: dict[str, Tensor]) -> None:
        self._buffers.clear()
        for name, mask in masks.items():
            self.register_buffer(_encode(name), mask)

    def get(self, params: dict[str, Tensor]) -> dict[str, Tensor] | None:
        """The masks of ``params`` if every one is present with the right shape, else ``None``."""
        masks = {name: self._buffers.get(_encode(name)) for name in params}
        if len(self._buffers) != len(params) or any(
            m is None or m.shape != params[name].shape for name, m in masks.items()
        ):
            return None
        full = {name: m.full_tensor() if is_dtensor(m) else m for name, m in masks.items() if m is not None}  # type: ignore[attr-defined]
        return {name: m.to(device=params[name].device, dtype=torch.bool) for name, m in full.items()}


class FisherMask(Callback):
    r"""Fine-tune only the top ``keep_ratio`` fraction of parameters ranked by their empirical Fisher (FISH).

    Args:
        keep_ratio: fraction of the trainable entries that are trained, in (0, 1] (the paper's 0.5% = 0.005).
        num_samples: N, samples used to estimate the Fisher (1024 in the paper), split over DDP ranks.
        stage_dataloader: ``"train"`` (the trainer's training dataloader) or any iterable of
            ``(inputs, targets, ...)`` batches (e.g. a ``DataLoader``), moved to the device by the strategy.
        loss_fn: ``loss_fn(output, target) -> scalar`` negative log-likelihood of one sample, where
            ``output = pl_module(inputs)``. Default: cross-entropy of logits.
        include: parameter names/globs that may be selected (default: all trainable parameters).
        exclude: parameter names/globs that are never trained.
        always_train: parameter names/globs trained entirely, counted inside the budget (e.g. ``["head"]``).
        recompute_every_n_epochs: re-estimate the masks every this many epochs (dynamic variant); ``None`` = fixed.
        mode: ``"auto"`` (``"vmap"`` plus the exact shortcut for ``nn.Linear`` layers that see one row per sample),
            ``"vmap"`` (``torch.func`` per-sample gradients) or ``"loop"`` (batch size 1), see
            :func:`~lightning_info.fisher.empirical_fisher`.
        label: ``"empirical"`` (data labels, as in FISH) or ``"sampled"`` (labels drawn from the model).
        chunk_size: samples per ``vmap`` call (bounds the extra memory to ``chunk_size * #params`` values);
            ``None``: at most 256 samples and 256 MiB of per-sample gradients.

    Resuming: the masks are buffers of the model (in its checkpoint) and this callback's state says when they were
    computed; both are restored, so a resume trains exactly the checkpointed entries. The state is stored under a
    key that includes ``keep_ratio``: resumed with another ``keep_ratio`` (or given a model that already holds masks
    this callback did not compute) the callback finds masks without its state, warns (``UserWarning`` naming the
    masks' kept fraction and the new ``keep_ratio``) and replaces them with masks recomputed at the new ratio.
    Resume with the original ``keep_ratio`` to keep the checkpointed masks.

    Raises:
        ValueError: for ``keep_ratio`` outside (0, 1], ``num_samples`` < 1, ``recompute_every_n_epochs`` < 1, a bad
            ``mode``/``label``/``stage_dataloader``; at train start for a model with no trainable parameters, a
            pattern that matches no parameter, or a ``loss_fn`` returning more than one value per sample.
        TypeError: for a non-callable ``loss_fn`` or patterns given as a plain string.

    Example:
        >>> from lightning_info.callbacks import FisherMask
        >>> FisherMask(keep_ratio=0.005, always_train=["head"]).state_key
        "FisherMask{'keep_ratio': 0.005}"
    """

    def __init__(
        self,
        keep_ratio: float = 0.005,
        num_samples: int = 1024,
        stage_dataloader: str | Iterable[Any] = "train",
        loss_fn: LossFn | None = None,
        include: list[str] | None = None,
        exclude: list[str] | None = None,
        always_train: list[str] | None = None,
        recompute_every_n_epochs: int | None = None,
        mode: Literal["auto", "vmap", "loop"] = "auto",
        label: Literal["empirical", "sampled"] = "empirical",
        chunk_size: int | None = None,
    ) -> None:
        self.keep_ratio = check_range("keep_ratio", keep_ratio, 0.0, 1.0, low_inclusive=False)
        self.num_samples = check_int("num_samples", num_samples, min_value=1)
        if isinstance(stage_dataloader, str):
            check_choice("stage_dataloader", stage_dataloader, ["train"])
        elif not isinstance(stage_dataloader, Iterable):
            raise TypeError(f"stage_dataloader must be 'train' or an iterable of batches, got {stage_dataloader!r}")
        self.stage_dataloader = stage_dataloader
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
        self.loss_fn = loss_fn
        for argument, patterns in (("include", include), ("exclude", exclude), ("always_train", always_train)):
            if isinstance(patterns, str):
                raise TypeError(f"{argument} must be a list of names or globs, got the string {patterns!r}")
        self.include, self.exclude, self.always_train = include, exclude, always_train
        self.recompute_every_n_epochs = (
            None
            if recompute_every_n_epochs is None
            else check_int("recompute_every_n_epochs", recompute_every_n_epochs, min_value=1)
        )
        check_choice("mode", mode, ["auto", "vmap", "loop"])
        check_choice("label", label, ["empirical", "sampled"])
        self.mode, self.label = mode, label
        self.chunk_size = None if chunk_size is None else check_int("chunk_size", chunk_size, min_value=1)
        self.computed_at_epoch = -1  # epoch whose start computed the current masks (-1: none yet)
        self.num_computations = 0  # in this process; tests use it to check that a resume does not recompute
        self._masked: list[tuple[Tensor, Tensor, Tensor, bool]] = []  # (parameter, mask, snapshot, nothing kept)
        self._handles: list[RemovableHandle] = []

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(keep_ratio=self.keep_ratio)

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # every stage: a checkpoint with masks then also loads for validate/test/predict (the container is empty
        # until the masks are set or loaded)
        existing = getattr(pl_module, MASK_ATTRIBUTE, None)
        if existing is None:
            pl_module.add_module(MASK_ATTRIBUTE, _MaskBuffers())
        elif not isinstance(existing, _MaskBuffers):
            raise RuntimeError(f"{type(pl_module).__name__} already has an attribute {MASK_ATTRIBUTE!r}")

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if isinstance(trainer.strategy, DeepSpeedStrategy):
            raise RuntimeError(
                "FisherMask does not support DeepSpeed (Lightning's DeepSpeedStrategy): its engine keeps its own "
                "(partitioned) gradients and fp32 master weights and steps them itself, so the mask can neither be "
                "applied to the gradients nor keep the frozen entries unchanged. Use DDP, FSDP2 "
                "(ModelParallelStrategy with fully_shard in configure_model) or one device."
            )
        engine = sharding_engine(pl_module)
        if engine == "FSDP1":
            raise RuntimeError(
                "FisherMask does not support FSDP1 (FullyShardedDataParallel, Lightning's FSDPStrategy): each rank "
                "holds a shard of flattened parameters, whose per-sample gradients and masks are not implemented. "
                "Use FSDP2 (ModelParallelStrategy with fully_shard in configure_model), DDP or one device."
            )
        if engine == "FSDP2" and self.label == "sampled":
            raise ValueError(
                "FisherMask(label='sampled') is not supported under FSDP2: every rank must back-propagate the same "
                "label of each sample. Use label='empirical' (FISH's), or DDP."
            )
        container: _MaskBuffers = getattr(pl_module, MASK_ATTRIBUTE)
        masks = container.get(self._trainable(pl_module))
        # a due recomputation is also done here: resumed from a checkpoint written on an epoch's last batch
        # (every_n_train_steps), Lightning skips on_train_epoch_start of the epoch that follows
        if masks is not None and self.computed_at_epoch < 0:
            kept = sum(int(m.sum()) for m in masks.values()) / max(1, sum(m.numel() for m in masks.values()))
            rank_zero_warn(
                f"FisherMask(keep_ratio={self.keep_ratio}): the model holds Fisher masks (kept fraction {kept:.4g}) "
                "that this callback did not compute (a checkpoint written with another keep_ratio, or an earlier "
                f"fit); they are DISCARDED and recomputed with keep_ratio={self.keep_ratio}. Resume with the "
                "checkpoint's keep_ratio to keep them."
            )
        if masks is None or self.computed_at_epoch < 0 or self._recompute_due(trainer.current_epoch):
            masks = self._compute(trainer, pl_module)
            self.computed_at_epoch = trainer.current_epoch
        self._install(trainer, pl_module, masks)

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        epoch = trainer.current_epoch
        if not self._recompute_due(epoch):
            return
        self._install(trainer, pl_module, self._compute(trainer, pl_module))
        self.computed_at_epoch = epoch

    def _recompute_due(self, epoch: int) -> bool:
        n = self.recompute_every_n_epochs
        return n is not None and epoch != self.computed_at_epoch and epoch % n == 0

    @override
    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        for param, mask, _, nothing_kept in self._masked:
            if param.grad is None:
                continue
            if nothing_kept:
                param.grad = None
            else:
                local_shard(param.grad).masked_fill_(~mask, 0)

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._release()

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._release()

    def _release(self) -> None:
        """Remove the optimizer post-hooks and drop the snapshots (a failed fit must not leave them behind)."""
        self._remove_hooks()
        self._masked = []

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"computed_at_epoch": self.computed_at_epoch, "keep_ratio": self.keep_ratio}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.computed_at_epoch = int(state_dict["computed_at_epoch"])

    @staticmethod
    def _trainable(pl_module: LightningModule) -> dict[str, Tensor]:
        params: dict[str, Tensor] = {name: p for name, p in pl_module.named_parameters() if p.requires_grad}
        if not params:
            raise ValueError(f"FisherMask: {type(pl_module).__name__} has no trainable parameters (requires_grad)")
        return params

    def _batches(self, trainer: Trainer) -> Iterable[Any]:
        source = trainer.train_dataloader if isinstance(self.stage_dataloader, str) else self.stage_dataloader
        if source is None:
            raise RuntimeError("FisherMask: the trainer has no training dataloader to estimate the Fisher from")
        return (trainer.strategy.batch_to_device(batch) for batch in source)

    def compute_scores(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Tensor]:
        """The scores whose global top-k the masks keep: by default the empirical Fisher of every parameter.

        The Fisher is summed over ``num_samples`` samples, over all DDP ranks, so every rank gets the same numbers.

        Override it to rank by something else (a control with random scores, :func:`~lightning_info.fisher.
        fisher_importance`, ...); :func:`~lightning_info.fisher.topk_masks`, the broadcast from rank 0 and the logging
        stay the same. Return ``{name: tensor of the parameter's shape}`` for every trainable parameter.
        """
        params = self._trainable(pl_module)
        if sharding_engine(pl_module) == "FSDP2":  # exact, already summed over the ranks and unsharded
            num_samples = math.ceil(self.num_samples / trainer.world_size)
            return sharded_empirical_fisher(pl_module, self._batches(trainer), self.loss_fn, num_samples)
        fisher = empirical_fisher(
            pl_module,
            self._batches(trainer),
            loss_fn=self.loss_fn,
            num_samples=math.ceil(self.num_samples / trainer.world_size),
            mode=self.mode,
            label=self.label,
            chunk_size=self.chunk_size,
        )
        flat = trainer.strategy.reduce(torch.cat([f.reshape(-1) for f in fisher.values()]), reduce_op="sum")
        chunks = flat.split([p.numel() for p in params.values()])
        return {name: chunk.reshape(p.shape) for (name, p), chunk in zip(params.items(), chunks, strict=True)}

    def _compute(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Tensor]:
        scores = self.compute_scores(trainer, pl_module)
        masks = topk_masks(scores, self.keep_ratio, self.include, self.exclude, self.always_train)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            flat_mask = torch.cat([m.reshape(-1) for m in masks.values()]).to(torch.uint8)
            torch.distributed.broadcast(flat_mask, src=0)
            chunks = flat_mask.bool().split([m.numel() for m in masks.values()])
            masks = {name: c.reshape(masks[name].shape) for (name, c) in zip(masks, chunks, strict=True)}
        self.num_computations += 1
        self._log(trainer, scores, masks)
        return masks

    def _install(self, trainer: Trainer, pl_module: LightningModule, masks: dict[str, Tensor]) -> None:
        params = self._trainable(pl_module)
        # a sharded parameter's mask is a DTensor with its placements, cut from the full mask every rank holds
        stored = {name: _like(params[name], mask) for name, mask in masks.items()}
        getattr(pl_module, MASK_ATTRIBUTE).set(stored)
        self._masked = [  # the local shards (the whole tensors when not sharded): the hooks touch no DTensor
            (params[name], local_shard(stored[name]), local_shard(params[name]).detach().clone(), not bool(mask.any()))
            for name, mask in masks.items()
            if not bool(mask.all())
        ]
        self._remove_hooks()
        self._handles = [opt.register_step_post_hook(self._restore) for opt in trainer.optimizers]

    @torch.no_grad()
    def _restore(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        for param, mask, snapshot, _ in self._masked:
            local = local_shard(param)
            local.copy_(torch.where(mask, local, snapshot))

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _log(self, trainer: Trainer, scores: dict[str, Tensor], masks: dict[str, Tensor]) -> None:
        layers: dict[str, list[int]] = {}  # layer (the module owning the parameter) -> [kept, total]
        for name, mask in masks.items():
            counts = layers.setdefault(name.rpartition(".")[0] or name, [0, 0])
            counts[0] += int(mask.sum())
            counts[1] += mask.numel()
        kept, total = sum(k for k, _ in layers.values()), sum(n for _, n in layers.values())
        metrics: dict[str, Any] = {f"fisher/kept_frac/{layer}": k / n for layer, (k, n) in layers.items()}
        metrics.update({"fisher/kept_frac": kept / total, "fisher/num_kept": float(kept)})
        trainer.callback_metrics.update({key: torch.tensor(value) for key, value in metrics.items()})
        if not trainer.is_global_zero:
            return
        log_scalars(trainer, metrics, trainer.global_step)
        wandb_loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
        histogram = _histogram(scores) if wandb_loggers else {}
        if histogram:  # a wandb.Histogram: no other logger takes one
            for logger in wandb_loggers:
                logger.log_metrics(histogram, step=trainer.global_step)


def _like(param: Tensor, mask: Tensor) -> Tensor:
    """``mask`` (the full mask, the same on every rank) placed like ``param``: a DTensor if ``param`` is one."""
    if not is_dtensor(param):
        return mask
    from torch.distributed.tensor import distribute_tensor

    # every rank holds the full mask: each keeps its own shard, no communication (src_data_rank=None)
    return distribute_tensor(mask, param.device_mesh, param.placements, src_data_rank=None)  # type: ignore[attr-defined]


def _histogram(scores: dict[str, Tensor]) -> dict[str, Any]:
    """``{"fisher/histogram": wandb.Histogram}`` of log10 of the positive scores, ``{}`` if none (wandb lazily)."""
    import wandb

    values = torch.cat([f.reshape(-1) for f in scores.values()]).detach().double().cpu()
    positive = values[values > 0]
    if positive.numel() == 0:
        return {}
    counts, edges = torch.histogram(positive.log10(), bins=64)
    return {"fisher/histogram": wandb.Histogram(np_histogram=(counts.numpy(), edges.numpy()))}
