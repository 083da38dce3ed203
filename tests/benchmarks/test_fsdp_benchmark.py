import os
import re
import subprocess
import sys

import pytest

from tests.helpers.lightning import REPO_ROOT


@pytest.mark.ddp
def test_fsdp_benchmark_runs_quick() -> None:
    # a subprocess: the spawned workers import the script's worker by module path
    env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = subprocess.run(
        [sys.executable, "benchmarks/fsdp.py", "--quick"],
        capture_output=True, text=True, timeout=300, env=env, cwd=REPO_ROOT, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    ratio = re.search(r"^sam_fsdp2: ([0-9.]+)x \(goal <= 2.1\)$", result.stdout, re.MULTILINE)
    assert ratio is not None, result.stdout
    assert float(ratio.group(1)) > 1  # two passes cost more than one
