"""clinalign: fine-tune open LLMs on clinical tasks with SFT and DPO, and compare them."""

from __future__ import annotations

__version__ = "0.1.0"


def git_commit() -> str | None:
    """The commit of the checkout clinalign runs from (``+modified`` when tracked files differ from
    it), or None for an installed package, a machine without git, or any git failure: a version line
    must never fail or hang because of it."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]  # src/clinalign/__init__.py -> the checkout
    if not (root / ".git").exists():
        return None

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=5,
                              check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        modified = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+modified" if modified else "") if commit else None


def version_line() -> str:
    """``clinalign 0.1.0`` and, from a checkout, ``(git 0123abcd4567)``."""
    commit = git_commit()
    return f"clinalign {__version__}" + (f" (git {commit})" if commit else "")
