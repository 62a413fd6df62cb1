"""/livez, /readyz and /metrics."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from app import create_app
from tests.conftest import DEV


def test_livez_answers(api):
    assert api.get("/livez").get_json() == {"status": "ok"}


def test_readyz_is_200_with_the_model_once_loaded(api):
    body = api.get("/readyz").get_json()
    assert body["status"] == "ready"
    assert body["model"]["name"] == "demo"


def test_readyz_is_503_with_the_reason_when_the_model_is_missing(unloaded_api):
    client = unloaded_api
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "manifest.json is missing" in response.get_json()["reason"]
    assert client.get("/livez").status_code == 200


def test_readyz_says_when_no_model_is_configured():
    app = create_app(DEV)
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert "FLASK_MODEL_PATH" in response.get_json()["reason"]


def samples(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_requests_by_route_and_status(api):
    before = samples(api.get("/metrics").get_data(as_text=True))
    api.get("/api/v1/similar?word=fire")
    api.get("/api/v1/similar?word=zzqqxx")
    after = samples(api.get("/metrics").get_data(as_text=True))

    def count(status):
        key = ("modelhost_http_requests_total",
               (("endpoint", "/api/v1/similar"), ("method", "GET"), ("status", status)))
        return after.get(key, 0) - before.get(key, 0)

    assert count("200") == 1 and count("404") == 1


def test_metrics_show_the_model_and_latency(api, app):
    text = api.get("/metrics").get_data(as_text=True)
    info = app.extensions["modelhost"].model.info
    assert f'modelhost_model_info{{name="demo",sha256="{info["sha256"]}",version="{info["version"]}"}} 1.0' in text
    assert "modelhost_http_request_duration_seconds_bucket" in text
    assert f"modelhost_model_vocabulary_size {float(info['vocabulary_size'])}" in text


def test_unknown_paths_share_one_metrics_label(client):
    for i in range(3):
        client.get(f"/random-{i}")
    text = client.get("/metrics").get_data(as_text=True)
    assert "random-" not in text and 'endpoint="unmatched"' in text


def test_a_model_whose_words_carry_digits_serves_every_endpoint(tmp_path):
    from app.model import build

    build(tmp_path / "syn", "syn", None, synthetic=(300, 8))
    client = create_app({**DEV, "MODEL_PATH": str(tmp_path / "syn")}).test_client()
    assert client.get("/readyz").status_code == 200
    response = client.post("/api/v1/cluster", json={"text": "word0000001 word0000002"})
    assert response.status_code == 200, response.get_data(as_text=True)


def test_a_failing_warm_up_query_means_not_ready_with_the_reason(demo_model, monkeypatch):
    from app.embeddings import WordModel

    def broken(self):
        raise RuntimeError("index out of range")

    monkeypatch.setattr(WordModel, "warm_up", broken)
    client = create_app({**DEV, "MODEL_PATH": str(demo_model)}).test_client()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "warm-up query failed: RuntimeError('index out of range')" in response.get_json()["reason"]
