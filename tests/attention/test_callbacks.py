"""EntropyGuidedAttentionCallback and AttentionEntropyMonitor in real Trainer.fit runs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger
from torch import nn

from lightning_info.attention import EntropyGuidedAttention
from lightning_info.callbacks import AttentionEntropyMonitor, EntropyGuidedAttentionCallback
from lightning_info.callbacks.attention_entropy_monitor import attention_entropy_of_call
from tests.helpers.lightning import run_ddp, trainer_kwargs
from tests.helpers.models import TinyTransformer, classification_data, loader
from tests.helpers.wandb_reader import read_history


def wandb_history(wandb_offline, tmp_path: Path) -> list[dict]:
    """``wandb_offline.history()``, waiting for the run file: wandb 0.31 may still be writing it after ``finish()``."""
    rows = wandb_offline.history()
    deadline = time.monotonic() + 30
    while not rows and time.monotonic() < deadline:
        time.sleep(0.5)
        rows = read_history(tmp_path / "wandb")
    return rows


def data() -> torch.utils.data.DataLoader:
    return loader(classification_data(n=32, in_dim=24, shape=(6, 4)), batch_size=8)


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
        assert not torch.allclose(layer.self_attn.temperature, torch.ones(2))
    rows = wandb_history(wandb_offline, tmp_path)
    keys = set().union(*rows)
    expected = {"attn_entropy/reg", "attn_entropy/overload_frac", "attn_entropy/collapse_frac"}
    expected |= {f"attn_entropy/layer{i}/head{j}" for i in range(2) for j in range(2)}
    expected |= {f"attn_temperature/layer{i}/head{j}" for i in range(2) for j in range(2)}
    assert expected <= keys
    assert len([r for r in rows if "attn_entropy/reg" in r]) == 4
    assert any(r.get("attn_entropy/heatmap/_type") == "images/separated" for r in rows)
    assert any(r.get("attn_entropy/reg", 0) > 0 for r in rows)
    # teardown: the model works on its own, in eval mode (the fused fast path must not bypass the module)
    assert "training_step" not in model.__dict__
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(3, 6, 4))
    assert out.shape == (3, 3) and layers[0].self_attn.last_entropy is not None


def test_regularizer_gradient_reaches_temperatures(tmp_path: Path) -> None:
    """With the penalty only (zero learning signal from the data), temperatures still move."""
    model = TinyTransformer(in_dim=4, optimizer_factory=lambda p: torch.optim.SGD(p, lr=0.5))
    model.loss = lambda output, target: output.sum() * 0.0  # type: ignore[method-assign]
    callback = EntropyGuidedAttentionCallback(weight=10.0, target_fraction=0.05, tolerance=0.0,
                                              learnable_threshold=False)  # fmt: skip
    Trainer(callbacks=[callback], **trainer_kwargs(tmp_path, max_steps=3)).fit(model, data())
    for layer in model.encoder.layers:
        assert (layer.self_attn.temperature < 1.0).all()  # lower temperature = lower entropy, toward the target


def test_checkpoint_resume_keeps_temperatures(tmp_path: Path) -> None:
    model = make_model()
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    kwargs = trainer_kwargs(tmp_path, max_steps=3, enable_checkpointing=True)
    Trainer(callbacks=[EntropyGuidedAttentionCallback(), checkpoint], **kwargs).fit(model, data())
    saved = [layer.self_attn.temperature.detach().clone() for layer in model.encoder.layers]
    state = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert any(k.endswith("log_temperature") for k in state["state_dict"])
    resumed = make_model()
    trainer = Trainer(callbacks=[EntropyGuidedAttentionCallback()], **kwargs)
    trainer.fit(resumed, data(), ckpt_path=tmp_path / "last.ckpt")
    for layer, temperature in zip(resumed.encoder.layers, saved, strict=True):
        torch.testing.assert_close(layer.self_attn.temperature, temperature)


class RecordingLogger(Logger):
    """In-memory logger: one dict per ``log_metrics`` call, with its step."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, float]] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.rows.append({**metrics, "step": step})

    def log_hyperparams(self, params: object, *args: object, **kwargs: object) -> None:
        pass


def test_monitor_matches_recorded_entropy_and_logs(tmp_path: Path) -> None:
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    ega = EntropyGuidedAttention(8, 2, temperature_init=1.5)
    ega.load_state_dict(mha.state_dict())
    x = torch.randn(3, 7, 8)
    padding = torch.zeros(3, 7, dtype=torch.bool)
    padding[2, 5:] = True
    causal = nn.Transformer.generate_square_subsequent_mask(7)
    ega(x, x, x, key_padding_mask=padding, attn_mask=causal, need_weights=False)
    inputs = {"query": x, "key": x, "self_attention": True, "key_padding_mask": padding, "attn_mask": causal,
              "is_causal": False}  # fmt: skip
    entropy, max_entropy, rows = attention_entropy_of_call(ega, inputs, chunk_size=2, max_samples=None)
    torch.testing.assert_close(entropy, ega.last_entropy.detach())
    torch.testing.assert_close(max_entropy, ega.last_max_entropy)
    assert torch.equal(rows, ega.last_row_mask)

    model = make_model()
    monitor = AttentionEntropyMonitor(every_n_steps=2, chunk_size=2)
    logger = RecordingLogger()
    Trainer(callbacks=[monitor], **trainer_kwargs(tmp_path, logger=logger, max_steps=4, log_every_n_steps=1)).fit(
        model, data()
    )
    assert type(model.encoder.layers[0].self_attn) is nn.MultiheadAttention
    rows_logged = [r for r in logger.rows if "attn_entropy/layer1/head1" in r]
    assert [r["step"] for r in rows_logged] == [0, 2]
    assert all(0.0 <= r["attn_entropy/overload_frac"] <= 1.0 for r in rows_logged)
    assert all(0.0 < r["attn_entropy/layer0/head0"] <= torch.log(torch.tensor(6.0)).item() + 1e-6 for r in rows_logged)


def test_bad_arguments_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="target_fraction"):
        EntropyGuidedAttentionCallback(target_fraction=-0.1)
    with pytest.raises(ValueError, match="tolerance"):
        EntropyGuidedAttentionCallback(tolerance=1.5)
    with pytest.raises(ValueError, match="every_n_steps"):
        AttentionEntropyMonitor(every_n_steps=0)
    with pytest.raises(TypeError, match="modules"):
        AttentionEntropyMonitor(modules="encoder")  # type: ignore[arg-type]
    from tests.helpers.models import MLPClassifier

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
        log_t = model.encoder.layers[1].self_attn.log_temperature.detach().clone()
        torch.save(log_t, OUT / f"t{trainer.global_rank}.pt")
        """,
    )
    t0, t1 = torch.load(tmp_path / "t0.pt"), torch.load(tmp_path / "t1.pt")
    torch.testing.assert_close(t0, t1, rtol=0, atol=0)
    assert not torch.equal(t0, torch.zeros(2))
