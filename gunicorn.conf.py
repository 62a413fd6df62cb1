"""gunicorn settings for running the app by hand: `gunicorn 'app:create_app()'` in this directory
reads this file. Deployments render their own from deploy.toml (issue B); both keep the hooks below.

Environment: MODELHOST_BIND (default 127.0.0.1:8080), MODELHOST_WORKERS (default 2).
"""
import os
import shutil
import tempfile

bind = os.environ.get("MODELHOST_BIND", "127.0.0.1:8080")
workers = int(os.environ.get("MODELHOST_WORKERS", "2"))
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

# prometheus_client must see PROMETHEUS_MULTIPROC_DIR before the app imports it, so that /metrics
# adds up every worker's counters. A fresh directory per start: stale files would add old counts.
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="modelhost-metrics-")
    _own_metrics_dir = True
else:
    _own_metrics_dir = False


def on_exit(server):
    if _own_metrics_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
