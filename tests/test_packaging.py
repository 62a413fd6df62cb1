"""A wheel built from the repository carries every template and the `modelhost` command, and its
`render` works from it outside the checkout, byte for byte as the golden samples say."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.servers import ROOT, app_checkout

GOLDEN = Path(__file__).parent / "golden" / "host-supervisor"
FACTS = Path(__file__).parent / "data" / "facts" / "ubuntu-24.04-amd64.txt"


def test_fab_render_from_an_installed_wheel_gives_the_golden_files(tmp_path):
    # Built from a copy of the tracked files (setuptools leaves build/ behind), with the test venv's
    # setuptools (--no-build-isolation: no download).
    source = app_checkout(tmp_path / "source", (ROOT / "deploy.toml").read_text())
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("modelhost-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = {str(p.relative_to(ROOT)) for pattern in ("*/*.j2", "nginx/*.pem") for p in ROOT.glob(pattern)}
    assert templates and {f"deploy/configs/{t}" for t in templates if not t.startswith("deploy/")} <= names
    assert "deploy/templates/README.md.j2" in names and "app/templates/index.html" in names

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "deploy.toml").write_text('[model]\nsize_mb = 120\npath = "var/models/demo"\nenv = "FLASK_MODEL_PATH"\n'
                                           '[nginx]\nserver_names = ["models.example.com"]\nstatic_dir = "app/static"\n')
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import deploy.render as r; print(r.CONFIGS)"], cwd=elsewhere,
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert where == str(site / "deploy" / "configs")
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "modelhost = deploy.tasks:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    # What the `modelhost` command runs, in a directory that is not a checkout of modelhost
    result = subprocess.run([sys.executable, "-c", "from deploy.tasks import main; main()", "render", "--out", "out",
                             "--target", "system", "--facts", str(FACTS)], cwd=elsewhere, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rendered = {p.relative_to(elsewhere / "out"): p.read_text() for p in (elsewhere / "out").rglob("*") if p.is_file()}
    assert rendered == {p.relative_to(GOLDEN): p.read_text() for p in GOLDEN.rglob("*") if p.is_file()}
