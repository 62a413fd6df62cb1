"""Deploy, roll back, inspect and stop an app on a target: releases and a blue/green cutover.

On the target (everything under the layout's root):

    releases/<time>-<rev>/   the app's files at a git revision, its gunicorn.conf.py, release.json,
                             venv -> ../../venvs/<lock>, model -> ../../models/<checksum>
    venvs/<key>/             one Python environment per dependency lock (and Python, architecture)
    models/<checksum>/       one copy of each model artifact
    blue, green              the release each gunicorn program runs
    current -> blue|green    the live color, whose program nginx sends traffic to
    deploy.lock/             exists while a deploy runs; holder says whose
    history.jsonl            one line per deploy or rollback

A deploy makes (or finds) the release for the revision, starts the idle color on it, waits until
its /readyz answers 200 over its own socket and the smoke query answers as expected, then points
nginx at it (nginx -t, graceful reload), waits for nginx's old workers to finish, and stops the old
color gracefully. If the new color never gets ready, it is stopped and nothing else changes: the
old color keeps serving. Rollback is the same cutover to an earlier release.

Every step goes through `Target` (deploy/target.py), so the same code serves this machine and a host.
"""
from __future__ import annotations

import contextlib
import difflib
import functools
import getpass
import json
import os
import re
import secrets
import socket
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from invoke import Context

from deploy import commands
from deploy.facts import HostFacts, gather
from deploy.layout import COLORS, Layout
from deploy.render import App, plan_app, render, render_gunicorn_conf
from deploy.workers import WorkerPlan
from deploy.source import LOCK_FILE, Model, Source, archive, digest
from deploy.target import CommandFailed, Target

LOG_LINES = 20  # of a failed program's log, in the error


class DeployError(Exception):
    """A deploy step failed; the message says what happened, what is still serving, and what to do."""


class DeployLocked(DeployError):
    """Another deploy holds the target's deploy lock."""


@dataclass
class Step:
    """One step's outcome, as `fab` prints it: what it did, whether anything changed, how long it took."""
    name: str
    detail: str = ""
    changed: bool = False
    seconds: float = 0.0


@dataclass(frozen=True)
class Release:
    id: str  # <UTC time>-<revision>: sorts by age
    revision: str
    identity: str  # the same code, environment, model, settings and secrets give the same identity
    venv: str
    model: str
    model_version: str
    workers: int
    explanation: str
    created: str

    @classmethod
    def parse(cls, text: str) -> Release:
        return cls(**{k: v for k, v in json.loads(text).items() if k in cls.__dataclass_fields__})


@dataclass
class Program:
    name: str
    color: str
    state: str  # supervisor's: RUNNING, STOPPED, STARTING, BACKOFF, FATAL, ...; DOWN without supervisord
    pid: int | None = None
    uptime: str = ""
    release: str | None = None


@dataclass(frozen=True)
class Pointers:
    live: str | None  # the color current points at
    release: dict[str, str | None]  # the release id each color points at

    @property
    def live_release(self) -> str | None:
        return self.release[self.live] if self.live else None


