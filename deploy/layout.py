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
    home: Path  # HOME of the app's processes
    user: str  # runs gunicorn
    nginx_group: str  # nginx's workers' group: must reach the sockets
    http_listen: str  # nginx's plain HTTP listen address
    tls_listen: str
    process_manager: str  # supervisor or systemd
    host_root: Path | None = None  # local target only: nginx's and supervisord's own files

    @property
    def env_file(self) -> Path:
        return self.config_dir / "secrets.env"

    def gunicorn_conf(self, color: str) -> Path:
        """Each release carries its own gunicorn settings, so a rollback brings back the old ones too."""
        return self.release(color) / "gunicorn.conf.py"

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

    def directories(self) -> list[Directory]:
        """Every directory the target needs; on a host with owners and modes: the app's user may
        read its config and make its sockets, nginx (its group) may reach them and nothing else."""
        if self.kind == "local":
            places = [self.root, self.releases, self.venvs, self.models, self.config_dir, self.run_dir,
                      self.log_dir, self.cache_dir, self.nginx_sites, self.supervisor_dir, self.host_root / "run",
                      self.host_root / "log", self.host_root / "nginx" / "tmp"]
            return [Directory(path) for path in places]
        shared = ("root", "root", "755")
        return [Directory(self.root, *shared), Directory(self.releases, *shared), Directory(self.venvs, *shared),
                Directory(self.models, *shared), Directory(self.config_dir, "root", self.user, "750"),
                Directory(self.run_dir, self.user, self.nginx_group, "750"),
                Directory(self.log_dir, "root", "adm", "750"),
                Directory(self.cache_dir, self.nginx_group, self.nginx_group, "700"),
                Directory(self.nginx_sites, *shared), Directory(self.nginx_enabled, *shared),
                Directory(self.supervisor_dir, *shared)]

    @property
    def nginx_enabled(self) -> Path | None:
        """Where Debian's nginx reads sites from: links to nginx_sites (the local target reads nginx_sites)."""
        return self.nginx_dir / "sites-enabled" if self.kind == "system" else None

    @property
    def http_address(self) -> tuple[str, int]:
        """Where the target itself reaches nginx's plain HTTP server: (address, port)."""
        return reachable(self.http_listen)

    @property
    def tls_address(self) -> tuple[str, int]:
        return reachable(self.tls_listen)

    def socket(self, color: str) -> Path:
        return self.run_dir / f"{color}.sock"

    def relocated(self, under: Path, user: str, group: str) -> Layout:
        """The same layout with its paths moved under a scratch directory, run as user (for checks).

        The sockets stay where they are: the checks create nothing there, and a socket's path is
        limited to 107 bytes, which the scratch directory's prefix could exceed.
        """
        moved = {name: under / str(value).lstrip("/") for name, value in vars(self).items()
                 if isinstance(value, Path) and name != "run_dir"}
        return replace(self, user=user, nginx_group=group, **moved)


def reachable(listen: str) -> tuple[str, int]:
    """(address, port) where the target itself reaches an nginx listen value (port alone: loopback)."""
    address, _, port = listen.rpartition(":")
    return address.strip("[]") or "127.0.0.1", int(port)


def listen(address: str, port: int) -> str:
    """nginx's listen value: the port alone means every address."""
    return f"{address}:{port}" if address else str(port)


def system_layout(settings) -> Layout:
    """A host's layout: Debian's places, the app's own system user."""
    app = settings.app.name
    return Layout(
        kind="system", app=app, root=Path("/srv") / app, config_dir=Path("/etc") / app,
        run_dir=Path("/run") / app, log_dir=Path("/var/log") / app, cache_dir=Path("/var/cache/nginx") / app,
        nginx_dir=Path("/etc/nginx"), nginx_sites=Path("/etc/nginx/sites-available"),
        supervisor_dir=Path("/etc/supervisor/conf.d"), systemd_dir=Path("/etc/systemd/system"),
        home=Path("/srv") / app, user=app, nginx_group="www-data",
        http_listen=listen(settings.nginx.address, settings.nginx.port),
        tls_listen=listen(settings.nginx.address, settings.nginx.tls_port), process_manager=settings.app.process_manager)


def local_layout(settings, user: str | None = None, group: str | None = None, home: Path | None = None) -> Layout:
    """This machine's layout for the user who deploys (user, group and home: that user's by default)."""
    home = home or Path.home()
    host_root = Path(settings.local.root.replace("~", str(home), 1) if settings.local.root.startswith("~")
                     else settings.local.root)
    root = host_root / settings.app.name
    return Layout(
        kind="local", app=settings.app.name, root=root, config_dir=root / "etc", run_dir=root / "run",
        log_dir=root / "log", cache_dir=root / "cache", nginx_dir=host_root / "nginx",
        nginx_sites=host_root / "nginx" / "sites", supervisor_dir=host_root / "supervisor" / "conf.d",
        systemd_dir=host_root / "systemd", home=home, user=user or getpass.getuser(),
        nginx_group=group or grp.getgrgid(os.getgid()).gr_name,
        http_listen=f"127.0.0.1:{settings.local.port}", tls_listen="", process_manager="supervisor",
        host_root=host_root)
