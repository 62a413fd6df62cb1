"""What a deploy ships, read on the machine that runs `fab`: a git revision of the app, its
dependencies and, when [model] path is set, its model.

A release is a git revision, never the working tree as it happens to be: a tree with uncommitted
changes is refused unless asked for, and then its tracked files are shipped as a commit of their
own (`git stash create`, which changes nothing in the checkout).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from deploy import commands
from deploy.requirements import Requirements, RequirementsError, find_requirements, read_requirements
from deploy.target import CommandFailed, Target
from deploy.workers import MB

MANIFEST = "manifest.json"  # the reference app's list of a model's files, checked when a model has one


class SourceError(Exception):
    """The app or its model cannot be shipped as it is; the message says what to do."""


@dataclass(frozen=True)
class Source:
    checkout: Path  # the top of the git checkout that holds deploy.toml
    commit: str  # what is archived
    tree: str  # the content's identity: the same files give the same tree, committed or not
    label: str  # short revision, "+dirty" when uncommitted changes are shipped
    requirements: Requirements  # what pip installs: the Python environment's identity


def git(local: Target, checkout: Path, *args: str) -> str:
    return local.run(commands.git(checkout, *args)).stdout.strip()


def read_source(local: Target, base_dir: Path, allow_dirty: bool = False, requirements_file: str = "") -> Source:
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
    try:
        requirements = read_requirements(find_requirements(base_dir, requirements_file))
    except RequirementsError as exc:
        raise SourceError(str(exc)) from None
    return Source(checkout=checkout, commit=commit, tree=git(local, checkout, "rev-parse", f"{commit}^{{tree}}"),
                  label=head[:7] + ("+dirty" if changed else ""), requirements=requirements)


@dataclass(frozen=True)
class Model:
    path: Path  # a file or a folder on this machine
    sha256: str  # of every file's path and content: the model's identity
    version: str  # its manifest's version when it has one, else the checksum's first 12 digits
    size_mb: int  # what the worker rule counts
    files: int

    @property
    def key(self) -> str:
        """Its name on the target: models/<key>/<the model's own name>."""
        return self.sha256[:16]


def model_files(path: Path) -> list[Path]:
    """Every file of a model (itself when it is a file), sorted; links are followed."""
    if path.is_file():
        return [path]
    found = [Path(top) / name for top, _, names in os.walk(path, followlinks=True) for name in names]
    return sorted(found, key=lambda f: f.relative_to(path).as_posix())


def read_model(path: Path) -> Model:
    """The model at path (a file or a folder), its checksum computed here; a folder with a
    manifest.json has every file checked against it first."""
    path = Path(path)
    if not path.exists():
        raise SourceError(f"no model at {path} ([model] path in deploy.toml): put the model there, or set "
                          '[model] path = "" if the app needs none (a model in git ships with the code)')
    manifest = read_manifest(path) if (path / MANIFEST).is_file() else None
    files = model_files(path)
    if not files:
        raise SourceError(f"the model folder {path} is empty ([model] path in deploy.toml)")
    sums, total = [], 0
    for file in files:
        name = file.relative_to(path).as_posix() if path.is_dir() else file.name
        checksum = sha256_file(file)
        expected = manifest["files"].get(name) if manifest else None
        if expected and (file.stat().st_size != expected["bytes"] or checksum != expected["sha256"]):
            raise SourceError(f"model at {path} is damaged: {name} does not match its size or sha256 in "
                              f"{MANIFEST} (copy it again) ([model] path in deploy.toml)")
        sums.append(f"{name}\0{checksum}\n")
        total += file.stat().st_size
    for name in manifest["files"] if manifest else ():
        if not (path / name).is_file():
            raise SourceError(f"model at {path} is incomplete: {name} is missing ([model] path in deploy.toml)")
    sha256 = hashlib.sha256("".join(sums).encode()).hexdigest()
    return Model(path=path, sha256=sha256, version=manifest["version"] if manifest else sha256[:12],
                 size_mb=-(-total // MB), files=len(files))


def read_manifest(path: Path) -> dict:
    """A model folder's manifest.json (the reference app's): its version and every file's size and sha256."""
    manifest_path = Path(path) / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = manifest["files"]
        if not (isinstance(manifest["version"], str)
                and all(isinstance(f["bytes"], int) and isinstance(f["sha256"], str) for f in files.values())):
            raise TypeError("version and files' bytes and sha256 of the wrong type")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SourceError(f"cannot read {manifest_path}: {exc!r}; it needs version and files "
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
