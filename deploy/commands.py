"""The commands a deploy runs on a target, as argument lists: built here, run by deploy.target.

Pure functions, so tests compare whole commands without a host. The local target runs its own
supervisord (from the environment `fab` runs in) and its own nginx (as the user, with the
rendered nginx.conf); a host's are its system services.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from deploy.layout import Directory, Layout

PROBE_SOURCE = (Path(__file__).resolve().parent / "probe.py").read_text(encoding="utf-8")
# The environment the local target's daemons start with: nothing from the shell that ran `fab`
# (a FLASK_* variable exported there must not reach the app).
CLEAN_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
TOOLS = Path(sys.executable).parent  # supervisord and supervisorctl of the local target


def clean_env(layout: Layout) -> list[str]:
    return ["env", "-i", f"HOME={layout.home}", f"PATH={CLEAN_PATH}", "LANG=C.UTF-8"]


def supervisord_conf(layout: Layout) -> Path:
    return layout.host_root / "supervisor" / "supervisord.conf"


def supervisord_start(layout: Layout) -> list[str]:
    """Starts the local target's supervisord (it puts itself in the background)."""
    return [*clean_env(layout), str(TOOLS / "supervisord"), "-c", str(supervisord_conf(layout))]


def supervisorctl(layout: Layout, *args: str) -> list[str]:
    if layout.kind == "local":
        return [str(TOOLS / "supervisorctl"), "-c", str(supervisord_conf(layout)), *args]
    return ["supervisorctl", *args]


def program(layout: Layout, color: str) -> str:
    """A color's program: supervisor's <app>-<color>, or the systemd unit <app>@<color>."""
    return f"{layout.app}@{color}" if systemd_manager(layout) else f"{layout.app}-{color}"


def systemd_manager(layout: Layout) -> bool:
    """The app's gunicorn programs are systemd units (a host's [app] process_manager)."""
    return layout.kind == "system" and layout.process_manager == "systemd"


def programs(layout: Layout, action: str, *colors: str) -> list[str]:
    """start or stop the colors' programs, through supervisor or systemd."""
    names = [program(layout, color) for color in colors]
    return ["systemctl", action, *names] if systemd_manager(layout) else supervisorctl(layout, action, *names)


# systemd's view of a unit, as `systemctl show` prints it (KEY=value lines).
UNIT_PROPERTIES = "ActiveState,MainPID,ActiveEnterTimestamp"
# systemd's ActiveState in supervisor's words, which the deploy speaks.
UNIT_STATES = {"active": "RUNNING", "activating": "STARTING", "reloading": "RUNNING", "deactivating": "STOPPING",
               "inactive": "STOPPED", "failed": "FATAL"}


def program_status(layout: Layout, color: str) -> list[str]:
    if systemd_manager(layout):
        return ["systemctl", "show", program(layout, color), f"--property={UNIT_PROPERTIES}"]
    return supervisorctl(layout, "status", program(layout, color))


def journal(layout: Layout, color: str, lines: int, follow: bool = False, since: str = "") -> list[str]:
    """A unit's log from the journal (systemd keeps gunicorn's output there)."""
    return ["journalctl", "--no-pager", "--unit", program(layout, color), "--lines", str(lines),
            *(["--since", since] if since else []), *(["--follow"] if follow else [])]


def nginx_pid_file(layout: Layout) -> Path:
    return layout.host_root / "run" / "nginx.pid" if layout.kind == "local" else Path("/run/nginx.pid")


def nginx(layout: Layout, binary: str, *args: str) -> list[str]:
    """nginx with the local target's own prefix and configuration (a host's nginx needs neither)."""
    if layout.kind == "local":
        return [*clean_env(layout), binary, "-p", f"{layout.nginx_dir}/", "-c", str(layout.nginx_dir / "nginx.conf"),
                "-e", str(layout.host_root / "log" / "nginx-error.log"), *args]
    return [binary, *args]


