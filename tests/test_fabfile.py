"""The Fabric tasks that exist today, run through the real `fab` command."""
from __future__ import annotations

import os
import re
import shutil

import pytest

from tests.servers import fab

def test_fab_list_shows_every_task_with_its_help():
    result = fab("--list")
    assert result.returncode == 0, result.stderr
    helps = dict(re.findall(r"^  ([a-z-]+) +(\S.*)$", result.stdout, re.M))
    assert set(helps) == {"build-model", "deploy", "diff", "logs", "provision", "releases", "render", "rollback",
                          "serve", "status", "stop"}
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
