"""gunicorn settings for modelhost, rendered by modelhost from deploy.toml.

The process manager starts `gunicorn --config <this file> --bind unix:<socket> app:create_app()`: the
socket is on the command line because blue and green share this file and differ only there.
"""
import atexit
import json
import os
import shutil
import tempfile

import gunicorn.util

# Workers: 2n+1 = 5 (2 cores); memory allows 14 ((1550 MB available - 300 MB reserve - 120 MB
#   model, counted once) / 80 MB per worker (64 MB + 4 threads x 4 MB, estimated)) -> 5
#   workers (cores are the limit): 2 GB host, 120 MB model shared
workers = 5
# gthread waits on idle keep-alive connections without tying up a worker; sync workers rely on
# nginx buffering every request and answer.
worker_class = "gthread"
threads = 4
# Load the app, and memory-map the model, once in the master before forking: every worker shares
# the model's pages, and a model that fails to load stops the start instead of every worker.
preload_app = True
# A request that takes longer than this kills its worker (a new one is forked). Model loading
# happens in the master (preload) and is not bound by it.
timeout = 60
# A stopping or replaced worker finishes its requests within this.
graceful_timeout = 30
# Replace each worker after this many requests (plus up to the jitter, so not all at once): a
# slow leak cannot grow forever, and forking a worker from the preloaded master is cheap.
max_requests = 2000
max_requests_jitter = 200
# The workers' heartbeat files: in memory, not on an SD card.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# gunicorn gives its unix socket its own user and group, rw for both only (umask 007). On a host
# nginx's user is in the app's group (provision adds it), and the socket directory lets in only
# the app and nginx's group (www-data).
umask = 0o007
# Peers whose X-Forwarded-Proto gunicorn itself believes: loopback only, the default (nginx on the
# unix socket is always believed). The app reads X-Forwarded-* through ProxyFix, one hop.
forwarded_allow_ips = "127.0.0.1,::1"
# No access log: nginx logs every request once, buffered, with the client's address and timing;
# a second line per request here would only double what is written (an SD card wears out).
accesslog = None
# The rest (starts, stops, worker deaths, the app's own logging) goes to stderr: supervisor keeps
# it in capped files, or journald.
errorlog = "-"
# nginx in front limits the request line and headers (8 KB each, 32 KB in all) and answers in the
# API's JSON when they are too long; gunicorn's own limits (4 KB, 100 headers) are lower and would
# answer with an HTML page first, so they are lifted: 0 is unlimited, 32768 headers its maximum.
limit_request_line = 0
limit_request_field_size = 0
limit_request_fields = 32768
# gunicorn >= 24 opens a control socket at one path per user (~/.gunicorn/gunicorn.ctl): blue and
# green would fight over it. Nothing here uses it.
control_socket_disable = True



def post_request(worker, req, environ, resp):
    """Read what the app left unread of the request body, up to nginx's limit, before gunicorn
    closes the connection: a close with unread data resets it, and nginx, still sending or
    reading, would answer 502 instead of the app's own answer (say, its 413 for a large body)."""
    body, left = environ.get("wsgi.input"), 2097152
    try:
        while body is not None and left > 0 and (chunk := body.read(min(left, 1 << 16))):
            left -= len(chunk)
    except (OSError, ValueError):
        pass


# Requests gunicorn refuses before the app sees them (nginx passes on a header value with a
# control character, which gunicorn refuses) are answered in the API's JSON, like nginx's own
# refusals, instead of gunicorn's HTML page.
def _json_error(sock, status_int, reason, mesg):
    body = json.dumps({"error": {"code": reason.lower().replace(" ", "_"), "message": mesg}}) + "\n"
    gunicorn.util.write_nonblock(sock, (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}").encode("latin-1", "replace"))


gunicorn.util.write_error = _json_error

# The app's environment from deploy.toml ([app] env); the process manager sets the model's path.
os.environ.update({})

# Secrets come from a file only the app's user can read, never from a rendered file or a command
# line: NAME=value lines. A secret already in the environment wins.
SECRETS_FILE = "/etc/modelhost/secrets.env"
SECRETS = ["FLASK_SECRET_KEY"]
if SECRETS:
    try:
        with open(SECRETS_FILE, encoding="utf-8") as _file:
            for _line in _file:
                _name, _sep, _value = _line.strip().partition("=")
                if _sep and not _name.startswith("#"):
                    os.environ.setdefault(_name.strip(), _value.strip())
    except FileNotFoundError:
        pass
    _missing = [_name for _name in SECRETS if not os.environ.get(_name)]
    if _missing:
        raise SystemExit(f"gunicorn: {', '.join(_missing)} not set: put NAME=value lines in {SECRETS_FILE} "
                         "(mode 0600, owned by the app's user)")

# One BLAS thread per worker: the workers are the parallelism; more threads per worker only
# oversubscribe the cores. Set before numpy is imported.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

# prometheus_client must see PROMETHEUS_MULTIPROC_DIR before the app imports it, so that /metrics
# adds up every worker's counters. A fresh directory per start: stale files would add old counts.
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="modelhost-metrics-")
    _master = os.getpid()
    # atexit, not on_exit: it also runs when the app fails to load. Workers inherit the handler,
    # so it checks that it runs in the master.
    atexit.register(lambda: os.getpid() == _master and shutil.rmtree(
        os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True))
