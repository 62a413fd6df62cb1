"""`fab expose` end to end: an app host behind "NAT" (a network namespace of its own that nothing can
connect into; tests/hosts.py) served at https://words.test through a relay test host, with the
relay's certificate from Pebble (tests/acme.py). Under steady load through the relay, the tunnel's
faults: its ssh killed, the relay's sshd restarted and its session killed, the app host's link
cut, a hung ssh (the watchdog). A second app host through the same relay. `--stop` leaves nothing.

Addresses: the app host is 198.51.100.2 behind the gateway 198.51.100.1, an address of this machine
where the relay's sshd and nginx also listen: the relay's "public address". Names resolve through
/etc/hosts on the hosts and through Pebble's DNS for Pebble.
"""
from __future__ import annotations

import http.client
import json
import re
import ssl
import threading
import time
from pathlib import Path

import pytest

from tests import acme, hosts
from tests.remote import Site, make_site, steps
from tests.servers import MIN_REQUESTS, drill, eventually, git, ok, request, steady_load

MISSING = hosts.missing_requirements() or acme.MISSING
pytestmark = [pytest.mark.skipif(MISSING is not None, reason=f"tunnels between test hosts: {MISSING}"),
              pytest.mark.slow]
DOMAIN, SECOND = "words.test", "words2.test"
TUNNEL_SSH = "pgrep -f '^ssh -F /dev/null -N'"
# fault -> (the command, run on "app" or "relay", seconds to recovery allowed)
TUNNEL_DRILLS = {
    "kill -9 of the tunnel's ssh": ("app", f"kill -9 $({TUNNEL_SSH})", 10),
    "the relay's sshd restarted": ("relay", "systemctl restart ssh", 10),
    "the relay's end of the tunnel killed": ("relay", "pkill -9 -u modelhost-relay", 15),
}


@pytest.fixture(scope="module")
def pebble(tmp_path_factory):
    with acme.pebble(tmp_path_factory.mktemp("pebble")) as server:
        yield server


@pytest.fixture(scope="module")
def network(tmp_path_factory, test_hosts):
    """The app host behind NAT and the relay, which also listens on the NAT's gateway."""
    workdir = tmp_path_factory.mktemp("tunnel-hosts")
    key = next(iter(test_hosts.values())).key
    app = hosts.start_host("service", None, workdir, key, network=True, name="home")
    try:
        relay = hosts.start_host("systemd", None, workdir, key, also_listen=(app.network.gateway,), name="relay")
        try:
            yield app, relay
        finally:
            relay.stop()
    finally:
        app.stop()


def trusting(base: Path, *pairs: tuple[hosts.TestHost, str]) -> Path:
    """An ssh config and known_hosts for these hosts under these names, the one behind NAT reached
    through its namespace."""
    known = base / "known_hosts"
    lines, config = [], ""
    for host, name in pairs:
        key = host.known_hosts_line().split()
        lines.append(f"{name} {key[1]} {key[2]}")
        config += (f"Host {name}\n  IdentityFile {host.key}\n  IdentitiesOnly yes\n  UserKnownHostsFile {known}\n"
                   "  GlobalKnownHostsFile /dev/null\n")
        if host.network:
            config += f"  ProxyCommand {host.proxy_command}\n"
    known.write_text("\n".join(lines) + "\n")
    (base / "ssh_config").write_text(config)
    return base / "ssh_config"


@pytest.fixture(scope="module")
def home(network, tmp_path_factory, demo_model, pebble) -> Site:
    """The reference app on the host behind NAT, exposed at words.test."""
    app, relay = network
    gateway = app.network.gateway
    site = make_site(app, tmp_path_factory.mktemp("home"), demo_model, names='"localhost"')
    site.config = trusting(site.config.parent, (app, app.address), (relay, gateway))
    settings = site.repo / "deploy.toml"
    text = settings.read_text().replace(f'address = "{app.address}"', 'address = ""')  # its own namespace
    text = text.replace('rate_limit = "off"', f'rate_limit = "off"\nacme_server = "{pebble.directory}"')
    settings.write_text(text + f'[expose]\nrelay = "root@{gateway}"\ndomain = "{DOMAIN}"\n'
                               f'relay_listen = "{gateway}"\ncheck_seconds = 5\n')
    git(site.repo, "commit", "-qam", "exposed")
    acme.trust_and_resolve(relay, pebble, DOMAIN, gateway)
    with open(app.root / "etc/hosts", "a") as hosts_file:  # the tunnel's end-to-end check
        hosts_file.write(f"{gateway}\t{DOMAIN}\n")
    return site


def verifying(pebble) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=pebble.root())


def public(pebble, gateway: str, path: str, domain: str = DOMAIN):
    return request(443, path, host=domain, address=gateway, tls=verifying(pebble))


