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

import re

from deploy import certificate as certificates, commands
from deploy.commands import CertificateInfo
from deploy.context import Context
from deploy.cutover import health, is_ready, said
from deploy.layout import Directory
from deploy.provision import install_missing
from deploy.render import Upstream, render_balancer

NGINX_PACKAGES = ["nginx", "procps"]  # a relay's and a balancer's (certbot comes with a certificate)
BALANCER_PACKAGES = [*NGINX_PACKAGES, "python3"]  # python3: the kit's probe of the site


def ensure_balancer(b: Context) -> None:
    """nginx on the balancer, running, with Debian's default site (which answers every name) off,
    and the directories of its site's logs and of the fleet's lock."""
    with b.step("balancer") as step:
        missing = install_missing(b, BALANCER_PACKAGES)
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
        outcome = write_site(b, upstreams)
        step.changed = bool(outcome)
        step.detail = (f"{len(upstreams) - len(down)} of {len(upstreams)} app hosts in"
                       + (f" ({', '.join(down)} out)" if down else "") + (f"; {outcome}" if outcome else ""))


def write_site(b: Context, upstreams: list[Upstream]) -> str:
    """The balancer's nginx files (HTTPS once its certificate is there), checked and reloaded: what changed."""
    return b.nginx.ensure(render_balancer(b.settings, b.layout, b.facts, upstreams, b.tls))


def certificate(b: Context, upstreams: list[Upstream]) -> CertificateInfo:
    """The site's certificate on the balancer, which serves HTTPS to the world and plain HTTP to it
    from the app hosts (whose sites the balancer reaches on their private addresses)."""
    return certificates.certificate(b, site=lambda: write_site(b, upstreams))


def view(b: Context, upstreams: list[Upstream]) -> dict[str, str]:
    """How the balancer sees each app host: in its site or marked down (a deploy had it out), and the
    health path asked from the balancer straight at the host's site (its firewall lets only the
    balancer in)."""
    site = next(path for path, text in render_balancer(b.settings, b.layout, b.facts, upstreams, False).items()
                if "upstream " in text)
    line = re.compile(r"^ *server \S+ max_fails=\S+ fail_timeout=\S+( down)?; +# (\S+)$", re.M)
    marked = {host: bool(down) for down, host in line.findall(b.target.read(site) or "")}
    path, mode = health(b)
    seen = {}
    for upstream in upstreams:
        address, port = upstream.address.rsplit(":", 1)
        argv = commands.probe(b.python, paths=[b.settings.nginx.prefix + path], address=address.strip("[]"),
                              port=int(port), host=b.settings.nginx.server_names[0], ready=mode)
        answer = commands.parse_probe(b.run(argv, timeout=60).stdout)[0]
        state = ("not in its site" if upstream.host not in marked else "out (down)" if marked[upstream.host]
                 else "in")
        asked = f"{answer['status']}" if is_ready(answer, mode) else f"{answer['status'] or ''} {said(answer, 60)}"
        seen[upstream.host] = f"{state}, {asked.strip()}"
    return seen
