import torch

from tests.helpers.lightning import load_script


def test_mcmi_benchmark_runs_with_minimal_sizes() -> None:
    module = load_script("benchmarks/mcmi.py")
    ratios = module.main(in_dim=8, hidden=8, num_classes=4, batch=16, rounds=1)
    assert set(ratios) >= {"CE", "MCMI batch centroids", "MCMI ema centroids"} and ratios["CE"] == 1.0


def test_loop_reference_computes_the_same_cmi() -> None:
    from lightning_info.distill import MCMILoss

    logits, target = torch.randn(40, 6, dtype=torch.float64), torch.arange(40) % 5  # class 5 absent
    expected = MCMILoss(6)(logits, target).cmi
    torch.testing.assert_close(load_script("benchmarks/mcmi.py").loop_centroid_cmi(logits, target, 6), expected)