def outage(inject, pebble, gateway: str, limit: float = 120) -> tuple[float, float]:
    """(seconds to the first failed GET, seconds until GETs pass again), from inject()'s start,
    asking /readyz every 0.25 s with a 3 s timeout (a stalled request counts as failed)."""
    context = verifying(pebble)
    began = time.monotonic()
    thread = threading.Thread(target=inject, daemon=True)
    thread.start()
    down = None
    while time.monotonic() - began < limit:
        try:
            passed = request(443, "/readyz", host=DOMAIN, address=gateway, tls=context, timeout=3)[0] == 200
        except (OSError, http.client.HTTPException):
            passed = False
        now = time.monotonic() - began
        if not passed and down is None:
            down = now
        if passed and down is not None and not thread.is_alive():
            thread.join()
            return down, now
        time.sleep(0.25)
    raise AssertionError(f"still failing {limit} s after the fault (first failure at {down} s)")


def test_the_relay_cannot_reach_the_app_host(network):
    app, relay = network
    for port in (22, 80):
        result = relay.ssh(f"timeout 5 bash -c '</dev/tcp/{app.address}/{port}' && echo connected")
        assert result.returncode != 0 and "connected" not in result.stdout, (port, result)
    assert app.ssh(f"timeout 5 bash -c '</dev/tcp/{app.network.gateway}/22' && echo connected").stdout.strip() == \
        "connected"  # while the app host reaches the relay


def test_fab_expose_serves_the_app_at_the_domain_through_the_relay(home, network, pebble):
    app, relay = network
    ok(home.fab("provision"))
    ok(home.fab("deploy"))
    began = time.monotonic()
    out = ok(home.fab("expose"))
    print(f"fab expose of a deployed app host and a fresh relay: {time.monotonic() - began:.1f} s")
    # (the site took the tunnel's socket at the deploy already: [expose] is in its deploy.toml)
    assert steps(out) == {name: "changed" for name in (
        "tunnel key", "relay", "tunnel user", "listen point", "relay site", "certbot", "certificate", "tunnel")} | {
        "names": "unchanged", "nginx": "unchanged", "verify": "unchanged"}, out
    assert f"https://{DOMAIN}/ serves the app through {app.network.gateway}" in out
    status, headers, body = public(pebble, app.network.gateway, "/api/v1/similar?word=fire&topn=2")
    assert status == 200 and len(json.loads(body)["results"]) == 2
    assert headers["Strict-Transport-Security"] == "max-age=63072000" and headers["X-Frame-Options"] == "DENY"
    status, _, page = public(pebble, app.network.gateway, "/")
    assert status == 200 and b"<form" in page
    # The app host's nginx sees the client's address as the relay saw it, not the tunnel's.
    def client(log: Path) -> str:  # "" until nginx has written the line (buffered on the app host)
        lines = log.read_text().splitlines() if log.exists() else []
        return next((line for line in reversed(lines) if "similar?word=fire&topn=2" in line), " ").split(" ")[0]
    seen = client(relay.root / "var/log/nginx/access.log")
    assert eventually(lambda: client(app.root / "var/log/modelhost/nginx-access.log")) == seen and seen not in ("127.0.0.1", "unix:")
    # Only the key's own listen point; the tunnel user has no shell.
    line = (relay.root / "var/lib/modelhost-relay/.ssh/authorized_keys").read_text().splitlines()[0]
    assert line.startswith('restrict,port-forwarding,permitlisten="127.0.0.1:20001" ssh-ed25519 ')
    assert line.endswith(f"modelhost-tunnel modelhost@{app.name}")
    assert "/usr/sbin/nologin" in relay.ssh("getent passwd modelhost-relay").stdout
    private = app.root / "etc/modelhost/tunnel/id_ed25519"
    assert private.stat().st_mode & 0o777 == 0o600 and not (relay.root / "etc/modelhost").exists()
    lines = {line.split()[0]: line for line in ok(home.fab("status")).splitlines()[1:]}
    assert re.search(rf"https://{DOMAIN}/ up since \S+ \(1 connects\); ", lines["tunnel"]), lines


def test_expose_again_changes_nothing(home):
    out = ok(home.fab("expose"))
    assert set(steps(out).values()) == {"unchanged"}, out


