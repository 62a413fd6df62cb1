"""The Fabric tasks that exist today, run through the real `fab` and `modelhost` commands."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import fab, free_port

def test_fab_list_shows_every_task_with_its_help():
    result = fab("--list")
    assert result.returncode == 0, result.stderr
    helps = dict(re.findall(r"^  ([a-z-]+) +(\S.*)$", result.stdout, re.M))
    assert set(helps) == {"build-model", "certificate", "deploy", "diff", "expose", "init", "logs", "provision",
                          "releases", "render", "rollback", "run", "serve", "status", "stop"}
    assert helps["deploy"].startswith("Deploy the app's git revision")
    assert helps["provision"].startswith("Prepare a host (-H user@host)")


def test_provision_is_refused_without_a_host():
    result = fab("provision")
    assert result.returncode == 2
    assert "provision prepares a host: fab -H user@host provision" in result.stderr


@pytest.mark.slow
def test_build_model_skips_a_valid_model_and_rebuilds_a_damaged_one_byte_for_byte(tmp_path, demo_model):
    out = shutil.copytree(demo_model, tmp_path / "model")
    unchanged = fab("build-model", "--out", str(out))
    assert unchanged.returncode == 0, unchanged.stderr
    assert "up to date (unchanged)" in unchanged.stdout
    (out / "documents.npy").write_bytes(b"damaged")
    # Another process with another hash seed: Python's salted str hash must not reach the training,
    # so every file comes back byte for byte (the one test that builds the demo model again).
    rebuilt = fab("build-model", "--out", str(out), env={"PYTHONHASHSEED": "12345"})
    assert rebuilt.returncode == 0 and "built demo" in rebuilt.stdout
    for name in sorted(os.listdir(demo_model)):
        assert (out / name).read_bytes() == (demo_model / name).read_bytes(), name


def test_the_modelhost_command_has_the_kits_tasks_and_init_never_replaces_a_deploy_toml(tmp_path):
    """`modelhost` is Fabric's program with the kit's tasks, in any directory (here: not a checkout)."""
    command = Path(sys.executable).parent / "modelhost"
    listed = subprocess.run([str(command), "--list"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    tasks = set(re.findall(r"^  ([a-z-]+) ", listed.stdout, re.M))
    assert {"init", "deploy", "run", "rollback", "status", "provision"} <= tasks and "build-model" not in tasks
    assert "-H STRING, --hosts=STRING" in subprocess.run([str(command), "--help"], capture_output=True,
                                                         text=True).stdout
    (tmp_path / "app.py").write_text("from flask import Flask\napp = Flask(__name__)\n")
    (tmp_path / "requirements.txt").write_text("flask==3.1.3\n")
    first = subprocess.run([str(command), "init"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0 and 'wsgi = "app:app"' in (tmp_path / "deploy.toml").read_text(), first.stderr
    (tmp_path / "deploy.toml").write_text("# mine\n")
    again = subprocess.run([str(command), "init"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "init never replaces it" in again.stderr
    assert (tmp_path / "deploy.toml").read_text() == "# mine\n"


@pytest.mark.parametrize("task", ["status", "releases", "logs"])
def test_a_task_whose_output_nobody_reads_any_more_ends_quietly(tmp_path, task):
    """`modelhost status | head`: once the reader is gone, no traceback, and SIGPIPE's exit status (141)."""
    (tmp_path / "deploy.toml").write_text(f'[app]\nname = "piped"\nwsgi = "app:app"\n'
                                          f'[local]\nroot = "{tmp_path / "root"}"\nport = {free_port()}\n')
    read, write = os.pipe()
    os.close(read)  # a reader that has gone away
    try:
        result = subprocess.run([str(Path(sys.executable).parent / "modelhost"), task], cwd=tmp_path, stdout=write,
                                stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert result.returncode == 141 and result.stderr == "", result.stderr
