"""The README is the project's front page: its two set-up commands, CI's use of the test command, and the paths it
names (a README overwritten by another file, or naming a script that moved, fails here)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_is_the_project_page_with_the_two_commands() -> None:
    assert README.startswith("# lightning-info\n")
    commands = re.findall(r"^(\./run \w+)", README, flags=re.MULTILINE)
    assert commands[:2] == ["./run demo", "./run test"]


def test_ci_runs_the_readme_test_command() -> None:
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert "./run test" in ci


def test_every_script_and_config_the_readme_names_exists() -> None:
    named = set(re.findall(r"\b((?:examples|benchmarks|tools)/[\w/]+\.(?:py|yaml))", README))
    assert len(named) >= 10
    missing = sorted(path for path in named if not (ROOT / path).is_file())
    assert not missing, missing
