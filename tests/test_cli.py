"""The top-level `clinalign` command: --version."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

import clinalign
from clinalign.cli import run

ROOT = Path(__file__).resolve().parents[1]


def test_version_prints_the_version_and_the_checkout_commit(capsys):
    assert run(["--version"]) == 0
    out = capsys.readouterr().out.strip()
    assert re.fullmatch(r"clinalign \d+\.\d+\.\d+( \(git [0-9a-f]{12}(\+modified)?\))?", out), out
    assert out.startswith(f"clinalign {clinalign.__version__}")
    if shutil.which("git") and (ROOT / ".git").exists():
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        assert f"(git {head}" in out


@pytest.mark.parametrize("failure", [FileNotFoundError("git"), subprocess.TimeoutExpired("git", 5),
                                     subprocess.CalledProcessError(128, "git")])
def test_version_without_a_usable_git_is_the_version_alone(monkeypatch, capsys, failure):
    """No git on the machine, a hung or failing git (not a checkout): the version line still prints."""
    def broken(*_a, **_k):
        raise failure

    monkeypatch.setattr(subprocess, "run", broken)
    assert clinalign.git_commit() is None
    assert run(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"clinalign {clinalign.__version__}"
