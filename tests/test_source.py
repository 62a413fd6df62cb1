"""What a deploy ships: the git revision (clean, or dirty when asked) and the model, checked first."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from invoke import Context

from deploy.source import SourceError, read_model, read_source
from deploy.target import Target

LOCAL = Target(Context())


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "app.py").write_text("print('one')\n")
    (tmp_path / "requirements.lock").write_text("flask==3.0.0\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "one")
    return tmp_path


def test_a_clean_checkout_ships_its_head(repo):
    source = read_source(LOCAL, repo)
    assert source.commit == git(repo, "rev-parse", "HEAD") and source.label == source.commit[:7]
    assert source.tree == git(repo, "rev-parse", "HEAD^{tree}") and source.lock == "flask==3.0.0\n"


def test_uncommitted_changes_are_refused_unless_asked_and_then_shipped_without_touching_the_checkout(repo):
    (repo / "app.py").write_text("print('two')\n")
    (repo / "notes.txt").write_text("untracked files are not part of a release\n")
    with pytest.raises(SourceError, match=r"has uncommitted changes \(app.py\): commit them, or deploy .*"
                                          r"`fab deploy --allow-dirty`"):
        read_source(LOCAL, repo)
    source = read_source(LOCAL, repo, allow_dirty=True)
    assert source.label.endswith("+dirty") and source.commit != git(repo, "rev-parse", "HEAD")
    assert git(repo, "show", f"{source.commit}:app.py") == "print('two')"
    assert (repo / "app.py").read_text() == "print('two')\n" and git(repo, "stash", "list") == ""  # untouched
    # The same files give the same tree, so the same release, committed or not.
    git(repo, "commit", "-qam", "two")
    assert read_source(LOCAL, repo).tree == source.tree


@pytest.mark.parametrize("setup, message", [
    (lambda path: None, "is not in a git checkout: fab deploy ships a git revision"),
    (lambda path: git(path, "init", "-q"), "has no commit yet: commit the app first"),
])
def test_a_directory_without_a_revision_is_refused_saying_what_to_do(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(SourceError, match=message):
        read_source(LOCAL, tmp_path)


def test_a_checkout_without_a_lock_file_is_refused(repo):
    git(repo, "rm", "-q", "requirements.lock")
    git(repo, "commit", "-qm", "no lock")
    with pytest.raises(SourceError, match="has no requirements.lock: the release's Python environment"):
        read_source(LOCAL, repo)


def test_a_damaged_model_is_refused_before_anything_is_shipped(demo_model, tmp_path):
    model = read_model(demo_model)
    assert len(model.sha256) == 64 and model.version == model.sha256[:12]
    damaged = Path(shutil.copytree(demo_model, tmp_path / "model"))
    (damaged / "centroids.npy").write_bytes((damaged / "centroids.npy").read_bytes()[:-1] + b"\0")
    with pytest.raises(SourceError, match=r"centroids.npy does not match its sha256 .*\(\[model\] path in deploy.toml\)"):
        read_model(damaged)
