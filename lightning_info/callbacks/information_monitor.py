"""Log information metrics of any layer's representations during training: ``info/<layer>/<metric>``.

:class:`InformationMonitor` hooks the named layers with :class:`~lightning_info.utils.ActivationCapture`, flattens
each captured activation to ``(N, d)`` (``N`` = rows of the batch, at most ``max_samples``) and computes the metrics
of :data:`~lightning_info.callbacks.information_metrics.INFORMATION_METRICS` on it; class-conditional ones (DSMI,
CMI) use the batch targets. Metrics are looked up by name, so
:func:`~lightning_info.callbacks.information_metrics.register_information_metric` adds new ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from typing_extensions import override

from lightning_info._internal.capture import ActivationCapture
from lightning_info._internal.outputs import output_tensor
from lightning_info._internal.validation import (
    check_bool,
    check_choice,
    check_int,
    check_labels,
    check_order,
    check_range,
)
from lightning_info.callbacks._logging import log_scalars
from lightning_info.callbacks.capture import CaptureCallback
from lightning_info.callbacks.information_figures import log_information_figures
from lightning_info.callbacks.information_metrics import (
    INFORMATION_METRICS,
    InformationMetric,
    register_information_metric,
)
from lightning_info.functional.matrix_information import (
    DEFAULT_ALPHA,
    matrix_joint_entropy,
    matrix_renyi_entropy,
    normalized_gram,
)
from lightning_info.metrics.mutual_information import ESTIMATORS, MutualInformationEstimator

__all__ = ["INFORMATION_METRICS", "InformationMetric", "InformationMonitor", "register_information_metric"]

_MI_BATCH = 64  # critic minibatch (the MI benchmark's batch size)
_MI_HIDDEN = 64  # critic width: the side estimators must stay cheap next to the model
MI_ESTIMATORS = ("matrix", *ESTIMATORS)
TOKEN_REDUCTIONS = ("flatten", "mean", "first")


def hidden_states(output: Any) -> Tensor | None:
    """The hidden states of a layer's output (``None`` when it holds no tensor).

    A tensor itself; else (duck-typed, no ``transformers`` import) the ``last_hidden_state`` of a Hugging Face
    ``ModelOutput`` (or dict); else the first tensor of a mapping, tuple or list, searched depth-first.
    """
    return output_tensor(output, "last_hidden_state")


def _batch_part(batch: Any, index: int, keys: tuple[str, ...], what: str) -> Tensor:
    value = None
    if isinstance(batch, (tuple, list)) and len(batch) > index:
        value = batch[index]
    elif isinstance(batch, dict):
        value = next((batch[k] for k in keys if k in batch), None)
    if not isinstance(value, Tensor):
        raise ValueError(
            f"InformationMonitor could not find the {what} in a batch of type {type(batch).__name__}: expected "
            f"(inputs, targets) or a dict with one of {list(keys)}; pass targets=<callable batch -> tensor>"
        )
    return value


_INPUT_KEYS = ("input", "inputs", "x", "input_ids")


def _batch_size(batch: Any) -> int | None:
    """The batch size read from the inputs (``batch[0]`` or a dict's input key), ``None`` when not found."""
    try:
        inputs = _batch_part(batch, 0, _INPUT_KEYS, "inputs")
    except ValueError:
        return None
    return inputs.shape[0] if inputs.ndim else None


def _default_targets(batch: Any) -> Tensor:
    return _batch_part(batch, 1, ("target", "targets", "label", "labels", "y"), "targets")


def _append(previous: Tensor | None, value: Tensor, max_samples: int) -> Tensor:
    """Concatenate rows up to ``max_samples``, keeping exactly the rows ``ActivationCapture`` keeps."""
    value = value.detach()
    if previous is None:
        return value[:max_samples]
    if previous.shape[0] >= max_samples:
        return previous
    return torch.cat([previous, value.to(previous.device)])[:max_samples]


class InformationMonitor(CaptureCallback):
    r"""Compute information metrics of named layers every ``every_n_steps`` and log ``info/<layer>/<metric>``.

    Metrics (names of :data:`~lightning_info.callbacks.information_metrics.INFORMATION_METRICS`):
    ``matrix_entropy``, ``matrix_nuclear_norm``, ``vendi`` (Vendi Score), ``dse`` (diffusion spectral entropy),
    ``prediction_entropy`` (of a logits layer) and, with targets, ``dsmi`` and ``cmi`` (of a logits layer). Values
    go to every logger of the trainer via ``logger.log_metrics(values, step=step)``, under no gradient.

    - ``stage="train"``: at each global step divisible by ``every_n_steps`` the layers' outputs of that step's
      batch (all micro-batches under gradient accumulation, up to ``max_samples`` rows) are captured; the metrics
      are computed after the optimizer step and logged at that step (Lightning logs the batch's loss there too).
    - ``stage="validation"``: every validation run is captured (up to ``max_samples`` rows over its batches) and
      logged at ``trainer.global_step`` (the optimizer steps taken); ``every_n_steps`` is not used (the Trainer's
      ``val_check_interval`` is). Sanity-check runs are skipped.

    A metric that is undefined for a batch (a ``ValueError``: e.g. all-zero activations of a dead ReLU layer) is
    skipped with a warning instead of stopping the training. DDP: only global rank 0 captures and computes (other
    ranks keep the hooks disabled, and Lightning loggers write only on rank 0), so the values describe rank 0's
    shard of each batch; no collective is called, so a slow metric cannot deadlock the ranks.

    Info-plane mode (``info_plane=True``): for each layer :math:`I(X;T)` (the batch inputs vs. the layer) and
    :math:`I(T;Y)` (the layer vs. the targets) are logged as ``info/<layer>/mi_xt`` and ``info/<layer>/mi_ty`` in
    nats, and each logging step adds a point ``[step, I(X;T), I(T;Y)]`` to :attr:`plane`.

    - ``mi_estimator="matrix"`` (default): the matrix-based Rényi :math:`\alpha`-order mutual information of
      Giraldo, Rao & Príncipe (2015), as used for DNN information planes by Yu et al. (2021):
      :func:`~lightning_info.functional.matrix_information.matrix_mutual_information` of ``order=mi_alpha``, on the
      Gram matrices of all captured rows, Gaussian kernels of width the median pairwise distance (for the inputs and
      for each layer, per logging step) and the delta kernel :math:`[y_i = y_j]` (one-hot linear kernel) for the
      labels. A deterministic function of the captured rows: a frozen model on the same batch gives the same point
      at every logging step (the plane follows the representation). Bounded by :math:`\log N` (``N`` rows) and
      :math:`I(T;Y) \le S(Y) \le \log` ``num_classes``. Cost: five ``N x N`` float64 eigendecompositions per
      layer per logging step (two more per step for the inputs and labels).
    - ``"smile"``, ``"infonce"``, ``"nwj"``, ``"mine"``: neural bounds from side
      :class:`MutualInformationEstimator` critics, each with its own Adam optimizer, trained for ``mi_steps``
      minibatches per logging step on half of the captured (detached) rows and evaluated on the other half. The
      critics carry over from one logging step to the next, so **the value grows with the critic's accumulated
      training, not only with the representation** (fixed X and T: 5 steps 0.27 nats, 400 steps 5.26): use them
      to compare layers at one step, not as a trajectory (see ``docs/metrics.md``).

    The model's parameters and gradients are never touched. :attr:`plane` keeps at most ``max_plane_points`` points
    per layer: while it has room every logging step adds its point; when a point would exceed it, every second
    point is dropped and from then on only every second logging step (then every fourth, ...) adds one, so the
    trajectory always spans the whole run with between ``max_plane_points // 2`` and ``max_plane_points`` evenly
    spaced points; the thinning state is checkpointed, so a resumed run keeps exactly the same points.

    Token sequences: a layer's output is read by :func:`hidden_states` (a tensor, a Hugging Face ``ModelOutput``'s
    ``last_hidden_state``, or the first tensor of a tuple/dict). ``batch_first=False`` reads outputs of 3+ dims as
    ``(T, B, ...)`` (``nn.TransformerEncoder(batch_first=False)``, ``nn.MultiheadAttention``), 2-D outputs stay
    ``(B, d)``. A 3-D ``(B, T, d)`` output is reduced to one row per sample by ``token_reduction``: ``"flatten"``
    (``(B, T*d)``, the default, as every other layer), ``"mean"`` (mean over the tokens) or ``"first"`` (the first,
    e.g. ``[CLS]``, token). ``padding_mask(batch)`` gives a ``(B, T)`` mask, nonzero for real tokens (the Hugging
    Face ``attention_mask`` convention; for ``nn.Transformer``'s ``src_key_padding_mask`` pass its negation):
    ``"mean"`` averages the real tokens only and ``"flatten"`` zeroes the padded ones. The batch's inputs and
    targets are read batch-first (as a ``DataLoader`` collates them); an output whose dim 0 is not the batch size
    while dim 1 is raises a ``ValueError`` asking for ``batch_first=False``. With ``T == B`` the layout cannot be
    detected: set ``batch_first`` explicitly.

    Figures, at each validation epoch end: ``info/heatmap`` (layer x metric values as an image, with matplotlib
    installed) goes to every logger (W&B, TensorBoard, MLflow; a PNG under ``<log_dir>/figures/`` for the others,
    e.g. ``CSVLogger``); a ``WandbLogger`` also gets ``info/metrics_table`` (the same numbers as a table) and
    ``info/plane`` (the scatter of every layer's information-plane trajectory) in the same row. With several
    monitors the first one logs these figures for all of them.

    The hooks are removed at ``teardown`` and when training raises, so the monitor can be reused on another model.

    Args:
        layers: dotted module names or ``fnmatch`` globs of ``pl_module`` (``"encoder.layers.?"``; note that ``*``
            also matches dots, so ``"encoder.layers.*"`` selects every submodule of every layer).
        metrics: names from :data:`~lightning_info.callbacks.information_metrics.INFORMATION_METRICS`.
        every_n_steps: logging period in optimizer steps (``stage="train"``).
        stage: ``"train"`` or ``"validation"``.
        max_samples: rows kept per computation (the metrics' cost grows as ``max_samples**2`` to ``**3``).
        targets: ``True`` reads targets from ``(inputs, targets)`` batches or dicts (``"target"``, ``"labels"``,
            ``"y"``, ...), a callable ``batch -> Tensor`` extracts them, ``False`` disables class-conditional metrics.
        info_plane: log :math:`I(X;T)` and :math:`I(T;Y)` of each layer (see above).
        num_classes: number of classes for :math:`I(T;Y)` (required with ``info_plane``); with ``"cmi"`` it is
            checked against the layer's width, with a warning when they differ (``"cmi"`` takes the layer's width as
            the class count).
        mi_estimator: ``"matrix"`` (deterministic, default) or a neural bound (``"smile"``, ``"infonce"``,
            ``"nwj"``, ``"mine"``).
        mi_alpha: Rényi order :math:`\alpha` of the ``"matrix"`` estimator (Yu et al.: 1.01).
        mi_steps: critic updates per logging step (neural estimators).
        mi_lr: learning rate of the critics' Adam optimizers (neural estimators).
        max_plane_points: most points of :attr:`plane` kept per layer (>= 2; thinning rule above).
        log_figures: log the heatmap (and the W&B table and information plane) at validation epoch end.
        batch_first: whether outputs of 3+ dims are ``(B, T, ...)`` (``False``: ``(T, B, ...)``).
        token_reduction: ``"flatten"``, ``"mean"`` or ``"first"``: one row per sample from a ``(B, T, d)`` output.
        padding_mask: ``None`` or a callable ``batch -> (B, T)`` mask, nonzero for real tokens.

    Raises:
        TypeError: ``metrics``, ``targets`` or ``padding_mask`` of the wrong type, a flag that is not a bool.
        ValueError: unknown metric, ``every_n_steps < 1``, bad ``stage``, a class-conditional metric or the info plane
            without targets, ``info_plane`` without ``num_classes``; at ``setup``: a layer name matching nothing;
            with the info plane, while training: targets that are not ``(N,)`` class indices in ``[0, num_classes)``;
            while training: a layer output that is sequence-first with ``batch_first=True``, a padding mask whose
            shape is not the output's ``(B, T)``.
    """

    def __init__(
        self,
        layers: Sequence[str],
        metrics: Sequence[str] = ("matrix_entropy", "vendi", "dse"),
        every_n_steps: int = 50,
        stage: str = "train",
        max_samples: int = 512,
        targets: bool | Callable[[Any], Tensor] = True,
        info_plane: bool = False,
        num_classes: int | None = None,
        mi_estimator: str = "matrix",
        mi_alpha: float = DEFAULT_ALPHA,
        mi_steps: int = 20,
        mi_lr: float = 1e-3,
        max_plane_points: int = 512,
        log_figures: bool = True,
        batch_first: bool = True,
        token_reduction: str = "flatten",
        padding_mask: Callable[[Any], Tensor] | None = None,
    ) -> None:
        if isinstance(layers, str) or not isinstance(layers, Sequence) or not layers:
            raise ValueError(f"layers must be a non-empty list of module names or globs, got {layers!r}")
        super().__init__()
        if isinstance(metrics, str) or not isinstance(metrics, Sequence):
            raise TypeError(f"metrics must be a list of metric names, got {metrics!r}")
        for name in metrics:
            check_choice("metrics", name, sorted(INFORMATION_METRICS))
        if not metrics and not info_plane:
            raise ValueError("metrics must name at least one metric (or set info_plane=True), got []")
        self.layers = list(layers)
        self.metrics = list(dict.fromkeys(metrics))
        self.every_n_steps = check_int("every_n_steps", every_n_steps, min_value=1)
        self.stage = check_choice("stage", stage, ("train", "validation"))
        self.max_samples = check_int("max_samples", max_samples, min_value=2)
        if not (isinstance(targets, bool) or callable(targets)):
            raise TypeError(f"targets must be a bool or a callable batch -> Tensor, got {type(targets).__name__}")
        self.info_plane = check_bool("info_plane", info_plane)
        self.num_classes = None if num_classes is None else check_int("num_classes", num_classes, min_value=2)
        needing = [m for m in self.metrics if INFORMATION_METRICS[m].needs_targets] + (["info_plane"] * info_plane)
        if needing and targets is False:
            raise ValueError(f"{needing} need the batch targets, but targets=False")
        if self.info_plane and self.num_classes is None:
            raise ValueError("info_plane=True needs num_classes (to one-hot the targets for I(T;Y)), got None")
        self.target_fn: Callable[[Any], Tensor] | None = None
        if needing:
            self.target_fn = _default_targets if targets is True else targets  # type: ignore[assignment]
        self.mi_estimator = check_choice("mi_estimator", mi_estimator, MI_ESTIMATORS)
        self.mi_alpha = check_order("mi_alpha", mi_alpha)
        self.mi_steps = check_int("mi_steps", mi_steps, min_value=1)
        self.mi_lr = check_range("mi_lr", mi_lr, 0.0, low_inclusive=False)
        self.max_plane_points = check_int("max_plane_points", max_plane_points, min_value=2)
        self.log_figures = check_bool("log_figures", log_figures)
        self.batch_first = check_bool("batch_first", batch_first)
        self.token_reduction = check_choice("token_reduction", token_reduction, TOKEN_REDUCTIONS)
        if padding_mask is not None and not callable(padding_mask):
            raise TypeError(
                f"padding_mask must be None or a callable batch -> Tensor, got {type(padding_mask).__name__}"
            )
        self.padding_mask = padding_mask
        self.estimators = nn.ModuleDict()
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self._saved_estimators: dict[str, dict[str, Any]] = {}
        self.latest: dict[str, float] = {}
        self.plane: dict[str, list[list[float]]] = {}
        self._plane_seen: dict[str, int] = {}  # logging steps offered to the plane, per layer
        self._plane_stride: dict[str, int] = {}  # a point is kept every this many of them
        self._batch_rows: int | None = None  # the current batch's size, when it can be read from the batch
        self._mask: Tensor | None = None  # the current batch's padding mask
        self._step_grams: tuple[Tensor, Tensor, Tensor, Tensor] | None = None  # inputs' and labels' A and S_alpha
        self.last_logged_step = -1
        self._pending_step: int | None = None
        self._inputs: Tensor | None = None
        self._targets: Tensor | None = None
        self._generator = torch.Generator().manual_seed(0)
        self._warned: set[str] = set()
        self._state_key = self._generate_state_key(
            layers=self.layers,
            metrics=self.metrics,
            stage=self.stage,
            every_n_steps=self.every_n_steps,
            max_samples=self.max_samples,
            info_plane=self.info_plane,
        )

    @property
    @override
    def state_key(self) -> str:
        return self._state_key  # Lightning reads it at every hook call: built once, in __init__

    @property
    def capture(self) -> ActivationCapture | None:
        """The hooks on :attr:`layers` while a run is set up (``None`` outside)."""
        return self.captures.get("layers")

    # ---------------------------------------------------------------- hooks
    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        capture = ActivationCapture(
            pl_module, self.layers, extract=self._extract, max_samples=self.max_samples, accumulate=True
        )
        capture.enabled = False
        self.attach_captures(layers=capture)  # replaces the hooks of a previous model, if any

    @override
    def release(self) -> None:
        super().release()
        self._reset_buffers()

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if self.stage != "train" or not trainer.is_global_zero or step % self.every_n_steps:
            return
        if step <= self.last_logged_step:  # resumed from a checkpoint written after this step's logging
            return
        if self._pending_step != step:
            self._reset_buffers()
            self._pending_step = step
        self._start_capture(batch)

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.capture is not None:
            self.capture.enabled = False
        if self._pending_step is not None and trainer.global_step != self._pending_step:  # the optimizer stepped
            self._compute_and_log(trainer, self._pending_step)

    @override
    def on_validation_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self.stage == "validation" and trainer.is_global_zero and not trainer.sanity_checking:
            self._pending_step = trainer.global_step
            self._start_capture(batch)

    @override
    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.stage == "validation" and self.capture is not None:
            self.capture.enabled = False

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        if self.stage == "validation" and self._pending_step is not None:
            self._compute_and_log(trainer, self._pending_step)
        # one set of figures for all the trainer's monitors (they would log under the same keys): the first one's
        callbacks: list[Callback] = trainer.callbacks  # type: ignore[attr-defined]
        monitors = [cb for cb in callbacks if isinstance(cb, InformationMonitor) and cb.log_figures]
        if not monitors or monitors[0] is not self or not any(m.latest for m in monitors):
            return
        latest = {k: v for m in monitors for k, v in m.latest.items()}
        plane = {layer: points for m in monitors for layer, points in m.plane.items()}
        names = [name for m in monitors for name in (m.capture.names if m.capture is not None else m.layers)]
        log_information_figures(trainer, latest, plane, names, trainer.global_step)

    # ---------------------------------------------------------------- state
    @override
    def state_dict(self) -> dict[str, Any]:
        estimators = dict(self._saved_estimators)  # restored but not used yet
        for key, estimator in self.estimators.items():
            assert isinstance(estimator, MutualInformationEstimator)
            estimators[key] = {
                "dims": [estimator.x_dim, estimator.y_dim],
                "weights": estimator.state_dict(),
                "optimizer": self.optimizers[key].state_dict(),
            }
        return {
            "last_logged_step": self.last_logged_step,
            "latest": dict(self.latest),
            "plane": {layer: [list(p) for p in points] for layer, points in self.plane.items()},
            "plane_seen": dict(self._plane_seen),
            "plane_stride": dict(self._plane_stride),
            "estimators": estimators,
            "generator": self._generator.get_state(),  # the critics' row splits and minibatches continue on resume
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_logged_step = int(state_dict["last_logged_step"])
        self.latest = {k: float(v) for k, v in state_dict["latest"].items()}
        self.plane = {layer: [list(p) for p in points] for layer, points in state_dict["plane"].items()}
        # checkpoints written before the plane was bounded: every point was kept
        self._plane_seen = dict(state_dict.get("plane_seen", {k: len(v) for k, v in self.plane.items()}))
        self._plane_stride = dict(state_dict.get("plane_stride", {}))
        # the critics are rebuilt at their first use, on the device of the captured activations
        self._saved_estimators = dict(state_dict["estimators"])
        if "generator" in state_dict:
            self._generator.set_state(state_dict["generator"])
        self.estimators = nn.ModuleDict()
        self.optimizers = {}

    # ---------------------------------------------------------------- internals
    def _reset_buffers(self) -> None:
        self._pending_step = None
        self._inputs = self._targets = None
        self._batch_rows = self._mask = None
        if self.capture is not None:
            self.capture.clear()
            self.capture.enabled = False

    def _start_capture(self, batch: Any) -> None:
        if self.capture is None:
            return
        self.capture.enabled = True
        self._batch_rows = _batch_size(batch)
        if self.target_fn is not None:
            self._targets = _append(self._targets, self.target_fn(batch), self.max_samples)
        if self.info_plane:
            inputs = _batch_part(batch, 0, _INPUT_KEYS, "inputs")
            self._inputs = _append(self._inputs, inputs, self.max_samples)
        self._mask = None if self.padding_mask is None else self.padding_mask(batch)
        if self._mask is not None and (not isinstance(self._mask, Tensor) or self._mask.ndim != 2):
            raise TypeError(f"padding_mask(batch) must return a (B, T) tensor, got {self._mask!r}")

    def _extract(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
        """What the capture keeps of ``module``'s output: one row per sample (layout and token reduction)."""
        z = hidden_states(output)
        if z is None or z.ndim < 3:
            return z
        if not self.batch_first:
            z = z.transpose(0, 1)
        rows = self._batch_rows
        if rows is not None and z.shape[0] != rows and z.shape[1] == rows:
            raise ValueError(
                f"InformationMonitor: {type(module).__name__} output of shape {tuple(z.shape)} "
                f"({'after moving the batch first' if not self.batch_first else 'read batch-first'}) has the batch "
                f"size {rows} in dim 1, not dim 0: pass batch_first={not self.batch_first}"
            )
        if z.ndim != 3:
            return z
        z = z.detach()
        mask = self._mask
        if mask is not None and self.token_reduction != "first":
            if tuple(mask.shape) != tuple(z.shape[:2]):
                raise ValueError(
                    f"padding_mask must have the (B, T) shape {tuple(z.shape[:2])} of the {type(module).__name__} "
                    f"output, got {tuple(mask.shape)}"
                )
            keep = (mask != 0).to(device=z.device, dtype=z.dtype).unsqueeze(-1)
            z = z * keep
            if self.token_reduction == "mean":
                return z.sum(dim=1) / keep.sum(dim=1).clamp_min(1.0)
        if self.token_reduction == "mean":
            return z.mean(dim=1)
        if self.token_reduction == "first":
            return z[:, 0]
        return z.reshape(z.shape[0], -1)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            rank_zero_warn(message)

    def _compute_and_log(self, trainer: Trainer, step: int) -> None:
        assert self.capture is not None
        values: dict[str, float] = {}
        targets = self._targets
        if targets is not None and self.info_plane:  # one-hot needs class indices; metrics check their own inputs
            check_labels("targets", targets, targets.shape[0], self.num_classes)
        for layer in self.capture.names:
            z = self.capture.captured.get(layer)
            if not isinstance(z, Tensor) or z.ndim == 0:
                continue
            z = z.reshape(z.shape[0], -1)
            if z.shape[0] < 2:
                self._warn_once(layer, f"InformationMonitor: layer {layer!r} gave {z.shape[0]} row(s); skipped")
                continue
            if targets is not None and targets.shape[0] != z.shape[0]:
                raise RuntimeError(
                    f"InformationMonitor: layer {layer!r} captured {z.shape[0]} rows but the batches had "
                    f"{targets.shape[0]} targets; the layer's output must have the batch as dim 0 (batch_first)"
                )
            if "cmi" in self.metrics and self.num_classes is not None and z.shape[1] != self.num_classes:
                self._warn_once(
                    f"{layer}/cmi-width",
                    f"InformationMonitor: 'cmi' reads layer {layer!r} as (N, num_classes) logits, but it gives "
                    f"{z.shape[1]} features and num_classes={self.num_classes}: its info/{layer}/cmi treats the "
                    f"{z.shape[1]} features as classes; monitor 'cmi' on the classifier's output layer",
                )
            with torch.no_grad():
                for name in self.metrics:
                    metric = INFORMATION_METRICS[name]
                    y = targets.to(z.device) if metric.needs_targets and targets is not None else None
                    try:
                        values[f"info/{layer}/{name}"] = float(metric.fn(z, y))
                    except ValueError as error:  # undefined for this batch (e.g. all-zero rows): keep training
                        self._warn_once(f"{layer}/{name}", f"InformationMonitor: {name} of {layer!r} skipped: {error}")
            if self.info_plane and z.shape[0] < 4:
                self._warn_once(f"{layer}/plane", f"InformationMonitor: info plane of {layer!r} needs >= 4 rows")
            elif self.info_plane and targets is not None and self._inputs is not None:
                try:
                    values.update(self._info_plane(layer, self._inputs.reshape(z.shape[0], -1), z, targets, step))
                except ValueError as error:  # e.g. NaN/Inf activations: keep training
                    self._warn_once(f"{layer}/plane", f"InformationMonitor: info plane of {layer!r} skipped: {error}")
        self._step_grams = None
        if values:
            log_scalars(trainer, values, step)
            self.latest.update(values)
        self.last_logged_step = step
        self._reset_buffers()

    def _estimator(self, key: str, x_dim: int, y_dim: int, device: torch.device) -> MutualInformationEstimator:
        if key not in self.estimators:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(len(self.estimators))
                estimator = MutualInformationEstimator(x_dim, y_dim, self.mi_estimator, hidden=_MI_HIDDEN).to(device)
            optimizer = torch.optim.Adam(estimator.parameters(), lr=self.mi_lr, foreach=True)  # many tiny tensors
            saved = self._saved_estimators.pop(key, None)
            if saved is not None and list(saved["dims"]) == [x_dim, y_dim]:
                estimator.load_state_dict(saved["weights"])
                optimizer.load_state_dict(saved["optimizer"])
            self.estimators[key], self.optimizers[key] = estimator, optimizer
        found = self.estimators[key]
        assert isinstance(found, MutualInformationEstimator)
        return found

    def _info_plane(self, layer: str, x: Tensor, t: Tensor, targets: Tensor, step: int) -> dict[str, float]:
        if self.mi_estimator == "matrix":
            values = self._matrix_plane(layer, x, t, targets)
        else:
            values = self._neural_plane(layer, x, t, targets)
        self._add_plane_point(layer, [float(step), values[f"info/{layer}/mi_xt"], values[f"info/{layer}/mi_ty"]])
        return values

    def _matrix_plane(self, layer: str, x: Tensor, t: Tensor, targets: Tensor) -> dict[str, float]:
        """Matrix-based Rényi MI; the inputs' and labels' Gram matrices and entropies are built once per step."""
        if self._step_grams is None:
            a_x, a_y = normalized_gram(x.double()), normalized_gram(targets.long())
            self._step_grams = (
                a_x,
                matrix_renyi_entropy(a_x, self.mi_alpha),
                a_y,
                matrix_renyi_entropy(a_y, self.mi_alpha),
            )
        a_x, s_x, a_y, s_y = self._step_grams
        a_t = normalized_gram(t.to(device=a_x.device, dtype=torch.float64))
        s_t = matrix_renyi_entropy(a_t, self.mi_alpha)
        return {
            f"info/{layer}/mi_xt": float(s_x + s_t - matrix_joint_entropy(a_x, a_t, self.mi_alpha)),
            f"info/{layer}/mi_ty": float(s_t + s_y - matrix_joint_entropy(a_t, a_y.to(a_t.device), self.mi_alpha)),
        }

    def _add_plane_point(self, layer: str, point: list[float]) -> None:
        """Keep at most ``max_plane_points`` evenly spaced points (the thinning rule of the class docstring)."""
        seen, stride = self._plane_seen.get(layer, 0), self._plane_stride.get(layer, 1)
        self._plane_seen[layer] = seen + 1
        if seen % stride:
            return
        points = self.plane.setdefault(layer, [])
        points.append(point)
        if len(points) > self.max_plane_points:
            self.plane[layer] = points[::2]
            self._plane_stride[layer] = 2 * stride

    def _neural_plane(self, layer: str, x: Tensor, t: Tensor, targets: Tensor) -> dict[str, float]:
        assert self.num_classes is not None
        values: dict[str, float] = {}
        order = torch.randperm(t.shape[0], generator=self._generator).to(t.device)
        fit_rows, eval_rows = order[: t.shape[0] // 2], order[t.shape[0] // 2 :]
        with torch.inference_mode(False), torch.enable_grad():
            # clones: tensors made under validation's inference mode cannot be saved for backward
            x, t = x.float().clone(), t.float().clone()
            y = nn.functional.one_hot(targets.to(t.device).long(), self.num_classes).float()
            for name, a, b in (("mi_xt", x, t), ("mi_ty", t, y)):
                key = f"{layer}/{name}".replace(".", "_")
                estimator = self._estimator(key, a.shape[1], b.shape[1], t.device)
                estimator.fit(a[fit_rows], b[fit_rows], self.optimizers[key], self.mi_steps, _MI_BATCH, self._generator)
                estimator.eval()
                with torch.no_grad():
                    values[f"info/{layer}/{name}"] = float(estimator(a[eval_rows], b[eval_rows]))
        return values