@dataclass
class Status:
    target: str
    url: str
    supervisord: int | None
    nginx: int | None
    live: str | None
    release: Release | None
    programs: list[Program] = field(default_factory=list)
    ready: str = ""  # the live color's /readyz answer over its socket
    through_nginx: str = ""  # /readyz through nginx


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Deployment:
    """One app on one target. report(step) is called as each step ends (fab prints it)."""

    def __init__(self, target: Target, settings, layout: Layout, report: Callable[[Step], None] = lambda s: None):
        self.target, self.settings, self.layout, self.report = target, settings, layout, report
        self.steps: list[Step] = []  # every step reported so far
        self.python = "python3"
        self.local = Target(Context())  # this machine, where the source and the model are

    @functools.cached_property
    def facts(self) -> HostFacts:
        return gather(self.target)

    @functools.cached_property
    def nginx_binary(self) -> str:
        return self.locate_nginx() or "nginx"

    @property
    def system(self) -> bool:
        """A host with system services (not the local target, which runs its own)."""
        return self.layout.kind == "system"

    def service(self, name: str, action: str, **kwargs):
        return self.run(commands.service(self.facts.systemd, name, action), **kwargs)

    @property
    def tls(self) -> bool:
        """The site is served over HTTPS (on a host with [nginx] tls; plain HTTP redirects there)."""
        return self.system and self.settings.nginx.tls

    @property
    def site_address(self) -> tuple[str, int]:
        """Where the target itself reaches the site's nginx: its TLS listen with [nginx] tls, else HTTP."""
        return self.layout.tls_address if self.tls else self.layout.http_address

    @property
    def url(self) -> str:
        """The site's address as a browser reaches it."""
        scheme, default = ("https", 443) if self.tls else ("http", 80)
        address, port = self.site_address
        host = self.settings.nginx.server_names[0] if self.tls else (
            self.target.name if self.target.remote and not self.settings.nginx.address else address)
        return f"{scheme}://{host}{'' if port == default else f':{port}'}{self.settings.nginx.prefix}/"

    # ---- small helpers ----------------------------------------------------------------------

    def run(self, argv: list[str], **kwargs):
        return self.target.run(argv, **kwargs)

    @contextlib.contextmanager
    def step(self, name: str):
        step = Step(name)
        started = time.monotonic()
        yield step
        step.seconds = time.monotonic() - started
        self.steps.append(step)
        self.report(step)

    def exists(self, path: Path) -> bool:
        return self.run(["test", "-e", str(path)], check=False).exited == 0

    def link(self, target: str | Path, link: Path) -> None:
        for argv in commands.symlink(target, link):
            self.run(argv)

    def pointers(self) -> Pointers:
        """Where current, blue and green point, read in one command."""
        script = 'for l in current blue green; do printf "%s=%s\\n" "$l" "$(readlink "$1/$l")"; done'
        out = self.run(["sh", "-c", script, "sh", str(self.layout.root)]).stdout
        links = dict(line.split("=", 1) for line in out.splitlines())
        live = links.get("current") if links.get("current") in COLORS else None
        return Pointers(live, {color: links.get(color, "").rsplit("/", 1)[-1] or None for color in COLORS})

    def releases(self) -> list[Release]:
        """Every complete release on the target, oldest first."""
        out = self.run(commands.cat_all(self.layout.releases, "release.json"), check=False).stdout
        found = [Release.parse(line) for line in out.splitlines() if line.strip()]
        return sorted(found, key=lambda r: r.id)

    def history(self) -> list[dict]:
        text = self.target.read(self.layout.history) or ""
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def who(self) -> str:
        """Who acts: user@machine of whoever runs fab, and the SSH user on a host."""
        ssh_user = getattr(self.target.context, "user", None) if self.target.remote else None
        return f"{getpass.getuser()}@{socket.gethostname()}" + (f" as {ssh_user}" if ssh_user else "")

    def record(self, action: str, release: str, color: str | None, result: str) -> None:
        line = json.dumps({"time": now(), "user": self.who(),
                           "action": action, "release": release, "color": color, "result": result})
        self.run(["sh", "-c", 'printf "%s\\n" "$1" >> "$2"', "sh", line, str(self.layout.history)])

    # ---- the lock -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self, action: str):
        """Holds the target's deploy lock; a second deploy is refused, naming the holder."""
        self.run(["mkdir", "-p", str(self.layout.root)])
        if self.run(["mkdir", str(self.layout.lock)], check=False).exited != 0:
            holder = (self.target.read(self.layout.lock / "holder") or "unknown (no holder file yet)").strip()
            raise DeployLocked(
                f"another deploy is running on {self.target.name}: {holder}. Wait for it to finish; if no deploy "
                f"is running (it was killed), remove the lock: rm -r {self.layout.lock}")
        try:
            self.target.write(self.layout.lock / "holder", f"{action} by {self.who()} (pid {os.getpid()}) since {now()}\n")
            yield
        finally:
            self.run(["rm", "-rf", str(self.layout.lock)], check=False)

    def break_lock(self) -> str | None:
        """Remove a lock left by a killed deploy; returns who held it (None: there was no lock)."""
        if not self.exists(self.layout.lock):
            return None
        holder = (self.target.read(self.layout.lock / "holder") or "no holder file").strip()
        self.run(["rm", "-rf", str(self.layout.lock)])
        return holder

    # ---- what a release needs ---------------------------------------------------------------

    def locate_nginx(self) -> str:
        """nginx's path on the target ("" when it is not installed); /usr/sbin is not on every PATH."""
        return self.run(["sh", "-c", "command -v nginx || ls /usr/sbin/nginx"], check=False).stdout.strip()

    def ensure_prerequisites(self) -> None:
        """nginx and python3 with venv on the target; nginx is installed with apt when root or
        passwordless sudo allows it."""
        with self.step("prerequisites") as step:
            if self.system:
                self.check_provisioned(step)
                return
            if self.run([self.python, "-c", "import venv, ensurepip"], check=False).exited != 0:
                raise DeployError(f"python3 with venv is missing on {self.target.name}: install it with "
                                  "`sudo apt-get install -y python3-venv`, then deploy again")
            found = self.nginx_binary
            if found == "nginx":
                if self.run(["id", "-u"]).stdout.strip() == "0":
                    sudo = []
                elif self.run(["sudo", "-n", "true"], check=False).exited == 0:
                    sudo = ["sudo", "-n"]
                else:
                    raise DeployError(f"nginx is not installed on {self.target.name}: install it with "
                                      "`sudo apt-get install -y nginx`, then deploy again")
                apt = [*sudo, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-q", "-y"]
                if self.run([*apt, "install", "nginx"], check=False, timeout=900).exited != 0:
                    self.run([*apt, "update"], timeout=900)
                    self.run([*apt, "install", "nginx"], timeout=900)
                del self.nginx_binary
                found = self.nginx_binary
                step.changed = True
            step.detail = f"nginx {found}" + (" (installed with apt)" if step.changed else "") + f", {self.python}"

    def check_process_manager(self) -> None:
        if self.systemd_units and not self.facts.systemd:
            raise DeployError(f'[app] process_manager = "systemd", but systemd does not run on {self.target.name} '
                              f'(PID 1 is {self.facts.init or "unknown"}): set process_manager = "supervisor"')

    def check_provisioned(self, step: Step) -> None:
        """A host has what `fab provision` installs: the app's user, nginx, supervisor, python3 with venv."""
        self.check_process_manager()
        script = ('id -u "$1" >/dev/null 2>&1 || echo "the user $1"; '
                  'id -nG "$3" 2>/dev/null | grep -qw "$1" || echo "$3 in group $1"; '
                  '[ "$4" = systemd ] || command -v supervisorctl >/dev/null || echo supervisor; '
                  '"$2" -c "import venv, ensurepip" 2>/dev/null || echo python3-venv')
        missing = self.run(["sh", "-c", script, "sh", self.layout.user, self.python, self.layout.nginx_group,
                            self.layout.process_manager]).stdout.splitlines()
        if self.nginx_binary == "nginx":
            missing.append("nginx")
        if missing:
            raise DeployError(f"{self.target.name} is not provisioned ({', '.join(missing)} missing): run "
                              f"fab -H {self.target.name} provision, then deploy again")
        step.detail = (f"provisioned: user {self.layout.user}, {self.nginx_binary}, "
                       f"{self.layout.process_manager}, {self.python}")

    def ensure_directories(self) -> None:
        layout = self.layout
        with self.step("directories") as step:
            done = self.run(commands.ensure_directories(layout.directories())).stdout.splitlines()
            made = [line.split()[1] for line in done if line.startswith("made ")]
            fixed = [line.split()[1] for line in done if line.startswith("set ")]
            step.changed = bool(done)
            step.detail = "; ".join(part for part in (
                f"made {len(made)} ({', '.join(made[:3])}{', ...' if len(made) > 3 else ''})" if made else "",
                f"set owner and mode of {', '.join(fixed)}" if fixed else "") if part) or (
                f"all there under {layout.host_root or layout.root}")

    def ensure_secrets(self, environ: dict) -> str:
        """The env file holds a value for every secret; returns a digest of it (part of the release identity).

        A value comes from the environment `fab` runs in, else stays as it is in the file; a missing
        FLASK_SECRET_KEY is made up once (random).
        """
        path = self.layout.env_file
        with self.step("secrets") as step:
            current = {}
            for line in (self.target.read(path) or "").splitlines():
                name, sep, value = line.partition("=")
                if sep and not name.startswith("#"):
                    current[name.strip()] = value.strip()
            wanted, made = dict(current), []
            for name in self.settings.app.secrets:
                if environ.get(name):
                    wanted[name] = environ[name]
                elif not wanted.get(name):
                    if name != "FLASK_SECRET_KEY":
                        raise DeployError(f"secret {name} has no value on {self.target.name}: give it once, in the "
                                          f"environment of the deploy ({name}=... fab deploy); it is kept in {path}")
                    wanted[name] = secrets.token_hex(32)
                    made.append(name)
            text = "".join(f"{name}={value}\n" for name, value in sorted(wanted.items()))
            owner = self.layout.user if self.system else None
            step.changed = self.target.write(path, text, mode=0o600, owner=owner)
            if not step.changed:  # a file written by hand keeps its content, not a looser mode or owner
                self.run(["sh", "-c", 'chmod 600 "$1" && { [ -z "$2" ] || chown "$2" "$1"; }', "sh", str(path),
                          owner or ""])
            names = ", ".join(self.settings.app.secrets) or "none"
            step.detail = (f"{path} ({names}; made {', '.join(made)})" if made else
                           f"{path} updated ({names})" if step.changed else f"{path} ({names})")
        return digest(text)

    def ensure_model(self, model: Model, scratch: Path) -> str:
        """The model artifact stored once on the target, named by its checksum."""
        key = model.sha256[:16]
        stored = self.layout.models / key
        with self.step("model") as step:
            step.detail = f"{model.version} ({model.size_mb} MB) in {stored}"
            if self.exists(stored / "manifest.json"):
                return key
            tar = scratch / "model.tar"
            # Readable by the app's user whatever the modes here (a private temporary directory, say).
            self.local.run(["tar", "-cf", str(tar), "--owner=0", "--group=0", "--mode=u+rwX,go+rX,go-w",
                            "-C", str(model.path), "."])
            self.unpack(tar, stored)
            step.changed = True
        return key

    def unpack(self, tar: Path, destination: Path) -> None:
        """A tar file from this machine, unpacked at destination on the target (all or nothing)."""
        partial = destination.with_name(f".{destination.name}.partial")
        self.run(["rm", "-rf", str(partial)])
        self.run(["mkdir", "-p", str(partial)])
        with self.target.staged(tar) as staged:
            self.run(["tar", "-xf", str(staged), "--no-same-owner", "--no-same-permissions", "-C", str(partial)])
        self.run(["mv", "-T", str(partial), str(destination)])

    def ensure_venv(self, source: Source, facts: HostFacts) -> str:
        """A Python environment for the dependency lock; reused while the lock (and Python) stay the same."""
        key = digest(source.lock, facts.python_version, facts.architecture)
        venv = self.layout.venvs / key
        done = venv / ".complete"
        with self.step("python") as step:
            step.detail = f"{venv} ({LOCK_FILE} unchanged, pip skipped)"
            if self.exists(done):
                return key
            # Made in its final place (a venv's scripts name their path), finished when .complete exists.
            self.run(["rm", "-rf", str(venv)])
            try:
                self.run([self.python, "-m", "venv", str(venv)])
            except CommandFailed as exc:
                raise DeployError(f"cannot make a Python environment on {self.target.name}: {exc}\n"
                                  "install python3-venv (apt-get install python3-venv) and deploy again") from None
            self.target.write(venv / LOCK_FILE, source.lock)
            pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
            try:
                self.run([*pip, "-r", str(venv / LOCK_FILE)], timeout=1800)
            except CommandFailed as exc:
                raise DeployError(f"pip could not install {LOCK_FILE} on {self.target.name}: {exc}") from None
            self.run(["touch", str(done)])
            step.changed = True
            step.detail = f"{venv} (installed {LOCK_FILE})"
        return key

    def ensure_release(self, source: Source, app: App, venv: str, model: str, model_version: str,
                       secrets_digest: str, scratch: Path) -> Release:
        """The release for this revision, environment, model and settings: found, or made."""
        gunicorn_conf = render_gunicorn_conf(app)
        settings = {k: vars(v) for k, v in vars(self.settings).items() if k != "source"}
        identity = digest(source.tree, venv, model, settings, secrets_digest)
        with self.step("release") as step:
            for release in self.releases():
                if release.identity == identity:
                    step.detail = f"{release.id} (already made: same code, environment, model and settings)"
                    return release
            release = Release(
                id=datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + f"-{source.label}",
                revision=source.label, identity=identity, venv=venv, model=model, model_version=model_version,
                workers=app.plan.workers, explanation=app.plan.explanation, created=now())
            path = self.layout.releases / release.id
            self.unpack(archive(self.local, source, scratch / "release.tar"), path)
            self.link(f"../../venvs/{venv}", path / "venv")
            self.link(f"../../models/{model}", path / "model")
            self.target.write(path / "gunicorn.conf.py", gunicorn_conf)
            self.target.write(path / "release.json", json.dumps(asdict(release)) + "\n")
            step.changed = True
            step.detail = f"{release.id} ({release.workers} workers)"
        return release

    # ---- processes ----------------------------------------------------------------------------

    @property
    def systemd_units(self) -> bool:
        """The programs are systemd units ([app] process_manager = "systemd" on a host), not supervisor's."""
        return commands.systemd_manager(self.layout)

    def supervisord_pid(self) -> int | None:
        """supervisord's pid; with systemd units, systemd's (PID 1)."""
        if self.systemd_units:
            return 1
        result = self.run(commands.supervisorctl(self.layout, "pid"), check=False)
        return int(result.stdout) if result.exited == 0 and result.stdout.strip().isdigit() else None

    def program(self, color: str) -> Program:
        name = commands.program(self.layout, color)
        result = self.run(commands.program_status(self.layout, color), check=False)
        if self.systemd_units:
            unit = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
            pid = int(unit.get("MainPID", "0") or 0)
            since = unit.get("ActiveEnterTimestamp", "")
            return Program(name, color, commands.UNIT_STATES.get(unit.get("ActiveState", ""), "DOWN"), pid or None,
                           f"since {since}" if pid and since else "")
        parts = result.stdout.split(None, 2)
        if len(parts) < 2 or parts[0] != name:
            return Program(name, color, "DOWN")
        pid = re.search(r"pid (\d+)", result.stdout)
        uptime = re.search(r"uptime (\S+)", result.stdout)
        return Program(name, color, parts[1], int(pid.group(1)) if pid else None, uptime.group(1) if uptime else "")

    def nginx_pid(self) -> int | None:
        text = (self.target.read(commands.nginx_pid_file(self.layout)) or "").strip()
        if text.isdigit() and self.run(commands.alive(int(text)), check=False).exited == 0:
            return int(text)
        return None

    def wait(self, done: Callable[[], bool], seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while not done():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)
        return True

    def log_since(self, color: str, mark: str) -> str:
        """The last lines a program logged after mark (log_mark's)."""
        if self.systemd_units:
            out = self.run(commands.journal(self.layout, color, LOG_LINES, since=mark), check=False).stdout
        else:
            out = self.run(["tail", "-c", f"+{int(mark) + 1}", str(self.layout.log_dir / f"{color}.log")],
                           check=False).stdout
        lines = out.splitlines()[-LOG_LINES:]
        return "\n".join(f"    {line}" for line in lines) or "    (nothing)"

    def log_mark(self, color: str) -> str:
        """Where a program's log ends now: the log file's size, or the time (the journal)."""
        if self.systemd_units:
            return self.run(["date", "+%Y-%m-%d %H:%M:%S"]).stdout.strip()
        out = self.run(["stat", "-c", "%s", str(self.layout.log_dir / f"{color}.log")], check=False).stdout.strip()
        return out if out.isdigit() else "0"

    def log_command(self, what: str, lines: int, follow: bool = False) -> list[str]:
        """The command that shows the last lines of the live app's log (or nginx's, or supervisord's)."""
        if what in ("app", "gunicorn") and self.systemd_units:
            return commands.journal(self.layout, self.pointers().live or COLORS[0], lines, follow)
        return commands.tail(self.log_files(what), lines, follow)

    def ask(self, paths: list[str], wait: float = 0, color: str | None = None) -> list[dict]:
        """Answers of gunicorn (a color's socket) or, without a color, of nginx, asked on the target."""
        if color:
            argv = commands.probe(self.python, paths=paths, socket=self.layout.socket(color), wait=wait)
        else:  # the site as clients see it: its prefix, its first name, HTTPS if it has it
            address, port = self.site_address
            argv = commands.probe(self.python, paths=[self.settings.nginx.prefix + p for p in paths],
                                  address=address, port=port, tls=self.tls,
                                  host=self.settings.nginx.server_names[0], wait=wait)
        out = self.run(argv, timeout=wait + 60).stdout
        return [json.loads(line) for line in out.splitlines()]

    # ---- configs ------------------------------------------------------------------------------


    def files(self, app: App, facts: HostFacts, live: str) -> dict[str, dict[Path, str]]:
        """The target's config files for a live color, by who reads them: "nginx", and "programs"
        (supervisor's or systemd's). Not the release's own gunicorn.conf.py, nor the host's boot
        files (provision writes those)."""
        grouped: dict[str, dict[Path, str]] = {"nginx": {}, "programs": {}}
        for file in render([app], facts, live):
            if file.destination is None or file.destination == self.layout.gunicorn_conf(live):
                continue
            if "supervisor" in file.destination.parts or file.destination.parent == self.layout.systemd_dir:
                grouped["programs"][file.destination] = file.content
            elif file.destination.is_relative_to(self.layout.nginx_dir):
                grouped["nginx"][file.destination] = file.content
        return grouped

    def write_files(self, files: dict[Path, str]) -> dict[Path, str | None]:
        """Writes the files; returns the earlier content of each one that changed (None: it was new)."""
        earlier = {}
        for path, text in files.items():
            before = self.target.read(path)
            if before != text:
                self.target.write(path, text)
                earlier[path] = before
        return earlier

    def restore(self, earlier: dict[Path, str | None]) -> None:
        for path, text in earlier.items():
            if text is None:
                self.run(["rm", "-f", str(path)])
            else:
                self.target.write(path, text)

    def ensure_programs(self, files: dict[Path, str], idle: list[str], live: str) -> bool:
        """The process manager runs with these program files; returns whether anything changed.

        supervisord (started if it is down): only the idle colors' programs are updated (updating
        a running program restarts it). systemd: the unit file is loaded (daemon-reload restarts
        nothing) and only the live color is enabled, to start at boot."""
        earlier = self.write_files(files)
        if self.systemd_units:
            if earlier:
                self.run(["systemctl", "daemon-reload"])
            for color in COLORS:
                enabled = self.run(["systemctl", "is-enabled", commands.program(self.layout, color)], check=False)
                if (enabled.stdout.strip() == "enabled") != (color == live):
                    self.run(["systemctl", "enable" if color == live else "disable", "--quiet",
                              commands.program(self.layout, color)])
            return bool(earlier)
        if self.supervisord_pid() is None:
            if self.system:
                self.service("supervisor", "start", timeout=120)
            else:
                self.run(commands.supervisord_start(self.layout))
            if not self.wait(lambda: self.supervisord_pid() is not None, 30):
                raise DeployError(f"supervisord did not start: see {self.log_files('supervisord')[0]}")
            return True
        if idle:
            reread = self.run(commands.supervisorctl(self.layout, "reread"), check=False)
            if reread.exited != 0 or "ERROR" in reread.stdout:
                self.restore(earlier)
                raise DeployError(f"supervisor refused the program files in {self.layout.supervisor_dir} (the old "
                                  f"ones are back):\n{(reread.stdout + reread.stderr).strip()}")
            for color in idle:
                self.run(commands.supervisorctl(self.layout, "update", commands.program(self.layout, color)))
        return bool(earlier)

    def enable_sites(self, files: dict[Path, str]) -> dict[Path, str | None]:
        """Debian's nginx reads sites-enabled: a link to each site file; returns the new links (as
        write_files does: None, so restore removes them)."""
        made = {}
        for path in files:
            link = self.layout.nginx_enabled / path.name if path.parent == self.layout.nginx_sites else None
            if link and not self.exists(link):
                self.link(path, link)
                made[link] = None
        return made

    def reload_nginx_if_running(self) -> None:
        if self.nginx_pid():
            self.run(commands.nginx(self.layout, self.nginx_binary, "-s", "reload"))

    def nginx_test(self) -> None:
        result = self.run(commands.nginx(self.layout, self.nginx_binary, "-t", "-q"), check=False)
        if result.exited != 0:
            raise DeployError(f"nginx -t refused the new configuration:\n{(result.stdout + result.stderr).strip()}")

    def ensure_nginx(self, files: dict[Path, str]) -> str:
        """nginx runs with these files: checked with nginx -t first (the old files are put back if it
        fails), then a graceful reload, waiting until the old workers have finished their requests."""
        earlier = self.write_files(files)
        if self.system:
            earlier.update(self.enable_sites(files))
        try:
            self.nginx_test()
        except DeployError:
            self.restore(earlier)
            raise
        master = self.nginx_pid()
        if master is None:
            start = (commands.service(self.facts.systemd, "nginx", "start") if self.system else
                     commands.nginx(self.layout, self.nginx_binary))
            result = self.run(start, check=False, timeout=120)
            if result.exited != 0 or not self.wait(lambda: self.nginx_pid() is not None, 10):
                self.restore(earlier)
                said = "\n".join(dict.fromkeys((result.stdout + result.stderr).strip().splitlines()))  # it retries
                setting = "[nginx] port or address" if self.system else "[local] port"
                fix = (f"\nanother program listens on {self.layout.http_listen}: stop it, or set {setting} in "
                       "deploy.toml" if "Address already in use" in said else "")
                raise DeployError(f"nginx did not start:\n{said}{fix}")
            return "started"
        if not earlier:
            return ""
        old_workers = self.run(commands.children(master), check=False).stdout.split()
        self.run(commands.nginx(self.layout, self.nginx_binary, "-s", "reload"))
        gone = lambda: not set(old_workers) & set(self.run(commands.children(master), check=False).stdout.split())
        if not self.wait(gone, self.settings.gunicorn.timeout + 10):
            raise DeployError(f"nginx's old workers ({', '.join(old_workers)}) did not finish within "
                              f"{self.settings.gunicorn.timeout + 10} s after the reload")
        return "reloaded"

    # ---- readiness ----------------------------------------------------------------------------

    def wait_ready(self, color: str, release: Release) -> None:
        """Until the color answers /readyz with 200 over its socket and the smoke query as expected."""
        name = commands.program(self.layout, color)
        timeout = self.settings.deploy.ready_timeout
        deadline = time.monotonic() + timeout
        smoke = self.settings.deploy.smoke_path
        paths = ["/readyz"] + ([smoke] if smoke else [])
        answers: list[dict] = []
        while True:
            answers = self.ask(paths, wait=max(0.0, min(5.0, deadline - time.monotonic())), color=color)
            if answers[0]["status"] == 200:
                break
            state = self.program(color).state
            if state in ("FATAL", "EXITED", "STOPPED", "DOWN"):
                raise DeployError(f"{name} stopped before it was ready ({state})")
            if time.monotonic() >= deadline:
                last = answers[0].get("body") or answers[0].get("error", "")
                raise DeployError(f"{name} did not answer /readyz with 200 within {timeout} s "
                                  f"([deploy] ready_timeout); last answer: {answers[0]['status']} {last.strip()[:300]}")
        if smoke:
            problem = smoke_problem(answers[1], release)
            if problem:
                raise DeployError(f"{name} is ready but the smoke query failed: GET {smoke}: {problem}")

    # ---- the cutover --------------------------------------------------------------------------

    def activate(self, release: Release, facts: HostFacts, app: App) -> Step:
        """Make release the live one: start it on the idle color, gate on readiness, switch nginx."""
        layout = self.layout
        pointers = self.pointers()
        live = pointers.live
        with self.step("cutover") as step:
            if live and pointers.live_release == release.id:
                # Already live: only bring back what is not running (after `fab stop`, or a reboot).
                files = self.files(app, facts, live)
                started = self.ensure_programs(files["programs"], idle=[], live=live)
                program = self.program(live)
                if program.state not in ("RUNNING", "STARTING"):
                    self.start(live, release)
                    started = True
                elif program.state == "STARTING" or started:
                    self.wait_ready(live, release)
                    self.wait_running(live)
                nginx = self.ensure_nginx(files["nginx"])
                step.changed = started or bool(nginx)
                step.detail = f"{release.id} is live on {live}" + (" (started it)" if step.changed else "")
                return step
            new = next(c for c in COLORS if c != live) if live else COLORS[0]
            old_release = pointers.live_release
            if self.program(new).state not in ("STOPPED", "EXITED", "FATAL", "DOWN"):
                self.run(commands.programs(layout, "stop", new), timeout=120)
            self.link(f"releases/{release.id}", layout.release(new))
            # Every color but the live one is idle: both of them on a first deploy.
            self.ensure_programs(self.files(app, facts, live or new)["programs"],
                                    idle=[color for color in COLORS if color != live], live=live or new)
            self.start(new, release)
            try:
                self.ensure_nginx(self.files(app, facts, new)["nginx"])
                self.verify()
            except (DeployError, CommandFailed) as exc:
                if live:  # nginx back to the old color first (its files were written; it may have reloaded)
                    # If nginx -t fails here too, nginx never loaded the new files: it still serves the old color.
                    with contextlib.suppress(DeployError, CommandFailed):
                        self.ensure_nginx(self.files(app, facts, live)["nginx"])
                self.stop_program(new)
                serving = f"{old_release} on {live} still serves" if live else "nothing was serving"
                raise DeployError(f"{exc}\nthe release {release.id} was not activated ({new} is stopped); "
                                  f"{serving}") from None
            self.link(new, layout.current)
            if live:
                self.stop_program(live)
                # The old color's program is stopped now: its autostart can change without a restart.
                self.ensure_programs(self.files(app, facts, new)["programs"], idle=[live], live=new)
            step.changed = True
            step.detail = f"{release.id} live on {new}" + (f"; {old_release} on {live} stopped" if live else "")
        return step

    def start(self, color: str, release: Release) -> None:
        """Start a color's program and wait until it is ready; if it is not, stop it and say why."""
        name = commands.program(self.layout, color)
        mark = self.log_mark(color)
        try:
            result = self.run(commands.programs(self.layout, "start", color), check=False, timeout=300)
            if result.exited != 0 and "already started" not in result.stdout:
                raise DeployError(f"{name} did not start: {(result.stdout + result.stderr).strip()}")
            self.wait_ready(color, release)
            self.wait_running(color)
        except DeployError as exc:
            self.stop_program(color)
            raise DeployError(f"{exc}\nthe release {release.id} was not activated; what was serving still is.\n"
                              f"last lines of {self.log_name(color)}:\n{self.log_since(color, mark)}") from None

    def wait_running(self, color: str) -> None:
        """Until supervisor counts the program as started (RUNNING: up for its startsecs)."""
        if not self.wait(lambda: self.program(color).state == "RUNNING", 30):
            raise DeployError(f"{commands.program(self.layout, color)} answered but did not stay up "
                              f"(supervisor says {self.program(color).state})")

    def stop_program(self, color: str) -> None:
        """Stop a color's gunicorn gracefully (TERM: requests in flight finish first)."""
        self.run(commands.programs(self.layout, "stop", color), check=False,
                 timeout=self.settings.gunicorn.graceful_timeout + 60)

    def verify(self) -> str:
        """nginx answers /readyz with 200 on the site's port."""
        answer = self.ask(["/readyz"], wait=10)[0]
        address, port = self.site_address
        where = f"{'https' if self.tls else 'http'}://{address}:{port}{answer['path']}"
        if answer["status"] != 200:
            raise DeployError(f"nginx answered {where} with {answer['status']} "
                              f"{(answer.get('body') or answer.get('error', '')).strip()[:200]}")
        return f"{where} 200 (asked on {self.target.name})"

    # ---- tasks --------------------------------------------------------------------------------

    def deploy(self, source: Source, model: Model, environ: dict, facts: HostFacts | None = None) -> Release:
        """Ship the source and model as a release and make it live; see the module's docstring."""
        with self.locked("deploy"), tempfile.TemporaryDirectory(prefix="modelhost-deploy-") as scratch:
            scratch = Path(scratch)
            facts = facts or gather(self.target)
            self.ensure_prerequisites()
            self.ensure_directories()
            secrets_digest = self.ensure_secrets(environ)
            model_key = self.ensure_model(model, scratch)
            venv = self.ensure_venv(source, facts)
            app = plan_app(self.settings, self.layout, facts, model_mb=model.size_mb)
            release = self.ensure_release(source, app, venv, model_key, model.version, secrets_digest, scratch)
            self.go_live("deploy", release, facts, app)
            self.prune()
        return release

    def rollback(self, to: str | None = None, facts: HostFacts | None = None) -> Release:
        """Make an earlier release live again: the one before the live one, or the one named."""
        with self.locked("rollback"):
            releases = self.releases()
            current = self.pointers().live_release
            if to:
                chosen = next((r for r in releases if r.id == to), None)
                if chosen is None:
                    raise DeployError(f"no release {to} on {self.target.name}; fab releases lists them")
            else:
                chosen = self.previous(releases, current)
                if chosen is None:
                    raise DeployError(f"nothing to roll back to on {self.target.name}: no release older than "
                                      f"{current or 'the live one'} has been live (fab releases lists them)")
            facts = facts or gather(self.target)
            self.ensure_prerequisites()
            # The release keeps its own gunicorn settings, and the worker plan it was made with.
            app = App(self.settings, self.layout, WorkerPlan(chosen.workers, chosen.explanation))
            self.go_live("rollback", chosen, facts, app)
        return chosen

    def previous(self, releases: list[Release], current: str | None) -> Release | None:
        """The newest release older than current that has been live: where a rollback goes."""
        went_live = {h["release"] for h in self.history() if h["result"] == "ok"}
        older = [r for r in releases if current and r.id < current and r.id in went_live]
        return older[-1] if older else None

    def go_live(self, action: str, release: Release, facts: HostFacts, app: App) -> None:
        try:
            step = self.activate(release, facts, app)
            with self.step("verify") as check:
                check.detail = self.verify()
        except (DeployError, CommandFailed):
            self.record(action, release.id, None, "failed")
            raise
        if step.changed:
            self.record(action, release.id, self.pointers().live, "ok")

    def prune(self) -> None:
        """Keep the newest [deploy] keep_releases releases, the ones blue and green run, and the one a
        rollback would go to; then the environments and models no kept release uses."""
        with self.step("prune") as step:
            releases = self.releases()
            pointers = self.pointers()
            previous = self.previous(releases, pointers.live_release)
            kept_ids = ({r.id for r in releases[-self.settings.deploy.keep_releases:]}
                        | set(pointers.release.values()) | ({previous.id} if previous else set()))
            kept = [r for r in releases if r.id in kept_ids]
            removed = {}
            for kind, used in (("releases", kept_ids), ("venvs", {r.venv for r in kept}),
                               ("models", {r.model for r in kept})):
                listing = self.run(["ls", "-A", str(self.layout.root / kind)], check=False).stdout.split()
                removed[kind] = [self.layout.root / kind / name for name in listing if name not in used]
            paths = [str(path) for found in removed.values() for path in found]
            if paths:
                self.run(["rm", "-rf", *paths])
            step.changed = bool(paths)
            step.detail = (", ".join(f"removed {len(found)} {kind}" for kind, found in removed.items() if found)
                           if paths else f"{len(kept)} releases kept ([deploy] keep_releases = "
                                         f"{self.settings.deploy.keep_releases})")

    def status(self) -> Status:
        pointers = self.pointers()
        live = pointers.live
        releases = {r.id: r for r in self.releases()}
        supervisord = self.supervisord_pid()
        programs = [self.program(color) if supervisord else Program(commands.program(self.layout, color), color, "DOWN")
                    for color in COLORS]
        for program in programs:
            program.release = pointers.release[program.color]
        status = Status(target=self.target.name, url=self.url,
                        supervisord=supervisord, nginx=self.nginx_pid(), live=live,
                        release=releases.get(pointers.live_release), programs=programs)
        if live and any(p.color == live and p.state == "RUNNING" for p in programs):
            answer = self.ask(["/readyz"], color=live)[0]
            status.ready = f"{answer['status']} {(answer.get('body') or answer.get('error', '')).strip()}"
        if status.nginx:
            answer = self.ask(["/readyz"])[0]
            status.through_nginx = f"{answer['status']} {(answer.get('body') or answer.get('error', '')).strip()}"
        return status

    def diff(self, model_mb: float | None = None) -> list[str]:
        """Unified diffs of every rendered config against the file on the target (changes nothing).

        Rendered for the live color, with the live release's worker plan (or, before the first
        deploy, the plan a deploy would make now)."""
        pointers = self.pointers()
        live = pointers.live or COLORS[0]
        release = next((r for r in self.releases() if r.id == pointers.live_release), None)
        app = (App(self.settings, self.layout, WorkerPlan(release.workers, release.explanation)) if release
               else plan_app(self.settings, self.layout, self.facts, model_mb=model_mb))
        diffs = []
        for file in render([app], self.facts, live):
            if file.destination is None:
                continue
            current = self.target.read(file.destination)
            if current != file.content:
                diffs.append("".join(difflib.unified_diff(
                    (current or "").splitlines(keepends=True), file.content.splitlines(keepends=True),
                    f"{self.target.name}:{file.destination}" + ("" if current is not None else " (missing)"),
                    f"rendered:{file.destination}")))
        return diffs

    def log_name(self, color: str) -> str:
        return (f"journalctl -u {commands.program(self.layout, color)}" if self.systemd_units
                else str(self.layout.log_dir / f"{color}.log"))

    def log_files(self, what: str) -> list[Path]:
        """The log files of the live app, nginx, or supervisord."""
        live = self.pointers().live or COLORS[0]
        if self.layout.kind == "local":
            logs = self.layout.host_root / "log"
            nginx, supervisord = [logs / "nginx-error.log", logs / "nginx-access.log"], logs / "supervisord.log"
        else:  # Debian's places
            nginx = [Path("/var/log/nginx/error.log"), Path("/var/log/nginx/access.log")]
            supervisord = Path("/var/log/supervisor/supervisord.log")
        app = [self.layout.log_dir / f"{live}.log"]  # gunicorn's and the app's lines: one log
        files = {"app": app, "gunicorn": app, "nginx": nginx, "supervisord": [supervisord]}
        if what not in files:
            raise DeployError(f"--what {what}: must be one of {', '.join(files)}")
        return files[what]

    def stop(self) -> list[int]:
        """Stop gunicorn (both colors), supervisord and nginx; returns the pids that were stopped.
        On a host only the app's programs: supervisord and nginx are the host's, and may serve more.
        Not while a deploy runs (it holds the lock)."""
        with self.locked("stop"):
            return self.stop_processes()

    def stop_processes(self) -> list[int]:
        pids: list[int] = []
        supervisord = self.supervisord_pid()
        if supervisord and self.system:
            pids = [p.pid for p in (self.program(c) for c in COLORS) if p.pid]
            self.run(commands.programs(self.layout, "stop", *COLORS), check=False,
                     timeout=self.settings.gunicorn.graceful_timeout + 60)
        elif supervisord:
            pids.append(supervisord)
            pids += [p.pid for p in (self.program(c) for c in COLORS) if p.pid]
            self.run(commands.supervisorctl(self.layout, "shutdown"), check=False)
        nginx = None if self.system else self.nginx_pid()
        if nginx:
            pids.append(nginx)
            self.run(commands.nginx(self.layout, self.nginx_binary, "-s", "quit"), check=False)
        timeout = self.settings.gunicorn.graceful_timeout + 30
        if not self.wait(lambda: all(self.run(commands.alive(p), check=False).exited != 0 for p in pids), timeout):
            raise DeployError(f"processes still running {timeout} s after stopping: {pids}")
        return pids


def smoke_problem(answer: dict, release: Release) -> str:
    """What is wrong with the smoke query's answer ("" when nothing)."""
    if answer["status"] != 200:
        return f"{answer['status']} {(answer.get('body') or answer.get('error', '')).strip()[:300]}"
    with contextlib.suppress(ValueError):
        body = json.loads(answer["body"])
        if isinstance(body, dict) and "sha256" in body and not body["sha256"].startswith(release.model):
            return f"it serves model {body.get('version')}, not the deployed {release.model_version}"
    return ""
