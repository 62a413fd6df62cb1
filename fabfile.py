"""Fabric tasks in modelhost's own checkout: the kit's tasks (deploy/tasks.py, which the `modelhost`
command runs in any app's checkout) and the demo's: `fab build-model`, `fab serve`.
`fab --list` shows them; `fab --help TASK` shows a task's options.
"""
from __future__ import annotations

import os
import secrets
import shlex
import sys
from pathlib import Path

from fabric import task
from invoke import Context

from deploy import settings as deploy_settings, tasks
from deploy.render import standalone_gunicorn_conf
from deploy.tasks import *  # every task of the kit is one of fab's

ROOT = Path(__file__).resolve().parent
VAR = ROOT / "var"
DEMO_MODEL = VAR / "models" / "demo"
SECRET_FILE = VAR / "secret_key"


def secret_key() -> str:
    """The demo's Flask secret key, made once and kept in var/secret_key (mode 0600)."""
    if not SECRET_FILE.exists():
        SECRET_FILE.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(SECRET_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
    return SECRET_FILE.read_text().strip()


@task(help={"out": f"artifact directory (default {DEMO_MODEL.relative_to(ROOT)})",
            "force": "build again even if a valid model is there"})
def build_model(c, out=str(DEMO_MODEL), force=False):
    """Build the demo model from the corpora in gensim's wheel (no network); skips a valid, current one."""
    model = shlex.join([sys.executable, "-m", "app.model"])
    if not force and c.run(f"{model} verify --demo {shlex.quote(out)}", warn=True, hide=True).ok:
        print(f"model in {out} is up to date (unchanged)")
        return
    c.run(f"{model} build --out {shlex.quote(out)}")


@task(help={"port": "port on 127.0.0.1 (default 8080)", "workers": "gunicorn workers (default 2)"})
def serve(c, port=8080, workers=2):
    """Serve the demo model with gunicorn on http://127.0.0.1:PORT, in the foreground (Ctrl-C stops)."""
    build_model(c)
    settings = deploy_settings.load(ROOT / deploy_settings.SETTINGS_FILE)
    conf = VAR / "gunicorn.conf.py"  # from gunicorn/gunicorn.conf.py.j2, like every deploy's
    conf.write_text(standalone_gunicorn_conf(settings, int(workers)))
    env = {"FLASK_MODEL_PATH": str(DEMO_MODEL), "FLASK_SECRET_KEY": secret_key()}
    print(f"serving on http://127.0.0.1:{port}/\n{demo_hints(f'http://127.0.0.1:{port}/')}")
    os.chdir(ROOT)
    os.execve(str(Path(sys.executable).parent / "gunicorn"),
              ["gunicorn", "--config", str(conf), "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
               settings.app.wsgi], {**os.environ, **env})


def demo_hints(url: str) -> str:
    return f"API docs: {url}docs\ntry: curl '{url}api/v1/similar?word=fire&topn=5'"


# The demo's model is made here when a task needs it (fab deploy, fab render), whatever the target.
tasks.BUILDABLE.append(tasks.Buildable(DEMO_MODEL, lambda: build_model(Context()), demo_hints))
