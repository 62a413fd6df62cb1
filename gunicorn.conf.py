"""gunicorn settings for running the app by hand: `gunicorn 'app:create_app()'` in this directory
reads this file. Deployments render their own from deploy.toml (issue B); both keep the hooks below.

Environment: MODELHOST_BIND (default 127.0.0.1:8080), MODELHOST_WORKERS (default 2).
"""
import atexit
import os
import shutil
import tempfile

bind = os.environ.get("MODELHOST_BIND", "127.0.0.1:8080")
workers = int(os.environ.get("MODELHOST_WORKERS", "2"))
# Threaded workers: served without nginx in front, a browser's idle pre-opened connection would
# block a sync worker until `timeout`; gthread waits on idle connections without blocking.
worker_class = "gthread"
threads = 4
# Load the app (and mmap the model) once in the master; workers inherit the mapping, so the
# vectors' pages are shared, and a broken model fails the start instead of every worker.
preload_app = True
timeout = 60
graceful_timeout = 30
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
accesslog = "-"
# gunicorn >= 24 opens a control socket at one path per user (~/.gunicorn/gunicorn.ctl): a second
# gunicorn of the same user (blue/green, tests) would fight over it. Nothing here uses it.
control_socket_disable = True

# One BLAS thread per worker: the workers are the parallelism; more threads per worker only
# oversubscribe the cores (and make latency jump between runs). Set before numpy is imported.
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
