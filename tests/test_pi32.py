"""A 32-bit Raspberry Pi OS base (Debian bookworm armhf, the `service` flavor) under qemu-arm: PyPI
has no wheels of numpy, scipy or gensim for it, and a fresh host has no compiler.

- The deploy stops before pip, naming the packages with C code and the ways out.
- With Debian's python3-numpy, -scipy and -gensim as [python] system_packages,
  provision installs them and the deploy serves the app.

Out of CI: emulated 32-bit ARM costs many minutes (the closing note of issue 15 has the times). Run
it with MODELHOST_TEST_ARMHF=1 pytest -s tests/test_pi32.py (root, qemu-user-static, binfmt-support).
"""
from __future__ import annotations

import json
import os
import re
import time

import pytest

from tests import hosts
from tests.remote import Site, make_site, steps, timed
from tests.servers import git

MISSING = hosts.missing_requirements("armhf")
pytestmark = [
    pytest.mark.skipif(os.environ.get("MODELHOST_TEST_ARMHF") != "1",
                       reason="an armhf host under qemu takes many minutes: MODELHOST_TEST_ARMHF=1 runs it"),
    pytest.mark.skipif(MISSING is not None, reason=f"armhf test host: {MISSING}"),
    pytest.mark.slow,
]
DEBIAN = ["python3-gensim", "python3-numpy", "python3-scipy"]  # what the refusal suggests


@pytest.fixture(scope="module")
def site(tmp_path_factory, demo_model) -> Site:
    workdir = tmp_path_factory.mktemp("armhf")
    began = time.monotonic()
    host = hosts.start_host("service", None, workdir, hosts.make_client_key(workdir), arch="armhf")
    print(f"armhf host started in {time.monotonic() - began:.1f} s")
    try:
        yield make_site(host, workdir / "site", demo_model)
    finally:
        host.stop()


def test_without_wheels_or_a_compiler_the_deploy_stops_before_pip_naming_the_packages(site):
    assert site.on_host("uname -m").strip() == "armv7l"
    timed("fresh provision", site, "provision")
    began = time.monotonic()
    result = site.fab("deploy")
    print(f"service-armhf: refused deploy {time.monotonic() - began:.1f} s")
    assert result.returncode == 1, result.stdout
    said = result.stderr.split("Nothing was installed")[0]
    assert "(armv7l) cannot install gensim==4.4.0, numpy==2.4.6, scipy==1.17.1 from requirements.lock" in said, \
        result.stderr
    for pure in ("flask==", "werkzeug==", "gunicorn=="):  # wheels for every machine
        assert pure not in said, result.stderr
    assert '[python] system_packages = ["python3-gensim", "python3-numpy", "python3-scipy"]' in result.stderr
    assert "piwheels" in result.stderr and "build-essential" in result.stderr
    assert "compiler" not in result.stdout  # no compiler error from inside pip
    assert site.host.ssh("ls /srv/modelhost/venvs/*/.complete").returncode != 0  # nothing half made is kept


def test_debians_packages_serve_the_app(site):
    settings = site.repo / "deploy.toml"
    settings.write_text(settings.read_text() + f"[python]\nsystem_packages = {json.dumps(DEBIAN)}\n")
    git(site.repo, "commit", "-qam", "Debian's numeric stack on a 32-bit board")
    out = timed("provision with Debian's packages", site, "provision")
    assert steps(out)["packages"] == "changed" and "python3-gensim" in out
    out = timed("deploy with Debian's packages", site, "deploy")
    assert re.search(r"from Debian: gensim 4\.\d+\.\d+ \(python3-gensim\), numpy 1\.\d+\.\d+ \(python3-numpy\), "
                     r"scipy 1\.\d+\.\d+ \(python3-scipy\)", out), out
    status, _, body = site.get("/readyz")
    assert status == 200 and json.loads(body)["status"] == "ready"
    status, _, body = site.get("/api/v1/similar?word=fire&topn=3")
    assert status == 200 and len(json.loads(body)["results"]) == 3
    out = timed("no-op deploy", site, "deploy")
    assert set(steps(out).values()) == {"unchanged"}, out
