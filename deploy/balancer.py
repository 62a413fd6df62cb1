"""A fleet's balancer ([fleet] balancer): nginx on a host of its own spreading the site over the app
hosts ([fleet] app), and what a rolling deploy asks of it.

    balancer       nginx installed and running, Debian's default site off, the site's log directory
    balancer site  the upstream of the app hosts, those being deployed marked down: nginx -t, then a
                   graceful reload whose old workers are waited for, so the requests a host had in
                   flight through the balancer have finished when its deploy begins

The balancer's settings are the app's as `render.balancer_settings` makes them (its own name,
<app>-fleet, for its files and the fleet's lock in /srv/<app>-fleet/deploy.lock).
"""
from __future__ import annotations

from deploy import commands
from deploy.context import Context
from deploy.layout import Directory
from deploy.provision import install_missing
from deploy.render import Upstream, render_balancer

NGINX_PACKAGES = ["nginx", "procps"]  # a relay's and a balancer's (certbot comes with a certificate)


def ensure_balancer(b: Context) -> None:
    """nginx on the balancer, running, with Debian's default site (which answers every name) off,
    and the directories of its site's logs and of the fleet's lock."""
    with b.step("balancer") as step:
        missing = install_missing(b, NGINX_PACKAGES)
        made, _ = commands.parse_ensure_directories(b.run(commands.ensure_directories([
            Directory(b.layout.root, "root", "root", "755"),
            Directory(b.layout.nginx_logs[0].parent, "root", "adm", "750")])).stdout)
        started = ensure_nginx_running(b)
        step.changed = bool(missing or made or started)
        step.detail = ((f"installed {', '.join(missing)}; " if missing else "")
                       + "nginx running, Debian's default site off")


def ensure_nginx_running(ctx: Context) -> bool:
    """nginx enabled at boot and running, Debian's default site off; returns whether anything changed."""
    changed = False
    default = ctx.layout.nginx_enabled / "default"
    if ctx.run(commands.exists_or_dangling_link(default), check=False).exited == 0:
        ctx.run(commands.remove(default))
        changed = True
    for check, action in (("is-enabled", "enable"), ("is-active", "start")):
        if ctx.run(commands.service(ctx.facts.systemd, "nginx", check), check=False).exited != 0:
            ctx.nginx.test()
            ctx.run(commands.service(ctx.facts.systemd, "nginx", action), timeout=120)
            changed = True
    return changed


def ensure_balancer_site(b: Context, upstreams: list[Upstream]) -> None:
    """The balancer's site with these upstreams; the reload waits for the old workers' requests."""
    down = [u.host for u in upstreams if u.down]
    with b.step("balancer site") as step:
        files = render_balancer(b.settings, b.layout, b.facts, upstreams, b.tls)
        outcome = b.nginx.ensure(files)
        step.changed = bool(outcome)
        step.detail = (f"{len(upstreams) - len(down)} of {len(upstreams)} app hosts in"
                       + (f" ({', '.join(down)} out)" if down else "") + (f"; {outcome}" if outcome else ""))
