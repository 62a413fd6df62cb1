"""The app under real gunicorn processes: config check, readiness, metrics summed over workers."""
from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor

from prometheus_client.parser import text_string_to_metric_families

from tests.servers import GUNICORN, ROOT, get, gunicorn, gunicorn_conf, post_json

REQUESTS = 60


def test_gunicorn_accepts_the_config_and_the_app(tmp_path):
    conf = gunicorn_conf(tmp_path, workers=2)
    result = subprocess.run([str(GUNICORN), "--check-config", "--config", str(conf), "app:create_app()"], cwd=ROOT,
                            env={"FLASK_SECRET_KEY": "x", "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def similar_count(metrics_text: str) -> float:
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if (sample.name == "modelhost_http_requests_total" and sample.labels["endpoint"] == "/api/v1/similar"
                    and sample.labels["status"] == "200"):
                return sample.value
    return 0


def test_metrics_add_up_requests_served_by_every_worker(demo_model, tmp_path):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    with gunicorn(demo_model, workers=3, env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}) as (base, process):
        # Concurrent clients, so that the requests spread over the workers.
        with ThreadPoolExecutor(max_workers=6) as pool:
            statuses = list(pool.map(lambda i: get(f"{base}/api/v1/similar?word=fire&topn={1 + i % 50}")[0],
                                     range(REQUESTS)))
        assert statuses == [200] * REQUESTS
        # Whichever worker answers /metrics, it reports the total of all of them.
        counts = {similar_count(get(f"{base}/metrics")[1].decode()) for _ in range(6)}
        served_by = {p.name.split("_")[-1] for p in metrics_dir.glob("counter_*.db")}
    assert counts == {REQUESTS}
    assert len(served_by) > 1, "the requests were all served by one worker; the sum was not tested"


def test_api_answers_over_http(demo_model):
    with gunicorn(demo_model) as (base, _):
        status, body = post_json(f"{base}/api/v1/similarity", {"pairs": [["fire", "blaze"]]})
        assert status == 200 and body["results"][0]["score"] is not None
        status, body = post_json(f"{base}/api/v1/similar", {"positive": []})
        assert status == 422 and body["error"]["field"] == "positive"
