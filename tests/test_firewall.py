"""The firewall `fab provision` turns on, end to end, on the one kind of test host where a firewall
is safe: a systemd host with a network namespace of its own that this machine connects into as to a
server on the internet (tests/hosts.py, `inbound`). Everything is checked from outside, over the
veth pair: SSH with a new connection, the site, and a port with a listener that must not answer.

In order: nftables where apt has no ufw (pinned away) -> ufw once it is installed (the nftables
table taken away) -> a deploy served through it -> provision again (nothing changes) -> [firewall]
allow added and removed (a rule of yours stays) -> ufw turned off by hand, on again -> a provision
whose new SSH connection fails turns the firewall off again -> fab status.

The app is a one-page Flask app, so that the deploy takes seconds (pip installs flask and gunicorn).
"""
from __future__ import annotations

import re
import socket
import time

import pytest

from tests import hosts
from tests.remote import Site, ssh_config, steps, timed
from tests.servers import FLASK_REQUIREMENTS, committed, git, ok, request

MISSING = hosts.missing_requirements()
pytestmark = [pytest.mark.skipif(MISSING is not None, reason=f"a test host with a network of its own: {MISSING}"),
              pytest.mark.slow]

APP = "walled"
LISTENER = 8081  # a port something listens on, which the firewall must not let in
APP_SOURCE = '''from flask import Flask

app = Flask(__name__)


@app.get("/")
def index():
    return "behind the firewall\\n"
'''


@pytest.fixture(scope="module")
def walled(tmp_path_factory) -> Site:
    """A fresh systemd host that this machine reaches directly (nothing in between), and the app."""
    workdir = tmp_path_factory.mktemp("firewall")
    host = hosts.start_host("systemd", None, workdir, hosts.make_client_key(workdir), network=True, inbound=True,
                            name="walled")
    try:
        assert host.network.inbound and host.address.startswith("198.51.100.")  # never the machine's own network
        repo = committed(workdir / "app", {"app.py": APP_SOURCE, "requirements.txt": FLASK_REQUIREMENTS,
                                           "deploy.toml": f"""[app]
name = "{APP}"
wsgi = "app:app"
[nginx]
server_names = ["{host.address}"]
rate_limit = "off"
[deploy]
ready_timeout = 60
[firewall]
enabled = true
"""})
        known = workdir / "known_hosts"
        known.write_text(host.known_hosts_line() + "\n")
        yield Site(host, repo, ssh_config(workdir / "ssh_config", host, known))
    finally:
        host.stop()
        assert not host.processes(), f"{host.name} left processes"


