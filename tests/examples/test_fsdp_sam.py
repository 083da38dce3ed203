from pathlib import Path

import pytest

from tests.helpers.lightning import run_ddp


@pytest.mark.slow
@pytest.mark.ddp
def test_fast_mode_trains_sam_under_fsdp2_on_two_processes(tmp_path: Path) -> None:
    code = """
    import json
    from tests.helpers.lightning import load_script
    results = load_script("examples/fsdp_sam.py").main(["--fast"])
    import torch.distributed as dist
    (OUT / f"rank{dist.get_rank()}.json").write_text(json.dumps(results))
    """
    run_ddp(tmp_path, code, timeout=300)
    import json

    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert all(0 < rank["train_loss"] < 10 for rank in ranks)  # each rank's own batch loss, finite
