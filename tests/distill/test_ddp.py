from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from torch.utils.data import TensorDataset

from lightning_info.distill import MCMICallback
from lightning_info.metrics.functional import conditional_mutual_information
from tests.helpers.lightning import run_ddp, trainer_kwargs
from tests.helpers.models import MLPClassifier, classification_data, loader

SCRIPT = """
import torch
from lightning.pytorch import Trainer
from lightning_info.distill import DistillationModule
from tests.distill.test_ddp import make_teacher, train_data, val_data
from tests.helpers.lightning import trainer_kwargs
from tests.helpers.models import MLPClassifier, loader

teacher, callback = make_teacher()
trainer = Trainer(callbacks=[callback], **trainer_kwargs(OUT, devices=2, strategy="ddp", max_steps=3))
trainer.fit(teacher, loader(train_data(), batch_size=8), loader(val_data(), batch_size=8))
rank = trainer.global_rank
torch.save(
    {
        "centroids": callback.criterion.class_centroids,
        "teacher": teacher.state_dict(),
        "val_cmi": trainer.callback_metrics["mcmi/val_cmi"],
    },
    OUT / f"teacher{rank}.pt",
)
module = DistillationModule(MLPClassifier(hidden=8), teacher)
Trainer(**trainer_kwargs(OUT, devices=2, strategy="ddp", max_steps=3)).fit(module, loader(train_data(), batch_size=8))
torch.save({"teacher": teacher.state_dict(), "student": module.student.state_dict()}, OUT / f"student{rank}.pt")
"""


def train_data() -> torch.utils.data.TensorDataset:
    return classification_data(n=48, seed=0)


def val_data() -> torch.utils.data.TensorDataset:
    x, y = classification_data(n=32, seed=1).tensors
    y[::2] = torch.where(y[::2] == 2, 0, y[::2])  # class 2 only on rank 1 (the validation sampler gives it odd rows)
    return TensorDataset(x, y)


def make_teacher() -> tuple[MLPClassifier, MCMICallback]:
    torch.manual_seed(0)
    return MLPClassifier(), MCMICallback(num_classes=3, lam=0.5, centroids="ema", momentum=0.5)


@pytest.mark.ddp
@pytest.mark.slow
def test_two_process_ddp_shares_centroids_and_matches_one_process_on_the_global_batch(tmp_path: Path) -> None:
    run_ddp(tmp_path, SCRIPT)
    ranks = [torch.load(tmp_path / f"teacher{r}.pt", weights_only=True) for r in (0, 1)]
    assert torch.equal(ranks[0]["centroids"], ranks[1]["centroids"])  # all-reduced: identical on both ranks
    # one process on the union of the two ranks' batches: Lightning's DistributedSampler shuffles training data
    # with torch.randperm seeded by 0 (seed + epoch) and gives rank r the samples order[r::2]
    order = torch.randperm(48, generator=torch.Generator().manual_seed(0))
    union = TensorDataset(*(t[order] for t in train_data().tensors))
    teacher, callback = make_teacher()
    Trainer(callbacks=[callback], **trainer_kwargs(tmp_path, max_steps=3)).fit(teacher, loader(union, 16))
    torch.testing.assert_close(ranks[0]["centroids"], callback.criterion.class_centroids, rtol=1e-5, atol=1e-6)
    for key, value in teacher.state_dict().items():
        torch.testing.assert_close(ranks[0]["teacher"][key], value, rtol=1e-5, atol=1e-6)
    # ConditionalMutualInformation (the callback's validation metric) synced over both ranks' halves of the
    # validation set equals the single-process value on all of it (class 2 is on one rank only)
    x, y = val_data().tensors
    assert set(y[::2].tolist()) == {0, 1} and 2 in y[1::2]
    with torch.no_grad():
        expected = conditional_mutual_information(torch.softmax(teacher(x), 1), y, 3)
    for state in ranks:
        assert float(state["val_cmi"]) == pytest.approx(float(expected), rel=1e-4)
    # distillation under DDP: the teacher is untouched and the students agree
    students = [torch.load(tmp_path / f"student{r}.pt", weights_only=True) for r in (0, 1)]
    for state in students:
        assert all(torch.equal(state["teacher"][k], v) for k, v in ranks[0]["teacher"].items())
    assert all(torch.equal(students[0]["student"][k], v) for k, v in students[1]["student"].items())