def test_the_tunnel_comes_back_by_itself_after_each_fault(home, network, pebble):
    app, relay = network
    gateway = app.network.gateway
    on = {"app": app, "relay": relay}
    faults = dict(TUNNEL_DRILLS)
    for fault, (where, command, seconds) in faults.items():
        result = drill(fault, lambda: on[where].ssh(command), 443, address=gateway, host=DOMAIN,
                       tls=verifying(pebble), path="/readyz", quiet=8)
        print(f"tunnel: {result}")
        assert result.recovered <= seconds, result
        assert public(pebble, gateway, "/readyz")[0] == 200

    # A network drop longer than the keep-alives (15 s): both ends give the connection up; the
    # tunnel connects again once the link is back (backing off up to 10 s meanwhile).
    def cut():
        app.network.cut()
        time.sleep(30)
        app.network.restore()
    down, back = outage(cut, pebble, gateway)
    print(f"tunnel: the app host's link cut for 30 s: no answer from {down:.1f} s, serving again "
          f"{back - 30:.1f} s after the link came back")
    assert back - 30 <= 25, (down, back)

    # A hung ssh (SIGSTOP): up, passing nothing. The watchdog's checks (every 5 s here, 3 failures in
    # a row) kill it and connect again.
    down, back = outage(lambda: app.ssh(f"kill -STOP $({TUNNEL_SSH})"), pebble, gateway)
    print(f"tunnel: the tunnel's ssh hung (SIGSTOP): serving again after {back:.1f} s")
    assert back <= 60, back
    assert "failed 3 times in a row" in ok(home.fab("logs", "--what", "tunnel", "--lines", "20"))

    # With no tunnel, the relay answers as the app's own nginx would: JSON under /api/, Retry-After.
    app.ssh("supervisorctl stop modelhost-tunnel")
    try:
        status, headers, body = public(pebble, gateway, "/api/v1/model")
        assert status == 502 and headers["Retry-After"] == "5" and json.loads(body)["error"]["code"] == "unavailable"
    finally:
        app.ssh("supervisorctl start modelhost-tunnel")
    deadline = time.monotonic() + 30
    while public(pebble, gateway, "/readyz")[0] != 200:
        assert time.monotonic() < deadline, "the tunnel did not come back after a start"
        time.sleep(0.5)


def test_a_second_app_host_through_the_same_relay(network, test_hosts, tmp_path, demo_model, pebble):
    app, relay = network
    gateway = app.network.gateway
    other = test_hosts["systemd"]
    site = make_site(other, tmp_path, demo_model, app="second", manager="systemd", names='"localhost"')
    site.config = trusting(tmp_path, (other, other.address), (relay, gateway))
    settings = site.repo / "deploy.toml"
    settings.write_text(settings.read_text().replace(
        'rate_limit = "off"', f'rate_limit = "off"\nacme_server = "{pebble.directory}"')
        + f'[expose]\nrelay = "root@{gateway}"\ndomain = "{SECOND}"\nrelay_listen = "{gateway}"\n')
    git(site.repo, "commit", "-qam", "exposed")
    acme.trust_and_resolve(relay, pebble, SECOND, gateway)
    with open(other.root / "etc/hosts", "a") as hosts_file:
        hosts_file.write(f"{gateway}\t{SECOND}\n")
    ok(site.fab("provision"))
    ok(site.fab("deploy"))
    out = ok(site.fab("expose"))
    assert "127.0.0.1:20002" in out, out  # its own listen point
    with steady_load(443, address=gateway, host=SECOND, tls=verifying(pebble)) as counts:
        first = public(pebble, gateway, "/readyz")[0]
    assert first == 200 and sum(counts.values()) >= MIN_REQUESTS and set(counts) == {200}, counts
    assert other.ssh("systemctl is-active second-tunnel").stdout.strip() == "active"
    out = ok(site.fab("expose", "--stop"))
    assert "second-tunnel on" in out and f"the certificate for {SECOND}" in out, out
    assert public(pebble, gateway, "/readyz")[0] == 200  # the first one is untouched


def test_expose_stop_leaves_nothing_on_either_end(home, network, pebble):
    app, relay = network
    out = ok(home.fab("expose", "--stop"))
    assert "removed: " in out and "the tunnel user modelhost-relay" in out, out
    assert app.ssh(TUNNEL_SSH).returncode == 1  # no ssh left
    assert "modelhost-tunnel" not in app.ssh("supervisorctl status").stdout
    for gone in ("etc/modelhost/tunnel", "etc/supervisor/conf.d/modelhost-tunnel.conf", "run/modelhost/tunnel.sock"):
        assert not (app.root / gone).exists(), gone
    for gone in (f"etc/nginx/sites-enabled/{DOMAIN}.conf", f"etc/nginx/sites-available/{DOMAIN}.conf",
                 f"etc/letsencrypt/live/{DOMAIN}", "var/lib/modelhost-relay",
                 "etc/ssh/sshd_config.d/modelhost-relay.conf"):
        assert not (relay.root / gone).exists(), gone
    assert relay.ssh("getent passwd modelhost-relay").returncode == 2
    with pytest.raises(OSError):
        public(pebble, app.network.gateway, "/readyz")  # the relay no longer serves the name
