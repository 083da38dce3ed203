"""EntropyGuidedAttentionCallback in real Trainer.fit runs."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor, nn

from lightning_info.attention import EntropyGuidedAttention
from lightning_info.callbacks import EntropyGuidedAttentionCallback
from tests.helpers.lightning import RecordingLogger, run_ddp, trainer_kwargs
from tests.helpers.models import MLPClassifier, TinyTransformer, classification_data, loader


def data(n: int = 32) -> torch.utils.data.DataLoader:
    return loader(classification_data(n=n, in_dim=24, shape=(6, 4)), batch_size=8)


def make_model() -> TinyTransformer:
    return TinyTransformer(in_dim=4, optimizer_factory=lambda p: torch.optim.Adam(p, lr=0.05))


def test_fit_swaps_before_optimizer_logs_and_trains(tmp_path: Path, wandb_offline) -> None:
    model = make_model()
    optimizer_params: list[set[int]] = []

    class Spy(EntropyGuidedAttentionCallback):
        def on_fit_start(self, trainer, pl_module) -> None:
            optimizer_params.append({id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]})

    callback = Spy(weight=1.0, target_fraction=0.2, tolerance=0.05, log_every_n_steps=1)
    trainer = Trainer(callbacks=[callback], **trainer_kwargs(tmp_path, logger=wandb_offline(), max_steps=4,
                                                             log_every_n_steps=1))  # fmt: skip
    trainer.fit(model, data())
    layers = list(model.encoder.layers)
    assert all(isinstance(layer.self_attn, EntropyGuidedAttention) for layer in layers)
    for layer in layers:  # the new parameters reached the optimizer and trained
        assert id(layer.self_attn.log_temperature) in optimizer_params[0]
        assert id(layer.self_attn.entropy_threshold) in optimizer_params[0]
        assert not torch.allclose(layer.self_attn.temperature, torch.ones(2))
    for key in ("attn_entropy/overload_frac", "attn_entropy/collapse_frac", "attn_entropy/normalized_mean"):
        assert 0.0 <= float(trainer.callback_metrics[key]) <= 1.0  # through pl_module.log: the demo's summary reads it
    rows = wandb_offline.history()
    keys = set().union(*rows)
    expected = {"attn_entropy/reg", "attn_entropy/overload_frac", "attn_entropy/collapse_frac"}
    expected |= {f"attn_entropy/layer{i}/head{j}" for i in range(2) for j in range(2)}
    expected |= {f"attn_entropy/layer{i}/mean" for i in range(2)}
    expected |= {f"attn_entropy/temperature/layer{i}/head{j}" for i in range(2) for j in range(2)}
    assert expected <= keys
    assert len([r for r in rows if "attn_entropy/reg" in r]) == 4
    assert len([r for r in rows if "attn_entropy/layer1/head1" in r]) == 4
    assert all(
        0 < r["attn_entropy/layer0/head0"] <= math.log(6) + 1e-6 for r in rows if "attn_entropy/layer0/head0" in r
    )
    assert any(r.get("attn_entropy/heatmap/_type") == "images/separated" for r in rows)
    assert any(r.get("attn_entropy/reg", 0) > 0 for r in rows)
    # teardown: the model works on its own, in eval mode (the fused fast path must not bypass the module)
    assert "training_step" not in model.__dict__
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(3, 6, 4))
    assert out.shape == (3, 3) and layers[0].self_attn.last_entropy is not None


class TinySeq2Seq(LightningModule):
    """``nn.TransformerDecoderLayer`` (self- and cross-attention) over a 3-token memory."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.memory = nn.Parameter(torch.randn(1, 3, 8))
        self.decoder = nn.TransformerDecoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        memory = self.memory.expand(x.shape[0], -1, -1)
        return self.head(self.decoder(self.embed(x), memory, tgt_is_causal=False).mean(1))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return nn.functional.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_decoder_layer_self_and_cross_attention_are_swapped(tmp_path: Path) -> None:
    model = TinySeq2Seq()
    logger = RecordingLogger()
    callback = EntropyGuidedAttentionCallback(weight=1.0, target_fraction=0.9, tolerance=0.0, log_every_n_steps=1)
    Trainer(callbacks=[callback], **trainer_kwargs(tmp_path, logger=logger, max_steps=2)).fit(model, data(16))
    assert isinstance(model.decoder.self_attn, EntropyGuidedAttention)
    assert isinstance(model.decoder.multihead_attn, EntropyGuidedAttention)
    row = next(m for _, m in logger.rows if "attn_entropy/layer1/head1" in m)
    assert 0 < row["attn_entropy/layer1/head1"] <= math.log(3) + 1e-6  # cross-attention over the 3 memory tokens
    assert model.decoder.multihead_attn.log_temperature.grad is not None


