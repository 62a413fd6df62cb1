"""Provision a host for an app: what `fab -H user@host provision` does, idempotently.

Each step looks first and changes only what differs, so a second run changes nothing, says so,
and costs a handful of quick commands (no `apt-get update` unless a package is missing):

    packages     nginx, supervisor, python3-venv, procps (ps), installed with apt when missing; cron
                 for [app.schedule] on a host without systemd
    user         the app's system user: no login shell, home /srv/<app>
    directories  the layout's directories with their owners and modes (deploy/layout.py)
    boot         the socket directory /run/<app> made again at boot (/run is emptied):
                 tmpfiles.d with systemd, /etc/default/supervisor with init.d scripts
    log rotation /etc/logrotate.d/<app> for the site's nginx logs in /var/log/<app>, checked by logrotate
    nginx site   Debian's default site disabled (it would answer every host name on port 80)
    services     nginx and supervisor enabled at boot and running, the host's way
    keepers      nginx and supervisor started again within seconds when they die, with what the
                 dead one left stopped first: systemd drop-ins (Restart=, KillMode=control-group),
                 or on init.d hosts the modelhost-keeper daemon
    firewall     ufw (else nftables) on: only SSH, on the port this session came in on, and the site's
                 ports come in (none with [expose]); checked with a new SSH connection, under a timer
                 that turns it off again unless the check passes (deploy/firewall.py). Off with
                 [firewall] enabled = false
"""
from __future__ import annotations

from pathlib import Path

from deploy import commands
from deploy.context import Context, DeployError
from deploy.firewall import ensure_firewall
from deploy.parts import ensure_directories
from deploy.render import (KEEPER, RESTART_SECONDS, keeper_init, keeper_script, logrotate_conf, restart_dropin,
                           timers, tmpfiles_conf)
from deploy.target import CommandFailed

PACKAGES = ["nginx", "supervisor", "python3-venv", "procps", "logrotate", "cron"]
# supervisor only when it runs the app ([app] process_manager); cron only for [app.schedule] without systemd
SERVICES = ["nginx", "supervisor", "cron"]
KEPT = ["nginx", "supervisor"]  # started again within seconds when they die (the keepers)
NOLOGIN = "/usr/sbin/nologin"
KEEPER_SERVICE = "modelhost-keeper"


def provision(ctx: Context) -> None:
    """Make the host ready for `fab deploy`; every step is reported through ctx.report."""
    if not ctx.layout.needs_provision:
        raise DeployError("provision is for hosts (fab -H user@host provision); the local target needs no root "
                          "and no provisioning: fab deploy sets it up")
    ctx.programs.check()
    ensure_packages(ctx)
    ensure_user(ctx)
    ensure_directories(ctx)
    ensure_boot(ctx)
    ensure_log_rotation(ctx)
    ensure_nginx_site(ctx)
    ensure_services(ctx)
    ensure_keepers(ctx)
    ensure_firewall(ctx)


def wanted(ctx: Context, names: list[str]) -> list[str]:
    """The packages (or services) of names this host needs: supervisor when it runs the app, cron when the
    app has scheduled jobs and no systemd timers to run them."""
    needs = {"supervisor": ctx.programs.package == "supervisor",
             "cron": bool(ctx.settings.app.schedule) and not timers(ctx.layout, ctx.facts)}
    return [name for name in names if needs.get(name, True)]


def install_missing(ctx: Context, packages: list[str], recommends: bool = True) -> list[str]:
    """The packages of the list that are not installed, installed with apt (its lists updated first,
    only then); returns them."""
    missing = ctx.run(commands.missing_packages(packages)).stdout.split() if packages else []
    if missing:
        try:
            ctx.run(commands.apt_get("update"), timeout=900)
            ctx.run(commands.apt_get("install", *([] if recommends else ["--no-install-recommends"]), *missing),
                    timeout=1800)
        except CommandFailed as exc:
            raise DeployError(f"apt-get could not install {', '.join(missing)} on {ctx.target.name}: {exc}") from None
    return missing


def ensure_packages(ctx: Context) -> None:
    packages, python = wanted(ctx, PACKAGES), list(ctx.settings.python.system_packages)
    with ctx.step("packages") as step:
        # Debian's builds of the app's libraries ([python] system_packages) come without what they only
        # recommend: on an SD card that is hundreds of MB of compilers and docs for nothing.
        missing = install_missing(ctx, packages) + install_missing(ctx, python, recommends=False)
        step.changed = bool(missing)
        step.detail = (f"installed {', '.join(missing)} with apt" if missing else
                       ", ".join(packages + python) + " installed")


def ensure_user(ctx: Context) -> None:
    """The app's own system user, and nginx's user in its group: gunicorn's sockets belong to the
    app's user and group (gunicorn sets them), mode 770."""
    user, home, nginx = ctx.layout.user, ctx.layout.home, ctx.layout.nginx_group  # Debian: user and group www-data
    with ctx.step("user") as step:
        found = ctx.run(commands.passwd_entry(user), check=False).stdout.strip()
        if found:
            shell = found.split(":")[-1]
            step.detail = f"{user} exists (no login shell)"
            if shell not in (NOLOGIN, "/bin/false", "/usr/bin/false"):
                raise DeployError(f"user {user} exists on {ctx.target.name} with the login shell {shell}: the app "
                                  f"needs a user of its own with no login. Set another [app] name, or run: "
                                  f"usermod -s {NOLOGIN} {user}")
        else:
            ctx.run(commands.add_system_user(user, home, NOLOGIN, f"modelhost app {ctx.layout.app}"))
            step.changed = True
            step.detail = f"made system user {user} (home {home}, no login shell)"
        if user not in ctx.run(commands.groups(nginx)).stdout.split():
            ctx.run(commands.add_to_group(nginx, user))
            ctx.nginx.reload_if_running()  # its new workers take the new group
            step.changed = True
            step.detail += f"; {nginx} (nginx) added to group {user}, to reach the app's sockets"


