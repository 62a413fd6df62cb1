"""The local target's configs rendered and serving for real, for the tests that go through nginx:
nginx -> gunicorn under supervisord, two apps on one host name (one at /, one under /words), started
as this user in a temporary directory."""
from __future__ import annotations

import contextlib
import http.client
import subprocess
import sys
import time
from pathlib import Path

from invoke import Context

from deploy.facts import gather
from deploy.layout import COLORS, local_layout
from deploy.render import plan_app, render, render_gunicorn_conf
from deploy.settings import check_settings
from deploy.target import Target
from tests.servers import ROOT, assert_gone, free_port, request, stop_session

SUPERVISORD = Path(sys.executable).parent / "supervisord"


def wait_for(check, what: str, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, http.client.HTTPException):
            if check():
                return
        time.sleep(0.3)
    raise AssertionError(f"{what} within {timeout} s")


@contextlib.contextmanager
def local_stack(root: Path, demo_model: Path):
    """Two apps (modelhost at /, words under /words) served by this checkout's app through the rendered
    local configs; yields (nginx's port, root)."""
    port = free_port()
    facts = gather(Target(Context()))
    common = {"local": {"root": str(root), "port": port}, "gunicorn": {"workers": 1}, "deploy": {"health_path": "/readyz"},
              "model": {"size_mb": 5, "path": "var/models/demo", "env": "FLASK_MODEL_PATH"}}
    apps = []
    # modelhost's API has no rate limit: the fuzzer and the floods would only see 429s.
    for name, nginx in (("modelhost", {"rate_limit": "off"}),
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
            (layout.release(color) / "app").symlink_to(ROOT / "app")
            layout.gunicorn_conf(color).write_text(render_gunicorn_conf(app))
    for file in render(apps, facts)[1:]:
        file.destination.parent.mkdir(parents=True, exist_ok=True)
        file.destination.write_text(file.content)
    for name in ("run", "log", "nginx/tmp"):
        (root / name).mkdir(parents=True, exist_ok=True)
    # supervisord runs nginx too (its [program:nginx]), as on the local target.
    supervisord = subprocess.Popen([str(SUPERVISORD), "-n", "-c", str(root / "supervisor" / "supervisord.conf")],
                                   start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for path in ("/readyz", "/words/readyz"):
            wait_for(lambda: request(port, path)[0] == 200, f"{path} answered 200 through nginx")
        yield port, root
    finally:
        assert_gone(stop_session(supervisord, timeout=60), "supervisord, nginx or gunicorn")