class PaddedEncoder(LightningModule):
    """Default ``nn.TransformerEncoder`` (nested tensors enabled), called with a padding mask."""

    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2)
        self.embed, self.head = nn.Linear(4, 8), nn.Linear(8, 3)

    def forward(self, x: Tensor, padding: Tensor | None = None) -> Tensor:
        return self.encoder(self.embed(x), src_key_padding_mask=padding)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return nn.functional.cross_entropy(self.head(self(batch[0]).mean(1)), batch[1])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)  # weights stay: outputs comparable with the original


def test_nested_tensor_encoder_in_eval_goes_through_swapped_attention(tmp_path: Path) -> None:
    model = PaddedEncoder()
    original = copy.deepcopy(model).eval()
    Trainer(callbacks=[EntropyGuidedAttentionCallback()], **trainer_kwargs(tmp_path, max_steps=1)).fit(model, data(8))
    x, padding = torch.randn(2, 6, 4), torch.zeros(2, 6, dtype=torch.bool)
    padding[1, 4:] = True
    model.eval()
    with torch.no_grad():
        expected = original(x, padding)  # fused fast path with nested tensors
        got = model(x, padding)
    attention = model.encoder.layers[1].self_attn
    assert isinstance(attention, EntropyGuidedAttention) and attention.last_entropy is not None
    assert attention.last_row_mask is not None and attention.last_row_mask[1, 0].tolist() == [True] * 4 + [False] * 2
    torch.testing.assert_close(got[~padding], expected[~padding], rtol=1e-5, atol=1e-5)


def test_regularizer_gradient_reaches_temperatures(tmp_path: Path) -> None:
    """With the penalty only (zero learning signal from the data), temperatures still move."""
    model = TinyTransformer(in_dim=4, optimizer_factory=lambda p: torch.optim.SGD(p, lr=0.5))
    model.loss = lambda output, target: output.sum() * 0.0  # type: ignore[method-assign]
    callback = EntropyGuidedAttentionCallback(weight=10.0, target_fraction=0.05, tolerance=0.0,
                                              learnable_threshold=False)  # fmt: skip
    Trainer(callbacks=[callback], **trainer_kwargs(tmp_path, max_steps=3)).fit(model, data())
    for layer in model.encoder.layers:
        assert (layer.self_attn.temperature < 1.0).all()  # lower temperature = lower entropy, toward the target


def test_bf16_mixed_with_gradient_accumulation_and_per_position_temperature(tmp_path: Path) -> None:
    model = make_model()
    logger = RecordingLogger()
    callback = EntropyGuidedAttentionCallback(weight=1.0, temperature_positions=6, log_every_n_steps=1)
    kwargs = trainer_kwargs(tmp_path, logger=logger, max_steps=2, log_every_n_steps=1, precision="bf16-mixed")
    trainer = Trainer(callbacks=[callback], accumulate_grad_batches=2, **kwargs)
    trainer.fit(model, data())
    assert model.encoder.layers[0].self_attn.log_temperature.shape == (2, 6)
    per_head = [(step, m) for step, m in logger.rows if "attn_entropy/layer0/head0" in m]
    assert [step for step, _ in per_head] == [0, 1]  # once per optimizer step, not per micro-batch
    assert all(math.isfinite(v) for _, m in per_head for v in m.values())
    assert math.isfinite(float(trainer.callback_metrics["attn_entropy/reg"]))


def test_checkpoint_resume_keeps_temperatures(tmp_path: Path) -> None:
    model = make_model()
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    kwargs = trainer_kwargs(tmp_path, max_steps=3, enable_checkpointing=True)
    Trainer(callbacks=[EntropyGuidedAttentionCallback(), checkpoint], **kwargs).fit(model, data())
    saved = [layer.self_attn.temperature.detach().clone() for layer in model.encoder.layers]
    state = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert any(k.endswith("log_temperature") for k in state["state_dict"])
    assert any(k.endswith("entropy_threshold") for k in state["state_dict"])
    restored: list[Tensor] = []

    class Spy(Callback):
        def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
            restored.extend(layer.self_attn.temperature.detach().clone() for layer in pl_module.encoder.layers)

    resumed = make_model()  # plain nn.MultiheadAttention: the swap must come before the checkpoint is loaded
    trainer = Trainer(callbacks=[EntropyGuidedAttentionCallback(), Spy()], **{**kwargs, "max_steps": 5})
    trainer.fit(resumed, data(), ckpt_path=tmp_path / "last.ckpt")
    assert trainer.global_step == 5
    for before, after in zip(saved, restored, strict=True):
        torch.testing.assert_close(after, before)
    assert not torch.equal(resumed.encoder.layers[0].self_attn.temperature.detach(), saved[0])  # trained on


