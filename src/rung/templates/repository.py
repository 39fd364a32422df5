"""The git side of ``rung init``: ignore rung's state, and make the first commit when rung made the repository.

Lineage records the commit a model was trained from, so a project's first
run should already have one. What ``rung init`` does depends on where it
runs:

- **no repository yet**: ``git init``, then one commit of everything (the
  project's files, respecting ``.gitignore``), authored by the user's git
  identity or, when git has none configured, by ``rung <rung@localhost>``
  rather than failing;
- **inside an existing repository**: nothing is committed. The user may be
  mid-change, with files staged on a branch of their own; a commit made
  behind their back would take those along. rung prints the ``git add`` /
  ``git commit`` to run instead.

Either way ``.rung/`` (metadata, MLflow store, artifacts, logs) is added to
the ``.gitignore`` next to ``rung.yaml``, created or appended, once.
Git itself is optional: without it the project works and lineage records
no commit.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["GitOutcome", "ensure_ignored", "start_repository", "RUNG_IDENTITY"]

RUNG_IDENTITY = ("rung", "rung@localhost")


@dataclass(frozen=True)
class GitOutcome:
    """What ``rung init`` did with git, for the one line it prints."""

    created: bool  # rung ran `git init`
    committed: str | None = None  # the first commit's short hash
    inside: Path | None = None  # the existing repository's top level, when there was one
    problem: str | None = None  # why git could not do its part (the project is fine without it)

    def advice(self, files: list[str]) -> str:
        """The next step for the user, as one line."""
        if self.committed:
            return f"Committed the project as {self.committed}: lineage starts from it."
        if self.inside is not None:
            return f"Commit rung's files when you are ready: git add {' '.join(files)} && git commit -m 'Add rung'"
        if self.problem:
            return f"No first commit ({self.problem}); lineage records no commit until you make one."
        return "Not a git repository: lineage records no commit until you make one."


def ensure_ignored(root: Path, entry: str = ".rung/") -> bool:
    """Add ``entry`` to ``root/.gitignore`` unless a line already says it; True when the file changed."""
    path = root / ".gitignore"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if entry in (line.strip() for line in text.splitlines()):
        return False
    separator = "\n" if text and not text.endswith("\n") else ""
    path.write_text(f"{text}{separator}{entry}\n", encoding="utf-8")
    return True


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=60)


def start_repository(root: Path, message: str) -> GitOutcome:
    """``git init`` and a first commit of ``root``, unless ``root`` is already inside a repository."""
    try:
        top = _git(root, "rev-parse", "--show-toplevel")
        if top.returncode == 0:
            return GitOutcome(created=False, inside=Path(top.stdout.strip()))
        init = _git(root, "init", "-q")
        if init.returncode != 0:
            return GitOutcome(created=False, problem=f"git init failed: {_first_line(init.stderr)}")
        identity: list[str] = []
        if _git(root, "var", "GIT_COMMITTER_IDENT").returncode != 0 or _git(root, "var", "GIT_AUTHOR_IDENT").returncode != 0:
            name, email = RUNG_IDENTITY
            identity = ["-c", f"user.name={name}", "-c", f"user.email={email}"]
        add = _git(root, "add", "-A")
        commit = _git(root, *identity, "commit", "-q", "--no-verify", "-m", message) if add.returncode == 0 else add
        if commit.returncode != 0:
            return GitOutcome(created=True, problem=f"git commit failed: {_first_line(commit.stderr)}")
        return GitOutcome(created=True, committed=_git(root, "rev-parse", "--short", "HEAD").stdout.strip())
    except (OSError, subprocess.TimeoutExpired) as exc:
        return GitOutcome(created=False, problem=f"git is not usable here: {exc}")


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "no message")
