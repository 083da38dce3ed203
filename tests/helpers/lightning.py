"""Helpers to run real ``Trainer``s in tests: quiet CPU arguments and 2-process CPU DDP (gloo) runs."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

from lightning.pytorch.loggers import Logger

REPO_ROOT = Path(__file__).resolve().parents[2]


def load_script(relative_path: str) -> ModuleType:
    """Import a script of the repository (``"examples/sam_compare.py"``, ``"benchmarks/mi.py"``) as a module.

    Each call executes the script anew; the module is registered in ``sys.modules`` as ``<folder>_<stem>``
    (dataclasses and pickling look it up there).
    """
    path = REPO_ROOT / relative_path
    name = f"{path.parent.name}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class RecordingLogger(Logger):
    """In-memory logger on every rank (Lightning's own loggers write on rank 0 only).

    ``rows`` holds one ``(step, metrics)`` per ``log_metrics`` call, values as floats.
    """

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[int | None, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.rows.append((step, {k: float(v) for k, v in metrics.items()}))

    def values(self, key: str) -> list[float]:
        """Every logged value of ``key``, in logging order."""
        return [m[key] for _, m in self.rows if key in m]

    def series(self) -> dict[str, dict[int, float]]:
        """``{key: {step: value}}``; a key logged twice at one step must have logged the same value."""
        out: dict[str, dict[int, float]] = {}
        for step, metrics in self.rows:
            assert step is not None
            for key, value in metrics.items():
                previous = out.setdefault(key, {}).setdefault(step, value)
                assert previous == value or previous != previous, f"{key} logged twice at step {step}"
        return out


def trainer_kwargs(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """Quiet single-process CPU ``Trainer`` arguments (no logger, no checkpoint, no progress bar)."""
    kwargs: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "max_steps": 4,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": str(tmp_path),
        "num_sanity_val_steps": 0,
    }
    kwargs.update(overrides)
    return kwargs


def run_ddp(tmp_path: Path, code: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as a standalone script (Lightning's ``strategy="ddp"`` re-launches the script for rank 1).

    The script should build a ``Trainer(accelerator="cpu", devices=2, strategy="ddp")``, and write what the test
    checks into files under the folder given as ``sys.argv[1]`` (``OUT`` in the script), one per rank. The variable
    ``OUT`` (a ``pathlib.Path``) is defined for it. Raises ``AssertionError`` with the output if the script fails or
    runs past ``timeout`` seconds (then every process of the run is killed).
    """
    script = tmp_path / "ddp_script.py"
    prelude = "import sys, pathlib\nOUT = pathlib.Path(sys.argv[1])\n"
    script.write_text(prelude + textwrap.dedent(code))
    env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("LOCAL_RANK", None)
    env["PL_DISABLE_FORK"] = "1"
    # A new session: on a timeout (a failed assertion on one rank leaves the other blocked in a gloo collective)
    # every process of the run is killed, rank 1 included, and the test fails instead of hanging.
    process = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as error:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        raise AssertionError(
            f"DDP script timed out after {timeout} s:\nSTDOUT:\n{stdout[-4000:]}\nSTDERR:\n{stderr[-4000:]}"
        ) from error
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    output = f"STDOUT:\n{result.stdout[-4000:]}\nSTDERR:\n{result.stderr[-20000:]}"
    assert result.returncode == 0, f"DDP script failed:\n{output}"
    return result
