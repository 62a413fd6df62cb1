"""Where things live on a target: the only difference between the local target and a host.

A host (system layout) keeps the app in /srv/<app>, configs in /etc, sockets in /run and logs in
/var/log, runs gunicorn as the app's own user, and lets nginx (group www-data) reach the sockets.
The local target keeps everything under one directory of the user who deploys, with high ports
and no root. The templates are the same for both; only these paths and names change.

Per app, two gunicorn programs (blue and green) run the releases that <root>/blue and
<root>/green point at; nginx sends traffic to one of them, the live color.
"""
from __future__ import annotations

import getpass
import grp
import os
from dataclasses import dataclass, replace
from pathlib import Path

from deploy.settings import KIT_DIR

COLORS = ("blue", "green")


@dataclass(frozen=True)
class Directory:
    path: Path
    owner: str = ""  # "" leaves owner, group and mode as they are (the local target: all the user's)
    group: str = ""
    mode: str = ""  # octal, as stat -c %a prints it


@dataclass(frozen=True)
class Layout:
    kind: str  # "local" or "system"
    app: str
    root: Path  # the app's home: releases, the blue/green pointers, models
    config_dir: Path  # the rendered gunicorn.conf.py and the secrets env file
    run_dir: Path  # gunicorn's unix sockets, one per color
    log_dir: Path
    cache_dir: Path  # nginx's proxy_cache for this app
    nginx_dir: Path  # nginx's configuration directory (htpasswd files live here)
    nginx_sites: Path  # where site files go (sites-available on Debian)
    supervisor_dir: Path  # where program files go (conf.d)
    systemd_dir: Path
    home: Path  # HOME of the app's processes: writable by them
    data_dir: Path  # the app's persistent data, outside every release (DATA_DIR): its instance folder, shared paths
    user: str  # runs gunicorn
    nginx_group: str  # nginx's workers' group: must reach the sockets
    http_listen: str  # nginx's plain HTTP listen address
    tls_listen: str
    process_manager: str  # supervisor or systemd
    base: Path  # the target's files are below it: `fab render` writes them relative to it
    nginx_host_file: Path  # once per host: the catch-all servers and the JSON errors of every app
    nginx_pid_file: Path
    nginx_logs: tuple[Path, Path]  # error, access
    supervisord_log: Path
    supervisord_pid_file: Path  # left behind when supervisord is killed: the session its leftovers are in
    secrets_owner: str | None  # the app's user on a host; None: the user who deploys owns everything
    needs_provision: bool  # `fab provision` prepares it (a host); the local target needs nothing first
    too_long_fix: str  # what to change when a socket's path is too long
    directories: tuple[Directory, ...] = ()  # every directory the target needs, with owners and modes
    nginx_enabled: Path | None = None  # where Debian's nginx reads sites from: links to nginx_sites
    tmpfiles_dir: Path | None = None  # a host's systemd-tmpfiles.d: the socket directory at boot
    logrotate_dir: Path | None = None  # a host's logrotate.d: the site's nginx logs
    supervisor_defaults: Path | None = None  # sourced by a host's /etc/init.d/supervisor before it starts
    host_root: Path | None = None  # local target only: nginx's and supervisord's own files
    nginx_conf: Path | None = None  # local target only: the nginx.conf its own nginx runs with
    supervisord_conf: Path | None = None  # local target only: its own supervisord's configuration
    tunnel_socket_path: Path | None = None  # where tunnel_socket is when not in run_dir (a check's scratch copy)
    cron_dir: Path | None = None  # a host's /etc/cron.d: jobs without systemd (the local target: your crontab)

    @property
    def env_file(self) -> Path:
        return self.config_dir / "secrets.env"

    def gunicorn_conf(self, color: str) -> Path:
        """Each release carries its own gunicorn settings, so a rollback brings back the old ones too."""
        return self.kit(color) / "gunicorn.conf.py"

    def kit(self, color: str) -> Path:
        """The kit's own entries in the release a color runs (venv, model, gunicorn.conf.py,
        release.json): apart from the app's files, so they never collide with them."""
        return self.release(color) / KIT_DIR

    def release(self, color: str) -> Path:
        """The release a color runs (a symlink the deploy points at a release directory)."""
        return self.root / color

    @property
    def releases(self) -> Path:
        return self.root / "releases"

    @property
    def venvs(self) -> Path:
        """Python environments, one per dependency lock (releases with the same lock share one)."""
        return self.root / "venvs"

    @property
    def models(self) -> Path:
        """Model artifacts, one per checksum (releases with the same model share one)."""
        return self.root / "models"

    @property
    def current(self) -> Path:
        """Points at the live color (blue or green), which points at the live release."""
        return self.root / "current"

    @property
    def lock(self) -> Path:
        """A directory that exists while a deploy runs (mkdir is atomic); holder inside says whose."""
        return self.root / "deploy.lock"

    @property
    def history(self) -> Path:
        """One JSON line per deploy or rollback: when, who, which release, the result."""
        return self.root / "history.jsonl"

    @property
    def memory(self) -> Path:
        """What the workers of the live release were measured to use: the next release is sized by it."""
        return self.root / "memory.json"

    @property
    def launcher(self) -> str:
        """What starts the app's processes and scheduled jobs (deploy/launch.py, with its settings), by
        the target's python3: the system's on a host; on this machine the first on the daemons' PATH."""
        python = "/usr/bin/python3" if self.kind == "system" else "python3"
        return f"{python} {self.config_dir / 'launch.py'} {self.config_dir / 'launch.json'}"

    @property
    def job_dir(self) -> Path:
        """Each scheduled job's log, last result and lock."""
        return self.log_dir / "schedule"

    def program(self, name: str) -> str:
        """The program (or unit) of a process or scheduled job: <app>-<name>."""
        return f"{self.app}-{name}"

    @property
    def tmpfiles_file(self) -> Path | None:
        """systemd-tmpfiles' file for the app (hosts only)."""
        return self.tmpfiles_dir / f"{self.app}.conf" if self.tmpfiles_dir else None

    def tls(self, settings) -> bool:
        """The site is served over HTTPS: [nginx] tls on a target with a TLS listen (the local
        target serves plain HTTP on its one port) that is not an app host behind a balancer (the
        balancer serves HTTPS, and its app hosts plain HTTP to it)."""
        return bool(settings.nginx.tls and self.tls_listen and not settings.fleet.balancer)

    @property
    def http_address(self) -> tuple[str, int]:
        """Where the target itself reaches nginx's plain HTTP server: (address, port)."""
        return reachable(self.http_listen)

    @property
    def tls_address(self) -> tuple[str, int]:
        return reachable(self.tls_listen)

    def socket(self, color: str) -> Path:
        return self.run_dir / f"{color}.sock"

    @property
    def tunnel_socket(self) -> Path:
        """Where the site's nginx takes the requests that come through the relay's tunnel (fab expose)."""
        return self.tunnel_socket_path or self.run_dir / "tunnel.sock"

    @property
    def tunnel_dir(self) -> Path:
        """The tunnel's key pair (made on the target; the private key never leaves it), the relay's
        pinned host key, and the tunnel program's settings."""
        return self.config_dir / "tunnel"

    def relocated(self, under: Path, user: str, group: str) -> Layout:
        """The same layout with its paths moved under a scratch directory, run as user (for checks).

        The gunicorn sockets stay where they are: the checks create nothing there, and a socket's path
        is limited to 107 bytes, which the scratch directory's prefix could exceed. The tunnel's
        socket moves (nginx -t binds it).
        """
        def move(path: Path) -> Path:
            return under / str(path).lstrip("/")

        moved = {name: move(value) for name, value in vars(self).items()
                 if isinstance(value, Path) and name not in ("run_dir", "tunnel_socket_path")}
        return replace(self, user=user, nginx_group=group, nginx_logs=tuple(map(move, self.nginx_logs)),
                       tunnel_socket_path=move(self.tunnel_socket),
                       directories=tuple(replace(d, path=move(d.path)) for d in self.directories), **moved)


