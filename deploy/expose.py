"""A public HTTPS URL for an app on a machine nothing can connect to (a home server behind NAT),
through a relay you own: what `fab expose` does. The app's target connects out to the relay over
SSH and holds a remote forwarding; the relay's nginx serves [expose] domain over HTTPS and proxies
to the forwarding's end, which leads to the app's own nginx. No third party sees the traffic.

On the app's target first:
    tunnel key    an ed25519 key pair made there (the private key never leaves it), in <config>/tunnel/
On the relay (over SSH from this machine, its host key checked as for every host):
    relay         nginx installed and running, Debian's default site off
    tunnel user   modelhost-relay: no shell; sshd's drop-in lets it hold remote forwardings and
                  nothing else (no pty, no commands, no local forwarding), keep-alives every 5 s
    listen point  the key's line in its authorized_keys: `restrict`, and permitlisten for its own
                  port on the relay's loopback (one per app and machine, kept across runs)
    relay site    the domain's nginx site: the app's security headers, limits and JSON errors,
                  proxying to the listen point; HTTPS once its certificate is there
    certbot, names, certificate, nginx: the relay's certificate for the domain (deploy/certificate.py)
Then on the app's target:
    tunnel        the relay's host key pinned; deploy/tunnel.py under the process manager: ssh -R,
                  started again whenever it exits, the public URL checked end to end
    verify        the health path at https://<domain> through the relay and the tunnel

`fab expose --stop` takes both ends away again.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

from deploy import commands, state
from deploy.balancer import NGINX_PACKAGES, ensure_nginx_running
from deploy.certificate import check_names, ensure_certbot, obtain
from deploy.commands.ssh import FIRST_PORT, LAST_PORT, TUNNEL_SOURCE
from deploy.context import Context, DeployError
from deploy.cutover import ask, configs, health, is_ready, release_app, said
from deploy.layout import Directory
from deploy.lock import locked
from deploy.provision import install_missing
from deploy.render import RELAY, relay_sshd, render_relay, site_file_name, tunnel_program

NOLOGIN = "/usr/sbin/nologin"
RELAY_HOME = Path("/var/lib") / RELAY
AUTHORIZED = RELAY_HOME / ".ssh" / "authorized_keys"
SSHD_DROP_IN = Path("/etc/ssh/sshd_config.d") / f"{RELAY}.conf"
FAILURES = 3  # end-to-end checks failed in a row before the tunnel connects again


@dataclass(frozen=True)
class Relay:
    """Where the relay is: its Context (reached from this machine), and the address and port the
    app's target dials."""
    ctx: Context
    address: str
    port: int
    host_key: tuple[str, str]  # (type, base64) of the key this machine checked against known_hosts


def exposed(ctx: Context) -> str:
    """The domain; DeployError when the settings do not say where to expose the app."""
    if not ctx.settings.expose.domain:
        raise DeployError('[expose] relay and domain are not set: add them to deploy.toml (relay = "user@your-'
                          'server", domain = "the name whose DNS record holds its address"), then fab expose')
    return ctx.settings.expose.domain


def expose(ctx: Context, relay: Relay) -> int:
    """Both ends of the tunnel, made or checked; returns the relay's listen port."""
    exposed(ctx)
    owner = tunnel_owner(ctx)
    with locked(ctx, "expose"):
        live, release = state.live(ctx)
        if release is None:
            raise DeployError(f"nothing is live on {ctx.target.name} yet: fab deploy first, then fab expose")
        public_key = ensure_key(ctx, owner)
        with locked(relay.ctx, f"expose of {owner}"):
            ensure_relay(relay.ctx)
            port = ensure_listen_point(relay.ctx, public_key, owner)
            ensure_relay_site(relay.ctx, port)
            ensure_certbot(relay.ctx)
            check_names(relay.ctx, [ctx.settings.expose.domain])
            obtain(relay.ctx, [ctx.settings.expose.domain])
            relay.ctx.__dict__.pop("tls", None)
            ensure_relay_site(relay.ctx, port)
        with ctx.step("nginx") as step:  # the site takes the tunnel's requests on its socket
            outcome = ctx.nginx.ensure(configs(ctx, release_app(ctx, release), live.live)["nginx"])
            step.changed = bool(outcome)
            step.detail = (f"{ctx.layout.tunnel_socket} takes the tunnel's requests"
                           + (f" ({outcome})" if outcome else ""))
        ensure_tunnel(ctx, relay, port)
        with relay.ctx.step("verify") as step:
            step.detail = verify_public(relay.ctx, ctx)
    return port


def tunnel_owner(ctx: Context) -> str:
    """<app>@<machine>: whose key and listen point an authorized_keys line is."""
    machine = ctx.run(commands.machine_name()).stdout.strip()
    return f"{ctx.layout.app}@{machine}"


