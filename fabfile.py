"""Fabric tasks. `fab --list` shows them; `fab --help TASK` shows a task's options.

Only this file prints to the user; the deploy library (deploy/) raises errors that say what is
wrong, and they are shown here as one message and a non-zero exit.
"""
from __future__ import annotations

import os
import secrets
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from fabric import task
from invoke.exceptions import Exit

from deploy import settings as deploy_settings
from deploy.facts import FactsError, gather, parse_facts
from deploy.layout import local_layout, system_layout
from deploy.render import README_TITLE, RenderError, plan_app, render as render_files, standalone_gunicorn_conf
from deploy.target import CommandFailed, Target
from deploy.validate import ValidationError, check_rendered
from deploy.workers import ModelSizeError

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
    print(f"serving on http://127.0.0.1:{port}/  (API docs: http://127.0.0.1:{port}/docs)\n"
          f"try: curl 'http://127.0.0.1:{port}/api/v1/similar?word=fire&topn=5'")
    os.chdir(ROOT)
    os.execve(str(Path(sys.executable).parent / "gunicorn"),
              ["gunicorn", "--config", str(conf), "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
               settings.app.wsgi], {**os.environ, **env})


def host_facts(c, facts_file: str | None):
    """This machine's facts (or a captured FACTS_COMMAND output, to render for another host)."""
    return parse_facts(Path(facts_file).read_text()) if facts_file else gather(Target(c))


def prepare_output(out: Path) -> None:
    """Refuse to write over anything but an earlier render; an earlier render is replaced whole."""
    if out.exists() and any(out.iterdir()):
        readme = out / "README.md"
        if not (readme.is_file() and readme.read_text().startswith(README_TITLE)):
            raise Exit(f"error: {out} is not empty and is not an earlier `fab render` output; "
                       "choose an empty or new directory", code=2)
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


@task(iterable=["settings"], help={
    "out": "directory to write the configs into (new, empty, or an earlier render, which is replaced)",
    "settings": "deploy.toml of an app (default ./deploy.toml); repeat to render several apps for one host",
    "target": "local (this machine, no root; the default) or system (a Debian/Ubuntu/Pi OS host's paths)",
    "facts": "a file with the output of deploy.facts.FACTS_COMMAND from the host to render for",
    "check": "validate with nginx -t, supervisor's parser, gunicorn --check-config, systemd-analyze first",
    "live": "the color nginx sends traffic to: blue (default) or green"})
def render(c, out, settings=None, target="local", facts=None, check=False, live="blue"):
    """Render every config of the target (nginx, supervisor or systemd, gunicorn) into OUT, with a README."""
    if target not in ("local", "system"):
        raise Exit(f"error: --target {target}: must be local or system", code=2)
    try:
        host = host_facts(c, facts)
        apps = []
        for path in settings or [ROOT / deploy_settings.SETTINGS_FILE]:
            loaded = deploy_settings.load(path)
            layout = local_layout(loaded) if target == "local" else system_layout(loaded)
            base_dir = Path(path).resolve().parent
            if loaded.model.size_mb == "auto" and (base_dir / loaded.model.path).resolve() == DEMO_MODEL:
                build_model(c)  # the worker rule needs the demo model's size
            apps.append(plan_app(loaded, layout, host, base_dir))
        files = render_files(apps, host, live)
        print(f"host: {host.describe()}")
        for app in apps:
            print(f"{app.layout.app} workers: {app.plan.explanation}")
        if check:
            with tempfile.TemporaryDirectory(prefix="modelhost-check-") as scratch:
                for line in check_rendered(Target(c), apps, host, Path(scratch), live):
                    print(f"checked: {line}")
    except (deploy_settings.SettingsError, FactsError, ModelSizeError, RenderError, ValidationError,
            CommandFailed, OSError) as exc:
        raise Exit(f"error: {exc}", code=1) from None
    out = Path(out)
    prepare_output(out)
    for file in files:
        (out / file.path).parent.mkdir(parents=True, exist_ok=True)
        (out / file.path).write_text(file.content)
    print(f"wrote {len(files)} files to {out}; {out / 'README.md'} says where each one goes")
