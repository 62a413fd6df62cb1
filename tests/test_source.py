"""What a deploy ships: the git revision (clean, or dirty when asked), its dependencies, and the
model (any file or folder), checksummed here and checked against a manifest when it has one."""
from __future__ import annotations

import json
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
    assert source.tree == git(repo, "rev-parse", "HEAD^{tree}")
    assert source.requirements.file == repo / "requirements.lock"
    assert "flask==3.0.0\n" in source.requirements.text and source.requirements.unpinned == ()


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


def test_a_checkout_without_a_dependency_file_is_refused_saying_how_to_make_one(repo):
    git(repo, "rm", "-q", "requirements.lock")
    git(repo, "commit", "-qm", "no lock")
    with pytest.raises(SourceError, match="no dependency file in .*: looked for requirements.lock, requirements.txt "
                                          "and pyproject.toml"):
        read_source(LOCAL, repo)


def test_the_dependency_file_named_in_the_settings_wins(repo):
    (repo / "deps").mkdir()
    (repo / "deps" / "prod.txt").write_text("numpy\n")
    source = read_source(LOCAL, repo, requirements_file="deps/prod.txt")
    assert source.requirements.file == repo / "deps" / "prod.txt" and source.requirements.unpinned == ("numpy",)


def test_a_model_is_a_file_or_a_folder_identified_by_its_content(tmp_path):
    (tmp_path / "model.pkl").write_bytes(b"pickle")
    (tmp_path / "folder" / "sub").mkdir(parents=True)
    (tmp_path / "folder" / "sub" / "weights.npy").write_bytes(b"weights")
    one, folder = read_model(tmp_path / "model.pkl"), read_model(tmp_path / "folder")
    assert (one.files, one.size_mb, one.version) == (1, 1, one.sha256[:12]) and folder.files == 1
    assert read_model(tmp_path / "model.pkl") == one  # the same bytes, the same identity
    (tmp_path / "model.pkl").write_bytes(b"pickle2")
    assert read_model(tmp_path / "model.pkl").sha256 != one.sha256
    (tmp_path / "folder" / "sub" / "weights.npy").rename(tmp_path / "folder" / "weights.npy")
    assert read_model(tmp_path / "folder").sha256 != folder.sha256  # a file's path is part of it


@pytest.mark.parametrize("name, message", [
    ("missing.pkl", r"no model at .*missing.pkl \(\[model\] path in deploy.toml\): put the model there, or set "
                    r"\[model\] path = \"\""),
    ("empty", "the model folder .*empty is empty"),
])
def test_a_missing_or_empty_model_is_refused_saying_what_to_do(tmp_path, name, message):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match=message):
        read_model(tmp_path / name)


def test_a_damaged_model_is_refused_before_anything_is_shipped(demo_model, tmp_path):
    model = read_model(demo_model)
    assert len(model.sha256) == 64 and model.version == json.loads((demo_model / "manifest.json").read_text())["version"]
    damaged = Path(shutil.copytree(demo_model, tmp_path / "model"))
    (damaged / "centroids.npy").write_bytes((damaged / "centroids.npy").read_bytes()[:-1] + b"\0")
    with pytest.raises(SourceError, match=r"centroids.npy does not match its size or sha256 in manifest.json "
                                          r".*\(\[model\] path in deploy.toml\)"):
        read_model(damaged)
    (damaged / "centroids.npy").unlink()
    with pytest.raises(SourceError, match=r"centroids.npy is missing"):
        read_model(damaged)
