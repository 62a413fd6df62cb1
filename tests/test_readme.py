"""The README's promises: its curl examples work as written, its quick start has two commands."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.servers import ROOT, gunicorn

README = (ROOT / "README.md").read_text()


def section_code(heading: str) -> str:
    section = README.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)


@pytest.mark.skipif(not shutil.which("curl"), reason="needs curl: apt-get install curl")
def test_curl_examples_work_as_written(demo_model, tmp_path):
    script = section_code("API")
    assert script.count("curl ") >= 12
    # The job example's store in this test's directory (a deploy's DATA_DIR), not the checkout's.
    with gunicorn(demo_model, workers=2, env={"DATA_DIR": str(tmp_path / "data")}) as (base, _):
        # Every curl fails the script on an HTTP error; the examples' URL points at this server.
        wrapper = "set -e\ncurl() { command curl --fail-with-body -sS \"$@\"; echo; }\n"
        result = subprocess.run(["bash", "-c", wrapper + script.replace("http://127.0.0.1:8080", base)],
                                cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count('"results"') >= 7
    assert "modelhost_http_requests_total" in result.stdout
    assert result.stdout.count('"status":"queued"') == 1  # the job's answer (no worker runs it here)


def test_quick_start_is_two_commands_that_exist():
    commands = [line.split("#")[0].split() for line in section_code("Quick start").strip().splitlines()]
    assert commands == [["./quickstart", "demo"], ["./quickstart", "test"]]
    assert "\n    demo)" in (ROOT / "quickstart").read_text()
    assert "./quickstart test" in (ROOT / ".ci" / "run").read_text()
