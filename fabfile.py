"""Fabric tasks. `fab --list` shows them; `fab --help TASK` shows a task's options.

Today they run the demo on this machine; deploy tasks (`fab deploy`, `fab rollback`, ...) come
with the deploy library (deploy/).
"""
from __future__ import annotations

import os
import secrets
import shlex
import sys
from pathlib import Path

from fabric import task

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
    env = {
        "FLASK_MODEL_PATH": str(DEMO_MODEL),
        "FLASK_SECRET_KEY": secret_key(),
        "MODELHOST_BIND": f"127.0.0.1:{port}",
        "MODELHOST_WORKERS": str(workers),
    }
    print(f"serving on http://127.0.0.1:{port}/  (API docs: http://127.0.0.1:{port}/docs)\n"
          f"try: curl 'http://127.0.0.1:{port}/api/v1/similar?word=fire&topn=5'")
    os.chdir(ROOT)  # gunicorn reads ./gunicorn.conf.py
    os.execve(str(Path(sys.executable).parent / "gunicorn"), ["gunicorn", "app:create_app()"],
              {**os.environ, **env})
