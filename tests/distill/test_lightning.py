import copy
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_info.distill import DistillationModule, KDLoss, MCMICallback, MCMILoss
from lightning_info.metrics.functional import conditional_mutual_information
from tests.helpers.lightning import trainer_kwargs
from tests.helpers.models import MLPClassifier, TinyCNN, classification_data, loader
from tests.helpers.wandb_reader import series

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


class Recorder(Callback):
    """Keeps ``trainer.callback_metrics`` after every training batch."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        self.rows.append({k: float(v) for k, v in trainer.callback_metrics.items()})


def _images(n: int, seed: int = 0) -> torch.utils.data.TensorDataset:
    return classification_data(n=n, in_dim=64, seed=seed, shape=(1, 8, 8))


def test_teacher_step_optimises_ce_minus_lam_cmi_and_logs_to_wandb(tmp_path: Path, wandb_offline) -> None:
    torch.manual_seed(0)
    model = MLPClassifier()
    reference = copy.deepcopy(model.net)
    data = classification_data(n=32)
    callback = MCMICallback(num_classes=3, lam=0.5)
    trainer = Trainer(
        callbacks=[callback], **trainer_kwargs(tmp_path, max_steps=2, logger=wandb_offline(), log_every_n_steps=1)
    )
    trainer.fit(model, loader(data), loader(classification_data(n=24, seed=1), batch_size=8))
    # the same two SGD steps by hand: CE - 0.5 * CMI of the softmax outputs
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    for x, y in loader(data):
        logits = reference(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        loss = loss - 0.5 * conditional_mutual_information(torch.softmax(logits, 1), y, 3)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for got, expected in zip(model.net.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(got, expected)
    rows = wandb_offline.history()
    assert len(series(rows, "mcmi/cmi")) == 2 and len(series(rows, "mcmi/ce")) == 2
    assert all(v > 0 for _, v in series(rows, "mcmi/cmi"))
    # the validation CMI is over the whole validation set (3 batches), with the final weights
    x_val, y_val = classification_data(n=24, seed=1).tensors
    with torch.no_grad():
        expected = conditional_mutual_information(torch.softmax(model(x_val), 1), y_val, 3)
    [(_, val_cmi)] = series(rows, "mcmi/val_cmi")
    assert val_cmi == pytest.approx(float(expected), rel=1e-5)


def test_large_lam_stays_finite_and_bounded(tmp_path: Path) -> None:
    # lam = 1.0 and a large learning rate: the term is bounded (batch: log K; ema: log(n_c / (1 - m)))
    for centroids, bound in (("batch", math.log(3)), ("ema", math.log(16 / 0.1))):
        torch.manual_seed(0)
        model = MLPClassifier(optimizer_factory=lambda p: torch.optim.SGD(p, lr=1.0))
        recorder = Recorder()
        callback = MCMICallback(num_classes=3, lam=1.0, centroids=centroids, log_validation=False)
        trainer = Trainer(callbacks=[callback, recorder], **trainer_kwargs(tmp_path, max_steps=40))
        trainer.fit(model, loader(classification_data(n=96), shuffle=True))
        values = [row["mcmi/cmi"] for row in recorder.rows]
        assert len(values) == 40 and all(math.isfinite(v) and 0 <= v <= bound for v in values)
        assert all(torch.isfinite(p).all() for p in model.parameters())


def test_named_head_layer_bf16_and_gradient_accumulation(tmp_path: Path) -> None:
    model = TinyCNN(channels=4, num_classes=3)
    recorder = Recorder()
    callback = MCMICallback(num_classes=3, lam=0.2, layer="head", centroids="ema")
    kwargs = trainer_kwargs(tmp_path, max_steps=3, precision="bf16-mixed", accumulate_grad_batches=2)
    Trainer(callbacks=[callback, recorder], **kwargs).fit(model, loader(_images(96)))
    assert len(recorder.rows) == 6 and all(math.isfinite(row["mcmi/cmi"]) for row in recorder.rows)
    assert callback.criterion.class_seen.all()


def test_running_centroids_under_sam_come_from_the_clean_pass(tmp_path: Path) -> None:
    """Regression: with SAM the perturbed pass re-ran training_step and blended its outputs into the centroids."""
    from lightning_info.optim import SAM

    torch.manual_seed(0)
    model = MLPClassifier(optimizer_factory=lambda p: SAM(p, torch.optim.SGD, rho=0.5, lr=0.1))
    data = classification_data(n=16)
    x, y = data.tensors
    with torch.no_grad():
        expected = torch.stack([torch.softmax(model(x[y == c]), 1).mean(0) for c in range(3)])  # first-seen: means
    callback = MCMICallback(num_classes=3, lam=0.2, centroids="ema", momentum=0.5, log_validation=False)
    Trainer(callbacks=[callback], **trainer_kwargs(tmp_path, max_steps=1)).fit(model, loader(data))
    torch.testing.assert_close(callback.criterion.class_centroids, expected)


def _teacher(tmp_path: Path) -> TinyCNN:
    torch.manual_seed(0)
    teacher = TinyCNN(channels=4, num_classes=3)
    callback = MCMICallback(num_classes=3, lam=0.2, log_validation=False)
    Trainer(callbacks=[callback], **trainer_kwargs(tmp_path, max_steps=6)).fit(teacher, loader(_images(96)))
    return teacher


class TeacherStaysFrozen(Callback):
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        assert isinstance(pl_module, DistillationModule)
        assert not pl_module.teacher.training and not any(p.requires_grad for p in pl_module.teacher.parameters())
        in_optimizer = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
        assert in_optimizer == {id(p) for p in pl_module.student.parameters()}


def test_distillation_keeps_the_teacher_bit_identical(tmp_path: Path) -> None:
    teacher = _teacher(tmp_path)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}  # BatchNorm running stats included
    student = TinyCNN(channels=2, num_classes=3)
    student_before = copy.deepcopy(student.state_dict())
    module = DistillationModule(student, teacher, loss=KDLoss(temperature=4.0, alpha=0.9))
    recorder = Recorder()
    kwargs = trainer_kwargs(tmp_path, max_steps=6, precision="bf16-mixed", limit_val_batches=2)  # one epoch
    trainer = Trainer(callbacks=[TeacherStaysFrozen(), recorder], **kwargs)
    trainer.fit(module, loader(_images(96), shuffle=True), loader(_images(32, seed=1)))
    after = teacher.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert any(not torch.equal(student_before[k], v) for k, v in student.state_dict().items())
    assert {"distill/loss", "distill/kd", "distill/ce", "distill/train_acc"} <= recorder.rows[-1].keys()
    assert {"distill/val_acc", "distill/val_ce", "distill/val_teacher_acc"} <= trainer.callback_metrics.keys()
    tested = trainer.test(module, loader(_images(32, seed=2)), verbose=False)[0]
    assert 0.0 <= tested["distill/test_acc"] <= 1.0


def _fit_resumable(tmp_path: Path, make, max_steps: int, data, ckpt: str | None = None, callbacks=()) -> Trainer:
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_train_steps=3)
    kwargs = trainer_kwargs(tmp_path, max_steps=max_steps, enable_checkpointing=True, limit_val_batches=0)
    trainer = Trainer(callbacks=[checkpoint, *callbacks], **kwargs)
    trainer.fit(make(), loader(data), ckpt_path=ckpt)
    return trainer


def test_teacher_checkpoint_resume_restores_running_centroids(tmp_path: Path) -> None:
    data = classification_data(n=48)

    def run(directory: Path, steps: int, ckpt: str | None = None) -> tuple[Trainer, MCMICallback]:
        torch.manual_seed(0)
        callback = MCMICallback(num_classes=3, lam=0.3, centroids="ema", momentum=0.5, log_validation=False)
        return _fit_resumable(directory, MLPClassifier, steps, data, ckpt, [callback]), callback

    _, straight = run(tmp_path / "a", 6)
    run(tmp_path / "b", 3)
    ckpt = tmp_path / "b" / "ckpt" / "epoch=0-step=3.ckpt"
    saved = torch.load(ckpt, weights_only=True)
    [state] = [v for k, v in saved["callbacks"].items() if k.startswith("MCMICallback")]
    assert state["criterion"]["class_seen"].all()
    resumed_trainer, resumed = run(tmp_path / "c", 6, str(ckpt))
    torch.testing.assert_close(resumed.criterion.class_centroids, straight.criterion.class_centroids)
    assert resumed_trainer.global_step == 6


def test_student_checkpoint_stores_the_teacher_once_and_resumes(tmp_path: Path) -> None:
    teacher = TinyCNN(channels=4, num_classes=3).eval()
    data = _images(48)

    def make() -> DistillationModule:
        torch.manual_seed(1)
        return DistillationModule(TinyCNN(channels=2, num_classes=3), copy.deepcopy(teacher))

    straight = _fit_resumable(tmp_path / "a", make, 6, data).lightning_module
    _fit_resumable(tmp_path / "b", make, 3, data)
    ckpt = tmp_path / "b" / "ckpt" / "epoch=0-step=3.ckpt"
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert sorted(k for k in state if k.startswith("teacher.")) == sorted(f"teacher.{k}" for k in teacher.state_dict())
    resumed = _fit_resumable(tmp_path / "c", make, 6, data, str(ckpt)).lightning_module
    for got, expected in zip(
        resumed.student.state_dict().values(), straight.student.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(got, expected)
    # teacher_checkpoint= loads the teacher's weights from a plain state_dict or a Lightning-style checkpoint
    for name, content in (("plain.pt", teacher.state_dict()), ("lightning.ckpt", {"state_dict": teacher.state_dict()})):
        torch.save(content, tmp_path / name)
        loaded = DistillationModule(TinyCNN(channels=2), TinyCNN(channels=4), teacher_checkpoint=str(tmp_path / name))
        pairs = zip(loaded.teacher.state_dict().values(), teacher.state_dict().values(), strict=True)
        assert all(torch.equal(a, b) for a, b in pairs)


def test_bad_arguments_and_inputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"lam must be in \[0, inf\], got -1"):
        MCMICallback(num_classes=3, lam=-1)
    with pytest.raises(ValueError, match="temperature must be in"):
        MCMICallback(num_classes=3, temperature=0.0)
    with pytest.raises(TypeError, match="targets must be"):
        MCMICallback(num_classes=3, targets=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"student must be an nn\.Module"):
        DistillationModule("net", torch.nn.Linear(2, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"no submodule of MLPClassifier matches 'nett\.4'"):
        Trainer(callbacks=[MCMICallback(3, layer="nett.4")], **trainer_kwargs(tmp_path)).fit(
            MLPClassifier(), loader(classification_data(n=32))
        )
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\], got 3"):
        Trainer(callbacks=[MCMICallback(3, targets=lambda batch: batch[1] + 1)], **trainer_kwargs(tmp_path)).fit(
            MLPClassifier(), loader(classification_data(n=32))
        )
    with pytest.raises(ValueError, match=r"logits of shape \(N, 4\), got \(16, 3\)"):
        Trainer(callbacks=[MCMICallback(4)], **trainer_kwargs(tmp_path)).fit(
            MLPClassifier(), loader(classification_data(n=32))
        )
    module = DistillationModule(MLPClassifier(num_classes=3), MLPClassifier(num_classes=4))
    with pytest.raises(ValueError, match=r"same shape, got student \(16, 3\) and teacher \(16, 4\)"):
        Trainer(**trainer_kwargs(tmp_path)).fit(module, loader(classification_data(n=32)))
    assert MCMICallback(3, layer="a").state_key != MCMICallback(3, layer="b").state_key


def test_validate_then_fit_with_the_same_callback(tmp_path: Path) -> None:
    """Regression: the validation metric's states, reset inside ``trainer.validate``'s inference mode, were inference
    tensors that the next ``fit`` could not update in place."""
    torch.manual_seed(0)
    model, data = MLPClassifier(), loader(classification_data())
    callback = MCMICallback(num_classes=3, lam=0.1)
    Trainer(callbacks=[callback], **trainer_kwargs(tmp_path)).validate(model, data, verbose=False)
    recorder = Recorder()
    trainer = Trainer(callbacks=[callback, recorder], **trainer_kwargs(tmp_path, limit_val_batches=2))
    trainer.fit(model, data, data)
    assert math.isfinite(float(trainer.callback_metrics["mcmi/val_cmi"]))


def test_callback_takes_a_built_criterion_and_trains_as_the_short_form(tmp_path: Path) -> None:
    criterion = MCMILoss(3, lam=0.3, temperature=2.0, centroids="ema", momentum=0.5, sync_dist=False)
    built = MCMICallback(criterion=criterion, log_validation=False)
    assert built.criterion is criterion and (built.lam, built.weight, built.log_key) == (0.3, -0.3, "mcmi/cmi")
    short = MCMICallback(3, 0.3, 2.0, centroids="ema", momentum=0.5, log_validation=False)
    torch.manual_seed(0)
    first = MLPClassifier()
    second = copy.deepcopy(first)
    for model, callback in ((first, built), (second, short)):
        Trainer(callbacks=[callback], **trainer_kwargs(tmp_path, max_steps=3)).fit(model, loader(classification_data()))
    for (name, a), b in zip(first.named_parameters(), second.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    torch.testing.assert_close(built.criterion.class_centroids, short.criterion.class_centroids, rtol=0, atol=0)


def test_callback_criterion_and_short_form_arguments_exclude_each_other() -> None:
    criterion = MCMILoss(3)
    with pytest.raises(TypeError, match=r"give criterion=MCMILoss\(...\) or its arguments \['lam', 'num_classes'\]"):
        MCMICallback(3, lam=0.2, criterion=criterion)
    with pytest.raises(TypeError, match=r"its arguments \['centroids'\], not both"):
        MCMICallback(centroids="ema", criterion=criterion)
    with pytest.raises(TypeError, match="MCMICallback needs num_classes"):
        MCMICallback()
    with pytest.raises(TypeError, match="criterion must be an MCMILoss, got CrossEntropyLoss"):
        MCMICallback(criterion=torch.nn.CrossEntropyLoss())  # type: ignore[arg-type]


@pytest.mark.parametrize(("written", "resumed_with"), [("batch", "ema"), ("ema", "batch"), ("batch", "batch")])
def test_resume_with_either_centroid_mode(tmp_path: Path, written: str, resumed_with: str) -> None:
    """Regression (issue 14 item 12): a checkpoint written in one centroid mode was loaded into the other's criterion
    and the resume crashed on its buffers; now it resumes and says loudly that the criterion state was not kept."""
    data = classification_data(n=48)

    def callback(mode: str) -> MCMICallback:
        return MCMICallback(num_classes=3, lam=0.3, centroids=mode, log_validation=False)

    assert callback("batch").state_key == callback("ema").state_key  # checkpoints of 0.1 keep restoring
    torch.manual_seed(0)
    _fit_resumable(tmp_path / "a", MLPClassifier, 3, data, None, [callback(written)])
    resumed = callback(resumed_with)
    checkpoint = str(tmp_path / "a" / "ckpt" / "epoch=0-step=3.ckpt")
    if written == resumed_with:
        trainer = _fit_resumable(tmp_path / "b", MLPClassifier, 6, data, checkpoint, [resumed])
    else:
        with pytest.warns(UserWarning, match=rf"written with centroids='{written}'.*NOT restored"):
            trainer = _fit_resumable(tmp_path / "b", MLPClassifier, 6, data, checkpoint, [resumed])
    assert trainer.global_step == 6
