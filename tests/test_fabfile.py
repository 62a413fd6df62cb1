"""The Fabric tasks that exist today, run through the real `fab` command."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.servers import ROOT

FAB = Path(sys.executable).parent / "fab"


def fab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(FAB), *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_fab_list_shows_every_task_with_its_help():
    result = fab("--list")
    assert result.returncode == 0, result.stderr
    assert "build-model   Build the demo model" in result.stdout
    assert "serve         Serve the demo model with gunicorn" in result.stdout


def test_build_model_builds_once_then_reports_unchanged(tmp_path):
    out = tmp_path / "model"
    first = fab("build-model", "--out", str(out))
    assert first.returncode == 0, first.stderr
    assert "built demo" in first.stdout
    second = fab("build-model", "--out", str(out))
    assert second.returncode == 0 and "up to date (unchanged)" in second.stdout
    (out / "documents.npy").write_bytes(b"damaged")
    third = fab("build-model", "--out", str(out))
    assert third.returncode == 0 and "built demo" in third.stdout