def knock(address: str, port: int, timeout: float = 3) -> str:
    """What a TCP connection from this machine meets: "open", "refused" (let in, nothing listens) or
    "dropped" (no answer: the firewall)."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return "open"
    except ConnectionRefusedError:
        return "refused"
    except (socket.timeout, TimeoutError):
        return "dropped"


def assert_walled(site: Site) -> None:
    """From outside: SSH logs in on a new connection, the site's port is let in, the listener's is not
    (though it answers on the host itself)."""
    assert site.host.ssh("true", timeout=30).returncode == 0
    assert knock(site.host.address, 80) in ("open", "refused")
    assert knock(site.host.address, LISTENER) == "dropped"
    asked = f"import urllib.request as u; print(u.urlopen('http://127.0.0.1:{LISTENER}/').status)"
    assert site.on_host(f'python3 -c "{asked}"').strip() == "200"


def set_allow(site: Site, allow: str) -> None:
    settings = site.repo / "deploy.toml"
    text = re.sub(r"\nallow = .*", "", settings.read_text())
    settings.write_text(text + (f"allow = {allow}\n" if allow else ""))
    git(site.repo, "commit", "-qam", f"allow {allow}")


def test_where_apt_has_no_ufw_provision_turns_on_nftables(walled):
    site = walled
    (site.host.root / "etc/apt/preferences.d/no-ufw").write_text("Package: ufw\nPin: release *\nPin-Priority: -1\n")
    out = timed("fresh provision, nftables", site, "provision")
    assert steps(out)["firewall"] == "changed", out
    assert re.search(r"firewall +changed .*installed nftables with apt; loaded table inet modelhost: 22/tcp \(ssh\), "
                     r"80/tcp \(http\), now and at boot \(modelhost-firewall\); a new SSH connection logged in; "
                     r"nftables active \(table inet modelhost\): 22/tcp \(ssh\), 80/tcp \(http\)", out), out
    site.on_host(f"systemd-run --unit listener python3 -m http.server {LISTENER}")
    time.sleep(1)
    assert_walled(site)
    assert site.on_host("systemctl is-enabled modelhost-firewall; systemctl is-active modelhost-firewall").split() == [
        "enabled", "active"]
    assert "modelhost-firewall-undo" not in site.on_host("systemctl list-timers --all")  # cancelled
    out = timed("no-op provision, nftables", site, "provision")
    assert set(steps(out).values()) == {"unchanged"} and " 0 of 9 steps changed something" in out, out


def test_once_ufw_is_installed_provision_moves_to_it(walled):
    site = walled
    (site.host.root / "etc/apt/preferences.d/no-ufw").unlink()
    site.on_host("DEBIAN_FRONTEND=noninteractive apt-get install -q -y ufw >/dev/null")
    out = timed("provision, nftables to ufw", site, "provision")
    assert re.search(r"firewall +changed .*let in 22/tcp \(ssh\), 80/tcp \(http\); turned it on \(also at boot\); took "
                     r"modelhost's nftables table and /etc/modelhost-firewall/modelhost.nft away; a new SSH connection "
                     r"logged in; ufw active: 22/tcp \(ssh\), 80/tcp \(http\)", out), out
    assert site.host.ssh("nft list table inet modelhost").returncode != 0
    assert not (site.host.root / "etc/systemd/system/modelhost-firewall.service").exists()
    assert_walled(site)
    assert "Status: active" in site.on_host("ufw status")


def test_the_site_is_served_through_the_firewall(walled):
    site = walled
    out = timed("first deploy", site, "deploy")
    assert f"open http://{site.host.address}/" in out, out
    status, _, body = request(80, "/", host=site.host.address, address=site.host.address)
    assert status == 200 and body == b"behind the firewall\n"
    assert_walled(site)


def test_a_second_provision_changes_nothing(walled):
    out = timed("no-op provision, ufw", walled, "provision")
    assert set(steps(out).values()) == {"unchanged"} and " 0 of 9 steps changed something" in out, out
    assert re.search(r"firewall +unchanged .* ufw active: 22/tcp \(ssh\), 80/tcp \(http\); the rest of incoming "
                     "dropped", out), out


def test_allow_opens_a_port_and_closes_it_again_and_a_rule_of_yours_stays(walled):
    site = walled
    site.on_host("ufw allow 8082/tcp")  # by hand
    set_allow(site, f'["{LISTENER}"]')
    out = ok(site.fab("provision"))
    assert re.search(rf"firewall +changed .*let in {LISTENER}/tcp \(allow\); a new SSH connection logged in", out), out
    assert knock(site.host.address, LISTENER) == "open"
    set_allow(site, "")
    out = ok(site.fab("provision"))
    assert re.search(rf"firewall +changed .*removed {LISTENER}/tcp \(allow\); .*8082/tcp \(yours\)", out), out
    assert knock(site.host.address, LISTENER) == "dropped"
    assert "ufw allow 8082/tcp" in site.on_host("ufw show added")  # never touched


def test_ufw_turned_off_by_hand_is_turned_on_again_with_its_rules(walled):
    site = walled
    site.on_host("ufw disable")
    assert knock(site.host.address, LISTENER) == "open"
    out = ok(site.fab("provision"))
    assert re.search(r"firewall +changed .*turned it on \(also at boot\); a new SSH connection logged in; ufw active: "
                     r"22/tcp \(ssh\), 80/tcp \(http\), 8082/tcp \(yours\)", out), out
    assert_walled(site)
    assert set(steps(ok(site.fab("provision"))).values()) == {"unchanged"}


def test_when_a_new_ssh_connection_fails_the_firewall_goes_off_again(walled, tmp_path):
    """A jump that lets fab's own session through and nothing after it: the check after the change
    cannot log in, so provision turns the firewall off over the session it has, and says so."""
    site = walled
    site.on_host("ufw disable")
    once = tmp_path / "used"
    config = tmp_path / "ssh_config"
    config.write_text(site.config.read_text() + f"  ProxyCommand sh -c 'test ! -e {once} && touch {once} && "
                                                "exec nc %h %p'\n")
    result = site.fab("provision", config=config)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "a new SSH connection to" in result.stderr and "so the firewall is off again" in result.stderr, result.stderr
    assert "Status: inactive" in site.on_host("ufw status")
    assert "modelhost-firewall-undo" not in site.on_host("systemctl list-timers --all")
    ok(site.fab("provision"))  # on again, checked
    assert_walled(site)


def test_status_shows_the_firewall(walled):
    lines = {line.split()[0]: line for line in ok(walled.fab("status")).splitlines()[1:]}
    assert re.fullmatch(r"  firewall +ufw active: 22/tcp \(ssh\), 80/tcp \(http\), 8082/tcp \(yours\); the rest of "
                        r"incoming dropped", lines["firewall"]), lines
