"""Real gunicorn processes on loopback for integration tests: start, wait until ready, stop."""
from __future__ import annotations

import collections
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.render import standalone_gunicorn_conf
from deploy.settings import defaults
from deploy.validate import free_loopback_port as free_port

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).parent / "gunicorn"
FAB = Path(sys.executable).parent / "fab"
MIN_REQUESTS = 2000  # a load test sends at least this many
needs_nginx = pytest.mark.skipif(not any(os.path.exists(p) for p in ("/usr/sbin/nginx", "/usr/bin/nginx")),
                                 reason="needs nginx: apt-get install nginx")


def fab(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real `fab` in this checkout, with no FLASK_* variable of the shell that runs the tests
    (and with env's variables added)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FLASK_")} | (env or {})
    return subprocess.run([str(FAB), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=environ)


def ok(result: subprocess.CompletedProcess) -> str:
    """A fab run's output, once it is known to have succeeded."""
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


# The reference app's readiness and smoke query, as its deploy.toml has them: lines of [deploy].
REFERENCE_DEPLOY = 'health_path = "/readyz"\nsmoke_path = "/api/v1/model"\nsmoke_contains = "{model_version}"\n'


def app_checkout(repo: Path, settings: str) -> Path:
    """A git repository holding this checkout's tracked files (not the golden samples) and this
    deploy.toml, committed: what a user deploys."""
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True,
                             text=True).stdout.split("\0")
    for name in filter(None, tracked):
        if (ROOT / name).is_file() and not name.startswith("tests/golden/"):
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    return committed(repo, {"deploy.toml": settings})


def committed(repo: Path, files: dict[str, str]) -> Path:
    """repo (made if need be) with these files (name -> text) added, as a new git repository's first commit."""
    repo.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (repo / name).write_text(text)
    for args in (["init", "-q"], ["config", "user.name", "test"], ["config", "user.email", "test@example.com"],
                 ["add", "-A"], ["commit", "-qm", "the app"]):
        git(repo, *args)
    return repo


# A one-page Flask app that answers its VERSION file (app:app), for deploys that take seconds.
VERSIONED_APP = '''from pathlib import Path

from flask import Flask

app = Flask(__name__)


@app.get("/")
def index():
    return Path(__file__).with_name("VERSION").read_text()
'''

# A one-page Flask app's pinned requirements: a deploy of it takes seconds (tests/test_firewall.py, test_fleet.py).
FLASK_REQUIREMENTS = """blinker==1.9.0
click==8.5.1
flask==3.1.3
gunicorn==27.0.1
itsdangerous==2.2.0
jinja2==3.1.6
markupsafe==3.0.4
werkzeug==3.1.9
"""


def commit_change(repo: Path, path: str, old: str, new: str, message: str) -> None:
    file = repo / path
    text = file.read_text()
    assert old in text, f"{old!r} not in {path}"
    file.write_text(text.replace(old, new, 1))
    git(repo, "commit", "-qam", message)


class AddressedHTTPS(http.client.HTTPSConnection):
    """HTTPS to an address, with a name in SNI (and Host), its certificate checked for that name."""

    def __init__(self, address: str, port: int, name: str, context: ssl.SSLContext, timeout: float = 30):
        super().__init__(name, port, timeout=timeout, context=context)
        self.address = address

    def connect(self):
        self.sock = self._context.wrap_socket(socket.create_connection((self.address, self.port), self.timeout),
                                              server_hostname=self.host)


def eventually(check, timeout: float = 15, every: float = 0.5):
    """check()'s first truthy answer within timeout (nginx writes its access log every 5 s, buffered);
    its last answer after that."""
    deadline = time.monotonic() + timeout
    while not (answer := check()) and time.monotonic() < deadline:
        time.sleep(every)
    return answer


def request(port: int, path: str, host: str = "localhost", method: str = "GET", address: str = "127.0.0.1",
            tls: ssl.SSLContext | None = None, timeout: float = 30):
    """(status, headers, body) from address:port (nginx), with this Host header, on a new connection;
    with tls, over HTTPS with the certificate checked against it."""
    connection = (AddressedHTTPS(address, port, host, tls, timeout) if tls else
                  http.client.HTTPConnection(address, port, timeout=timeout))
    try:
        connection.request(method, path, headers={"Host": host})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


REFERENCE_PATHS = ("/readyz", "/api/v1/similar?word=fire&topn=2", "/livez")


@contextlib.contextmanager
def steady_load(port: int, threads: int = 4, limit: float = 300, address: str = "127.0.0.1",
                host: str = "localhost", tls: ssl.SSLContext | None = None, paths: tuple[str, ...] = REFERENCE_PATHS,
                pause: float = 0):
    """GETs of paths (the reference app's by default) through nginx from several threads, a new
    connection each (pause seconds apart in each thread), until the block is over and at least
    MIN_REQUESTS were sent (within limit seconds). Yields a Counter of outcomes."""
    counts: collections.Counter = collections.Counter()
    lock, stop = threading.Lock(), threading.Event()

    def send(index: int) -> None:
        n = index
        while not stop.is_set():
            n += 1
            try:
                status = request(port, paths[n % len(paths)], host=host, address=address, tls=tls)[0]
                outcome = status
            except (OSError, http.client.HTTPException) as exc:
                outcome = type(exc).__name__
            with lock:
                counts[outcome] += 1
            if pause:
                stop.wait(pause)

    workers = [threading.Thread(target=send, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + limit
    try:
        yield counts
    finally:
        while sum(counts.values()) < MIN_REQUESTS and time.monotonic() < deadline:
            time.sleep(0.1)
        stop.set()
        for worker in workers:
            worker.join(timeout=60)


@dataclass
class Drill:
    """What clients saw when a fault hit a site under steady load."""
    fault: str
    sent: int  # requests sent after the fault
    failed: collections.Counter  # their outcomes other than 200
    recovered: float  # seconds from the fault to the last failed request (0: none failed)

    def __str__(self) -> str:
        return (f"{self.fault}: {sum(self.failed.values())} of {self.sent} requests failed "
                f"({dict(self.failed) or 'none'}), recovered after {self.recovered:.1f} s")


def drill(fault: str, inject, port: int, address: str = "127.0.0.1", host: str = "localhost",
          quiet: float = 5, limit: float = 90, threads: int = 4, tls: ssl.SSLContext | None = None,
          path: str = "/similar?word=fire") -> Drill:
    """Requests from several threads (a new connection each, answers counted by the time they were
    sent) before and after inject() (the fault); ends once quiet seconds pass with no failure
    after it, or after limit seconds."""
    outcomes: list[tuple[float, object]] = []
    lock, stop = threading.Lock(), threading.Event()

    def send() -> None:
        while not stop.is_set():
            began = time.monotonic()
            try:
                outcome: object = request(port, path, host=host, address=address, tls=tls)[0]
            except (OSError, http.client.HTTPException) as exc:
                outcome = type(exc).__name__
            with lock:
                outcomes.append((began, outcome))

    workers = [threading.Thread(target=send, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(1)
        injected = time.monotonic()
        inject()
        while time.monotonic() < injected + limit:
            time.sleep(0.5)
            with lock:
                last_failure = max((t for t, o in outcomes if t >= injected and o != 200), default=injected)
            if time.monotonic() > last_failure + quiet:
                break
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=60)
    after = [(t - injected, o) for t, o in outcomes if t >= injected]
    failed = [(t, o) for t, o in after if o != 200]
    return Drill(fault, len(after), collections.Counter(o for _, o in failed), max((t for t, _ in failed), default=0))


def get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_ready(base: str, process: subprocess.Popen, workers: int, timeout: float = 120) -> None:
    """Until /readyz answers 200 and every worker is forked (the first one may answer alone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode} before it was ready")
        with contextlib.suppress(OSError):
            if get(f"{base}/readyz", timeout=2)[0] == 200 and len(children(process.pid)) == workers:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{base}/readyz did not answer 200 with {workers} workers within {timeout}s")


def children(pid: int) -> list[int]:
    """PIDs whose parent is pid (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def gunicorn_conf(directory: Path, workers: int) -> Path:
    """The gunicorn config rendered from the template with the defaults, written into directory."""
    conf = Path(directory) / "gunicorn.conf.py"
    conf.write_text(standalone_gunicorn_conf(defaults(), workers))
    return conf


@contextlib.contextmanager
def gunicorn(model: Path, workers: int = 1, env: dict | None = None, log: Path | None = None):
    """Serve the app from this checkout; yields (base_url, process); stops it, checked by pid."""
    port = free_port()
    conf_dir = tempfile.TemporaryDirectory(prefix="gunicorn-conf-")
    conf = gunicorn_conf(Path(conf_dir.name), workers)
    environ = {**os.environ, "FLASK_MODEL_PATH": str(model), "FLASK_SECRET_KEY": "test", **(env or {})}
    output = open(log, "wb") if log else subprocess.DEVNULL
    process = subprocess.Popen(
        [str(GUNICORN), "--config", str(conf), "--bind", f"127.0.0.1:{port}", "app:create_app()"],
        cwd=ROOT, env=environ, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, process, workers)
        yield base, process
    finally:
        pids = stop_session(process, timeout=40)  # above the config's graceful_timeout
        if log:
            output.close()
        conf_dir.cleanup()
        assert_gone(pids, "gunicorn")


def stop_session(process: subprocess.Popen, timeout: float) -> list[int]:
    """TERM a process started in its own session, KILL its group after timeout; returns every pid it
    had below it (children and grandchildren: supervisord's gunicorns and their workers)."""
    pids = [process.pid, *children(process.pid)]
    for pid in pids[1:]:
        pids += children(pid)
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return pids


def assert_gone(pids: list[int], what: str) -> None:
    """Every pid has exited (within 10 s)."""
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    assert not left, f"{what} processes left behind: {left}"


def post_json(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def status_table(out: str) -> list[dict[str, str]]:
    """fab status's table of a fleet: its rows as header -> cell."""
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("  host  "))
    header = re.split(r"\s{2,}", lines[at].strip())
    return [dict(zip(header, re.split(r"\s{2,}", line.strip()))) for line in lines[at + 1:] if line.startswith("  ")]
