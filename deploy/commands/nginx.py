"""nginx: the local target's own (run as the user, with the rendered nginx.conf) or a host's service."""
from __future__ import annotations

from pathlib import Path

from deploy.commands.host import clean_env, service
from deploy.commands.programs import supervisorctl
from deploy.layout import Layout


def locate() -> list[str]:
    """Prints nginx's path ("" when it is not installed); /usr/sbin is not on every PATH."""
    return ["sh", "-c", "command -v nginx || ls /usr/sbin/nginx"]


def nginx(layout: Layout, binary: str, *args: str) -> list[str]:
    """nginx with the local target's own prefix and configuration (a host's nginx needs neither)."""
    if layout.nginx_conf:
        return [*clean_env(layout), binary, "-p", f"{layout.nginx_dir}/", "-c", str(layout.nginx_conf),
                "-e", "stderr", *args]
    return [binary, *args]


def nginx_start(layout: Layout, systemd: bool) -> list[str]:
    """The local target's own nginx (a program of its supervisord), or the host's service."""
    return supervisorctl(layout, "start", "nginx") if layout.nginx_conf else service(systemd, "nginx", "start")


def supervised_nginx(layout: Layout) -> list[str]:
    """Prints the pid of the local target's nginx as supervisord knows it (0 when it is stopped)."""
    return supervisorctl(layout, "pid", "nginx")


def nginx_check(binary: str, conf: Path, prefix: Path) -> list[str]:
    """nginx -t of a configuration in a scratch directory (render --check)."""
    return [binary, "-t", "-p", f"{prefix}/", "-c", str(conf), "-e", str(prefix / "error.log")]


def self_signed(cert: str, key: str, name: str) -> list[str]:
    """A throwaway certificate for name, so that nginx -t can load a TLS site."""
    return ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={name}",
            "-keyout", key, "-out", cert]


def sites_of(sites: Path, app: str) -> list[str]:
    """The site files (one path a line) whose header says they serve this app alone."""
    return ["sh", "-c", 'grep -lE -- "$1" "$2"/*.conf 2>/dev/null || true', "sh",
            f"^# .*: {app}, rendered by modelhost", str(sites)]
