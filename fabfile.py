"""Fabric tasks. `fab --list` shows them; `fab --help TASK` shows a task's options.

Only this file prints to the user; the deploy library (deploy/) raises errors that say what is
wrong, and they are shown here as one message and a non-zero exit.
"""
from __future__ import annotations

import functools
import os
import secrets
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from fabric import task
from invoke.exceptions import Exit

from deploy import commands, settings as deploy_settings
from deploy.deployment import DeployError, Deployment, Step
from deploy.facts import FactsError, gather, parse_facts
from deploy.layout import local_layout, system_layout
from deploy.render import README_TITLE, RenderError, plan_app, render as render_files, standalone_gunicorn_conf
from deploy.source import SourceError, read_model, read_source
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


# Errors the deploy library raises: each message says what is wrong and what to do.
ERRORS = (deploy_settings.SettingsError, FactsError, ModelSizeError, RenderError, ValidationError, CommandFailed,
          SourceError, DeployError, OSError)


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
    except ERRORS as exc:
        raise Exit(f"error: {exc}", code=1) from None
    out = Path(out)
    prepare_output(out)
    for file in files:
        (out / file.path).parent.mkdir(parents=True, exist_ok=True)
        (out / file.path).write_text(file.content)
    print(f"wrote {len(files)} files to {out}; {out / 'README.md'} says where each one goes")


# ---- deploying: with no -H, to this machine (the local target) -----------------------------------

def print_step(step: Step) -> None:
    print(f"  {step.name:<14}{'changed' if step.changed else 'unchanged':<11}{step.seconds:6.1f} s   {step.detail}",
          flush=True)


def local_deployment(c, settings_file: str | None) -> Deployment:
    """The app of deploy.toml on this machine; `fab -H host` comes with remote deploys."""
    if hasattr(c, "host"):
        raise Exit("error: deploying to a host over SSH (-H) is not built yet; without -H, the tasks act on "
                   "this machine", code=2)
    settings = deploy_settings.load(settings_file or ROOT / deploy_settings.SETTINGS_FILE)
    return Deployment(Target(c), settings, local_layout(settings), report=print_step)


def task_errors(function):
    """Runs a task body; a deploy library error ends it with its message and exit status 1."""
    @functools.wraps(function)
    def run(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except ERRORS as exc:
            raise Exit(f"error: {exc}", code=1) from None
    return run


SETTINGS_HELP = "the app's deploy.toml (default ./deploy.toml); the app is the git checkout holding it"


@task(help={"settings": SETTINGS_HELP,
            "allow_dirty": "deploy uncommitted changes to tracked files (as a commit of their own)"})
@task_errors
def deploy(c, settings=None, allow_dirty=False):
    """Deploy the app's git revision: a new release, started beside the old one, live once ready."""
    started = time.monotonic()
    d = local_deployment(c, settings)
    base_dir = Path(d.settings.source).resolve().parent
    model_path = (base_dir / d.settings.model.path).resolve()
    if model_path == DEMO_MODEL:
        build_model(c)
    source = read_source(Target(c), base_dir, allow_dirty)
    model = read_model(model_path)
    print(f"deploying {d.settings.app.name} {source.label} to {d.layout.host_root} (this machine)", flush=True)
    release = d.deploy(source, model, dict(os.environ))
    changed = sum(step.changed for step in d.steps)
    url = f"http://127.0.0.1:{d.settings.local.port}"
    print(f"{release.id} is live: {changed} of {len(d.steps)} steps changed something, "
          f"{time.monotonic() - started:.1f} s\n"
          f"open {url}/   (API docs: {url}/docs)\n"
          f"try: curl '{url}/api/v1/similar?word=fire&topn=5'")


@task(help={"settings": SETTINGS_HELP, "to": "the release to go back to (default: the one before the live one)"})
@task_errors
def rollback(c, settings=None, to=None):
    """Make the previous release live again (the same gated cutover as a deploy)."""
    release = local_deployment(c, settings).rollback(to)
    print(f"{release.id} is live again")


@task(help={"settings": SETTINGS_HELP})
@task_errors
def status(c, settings=None):
    """Show what runs: supervisord, both gunicorn programs, the live release, readiness, nginx."""
    d = local_deployment(c, settings)
    s = d.status()
    width = max(len(p.name) for p in s.programs) + 2
    print(f"{d.settings.app.name} on {s.target}: {s.url}")
    print(f"  {'supervisord':<{width}}{'pid ' + str(s.supervisord) if s.supervisord else 'not running'}")
    for program in s.programs:
        live = " (live)" if program.color == s.live else ""
        pid = f"pid {program.pid}, up {program.uptime}" if program.pid else ""
        print(f"  {program.name:<{width}}{program.state:<9}{pid:<24}release {program.release or '-'}{live}")
    if s.release:
        print(f"  {'release':<{width}}{s.release.id}: revision {s.release.revision}, model {s.release.model_version}, "
              f"{s.release.workers} workers ({s.release.explanation})")
    print(f"  {'ready':<{width}}{s.ready or 'no live program'}")
    print(f"  {'nginx':<{width}}{'pid ' + str(s.nginx) if s.nginx else 'not running'}"
          + (f"; /readyz through nginx: {s.through_nginx}" if s.nginx else ""))


@task(help={"settings": SETTINGS_HELP})
@task_errors
def releases(c, settings=None):
    """List the releases on the target, newest first, with the live and idle colors marked."""
    d = local_deployment(c, settings)
    found = d.releases()
    if not found:
        print("no releases yet: fab deploy makes one")
        return
    pointers = d.pointers()
    results = {h["release"]: h["result"] for h in d.history()}
    for release in reversed(found):
        marks = [f"{color}{' (live)' if color == pointers.live else ''}" for color, id in pointers.release.items()
                 if id == release.id]
        print(f"  {release.id:<32}model {release.model_version:<14}{release.workers} workers  "
              f"{results.get(release.id, 'never live'):<11}{', '.join(marks)}")


@task(help={"settings": SETTINGS_HELP, "what": "app (the live gunicorn, default), nginx, or supervisord",
            "lines": "how many lines (default 50)", "follow": "keep printing new lines (Ctrl-C stops)"})
@task_errors
def logs(c, settings=None, what="app", lines=50, follow=False):
    """Show the last lines of the live app's log (or nginx's, or supervisord's)."""
    d = local_deployment(c, settings)
    argv = commands.tail(d.log_files(what), int(lines), follow)
    if follow:
        d.target.stream(argv)
    else:
        result = d.run(argv, check=False)
        print((result.stdout + result.stderr).rstrip())


@task(help={"settings": SETTINGS_HELP})
@task_errors
def stop(c, settings=None):
    """Stop everything the local target started: both gunicorn programs, supervisord, nginx."""
    pids = local_deployment(c, settings).stop()
    print(f"stopped {len(pids)} processes ({', '.join(map(str, pids))})" if pids else "nothing was running")
