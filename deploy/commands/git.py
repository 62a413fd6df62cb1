"""git, on the machine that runs `fab`: what a release ships."""
from __future__ import annotations

from pathlib import Path


def git(checkout: Path, *args: str) -> list[str]:
    return ["git", "-C", str(checkout), *args]


def changed_files(checkout: Path) -> list[str]:
    """Tracked files with uncommitted changes, one "XY path" line each (git status --porcelain)."""
    return git(checkout, "status", "--porcelain", "--untracked-files=no")


def stash_commit(checkout: Path) -> list[str]:
    """A commit of the tracked files as they are, made without touching the checkout; prints its id.
    It needs an identity to write the commit object, even where git has none set up."""
    return git(checkout, "-c", "user.name=modelhost", "-c", "user.email=modelhost@localhost", "stash", "create")


def archive(checkout: Path, commit: str, out: Path) -> list[str]:
    """The commit's files as a tar file at out."""
    return git(checkout, "archive", "--format=tar", "-o", str(out), commit)
