"""The benchmark scripts still run (on small models; the figures themselves are not checked)."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from app.model import build
from tests import hosts
from tests.servers import ROOT


@pytest.fixture(scope="module")
def small_synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    build(out, "synthetic-small", None, synthetic=(2000, 16))
    return out


def run(script: str, *args: str) -> str:
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_latency_benchmark_prints_both_models_and_their_ratio(demo_model, small_synthetic):
    out = run("latency.py", "--demo", str(demo_model), "--synthetic-model", str(small_synthetic), "-n", "5")
    assert "2000 x 16" in out and "p50 ratio synthetic/demo" in out


def test_memory_benchmark_compares_two_worker_counts(small_synthetic):
    out = run("memory.py", "--model", str(small_synthetic), "--workers", "1", "2", "--queries", "5")
    assert "ratio total(2)/total(1)" in out and "resident in 2/2 workers" in out


@pytest.mark.slow
def test_jobs_benchmark_prints_a_job_beside_batch(demo_model):
    out = run("jobs.py", "--model", str(demo_model), "--lines", "20", "-n", "1", "--large-lines", "200",
              "--polls", "0.1")
    assert "/api/v1/batch (synchronous)" in out and "ratio job (poll 0.1 s) / batch" in out
    assert "one job of 200 lines" in out


@pytest.mark.slow
@pytest.mark.skipif(hosts.missing_requirements() is not None, reason=f"a test host: {hosts.missing_requirements()}")
def test_deploy_speed_benchmark_counts_what_a_no_op_and_a_code_only_deploy_send():
    out = run("deploy_speed.py", "-n", "1")
    # Nothing to do: one command reads the host's whole state (deploy/unchanged.py).
    assert re.search(r"no-op deploy: +[\d.]+ s wall, +[\d.]+ s in 1 call to the host \(run 1\)", out), out
    assert re.search(r"code-only deploy: .* cutover step +[\d.]+ s", out), out