def reachable(listen: str) -> tuple[str, int]:
    """(address, port) where the target itself reaches an nginx listen value (port alone: loopback)."""
    address, _, port = listen.rpartition(":")
    return address.strip("[]") or "127.0.0.1", int(port)


def listen(address: str, port: int) -> str:
    """nginx's listen value: the port alone means every address."""
    return f"{address}:{port}" if address else str(port)


def system_layout(settings) -> Layout:
    """A host's layout: Debian's places, the app's own system user, its system nginx and process manager."""
    app = settings.app.name
    root, config_dir, run_dir = Path("/srv") / app, Path("/etc") / app, Path("/run") / app
    log_dir, cache_dir, nginx = Path("/var/log") / app, Path("/var/cache/nginx") / app, Path("/etc/nginx")
    layout = Layout(
        kind="system", app=app, root=root, config_dir=config_dir, run_dir=run_dir, log_dir=log_dir,
        cache_dir=cache_dir, nginx_dir=nginx, nginx_sites=nginx / "sites-available",
        supervisor_dir=Path("/etc/supervisor/conf.d"), systemd_dir=Path("/etc/systemd/system"),
        home=Path("/var/lib") / app, data_dir=Path("/var/lib") / app, user=app, nginx_group="www-data",
        http_listen=listen(settings.nginx.address, settings.nginx.port),
        tls_listen=listen(settings.nginx.address, settings.nginx.tls_port),
        process_manager=settings.app.process_manager,
        base=Path("/"), nginx_host_file=nginx / "conf.d" / "modelhost.conf", nginx_pid_file=Path("/run/nginx.pid"),
        # The site's own, beside the app's (rotated by /etc/logrotate.d/<app>); nginx's own are Debian's.
        nginx_logs=(log_dir / "nginx-error.log", log_dir / "nginx-access.log"),
        supervisord_log=Path("/var/log/supervisor/supervisord.log"), supervisord_pid_file=Path("/run/supervisord.pid"),
        secrets_owner=app, needs_provision=True,
        too_long_fix="use a shorter [app] name", nginx_enabled=nginx / "sites-enabled",
        tmpfiles_dir=Path("/etc/tmpfiles.d"), supervisor_defaults=Path("/etc/default/supervisor"),
        logrotate_dir=Path("/etc/logrotate.d"), cron_dir=Path("/etc/cron.d"))
    # The app's user may read its config and make its sockets; nginx (its group) may reach them and
    # nothing else.
    shared = ("root", "root", "755")
    return replace(layout, directories=(
        Directory(layout.root, *shared), Directory(layout.releases, *shared), Directory(layout.venvs, *shared),
        Directory(layout.models, *shared), Directory(layout.config_dir, "root", layout.user, "750"),
        Directory(layout.run_dir, layout.user, layout.nginx_group, "750"),
        Directory(layout.log_dir, "root", "adm", "750"), Directory(layout.data_dir, layout.user, layout.user, "750"),
        Directory(layout.cache_dir, layout.nginx_group, layout.nginx_group, "700"),
        Directory(layout.nginx_sites, *shared), Directory(layout.nginx_enabled, *shared),
        Directory(layout.supervisor_dir, *shared)))