def ensure_key(ctx: Context, owner: str) -> str:
    """The tunnel's key pair on the app's target; returns the public key."""
    layout, key = ctx.layout, ctx.layout.tunnel_dir / "id_ed25519"
    with ctx.step("tunnel key") as step:
        ctx.run(commands.make_directory(layout.tunnel_dir))
        if not ctx.exists(key):
            ctx.run(commands.keygen(key, f"modelhost-tunnel {owner}"))
            step.changed = True
        ctx.run(commands.restrict(key, 0o600, layout.secrets_owner))  # ssh runs as the app's user
        public = (ctx.target.read(key.with_name("id_ed25519.pub")) or "").strip()
        step.detail = f"{key} ({'made' if step.changed else 'kept'}; it never leaves {ctx.target.name})"
    return public


def ensure_relay(relay: Context) -> None:
    """nginx on the relay, running, with Debian's default site (which answers every name) off;
    the tunnel user, and sshd's rules for it."""
    systemd = relay.facts.systemd
    with relay.step("relay") as step:
        missing = install_missing(relay, NGINX_PACKAGES)
        step.changed = ensure_nginx_running(relay) or bool(missing)
        step.detail = ((f"installed {', '.join(missing)}; " if missing else "")
                       + "nginx running, Debian's default site off")
    with relay.step("tunnel user") as step:
        if relay.run(commands.passwd_entry(RELAY), check=False).exited != 0:
            relay.run(commands.add_system_user(RELAY, RELAY_HOME, NOLOGIN, "modelhost tunnels"))
            step.changed = True
        relay.run(commands.ensure_directories([Directory(RELAY_HOME, "root", "root", "755"),
                                               Directory(AUTHORIZED.parent, RELAY, RELAY, "700")]))
        before = relay.target.read(SSHD_DROP_IN)
        if relay.target.write(SSHD_DROP_IN, relay_sshd(commands.ALIVE_INTERVAL, commands.ALIVE_COUNT)):
            check = relay.run(commands.sshd_check(), check=False)
            if check.exited != 0:
                relay.restore({SSHD_DROP_IN: before})
                raise DeployError(f"sshd -t refused {SSHD_DROP_IN} on {relay.target.name} (the old one is back):\n"
                                  f"{(check.stdout + check.stderr).strip()}")
            relay.run(commands.service(systemd, "ssh", "reload"))
            step.changed = True
        step.detail = f"{RELAY}: no shell; remote forwardings only ({SSHD_DROP_IN})"


def ensure_listen_point(relay: Context, public_key: str, owner: str) -> int:
    """The key's line in the tunnel user's authorized_keys, with its own listen port (kept when the
    line is there already, else the first free one); returns the port."""
    with relay.step("listen point") as step:
        text = relay.target.read(AUTHORIZED) or ""
        entries = commands.parse_authorized(text)
        if owner in entries:
            port = entries[owner][0]
        else:
            taken = {p for p, _ in entries.values()} | commands.listening_ports(
                relay.run(commands.cat(Path("/proc/net/tcp")), check=False).stdout
                + relay.run(commands.cat(Path("/proc/net/tcp6")), check=False).stdout)
            port = next((p for p in range(FIRST_PORT, LAST_PORT + 1) if p not in taken), None)
            if port is None:
                raise DeployError(f"every listen port from {FIRST_PORT} to {LAST_PORT} on {relay.target.name} is "
                                  "taken: fab expose --stop for tunnels no longer used")
        line = commands.authorized_line(public_key, port, owner)
        lines = [entry for entry in text.splitlines() if entries.get(owner, (0, None))[1] != entry]
        wanted = "".join(f"{entry}\n" for entry in [*lines, line])
        step.changed = relay.target.write(AUTHORIZED, wanted, mode=0o600, owner=RELAY)
        step.detail = f"{owner}'s key may listen on 127.0.0.1:{port} of {relay.target.name}, and do nothing else"
    return port


def ensure_relay_site(relay: Context, port: int) -> None:
    domain = relay.settings.nginx.server_names[0]
    with relay.step("relay site") as step:
        files = render_relay(relay.settings, relay.layout, relay.facts, port, relay.tls)
        outcome = relay.nginx.ensure(files)
        step.changed = bool(outcome)
        how = "over HTTPS" if relay.tls else "over HTTP until the certificate is there"
        step.detail = f"{domain} -> 127.0.0.1:{port}, {how}" + (f" ({outcome})" if outcome else "")


def ensure_tunnel(ctx: Context, relay: Relay, port: int) -> None:
    layout = ctx.layout
    with ctx.step("tunnel") as step:
        known = layout.tunnel_dir / "known_hosts"
        key_type, key = relay.host_key
        name = relay.address if relay.port == 22 else f"[{relay.address}]:{relay.port}"
        path, mode = health(ctx)
        spec = {"ssh": commands.tunnel(layout.tunnel_dir / "id_ed25519", known, key_type, RELAY, relay.address,
                                       relay.port, port, layout.tunnel_socket),
                "domain": ctx.settings.expose.domain, "path": ctx.settings.nginx.prefix + path, "ready": mode,
                "interval": ctx.settings.expose.check_seconds, "failures": FAILURES,
                "state": str(layout.run_dir / "tunnel.state")}
        changed = ctx.target.write(known, f"{name} {key_type} {key}\n")
        changed |= ctx.target.write(layout.tunnel_dir / "tunnel.py", TUNNEL_SOURCE)
        changed |= ctx.target.write(layout.tunnel_dir / "tunnel.json", json.dumps(spec, indent=2) + "\n")
        program, text = tunnel_program(layout, ctx.layout.process_manager)
        changed |= ctx.target.write(program, text)
        running = ctx.programs.tunnel(changed)
        step.changed = changed or running
        step.detail = (f"{layout.app}-tunnel: ssh -R 127.0.0.1:{port} on {relay.address} -> "
                       f"{layout.tunnel_socket}, the relay's host key pinned in {known}")