def probe(python: str, *, paths: list[str], socket: Path | None = None, address: str = "127.0.0.1", port: int = 0,
          tls: bool = False, host: str = "localhost", wait: float = 0) -> list[str]:
    """Asks paths[0] until it answers 200 (up to wait seconds), then the rest once; see deploy/probe.py."""
    spec = {"socket": str(socket or ""), "address": address, "port": port, "tls": tls, "host": host,
            "paths": paths, "wait": wait}
    return [python, "-c", PROBE_SOURCE, json.dumps(spec)]


def children(pid: int) -> list[str]:
    """The pids whose parent is pid, one per line."""
    return ["ps", "-o", "pid=", "--ppid", str(pid)]


def alive(pid: int) -> list[str]:
    return ["kill", "-0", str(pid)]


def symlink(target: str | Path, link: Path) -> list[list[str]]:
    """Point link at target atomically: a new link beside it, renamed over it."""
    partial = link.with_name(f".{link.name}.partial")
    return [["ln", "-sfn", str(target), str(partial)], ["mv", "-Tf", str(partial), str(link)]]


def tail(paths: list[Path], lines: int, follow: bool = False) -> list[str]:
    """The last lines of each file (with a ==> name <== header); with follow, new lines as they come."""
    return ["tail", "-v", "-n", str(lines), *(["-F"] if follow else []), "--", *map(str, paths)]


def cat_all(directory: Path, name: str) -> list[str]:
    """Prints every directory/*/name (each release's release.json), nothing when there are none."""
    return ["find", str(directory), "-mindepth", "2", "-maxdepth", "2", "-name", name, "-exec", "cat", "{}", "+"]


def ensure_directories(directories: list[Directory]) -> list[str]:
    """Makes each directory that is missing and sets owner, group and mode where they differ;
    prints one line per change ("made PATH", "set PATH owner:group mode"). chmod keeps a
    directory's setgid bit unless told: a three-digit mode clears it."""
    script = ('while [ $# -gt 0 ]; do d=$1 o=$2 g=$3 m=$4; shift 4; '
              '[ -d "$d" ] || { mkdir -p "$d" && echo "made $d"; } || exit 1; '
              '[ -z "$o" ] || [ "$(stat -c %U:%G:%a "$d")" = "$o:$g:$m" ] || '
              '{ chown "$o:$g" "$d" && chmod "$m" "$d" && { [ ${#m} -gt 3 ] || chmod ug-s "$d"; } '
              '&& echo "set $d $o:$g $m"; } || exit 1; done')
    return ["sh", "-c", script, "sh", *(str(v) for d in directories for v in (d.path, d.owner, d.group, d.mode))]


def service(systemd: bool, name: str, action: str) -> list[str]:
    """A system service, the host's way: systemctl when systemd runs, else the init.d script.

    action: start, stop, reload, is-active, enable or is-enabled (exit 0 when it is).
    """
    if systemd:
        return ["systemctl", action, name]
    if action == "is-active":
        return ["service", name, "status"]
    if action == "is-enabled":  # an S link in a multi-user runlevel
        return ["sh", "-c", 'ls /etc/rc[2345].d/S??"$1" >/dev/null 2>&1', "sh", name]
    if action == "enable":
        return ["sh", "-c", 'update-rc.d "$1" defaults && update-rc.d "$1" enable', "sh", name]
    return ["service", name, action]


def missing_packages(packages: list[str]) -> list[str]:
    """Prints the packages of the list that are not installed, one per line."""
    script = ('for p; do [ "$(dpkg-query -W -f \'${db:Status-Status}\' "$p" 2>/dev/null)" = installed ] '
              '|| echo "$p"; done')
    return ["sh", "-c", script, "sh", *packages]


def apt_get(*args: str) -> list[str]:
    """apt-get that never asks (a host's unattended install)."""
    return ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-q", "-y", "-o", "Dpkg::Options::=--force-confold",
            *args]
