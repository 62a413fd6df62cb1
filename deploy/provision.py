"""Provision a host for an app: what `fab -H user@host provision` does, idempotently.

Each step looks first and changes only what differs, so a second run changes nothing, says so,
and costs a handful of quick commands (no `apt-get update` unless a package is missing):

    packages     nginx, supervisor, python3-venv, procps (ps), installed with apt when missing
    user         the app's system user: no login shell, home /srv/<app>
    directories  the layout's directories with their owners and modes (deploy/layout.py)
    boot         the socket directory /run/<app> made again at boot (/run is emptied):
                 tmpfiles.d with systemd, /etc/default/supervisor with init.d scripts
    nginx site   Debian's default site disabled (it would answer every host name on port 80)
    services     nginx and supervisor enabled at boot and running, the host's way
"""
from __future__ import annotations

from pathlib import Path

from deploy import commands
from deploy.deployment import Deployment, DeployError
from deploy.render import tmpfiles_conf
from deploy.target import CommandFailed

PACKAGES = ["nginx", "supervisor", "python3-venv", "procps"]
SERVICES = ["nginx", "supervisor"]  # supervisor only when it runs the app ([app] process_manager)
NOLOGIN = "/usr/sbin/nologin"
SUPERVISOR_DEFAULTS = Path("/etc/default/supervisor")  # sourced by /etc/init.d/supervisor before it starts


def provision(d: Deployment) -> None:
    """Make the host ready for `fab deploy`; every step is reported through d.report."""
    if d.layout.kind != "system":
        raise DeployError("provision is for hosts (fab -H user@host provision); the local target needs no root "
                          "and no provisioning: fab deploy sets it up")
    d.check_process_manager()
    ensure_packages(d)
    ensure_user(d)
    d.ensure_directories()
    ensure_boot(d)
    ensure_nginx_site(d)
    ensure_services(d)


def wanted(d: Deployment, names: list[str]) -> list[str]:
    return [name for name in names if name != "supervisor" or not d.systemd_units]


def ensure_packages(d: Deployment) -> None:
    packages = wanted(d, PACKAGES)
    with d.step("packages") as step:
        missing = d.run(commands.missing_packages(packages)).stdout.split()
        step.detail = ", ".join(packages) + " installed"
        if not missing:
            return
        try:
            d.run(commands.apt_get("update"), timeout=900)
            d.run(commands.apt_get("install", *missing), timeout=1800)
        except CommandFailed as exc:
            raise DeployError(f"apt-get could not install {', '.join(missing)} on {d.target.name}: {exc}") from None
        step.changed = True
        step.detail = f"installed {', '.join(missing)} with apt"


def ensure_user(d: Deployment) -> None:
    """The app's own system user, and nginx's user in its group: gunicorn's sockets belong to the
    app's user and group (gunicorn sets them), mode 770."""
    user, home, nginx = d.layout.user, d.layout.home, d.layout.nginx_group  # Debian: user and group www-data
    with d.step("user") as step:
        found = d.run(["getent", "passwd", user], check=False).stdout.strip()
        if found:
            shell = found.split(":")[-1]
            step.detail = f"{user} exists (no login shell)"
            if shell not in (NOLOGIN, "/bin/false", "/usr/bin/false"):
                raise DeployError(f"user {user} exists on {d.target.name} with the login shell {shell}: the app "
                                  f"needs a user of its own with no login. Set another [app] name, or run: "
                                  f"usermod -s {NOLOGIN} {user}")
        else:
            d.run(["useradd", "--system", "--user-group", "--home-dir", str(home), "--no-create-home",
                   "--shell", NOLOGIN, "--comment", f"modelhost app {d.layout.app}", user])
            step.changed = True
            step.detail = f"made system user {user} (home {home}, no login shell)"
        if user not in d.run(["id", "-nG", nginx]).stdout.split():
            d.run(["usermod", "--append", "--groups", user, nginx])
            d.reload_nginx_if_running()  # its new workers take the new group
            step.changed = True
            step.detail += f"; {nginx} (nginx) added to group {user}, to reach the app's sockets"


def ensure_boot(d: Deployment) -> None:
    """The socket directory comes back after a reboot, before supervisor starts the app."""
    layout = d.layout
    with d.step("boot") as step:
        if d.facts.systemd:  # with systemd units too: nginx may start before the app
            path = Path("/etc/tmpfiles.d") / f"{layout.app}.conf"
            step.changed = d.target.write(path, tmpfiles_conf(layout))
            step.detail = f"{path} makes {layout.run_dir} at boot"
            return
        line = (f"install -d -o {layout.user} -g {layout.nginx_group} -m 0750 {layout.run_dir}"
                f"  # modelhost: {layout.app}'s sockets (/run is emptied at boot)")
        current = d.target.read(SUPERVISOR_DEFAULTS) or ""
        step.detail = f"{SUPERVISOR_DEFAULTS} makes {layout.run_dir} before supervisor starts"
        if line not in current.splitlines():
            d.target.write(SUPERVISOR_DEFAULTS, current + ("\n" if current and not current.endswith("\n") else "")
                           + line + "\n")
            step.changed = True


def ensure_nginx_site(d: Deployment) -> None:
    default = d.layout.nginx_enabled / "default"
    with d.step("nginx site") as step:
        step.detail = f"{default} is not there (Debian's default site is off)"
        if d.run(["test", "-e", str(default), "-o", "-L", str(default)], check=False).exited == 0:
            d.run(["rm", "-f", str(default)])
            d.reload_nginx_if_running()
            step.changed = True
            step.detail = f"removed {default} (Debian's default site)"


def ensure_services(d: Deployment) -> None:
    systemd, services = d.facts.systemd, wanted(d, SERVICES)
    with d.step("services") as step:
        done = []
        for name in services:
            if d.run(commands.service(systemd, name, "is-enabled"), check=False).exited != 0:
                d.run(commands.service(systemd, name, "enable"))
                done.append(f"enabled {name}")
            if d.run(commands.service(systemd, name, "is-active"), check=False).exited != 0:
                if name == "nginx":
                    d.nginx_test()
                d.run(commands.service(systemd, name, "start"), timeout=120)
                done.append(f"started {name}")
        step.changed = bool(done)
        way = "systemctl" if systemd else "service (init.d scripts)"
        step.detail = (", ".join(done) if done else f"{' and '.join(services)} enabled and running") + f", by {way}"