def _epoch_means_match_the_logged_heads(callback: EntropyGuidedAttentionCallback, logger: RecordingLogger,
                                        steps: list[int]) -> None:  # fmt: skip
    assert callback._epoch_count is not None and callback._epoch_sum is not None
    assert callback._epoch_count.eq(len(steps)).all()  # once per step
    for layer in range(2):
        for head in range(2):
            key = f"attn_entropy/layer{layer}/head{head}"
            logged = [m[key] for step, m in logger.rows if key in m and step in steps]
            assert len(logged) == len(steps)
            mean = float(callback._epoch_sum[layer, head] / callback._epoch_count[layer, head])
            assert mean == pytest.approx(sum(logged) / len(logged), rel=1e-6)


def test_epoch_sums_once_per_sam_step_and_of_the_right_epoch_after_a_resume(tmp_path: Path) -> None:
    """Regression: (1) SAM's perturbed pass was accumulated into the epoch heatmap too; (2) resumed from a checkpoint
    written on an epoch's last batch, Lightning skips on_train_epoch_start of the next epoch, so the restored sums of
    the finished epoch were carried into the next epoch's heatmap."""
    from lightning_info.optim import SAM

    def make() -> TinyTransformer:
        return TinyTransformer(in_dim=4, optimizer_factory=lambda p: SAM(p, torch.optim.SGD, rho=0.5, lr=0.1))

    three_batches = loader(classification_data(n=24, in_dim=24, shape=(6, 4)), batch_size=8)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_train_steps=3)
    first, logger = EntropyGuidedAttentionCallback(log_every_n_steps=1), RecordingLogger()
    kwargs = trainer_kwargs(tmp_path, max_steps=3, enable_checkpointing=True, log_every_n_steps=1, logger=logger)
    Trainer(callbacks=[first, checkpoint], **kwargs).fit(make(), three_batches)
    _epoch_means_match_the_logged_heads(first, logger, [0, 1, 2])
    resumed, logger = EntropyGuidedAttentionCallback(log_every_n_steps=1), RecordingLogger()
    kwargs = {**kwargs, "max_steps": 6, "enable_checkpointing": False, "logger": logger}
    trainer = Trainer(callbacks=[resumed], **kwargs)
    trainer.fit(make(), three_batches, ckpt_path=tmp_path / "epoch=0-step=3.ckpt")
    assert trainer.current_epoch == 2 and resumed._epoch == 1
    _epoch_means_match_the_logged_heads(resumed, logger, [3, 4, 5])


def test_bad_arguments_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="target_fraction"):
        EntropyGuidedAttentionCallback(target_fraction=-0.1)
    with pytest.raises(ValueError, match="tolerance"):
        EntropyGuidedAttentionCallback(tolerance=1.5)
    with pytest.raises(ValueError, match="granularity"):
        EntropyGuidedAttentionCallback(granularity="layer")
    with pytest.raises(ValueError, match="temperature_init"):
        EntropyGuidedAttentionCallback(temperature_init=0.0)
    with pytest.raises(ValueError, match="overload_threshold"):
        EntropyGuidedAttentionCallback(overload_threshold=0.0)
    with pytest.raises(ValueError, match="log_every_n_steps"):
        EntropyGuidedAttentionCallback(log_every_n_steps=0)
    with pytest.raises(TypeError, match="weight"):
        EntropyGuidedAttentionCallback(weight="big")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no EntropyGuidedAttention"):
        Trainer(callbacks=[EntropyGuidedAttentionCallback()], **trainer_kwargs(tmp_path)).fit(
            MLPClassifier(), loader(classification_data())
        )


@pytest.mark.slow
@pytest.mark.ddp
def test_ddp_two_processes(tmp_path: Path) -> None:
    run_ddp(
        tmp_path,
        """
        import torch
        from lightning.pytorch import Trainer
        from lightning_info.callbacks import EntropyGuidedAttentionCallback
        from tests.attention.test_callbacks import data, make_model
        from tests.helpers.lightning import trainer_kwargs

        torch.manual_seed(0)
        model = make_model()
        callback = EntropyGuidedAttentionCallback(weight=1.0, target_fraction=0.2, tolerance=0.05)
        trainer = Trainer(callbacks=[callback], **trainer_kwargs(OUT, devices=2, strategy="ddp", max_steps=3))
        trainer.fit(model, data())
        attn = model.encoder.layers[1].self_attn
        torch.save({"t": attn.log_temperature.detach().clone(), "theta": attn.entropy_threshold.detach().clone()},
                   OUT / f"t{trainer.global_rank}.pt")
        """,
    )
    r0, r1 = torch.load(tmp_path / "t0.pt"), torch.load(tmp_path / "t1.pt")
    for key in ("t", "theta"):
        torch.testing.assert_close(r0[key], r1[key], rtol=0, atol=0)  # identical on both ranks after all-reduce
    assert not torch.equal(r0["t"], torch.zeros(2))
