"""What a deploy ships, read on the machine that runs `fab`: a git revision of the app and its model.

A release is a git revision, never the working tree as it happens to be: a tree with uncommitted
changes is refused unless asked for, and then its tracked files are shipped as a commit of their
own (`git stash create`, which changes nothing in the checkout).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from deploy import commands
from deploy.target import CommandFailed, Target
from deploy.workers import model_size_mb

LOCK_FILE = "requirements.lock"
MANIFEST = "manifest.json"  # a model artifact's list of files


class SourceError(Exception):
    """The app or its model cannot be shipped as it is; the message says what to do."""


@dataclass(frozen=True)
class Source:
    checkout: Path  # the top of the git checkout that holds deploy.toml
    commit: str  # what is archived
    tree: str  # the content's identity: the same files give the same tree, committed or not
    label: str  # short revision, "+dirty" when uncommitted changes are shipped
    lock: str  # requirements.lock's text: the Python environment's identity


def git(local: Target, checkout: Path, *args: str) -> str:
    return local.run(commands.git(checkout, *args)).stdout.strip()


def read_source(local: Target, base_dir: Path, allow_dirty: bool = False) -> Source:
    """The revision to deploy from the git checkout holding base_dir."""
    try:
        checkout = Path(git(local, base_dir, "rev-parse", "--show-toplevel"))
    except CommandFailed:
        raise SourceError(f"{base_dir} is not in a git checkout: fab deploy ships a git revision "
                          "(git init && git add -A && git commit -m 'first')") from None
    try:
        head = git(local, checkout, "rev-parse", "--verify", "HEAD")
    except CommandFailed:
        raise SourceError(f"{checkout} has no commit yet: commit the app first (git add -A && git commit)") from None
    # Not stripped: each line starts with two status columns ("XY path").
    changed = local.run(commands.changed_files(checkout)).stdout.splitlines()
    commit = head
    if changed:
        if not allow_dirty:
            listed = ", ".join(line[3:] for line in changed[:5]) + (", ..." if len(changed) > 5 else "")
            raise SourceError(f"{checkout} has uncommitted changes ({listed}): commit them, or deploy the "
                              "files as they are with `fab deploy --allow-dirty`")
        commit = local.run(commands.stash_commit(checkout)).stdout.strip() or head
    lock_path = checkout / LOCK_FILE
    if not lock_path.is_file():
        raise SourceError(f"{checkout} has no {LOCK_FILE}: the release's Python environment is installed from it "
                          "(pip-compile -o requirements.lock pyproject.toml)")
    return Source(checkout=checkout, commit=commit, tree=git(local, checkout, "rev-parse", f"{commit}^{{tree}}"),
                  label=head[:7] + ("+dirty" if changed else ""), lock=lock_path.read_text())


@dataclass(frozen=True)
class Model:
    path: Path
    sha256: str  # of the manifest's file list: the artifact's identity
    version: str
    size_mb: int  # what the worker rule counts


def read_model(path: Path) -> Model:
    """The model artifact at path, every file checked against its manifest's sha256."""
    manifest = read_manifest(path)
    for name, expected in manifest["files"].items():
        file = Path(path) / name
        if not file.is_file():
            raise SourceError(f"model at {path} is incomplete: {name} is missing ([model] path in deploy.toml)")
        if file.stat().st_size != expected["bytes"]:
            raise SourceError(f"model at {path} is damaged: {name} has {file.stat().st_size} bytes, the manifest "
                              f"says {expected['bytes']} (copy it again) ([model] path in deploy.toml)")
        if sha256_file(file) != expected["sha256"]:
            raise SourceError(f"model at {path} is damaged: {name} does not match its sha256 (copy it again) "
                              "([model] path in deploy.toml)")
    return Model(path=path, sha256=manifest["sha256"], version=manifest["version"], size_mb=model_size_mb(path))


def read_manifest(path: Path) -> dict:
    """A model artifact's manifest.json: its identity (sha256, version) and every file's size and sha256.

    The deploy reads only these fields, so any model built with such a manifest ships."""
    manifest_path = Path(path) / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = manifest["files"]
        if not (isinstance(manifest["sha256"], str) and isinstance(manifest["version"], str)
                and all(isinstance(f["bytes"], int) and isinstance(f["sha256"], str) for f in files.values())):
            raise TypeError("sha256, version and files' bytes and sha256 of the wrong type")
    except FileNotFoundError:
        raise SourceError(f"no model at {path}: {MANIFEST} is missing (build one with: python -m app.model build "
                          f"--out {path}) ([model] path in deploy.toml)") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SourceError(f"cannot read {manifest_path}: {exc!r}; it needs sha256, version and files "
                          "({name: {bytes, sha256}}) ([model] path in deploy.toml)") from None
    return manifest


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def digest(*parts) -> str:
    """A short, stable identity of JSON-able parts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