def local_layout(settings, user: str | None = None, group: str | None = None, home: Path | None = None) -> Layout:
    """This machine's layout for the user who deploys (user, group and home: that user's by default):
    everything under [local] root, its own nginx and supervisord, no root."""
    home = home or Path.home()
    host_root = Path(settings.local.root.replace("~", str(home), 1) if settings.local.root.startswith("~")
                     else settings.local.root)
    root = host_root / settings.app.name
    nginx, supervisor, logs = host_root / "nginx", host_root / "supervisor", host_root / "log"
    layout = Layout(
        kind="local", app=settings.app.name, root=root, config_dir=root / "etc", run_dir=root / "run",
        log_dir=root / "log", cache_dir=root / "cache", nginx_dir=nginx, nginx_sites=nginx / "sites",
        supervisor_dir=supervisor / "conf.d", systemd_dir=host_root / "systemd", home=home, data_dir=root / "data",
        user=user or getpass.getuser(), nginx_group=group or grp.getgrgid(os.getgid()).gr_name,
        http_listen=f"127.0.0.1:{settings.local.port}", tls_listen="", process_manager="supervisor",
        base=host_root, nginx_host_file=nginx / "modelhost.conf", nginx_pid_file=host_root / "run" / "nginx.pid",
        nginx_logs=(logs / "nginx-error.log", logs / "nginx-access.log"), supervisord_log=logs / "supervisord.log",
        supervisord_pid_file=host_root / "run" / "supervisord.pid",
        secrets_owner=None, needs_provision=False, too_long_fix="set [local] root to a shorter path",
        host_root=host_root, nginx_conf=nginx / "nginx.conf", supervisord_conf=supervisor / "supervisord.conf")
    places = (layout.root, layout.releases, layout.venvs, layout.models, layout.data_dir, layout.config_dir,
              layout.run_dir, layout.log_dir, layout.cache_dir, layout.nginx_sites, layout.supervisor_dir,
              host_root / "run", logs, nginx / "tmp")
    return replace(layout, directories=tuple(map(Directory, places)))
