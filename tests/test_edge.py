"""The edge, through the rendered local configs (tests/stack.py): every bad request gets a clear
answer (JSON under /api/, a page elsewhere), oversized bodies a 413, stalled connections do not
shut other clients out, the OpenAPI document holds for generated requests (schemathesis), and a
real Prometheus scrapes /metrics."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

from tests.servers import free_port, get, needs_nginx, request
from tests.stack import wait_for

pytestmark = needs_nginx
ROOT = Path(__file__).resolve().parent.parent
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


def raw(port: int, data: bytes, source: str = "127.0.0.1") -> tuple[int, dict, bytes]:
    """(status, headers, body) of bytes sent as they are, on a connection nginx closes after it."""
    with socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0)) as connection:
        connection.sendall(data)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def http_request(method: str, target: bytes, *headers: bytes) -> bytes:
    return b"%s %s HTTP/1.1\r\nHost: localhost\r\n%sConnection: close\r\n\r\n" % (
        method.encode(), target, b"".join(header + b"\r\n" for header in headers))


LONG = b"/api/v1/similar?word=" + b"a" * 9000
# (what, the request, its status, who answers): each under /api/ gets JSON in the app's format.
REFUSED = [
    ("request line over 8 KB", http_request("GET", LONG), 414),
    ("request line of 5 KB: passed on, the app answers", http_request("GET", LONG[:5000]), 422),
    ("150 headers: passed on", http_request("GET", b"/api/v1/model", *(b"X-%d: a" % i for i in range(150))), 200),
    ("a header over 8 KB", http_request("GET", b"/api/v1/model", b"X-Big: " + b"a" * 9000), 400),
    ("raw non-ASCII bytes in the query", http_request("GET", b"/api/v1/similar?word=\xc3\xa9\xff"), 400),
    ("a control character in a header value", http_request("GET", b"/api/v1/model", b"X-A: a\x01b"), 400),
    ("TRACE, which nginx never passes on", http_request("TRACE", b"/api/v1/model"), 405),
    ("PUT, which the route does not allow", http_request("PUT", b"/api/v1/model", b"Content-Length: 0"), 405),
]


@pytest.mark.parametrize("what, data, status", REFUSED, ids=[case[0] for case in REFUSED])
def test_every_refusal_under_the_api_is_json(stack, what, data, status):
    port, _ = stack
    got, headers, body = raw(port, data)
    assert got == status, body
    assert headers["Content-Type"] == "application/json", body
    error = json.loads(body).get("error")
    assert status == 200 or (error["code"] and error["message"])
    if status == 405:
        assert "GET" in headers["Allow"] and "TRACE" not in headers["Allow"]


def test_refusals_elsewhere_are_short_pages_with_allow_on_a_405(stack):
    port, _ = stack
    status, headers, body = raw(port, http_request("TRACE", b"/"))
    assert status == 405 and headers["Content-Type"] == "text/html" and b"not allowed" in body
    assert headers["Allow"].startswith("GET, HEAD, POST")
    status, headers, _ = raw(port, b"\x01\x02 garbage\r\n\r\n")
    assert status == 400 and headers["Content-Type"] == "text/html"


def post_body(port: int, path: str, size: int) -> tuple[int, dict, bytes]:
    body = json.dumps({"text": "a" * size}).encode()
    return raw(port, http_request("POST", path.encode(), b"Content-Type: application/json",
                                  b"Content-Length: %d" % len(body)) + body)


def test_an_oversized_body_gets_a_json_413_every_time(stack):
    """1.5 MB: over the app's limit (1 MiB), under nginx's (2 MB): the app's own 413, not nginx
    failing on a connection gunicorn closed (502); 2.5 MB: nginx's 413, in the same JSON."""
    port, _ = stack
    answers = [post_body(port, "/api/v1/cluster", 1_500_000) for _ in range(50)]
    assert [status for status, _, _ in answers] == [413] * 50
    assert all(json.loads(body)["error"]["code"] == "payload_too_large" for _, _, body in answers)
    status, headers, body = post_body(port, "/api/v1/cluster", 2_500_000)
    assert status == 413 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "payload_too_large"


def test_form_posts_are_rate_limited_with_retry_after(stack):
    port, _ = stack
    time.sleep(1.5)  # the bucket of earlier tests' posts is empty
    form = urllib.parse.urlencode({"a": "fire crews", "b": "police officers"}).encode()
    statuses = []
    for _ in range(12):  # bounded: far above 1r/s + burst 5 when sent at once
        status, headers, body = raw(port, http_request(
            "POST", b"/compare", b"Content-Type: application/x-www-form-urlencoded",
            b"Content-Length: %d" % len(form)) + form)
        statuses.append(status)
        if status == 429:
            assert headers["Retry-After"] == "1" and headers["Content-Type"] == "text/html"
            break
    assert statuses[0] == 200 and statuses[-1] == 429
    assert request(port, "/similar?word=fire")[0] == 200  # GETs are not counted


def test_stalled_connections_from_one_address_leave_the_others_served(stack):
    """600 connections from 127.0.0.1 that never finish their headers; 100 of 100 requests from
    127.0.0.2 are answered while they stall."""
    port, _ = stack
    stalled = []
    try:
        for _ in range(600):
            connection = socket.create_connection(("127.0.0.1", port), timeout=10)
            connection.sendall(b"GET /api/v1/model HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
            stalled.append(connection)
        answered = [raw(port, http_request("GET", b"/livez"), source="127.0.0.2")[0] for _ in range(100)]
        assert answered == [200] * 100
    finally:
        for connection in stalled:
            connection.close()


def test_metrics_have_one_charset_as_prometheus_3_wants(stack):
    port, _ = stack
    status, headers, body = request(port, "/metrics")
    assert status == 200 and headers["Content-Type"].count("charset") == 1


@pytest.mark.skipif(not shutil.which("prometheus"), reason="needs prometheus: apt-get install prometheus")
def test_a_real_prometheus_scrapes_the_metrics(stack, tmp_path):
    port, _ = stack
    config = tmp_path / "prometheus.yml"
    config.write_text(f"""global:
  scrape_interval: 1s
scrape_configs:
  - job_name: modelhost
    static_configs:
      - targets: ["127.0.0.1:{port}"]
""")
    web = free_port()
    prometheus = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{web}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def query(expression: str) -> list:
        status, body = get(f"http://127.0.0.1:{web}/api/v1/query?{urllib.parse.urlencode({'query': expression})}")
        return json.loads(body)["data"]["result"] if status == 200 else []

    try:
        wait_for(lambda: query('up{job="modelhost"} == 1'), "Prometheus scraped /metrics", timeout=60)
        info = query("modelhost_model_info")
        assert info and info[0]["metric"]["name"] == "demo"
        assert query("modelhost_http_requests_total")
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=30)


def test_schemathesis_finds_nothing_through_nginx(stack):
    """Every check schemathesis has (its default: all), at least 1,000 generated requests, against
    the app at / (no rate limit) through nginx; tests/schemathesis.toml says what is left out, and why."""
    port, _ = stack
    base = f"http://127.0.0.1:{port}"
    result = subprocess.run(
        [str(SCHEMATHESIS), "--no-color", "--config-file", str(ROOT / "tests" / "schemathesis.toml"), "run",
         f"{base}/api/v1/openapi.json", "--url", base, "--max-examples", "100", "--seed", "1"],
        capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    generated = int(output.split(" generated")[0].split()[-1])
    assert generated >= 1000, output[-2000:]
