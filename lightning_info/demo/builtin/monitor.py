"""Demo part ``monitor``: information metrics of the digits transformer's layers, logged as ``info/<layer>/<metric>``.

Two :class:`~lightning_info.callbacks.InformationMonitor` callbacks, no change to the model: one on the encoder
layers and the pooled representation (matrix entropy, Vendi score, DSMI with the labels, and the information
plane I(X;T) / I(T;Y) from side critics), one on the logits (prediction entropy and CMI). Every ``every_n_steps``
training steps they capture one batch; at each validation end W&B gets the layer-by-metric heatmap and the
information-plane scatter. The final values of the pooled representation and the head go into the summary.
"""

from __future__ import annotations

from lightning_info.callbacks import InformationMonitor
from lightning_info.demo.parts import DemoContext, register_part

_REPRESENTATION_METRICS = ("matrix_entropy", "vendi", "dsmi")
_HEAD_METRICS = ("prediction_entropy", "cmi")
SUMMARY_KEYS = (
    *(f"info/pool/{name}" for name in (*_REPRESENTATION_METRICS, "mi_xt", "mi_ty")),
    *(f"info/head/{name}" for name in _HEAD_METRICS),
)


@register_part("monitor", help="InformationMonitor: matrix entropy, Vendi, DSMI, info plane, CMI of the layers")
def configure(ctx: DemoContext) -> None:
    """Add the two monitors and show their final ``info/pool/*`` and ``info/head/*`` values in the summary."""
    every = 2 if ctx.fast else 50  # the overhead benchmark's period (benchmarks/monitor.py)
    monitors = [
        InformationMonitor(
            ["encoder.layers.?", "pool"],  # "?": one character; "*" would also match every submodule
            _REPRESENTATION_METRICS,
            every_n_steps=every,
            info_plane=True,
            num_classes=10,
            mi_steps=5,  # the critics carry over between logging steps; 5 updates each keep the demo fast
        ),
        InformationMonitor(["head"], _HEAD_METRICS, every_n_steps=every, num_classes=10),
    ]
    ctx.callbacks.extend(monitors)
    ctx.summary_keys.extend(SUMMARY_KEYS)
