"""Settings from FLASK_ variables, production safety, proxy headers, logging."""
from __future__ import annotations

import logging.handlers

import pytest

from app import create_app
from app.config import ConfigError
from tests.conftest import DEV


def test_settings_come_from_flask_prefixed_environment(monkeypatch, demo_model):
    monkeypatch.setenv("FLASK_MODEL_PATH", str(demo_model))
    monkeypatch.setenv("FLASK_SECRET_KEY", "s3cret")
    monkeypatch.setenv("FLASK_MAX_CONTENT_LENGTH", "2048")
    app = create_app()
    assert app.config["MAX_CONTENT_LENGTH"] == 2048
    assert app.config["SECRET_KEY"] == "s3cret"
    assert app.test_client().get("/readyz").status_code == 200
    response = app.test_client().post("/api/v1/similar", data="x" * 4096, content_type="application/json")
    assert response.status_code == 413


def test_production_without_a_secret_key_refuses_to_start():
    with pytest.raises(ConfigError, match="FLASK_SECRET_KEY is not set.*secrets.token_hex"):
        create_app()


@pytest.mark.parametrize("env", [{"FLASK_DEBUG": "1"}, {"FLASK_DEBUG": "true"}])
def test_production_refuses_debug_mode(monkeypatch, env):
    monkeypatch.setenv("FLASK_SECRET_KEY", "x")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match="FLASK_DEBUG is on in production"):
        create_app()


@pytest.mark.parametrize("key, value, message", [
    ("FLASK_MAX_CONTENT_LENGTH", "lots", "FLASK_MAX_CONTENT_LENGTH='lots': must be a whole number >= 1"),
    ("FLASK_MAX_CONTENT_LENGTH", "0", "must be a whole number >= 1"),
    ("FLASK_BATCH_MAX_LINES", "-1", "FLASK_BATCH_MAX_LINES=-1"),
    ("FLASK_PROXY_HOPS", "true", "FLASK_PROXY_HOPS=True"),
    ("FLASK_ENVIRONMENT", "staging", "must be one of production, development"),
    ("FLASK_LOG_LEVEL", "LOUD", "FLASK_LOG_LEVEL='LOUD'"),
    ("FLASK_JOBS_MAX_LINES", "0", "FLASK_JOBS_MAX_LINES=0: must be a whole number >= 1"),
    ("FLASK_JOBS_MAX_QUEUED", "many", "FLASK_JOBS_MAX_QUEUED='many'"),
    ("FLASK_JOBS_MAX_ATTEMPTS", "0", "FLASK_JOBS_MAX_ATTEMPTS=0"),
    ("FLASK_JOBS_RETENTION_SECONDS", "-1", "FLASK_JOBS_RETENTION_SECONDS=-1"),
    ("FLASK_JOBS_POLL_SECONDS", "0", "FLASK_JOBS_POLL_SECONDS=0: must be a number of seconds above 0"),
    ("FLASK_JOBS_LEASE_SECONDS", "2", "FLASK_JOBS_LEASE_SECONDS=2: must be at least 5"),
    ("FLASK_JOBS_DB", "jobs.sqlite3", "FLASK_JOBS_DB='jobs.sqlite3': must be an absolute path"),
])
def test_bad_settings_name_the_variable_and_what_is_allowed(monkeypatch, key, value, message):
    monkeypatch.setenv("FLASK_SECRET_KEY", "x")
    monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        create_app()


def test_job_settings_come_from_flask_prefixed_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FLASK_JOBS_DB", str(tmp_path / "q.sqlite3"))
    monkeypatch.setenv("FLASK_JOBS_POLL_SECONDS", "0.5")
    monkeypatch.setenv("FLASK_JOBS_MAX_LINES", "500000")
    app = create_app(DEV)
    assert (app.config["JOBS_DB"], app.config["JOBS_POLL_SECONDS"], app.config["JOBS_MAX_LINES"]) == (
        str(tmp_path / "q.sqlite3"), 0.5, 500000)


def test_proxy_headers_from_one_hop_are_trusted(demo_model):
    app = create_app({**DEV, "MODEL_PATH": str(demo_model)})

    @app.get("/echo")
    def echo():
        from flask import request

        return {"remote": request.remote_addr, "scheme": request.scheme, "url": request.url_root}

    body = app.test_client().get("/echo", headers={
        "X-Forwarded-For": "203.0.113.9, 198.51.100.7", "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "models.example.org", "X-Forwarded-Prefix": "/words"}).get_json()
    # Only the last hop (nginx) is trusted: the client address it saw, not what the client claimed.
    assert body == {"remote": "198.51.100.7", "scheme": "https", "url": "https://models.example.org/words/"}


def test_logs_go_to_stderr_by_default():
    app = create_app(DEV)
    [handler] = app.logger.handlers
    assert type(handler) is logging.StreamHandler


def test_log_file_is_size_capped_and_rotated(tmp_path):
    log = tmp_path / "app.log"
    app = create_app({**DEV, "LOG_FILE": str(log), "LOG_MAX_BYTES": 2000, "LOG_BACKUP_COUNT": 2})
    [handler] = app.logger.handlers
    assert isinstance(handler, logging.handlers.RotatingFileHandler)
    for i in range(200):
        app.logger.warning("line %d of a log that outgrows its cap", i)
    handler.flush()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["app.log", "app.log.1", "app.log.2"]
    assert all((tmp_path / f).stat().st_size <= 2000 for f in files)
    assert "line 199" in log.read_text()
