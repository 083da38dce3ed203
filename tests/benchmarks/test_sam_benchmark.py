from tests.helpers.lightning import load_script


def test_sam_benchmark_runs_quick(capsys) -> None:
    module = load_script("benchmarks/sam.py")
    results = module.main(quick=True)
    variants = {"gsam", "wsam", "fsam", "looksam-5"}
    mlp = {"sam mlp tiny", "2 passes mlp tiny"}
    assert set(results) == {"sam", "every-2", "every-5", "every-10", "gam", *variants, "2 passes", "4 passes", *mlp}
    assert all(ratio > 0 for ratio, _ in results.values())
    printed = capsys.readouterr().out
    assert "SAM step time vs base: " in printed and "(goal <= 2.050)" in printed
    assert "GAM overhead over its 4 passes alone: " in printed
    for label, goal in [("GSAM", "2.050"), ("WSAM", "2.050"), ("FriendlySAM", "2.100"), ("LookSAM k=5", "1.260")]:
        assert f"{label} step time vs base: " in printed and f"(goal <= {goal})" in printed
    assert "SAM's own cost, MLP tiny (682 weights): " in printed and " passes over the weights " in printed
    assert "SAM step time vs base, MLP tiny: " in printed
