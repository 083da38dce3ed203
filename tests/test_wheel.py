"""``python -m build`` makes a wheel that installs and imports in a clean virtual environment."""

from __future__ import annotations

import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.helpers.lightning import REPO_ROOT


@pytest.mark.slow
def test_wheel_builds_installs_and_imports(tmp_path: Path) -> None:
    pytest.importorskip("build")
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(REPO_ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("lightning_info-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "lightning_info/py.typed" in names and "lightning_info/metrics/__init__.py" in names
    assert not any(n.startswith("tests/") for n in names)

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python)]  # this pip, installing into the clean venv
    subprocess.run([*pip, "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    # the dependencies (torch, lightning, ...) come from this interpreter's site-packages, appended after the
    # clean environment's own: the package itself must come from the wheel, not from the source tree
    (purelib,) = (env_dir / "lib").glob("python3*/site-packages")
    (purelib / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    code = (
        "import lightning_info, lightning_info.callbacks, lightning_info.metrics; "
        "print(lightning_info.__file__, lightning_info.__version__)"
    )
    out = subprocess.run([python, "-c", code], check=True, capture_output=True, text=True, cwd=tmp_path).stdout
    assert str(env_dir) in out and "0.1.0" in out
    help_text = subprocess.run(
        [env_dir / "bin" / "lightning-info", "demo", "--help"], check=True, capture_output=True, text=True
    ).stdout
    assert "--parts" in help_text
