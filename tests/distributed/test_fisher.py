"""FisherMask under FSDP2 (2 CPU processes) against the masks one process computes from the same 16 samples."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import seed_everything

from lightning_info.fisher import empirical_fisher, topk_masks
from tests.distributed.engines import IN_DIM, LOCAL_BATCH, ShardedMLP
from tests.helpers.lightning import run_ddp
from tests.helpers.models import classification_data

KEEP_RATIO, NUM_SAMPLES = 0.3, 2 * LOCAL_BATCH  # FisherMask takes ceil(16 / 2) = 8 samples of each rank's shard

SCRIPT = """
import torch
import torch.distributed as dist
from lightning.pytorch import Callback, Trainer, seed_everything
from torch.distributed.tensor import DTensor
from torch.utils.data import Subset

from lightning_info.callbacks import FisherMask
from tests.distributed.engines import IN_DIM, LOCAL_BATCH, ShardedMLP, full_weights, strategy
from tests.helpers.lightning import trainer_kwargs
from tests.helpers.models import classification_data, loader

torch.set_num_threads(1)


class Scores(FisherMask):
    def compute_scores(self, trainer, pl_module):
        self.scores = super().compute_scores(trainer, pl_module)
        return self.scores


seed_everything(0, verbose=False)
model = ShardedMLP("fsdp2", optimizer_factory=lambda p: torch.optim.SGD(p, lr=0.5, momentum=0.9, weight_decay=0.1))
fisher = Scores(keep_ratio=KEEP_RATIO, num_samples=NUM_SAMPLES)
trainer = Trainer(**trainer_kwargs(OUT, devices=2, strategy=strategy("fsdp2"), max_steps=4, max_epochs=1,
                                   use_distributed_sampler=False, callbacks=[fisher]))
data = classification_data(n=2 * LOCAL_BATCH * 4, in_dim=IN_DIM)
shard = Subset(data, range(trainer.global_rank, len(data), 2))
trainer.fit(model, loader(shard, batch_size=LOCAL_BATCH))
buffers = dict(model.fisher_mask.named_buffers())
params = dict(model.named_parameters())
placements = {n: (b.placements == params[n.replace("__", ".")].placements) for n, b in buffers.items()}
local = {n: b.to_local().clone() for n, b in buffers.items()}
masks = {n.replace("__", "."): b.full_tensor() for n, b in buffers.items()}
torch.save({"weights": full_weights(model), "masks": masks, "scores": fisher.scores, "placements": placements,
            "dtensor": all(isinstance(b, DTensor) for b in buffers.values()), "local": local},
           OUT / f"fisher-rank{dist.get_rank()}.pt")
""".replace("KEEP_RATIO", repr(KEEP_RATIO)).replace("NUM_SAMPLES", repr(NUM_SAMPLES))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    root = tmp_path_factory.mktemp("fisher")
    run_ddp(root, SCRIPT, timeout=600)
    return [torch.load(root / f"fisher-rank{r}.pt") for r in range(2)]


def one_process() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The initial weights, the Fisher of the 16 samples both ranks' first batches hold, and its top-k masks."""
    seed_everything(0, verbose=False)
    model = ShardedMLP("none")
    x, y = classification_data(n=2 * LOCAL_BATCH * 4, in_dim=IN_DIM).tensors
    scores = empirical_fisher(model, [(x[:NUM_SAMPLES], y[:NUM_SAMPLES])], num_samples=NUM_SAMPLES, mode="loop")
    initial = {k: v.detach().clone() for k, v in model.named_parameters()}
    return initial, scores, topk_masks(scores, KEEP_RATIO)


@pytest.mark.slow
@pytest.mark.ddp
def test_fsdp2_masks_equal_the_one_process_masks(runs: list[dict]) -> None:
    _, scores, masks = one_process()
    for rank in runs:
        assert set(rank["masks"]) == set(masks)
        for name, mask in masks.items():
            torch.testing.assert_close(rank["scores"][name], scores[name], atol=1e-6, rtol=1e-5)
            assert torch.equal(rank["masks"][name], mask), name  # same entries on both ranks as on one process
    assert sum(int(m.sum()) for m in masks.values()) == int(KEEP_RATIO * sum(m.numel() for m in masks.values()))


@pytest.mark.slow
@pytest.mark.ddp
def test_fsdp2_masks_are_sharded_like_the_parameters(runs: list[dict]) -> None:
    for rank in runs:
        assert rank["dtensor"] and all(rank["placements"].values())
    for name, mask in runs[0]["masks"].items():  # each rank holds its dim-0 chunk of the full mask
        chunks = mask.chunk(2)
        for r, rank in enumerate(runs):
            assert torch.equal(rank["local"][name.replace(".", "__")], chunks[r] if r < len(chunks) else mask[:0])


@pytest.mark.slow
@pytest.mark.ddp
def test_fsdp2_frozen_entries_stay_bit_identical(runs: list[dict]) -> None:
    initial, _, masks = one_process()
    moved = 0
    for name, mask in masks.items():
        final = runs[0]["weights"][name]
        assert torch.equal(final, runs[1]["weights"][name]), name  # ranks identical
        assert torch.equal(final[~mask], initial[name][~mask]), name  # momentum and weight decay did not move them
        moved += int((final[mask] != initial[name][mask]).sum())
    assert moved > 0.9 * sum(int(m.sum()) for m in masks.values())  # the kept entries trained
