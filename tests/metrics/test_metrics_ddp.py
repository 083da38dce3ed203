from pathlib import Path

import pytest
import torch

from tests.helpers.lightning import run_ddp

SCRIPT = """
import torch
from lightning.pytorch import LightningModule, Trainer
from torch.utils.data import DataLoader, TensorDataset
from tests.helpers.lightning import trainer_kwargs
from tests.metrics.test_metrics_ddp import make_data, make_metrics


class Module(LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.metrics = make_metrics()

    def validation_step(self, batch, batch_idx):
        z, labels, attn = batch
        for name, metric in self.metrics.items():
            if name == "dsmi":
                metric.update(z, labels)
            elif name == "attention":
                metric.update(attn, mask="causal")
            elif name == "shannon":
                metric.update(z[:, :4])  # logits
            elif name.startswith("cs_"):
                metric.update(z[:, :3], z[:, 3:])
            else:
                metric.update(z)

    def on_validation_epoch_end(self):
        values = {name: metric.compute() for name, metric in self.metrics.items()}
        torch.save(values, OUT / f"rank{self.global_rank}.pt")


trainer = Trainer(**trainer_kwargs(OUT, devices=2, strategy="ddp"))
trainer.validate(Module(), DataLoader(TensorDataset(*make_data()), batch_size=5))
"""


def make_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    z = 8.0 * torch.randn(40, 6, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 3, (40,), generator=generator)
    attn = torch.softmax(
        torch.randn(40, 2, 4, 4, generator=generator).masked_fill(~torch.ones(4, 4).tril().bool(), -1e9), -1
    )
    return z, labels, attn


def make_metrics() -> torch.nn.ModuleDict:
    from lightning_info.metrics import (
        AttentionEntropy,
        CauchySchwarzDivergence,
        CauchySchwarzQMI,
        DiffusionSpectralEntropy,
        DiffusionSpectralMutualInformation,
        MatrixEntropy,
        MatrixNuclearNorm,
        ShannonEntropy,
        VendiScore,
    )

    return torch.nn.ModuleDict(
        {
            "shannon": ShannonEntropy(from_logits=True),
            "attention": AttentionEntropy(normalize=True),
            "matrix_entropy": MatrixEntropy(alpha=2.0),
            "nuclear": MatrixNuclearNorm(mode="exact"),
            "vendi": VendiScore(q=0.5),
            "dse": DiffusionSpectralEntropy(),
            "dsmi": DiffusionSpectralMutualInformation(matched_subsets=False),
            "cs_divergence": CauchySchwarzDivergence(sigma=4.0),
            "cs_qmi": CauchySchwarzQMI(sigma_x="median", sigma_z="median"),
        }
    )


@pytest.mark.ddp
@pytest.mark.slow
def test_synced_values_equal_single_process(tmp_path: Path) -> None:
    run_ddp(tmp_path, SCRIPT)
    z, labels, attn = make_data()
    single = make_metrics()
    single["shannon"].update(z[:, :4])
    single["attention"].update(attn, mask="causal")
    single["dsmi"].update(z, labels)
    for name in ("cs_divergence", "cs_qmi"):
        single[name].update(z[:, :3], z[:, 3:])
    for name in ("matrix_entropy", "nuclear", "vendi", "dse"):
        single[name].update(z)
    for rank in (0, 1):
        synced = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert synced.keys() == single.keys()
        for name, metric in single.items():
            torch.testing.assert_close(synced[name], metric.compute(), rtol=1e-9, atol=1e-12, msg=name)
