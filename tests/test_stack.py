"""The rendered local configs serving for real: nginx -> gunicorn under supervisord, two apps on one
host name (one at /, one under /words), started as this user in a temporary directory."""
from __future__ import annotations

import contextlib
import http.client
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from invoke import Context

from deploy.facts import gather
from deploy.layout import COLORS, local_layout
from deploy.render import plan_app, render, render_gunicorn_conf
from deploy.settings import check_settings
from deploy.target import Target
from deploy.validate import find_nginx
from tests.servers import assert_gone, free_port, needs_nginx, request, stop_session

pytestmark = needs_nginx
SUPERVISORD = Path(sys.executable).parent / "supervisord"


def wait_for(check, what: str, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, http.client.HTTPException):
            if check():
                return
        time.sleep(0.3)
    raise AssertionError(f"{what} within {timeout} s")


@pytest.fixture(scope="module")
def stack(demo_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("stack")
    port = free_port()
    facts = gather(Target(Context()))
    common = {"local": {"root": str(root), "port": port}, "gunicorn": {"workers": 1}, "deploy": {"health_path": "/readyz"},
              "model": {"size_mb": 5, "path": "var/models/demo", "env": "FLASK_MODEL_PATH"}}
    apps = []
    for name, nginx in (("modelhost", {}),
                        ("words", {"prefix": "/words", "cache": True, "rate_limit": "2r/s", "rate_limit_burst": 2})):
        settings = check_settings({**common, "app": {"name": name}, "nginx": {"static_dir": "app/static", **nginx}})
        apps.append(plan_app(settings, local_layout(settings), facts))
    for app in apps:
        layout = app.layout
        for directory in (layout.log_dir, layout.run_dir, layout.config_dir):
            directory.mkdir(parents=True, exist_ok=True)
        layout.env_file.write_text("FLASK_SECRET_KEY=stack-test\n")
        for color in COLORS:  # a release: this checkout's app, this venv, the demo model, its gunicorn.conf.py
            kit = layout.kit(color)
            (kit / "model").mkdir(parents=True)
            (kit / "model" / "demo").symlink_to(demo_model)
            (kit / "venv").symlink_to(sys.prefix)
            (layout.release(color) / "app").symlink_to(Path(__file__).resolve().parent.parent / "app")
            layout.gunicorn_conf(color).write_text(render_gunicorn_conf(app))
    for file in render(apps, facts)[1:]:
        file.destination.parent.mkdir(parents=True, exist_ok=True)
        file.destination.write_text(file.content)
    for name in ("run", "log", "nginx/tmp"):
        (root / name).mkdir(parents=True, exist_ok=True)
    supervisord = subprocess.Popen([str(SUPERVISORD), "-n", "-c", str(root / "supervisor" / "supervisord.conf")],
                                   start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    nginx = subprocess.Popen([find_nginx(), "-p", f"{root}/nginx/", "-c", str(root / "nginx" / "nginx.conf"),
                              "-e", str(root / "log" / "nginx-error.log"), "-g", "daemon off;"],
                             start_new_session=True)
    try:
        for path in ("/readyz", "/words/readyz"):
            wait_for(lambda: request(port, path)[0] == 200, f"{path} answered 200 through nginx")
        yield port, root
    finally:
        assert_gone(stop_session(nginx, timeout=60) + stop_session(supervisord, timeout=60), "nginx or supervisord")


def test_both_apps_answer_through_nginx_with_the_security_headers(stack):
    port, _ = stack
    for prefix in ("", "/words"):
        status, headers, body = request(port, f"{prefix}/api/v1/similar?word=fire&topn=3")
        assert status == 200 and len(json.loads(body)["results"]) == 3
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Content-Security-Policy"] == "frame-ancestors 'none'"
        assert headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
        assert headers["Server"] == "nginx"  # no version


def test_the_prefixed_app_links_under_its_prefix_and_nginx_serves_its_static_files(stack):
    port, _ = stack
    status, headers, _ = request(port, "/words")
    assert status == 301 and headers["Location"].endswith("/words/")
    status, _, page = request(port, "/words/")
    assert status == 200 and b'href="/words/static/style.css"' in page
    status, headers, css = request(port, "/words/static/style.css")
    assert status == 200 and b"{" in css
    assert headers["Cache-Control"] == "max-age=604800"  # expires 7d: nginx, not the app


def test_unknown_host_names_get_no_answer(stack):
    port, _ = stack
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        request(port, "/readyz", host="scanner.example")


def test_dotfiles_are_refused_and_metrics_are_for_loopback(stack):
    port, _ = stack
    assert request(port, "/.env")[0] == 403
    assert request(port, "/words/.git/config")[0] == 403
    status, _, body = request(port, "/metrics")
    assert status == 200 and b"modelhost_http_requests_total" in body


def test_the_cache_serves_repeated_get_answers(stack):
    port, _ = stack
    path = "/words/api/v1/similar?word=police&topn=2"
    first, second = request(port, path), request(port, path)
    assert first[1].get("X-Cache-Status") == "MISS" and second[1].get("X-Cache-Status") == "HIT"
    assert first[2] == second[2]


def test_the_rate_limit_answers_429_in_the_apis_json(stack):
    port, _ = stack
    time.sleep(1.5)  # the earlier tests' requests to this app have left the limit's bucket
    statuses = []
    for _ in range(20):  # bounded: far above rate 2r/s + burst 2 when sent at once
        status, headers, body = request(port, "/words/api/v1/model")
        statuses.append(status)
        if status == 429:
            assert headers["Content-Type"] == "application/json"
            assert json.loads(body)["error"]["code"] == "rate_limited"
            break
    assert 429 in statuses and statuses[0] == 200


def test_an_app_that_is_down_gives_a_json_502_under_api(stack):
    port, root = stack
    ctl = [str(SUPERVISORD.parent / "supervisorctl"), "-c", str(root / "supervisor" / "supervisord.conf")]
    subprocess.run(ctl + ["stop", "modelhost-blue"], check=True, capture_output=True, timeout=90)
    try:
        status, headers, body = request(port, "/api/v1/model")
        assert status == 502 and headers["Content-Type"] == "application/json"
        assert json.loads(body)["error"] == {"code": "unavailable",
                                             "message": "the app is not running; try again in a moment"}
        assert request(port, "/words/api/v1/model")[0] in (200, 429)  # the other app is not affected
    finally:
        subprocess.run(ctl + ["start", "modelhost-blue"], check=True, capture_output=True, timeout=90)
    wait_for(lambda: request(port, "/readyz")[0] == 200, "modelhost-blue came back")