def ensure_boot(ctx: Context) -> None:
    """The socket directory comes back after a reboot, before supervisor starts the app."""
    layout = ctx.layout
    with ctx.step("boot") as step:
        if ctx.facts.systemd:  # with systemd units too: nginx may start before the app
            path = layout.tmpfiles_file
            step.changed = ctx.target.write(path, tmpfiles_conf(layout))
            step.detail = f"{path} makes {layout.run_dir} at boot"
            return
        line = (f"install -d -o {layout.user} -g {layout.nginx_group} -m 0750 {layout.run_dir}"
                f"  # modelhost: {layout.app}'s sockets (/run is emptied at boot)")
        defaults = layout.supervisor_defaults
        current = ctx.target.read(defaults) or ""
        step.detail = f"{defaults} makes {layout.run_dir} before supervisor starts"
        if line not in current.splitlines():
            ctx.target.write(defaults, current + ("\n" if current and not current.endswith("\n") else "") + line + "\n")
            step.changed = True


def ensure_log_rotation(ctx: Context) -> None:
    """The site's nginx logs are rotated (logrotate checks the file before it stays)."""
    path = ctx.layout.logrotate_dir / ctx.layout.app
    with ctx.step("log rotation") as step:
        before = ctx.target.read(path)
        step.changed = ctx.target.write(path, logrotate_conf(ctx.layout))
        check = ctx.run(commands.logrotate_check(path), check=False)
        if check.exited != 0 or "error:" in check.stdout + check.stderr:  # it exits 0 past an unknown option
            if before is None:
                ctx.run(commands.remove(path))
            else:
                ctx.target.write(path, before)
            said = (check.stdout + check.stderr).strip()
            raise DeployError(f"logrotate refused {path} (the old one is back):\n{said}")
        step.detail = f"{path}: {', '.join(map(str, ctx.layout.nginx_logs))} daily or over 100 MB, 14 kept"


def ensure_nginx_site(ctx: Context) -> None:
    default = ctx.layout.nginx_enabled / "default"
    with ctx.step("nginx site") as step:
        step.detail = f"{default} is not there (Debian's default site is off)"
        if ctx.run(commands.exists_or_dangling_link(default), check=False).exited == 0:
            ctx.run(commands.remove(default))
            ctx.nginx.reload_if_running()
            step.changed = True
            step.detail = f"removed {default} (Debian's default site)"


def ensure_services(ctx: Context) -> None:
    systemd, services = ctx.facts.systemd, wanted(ctx, SERVICES)
    with ctx.step("services") as step:
        done = []
        for name in services:
            if ctx.run(commands.service(systemd, name, "is-enabled"), check=False).exited != 0:
                ctx.run(commands.service(systemd, name, "enable"))
                done.append(f"enabled {name}")
            if ctx.run(commands.service(systemd, name, "is-active"), check=False).exited != 0:
                if name == "nginx":
                    ctx.nginx.test()
                ctx.run(commands.service(systemd, name, "start"), timeout=120)
                done.append(f"started {name}")
        step.changed = bool(done)
        way = "systemctl" if systemd else "service (init.d scripts)"
        step.detail = (", ".join(done) if done else f"{' and '.join(services)} enabled and running") + f", by {way}"


def ensure_keepers(ctx: Context) -> None:
    """nginx and the process manager come back by themselves when they die, and what the dead one
    left (nginx's workers on the ports, gunicorn on the app's sockets) is stopped first."""
    services, systemd = wanted(ctx, KEPT), ctx.facts.systemd
    with ctx.step("keepers") as step:
        if systemd:
            changed = False
            for name in services:
                dropin = ctx.layout.systemd_dir / f"{name}.service.d" / "modelhost.conf"
                ctx.run(commands.make_directory(dropin.parent))
                changed |= ctx.target.write(dropin, restart_dropin(name))
            if changed:
                ctx.run(commands.systemctl("daemon-reload"))
            step.changed = changed
            step.detail = (f"{' and '.join(services)} restart {RESTART_SECONDS} s after dying, what they left "
                           f"stopped first (drop-ins in {ctx.layout.systemd_dir}/<service>.service.d)")
            return
        init = Path("/etc/init.d") / KEEPER_SERVICE
        changed = ctx.target.write(KEEPER, keeper_script(ctx.layout, services), mode=0o755)
        changed |= ctx.target.write(init, keeper_init(), mode=0o755)
        if ctx.run(commands.service(False, KEEPER_SERVICE, "is-enabled"), check=False).exited != 0:
            ctx.run(commands.service(False, KEEPER_SERVICE, "enable"))
            changed = True
        running = ctx.run(commands.service(False, KEEPER_SERVICE, "is-active"), check=False).exited == 0
        if changed or not running:
            ctx.run(commands.service(False, KEEPER_SERVICE, "restart"), timeout=60)
        step.changed = changed or not running
        step.detail = (f"{KEEPER_SERVICE} (init.d) starts {' and '.join(services)} again within "
                       f"{RESTART_SECONDS} s of dying, after stopping what they left")