def verify_public(relay: Context, ctx: Context) -> str:
    """The health path at the public name, asked on the relay of its own nginx: through the tunnel."""
    path, mode = health(ctx)
    deadline = time.monotonic() + 60
    while True:  # the tunnel connects within seconds; ssh may back off once
        answer = ask(relay, [path], wait=5, ready=mode)[0]
        if is_ready(answer, mode) or time.monotonic() > deadline:
            break
    where = f"https://{relay.settings.nginx.server_names[0]}{relay.settings.nginx.prefix}{path}"
    if not is_ready(answer, mode):
        raise DeployError(f"{where} answered {answer['status']} {said(answer, 200)} through the relay within 60 s: "
                          f"see fab logs --what tunnel, and the relay's nginx error log")
    return f"{where} {answer['status']} through the tunnel (asked on {relay.target.name})"


def stop(ctx: Context, relay: Relay) -> list[str]:
    """Both ends taken away: the tunnel program, its key and files; the site's tunnel socket; the
    relay's line, site and certificate (the tunnel user and its sshd rules too, once no line is
    left). Returns what was removed."""
    domain = exposed(ctx)
    owner = tunnel_owner(ctx)
    removed = []
    with locked(ctx, "expose --stop"):
        if ctx.programs.tunnel_remove():
            removed.append(f"{ctx.layout.app}-tunnel on {ctx.target.name}")
        if ctx.exists(ctx.layout.tunnel_dir):
            ctx.run(commands.remove(ctx.layout.tunnel_dir, ctx.layout.run_dir / "tunnel.state"))
            removed.append(f"{ctx.layout.tunnel_dir} (the key pair)")
        live, release = state.live(ctx)
        if release:
            quiet = copy.deepcopy(ctx.settings)
            quiet.expose.domain = ""  # the site without the tunnel's socket
            if ctx.nginx.ensure(configs(ctx, replace(release_app(ctx, release), settings=quiet), live.live)["nginx"]):
                removed.append(f"{ctx.layout.tunnel_socket} from the site")
        with locked(relay.ctx, f"expose --stop of {owner}"):
            removed += stop_relay(relay.ctx, owner, domain)
    return removed


def stop_relay(relay: Context, owner: str, domain: str) -> list[str]:
    removed = []
    text = relay.target.read(AUTHORIZED) or ""
    entries = commands.parse_authorized(text)
    if owner in entries:
        kept = "".join(f"{line}\n" for line in text.splitlines() if line != entries[owner][1])
        relay.target.write(AUTHORIZED, kept, mode=0o600, owner=RELAY)
        removed.append(f"{owner}'s key on {relay.target.name}")
    site = relay.layout.nginx_sites / site_file_name([domain])
    if relay.exists(site):
        relay.run(commands.remove(site, relay.layout.nginx_enabled / site.name))
        relay.nginx.test()
        relay.nginx.reload_if_running()
        removed.append(f"{site}")
    if relay.exists(Path("/etc/letsencrypt/live") / domain):
        relay.run(commands.certbot_delete(domain))
        removed.append(f"the certificate for {domain}")
    if not commands.parse_authorized(relay.target.read(AUTHORIZED) or "") and relay.exists(SSHD_DROP_IN):
        relay.run(commands.remove(SSHD_DROP_IN))
        relay.run(commands.service(relay.facts.systemd, "ssh", "reload"))
        relay.run(commands.kill_user(RELAY), check=False)  # a session of a tunnel that died uncleanly
        relay.run(commands.delete_user(RELAY))
        relay.run(commands.remove(RELAY_HOME))
        removed.append(f"the tunnel user {RELAY} and {SSHD_DROP_IN} (no tunnel left)")
    return removed


def describe(ctx: Context) -> str:
    """The tunnel for `fab status`: its program, since when ssh is up, the last end-to-end check."""
    domain = ctx.settings.expose.domain
    text = ctx.target.read(ctx.layout.run_dir / "tunnel.state")
    if text is None:
        return f"https://{domain}/ not set up here: fab expose"
    tunnel = json.loads(text)
    up = f"up since {tunnel['tunnel_since']}" if tunnel["tunnel_since"] else "DOWN (connecting again)"
    last = (f"last check {tunnel['checked']}: {tunnel['check']}" + (f", passed {tunnel['passed']}" if tunnel['passed']
                                                                      else ", never passed")
            if tunnel["checked"] else "not checked yet")
    return f"https://{domain}/ {up} ({tunnel['connects']} connects); {last}"

