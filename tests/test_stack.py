"""The rendered local configs serving for real (tests/stack.py): nginx -> gunicorn under supervisord,
two apps on one host name (one at /, one under /words)."""
from __future__ import annotations

import http.client
import json
import subprocess
import time

import pytest

from tests.servers import needs_nginx, request
from tests.stack import SUPERVISORD, wait_for

pytestmark = needs_nginx


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
