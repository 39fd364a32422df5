"""What a run is made of, beyond its data: the code version and the environment."""

from __future__ import annotations

import hashlib
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["code_version", "environment", "file_sha256"]

PACKAGES = ("rung", "mlflow", "scikit-learn", "xgboost", "lightgbm", "pandas", "numpy", "pyarrow", "pandera", "skops")


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_version(root: Path) -> dict[str, Any]:
    """Git commit, branch and dirty flag of the project; ``commit`` is None outside git."""
    commit = _git(root, "rev-parse", "HEAD")
    if commit is None:
        return {"git_commit": None, "git_dirty": None}
    status = _git(root, "status", "--porcelain", "--untracked-files=no") or ""
    return {
        "git_commit": commit,
        "git_dirty": bool(status),
        "git_branch": _git(root, "rev-parse", "--abbrev-ref", "HEAD"),
    }


def environment() -> dict[str, Any]:
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {"python": sys.version.split()[0], "platform": platform.platform(), "packages": packages}


def file_sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
