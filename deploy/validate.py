"""Check rendered configs with the real tools, before any of them reaches a running server.

`check_rendered` renders the target again with every path moved into a scratch directory, writes
the files there, and runs: `nginx -t`, supervisor's own config parser, `gunicorn --check-config`
(which loads the app), and `systemd-analyze verify` where it is installed. The scratch copy has
what the tools look for: the directories, this checkout's venv as the release, dummy secrets and
a throwaway self-signed certificate. On a host, the deploy checks the real files in place.
"""
from __future__ import annotations

import copy
import getpass
import grp
import os
import shutil
import socket
import sys
from dataclasses import replace
from pathlib import Path

from deploy import commands
from deploy.facts import HostFacts
from deploy.layout import COLORS
from deploy.render import ROOT, App, certificate_paths, render
from deploy.target import CommandFailed, Target

class ValidationError(Exception):
    """A rendered file failed its tool's check; the message has the tool's own words."""


def tail(output: str, lines: int = 15) -> str:
    """The end of a tool's output, where the reason is (a traceback's last lines)."""
    return "\n".join(output.strip().splitlines()[-lines:])


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scratch_apps(apps: list[App], scratch: Path) -> list[App]:
    """The apps with every path under scratch, run as this user and group, the certificate moved too.

    `nginx -t` binds the listen addresses: they move to free loopback ports (one per address, so
    apps that share one still do), or the check would fail on a port below 1024 as a user, or on
    one a running nginx (the live site) holds.
    """
    ports: dict[str, str] = {}

    def moved_listen(listen: str) -> str:
        return ports.setdefault(listen, f"127.0.0.1:{free_loopback_port()}") if listen else ""

    moved = []
    for app in apps:
        settings = copy.deepcopy(app.settings)
        cert, key = certificate_paths(settings)
        settings.nginx.tls_certificate = str(scratch / cert.lstrip("/"))
        settings.nginx.tls_certificate_key = str(scratch / key.lstrip("/"))
        layout = app.layout.relocated(scratch, getpass.getuser(), grp.getgrgid(os.getgid()).gr_name)
        layout = replace(layout, http_listen=moved_listen(layout.http_listen), tls_listen=moved_listen(layout.tls_listen))
        moved.append(replace(app, settings=settings, layout=layout))
    return moved


def scaffold(target: Target, apps: list[App], scratch: Path) -> None:
    """What the tools expect to find: directories, a release with a venv, secrets, certificates."""
    for app in apps:
        layout = app.layout
        for directory in (layout.log_dir, layout.cache_dir.parent, layout.config_dir):
            directory.mkdir(parents=True, exist_ok=True)
        for color in COLORS:
            kit = layout.kit(color)
            kit.mkdir(parents=True, exist_ok=True)
            if not (kit / "venv").exists():
                (kit / "venv").symlink_to(sys.prefix)  # the venv running this check
        write(layout.env_file, "".join(f"{name}=check-only\n" for name in app.settings.app.secrets))
        if layout.tls(app.settings):
            cert, key = certificate_paths(app.settings)
            if not Path(cert).exists():
                Path(cert).parent.mkdir(parents=True, exist_ok=True)
                Path(key).parent.mkdir(parents=True, exist_ok=True)
                target.run(commands.self_signed(cert, key, app.settings.nginx.server_names[0]))
    for directory in apps[0].layout.directories:  # the local target's own nginx and supervisord use some
        directory.path.mkdir(parents=True, exist_ok=True)


def find_nginx() -> str:
    # /usr/sbin is not on every user's PATH.
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise ValidationError("nginx is not installed here, so the site cannot be checked: "
                              "apt-get install nginx (or render without --check)")
    return found


def check_rendered(local: Target, apps: list[App], facts: HostFacts, scratch: Path,
                   live: str = "blue") -> list[str]:
    """Validate the configs with the real tools of this machine (local) in scratch; returns what passed."""
    apps = scratch_apps(apps, scratch)
    files = render(apps, facts, live)
    for file in files[1:]:  # the first is the README
        write(file.destination, file.content)
    scaffold(local, apps, scratch)
    layout = apps[0].layout
    passed = []

    def run(argv: list[str], what: str, **options) -> None:
        try:
            result = local.run(argv, **options)
        except CommandFailed as exc:
            raise ValidationError(f"{what}: {tail(exc.output) or exc}") from None
        # nginx passes a config with warnings (a server name that two sites claim, a deprecated
        # directive), but each one is a site not working as written.
        warnings = [line for line in (result.stdout + result.stderr).splitlines() if "[warn]" in line]
        if warnings:
            raise ValidationError(f"{what}: " + "\n".join(warnings))
        passed.append(what)

    nginx_conf = layout.nginx_conf
    if not nginx_conf:  # the part of Debian's nginx.conf that includes what modelhost renders
        nginx_conf = scratch / "nginx-check.conf"
        write(nginx_conf, "\n".join([
            f"pid {scratch}/nginx.pid;", "events {}", "http {", "    include /etc/nginx/mime.types;",
            f"    access_log {scratch}/access.log;",
            *(f"    {kind}_temp_path {scratch}/nginx-{kind};" for kind in
              ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")),
            f"    include {layout.nginx_dir}/conf.d/*.conf;", f"    include {layout.nginx_sites}/*.conf;", "}", ""]))
    run(commands.nginx_check(find_nginx(), nginx_conf, scratch), f"nginx -t: {nginx_conf.name} and the sites")

    supervised = [app for app in apps if app.layout.process_manager == "supervisor"]
    if supervised:
        supervisord_conf = layout.supervisord_conf
        if not supervisord_conf:  # what Debian's /etc/supervisor/supervisord.conf has around its conf.d
            supervisord_conf = scratch / "supervisord-check.conf"
            write(supervisord_conf, f"[supervisord]\nlogfile={scratch}/supervisord.log\npidfile={scratch}/s.pid\n"
                                    f"[include]\nfiles = {layout.supervisor_dir}/*.conf\n")
        run(commands.supervisor_parse(sys.executable, supervisord_conf),
            "supervisor's parser: " + ", ".join(f"{a.layout.app}.conf" for a in supervised))

    for app in apps:
        gunicorn = app.layout.kit(live) / "venv" / "bin" / "gunicorn"
        run(commands.gunicorn_check(gunicorn, app.layout.gunicorn_conf(live), app.settings.app.wsgi),
            f"gunicorn --check-config: {app.layout.app} (loads the app)",
            cwd=str(Path(app.settings.source).resolve().parent if app.settings.source else ROOT),
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(scratch)})
        if app.layout.process_manager == "systemd":
            if not shutil.which("systemd-analyze"):
                passed.append(f"systemd-analyze verify: skipped for {app.layout.app} (not installed here)")
                continue
            for color in COLORS:
                unit = scratch / f"{app.layout.app}@{color}.service"
                shutil.copyfile(app.layout.systemd_dir / f"{app.layout.app}@.service", unit)
                run(commands.systemd_verify(unit), f"systemd-analyze verify: {unit.name}")
    background = [f for f in files if f.reader in ("processes", "schedule") and f.destination.suffix in (
        ".service", ".timer")]
    if background and shutil.which("systemd-analyze"):
        units = scratch / "units"
        units.mkdir(exist_ok=True)
        for file in background:  # a template unit is checked as its first instance; a timer beside its service
            name = file.destination.name.replace("@.service", "@1.service")
            write(units / name, file.content)
        for unit in sorted(units.iterdir()):
            run(commands.systemd_verify(unit), f"systemd-analyze verify: {unit.name}")
    return passed
