"""A balancer and three app hosts ([fleet] balancer, app), each a systemd test host with a network
namespace of its own (tests/hosts.py, `inbound`; the hosts reach each other by their own addresses,
as on a LAN), driven by the real `fab` with no -H, under continuous bounded load through the
balancer with every answer counted:

- provision: the app hosts at once, then the balancer (nginx, its site over the three), each with
  its firewall: the app hosts' sites let in from the balancer only;
- rolling deploys and a fleet rollback: each app host taken out of the balancer, deployed and put
  back, one at a time: no request fails;
- a release that fails to start on the second host: the roll stops there, that host is back in the
  balancer on its old release, the third untouched, the site keeps serving;
- the certificate (Pebble): the balancer's, HTTPS through it verifies, the app hosts serve it
  plain HTTP;
- an app host killed outright: no GET fails (the balancer sends it to another host).
"""
from __future__ import annotations

import re
import ssl
import time

import pytest

from tests import acme, hosts
from tests.servers import FLASK_REQUIREMENTS, committed, fab, git, request, status_table, steady_load

MISSING = hosts.missing_requirements()
pytestmark = [pytest.mark.skipif(MISSING is not None, reason=f"test hosts with networks of their own: {MISSING}"),
              pytest.mark.slow]

APP = "herd"
NAMES = ("app1", "app2", "app3")
# The page names the release's VERSION; a release whose VERSION says "broken" fails to start on a
# host that has /var/lib/herd/fragile (the app's data directory), and nowhere else.
APP_SOURCE = '''from pathlib import Path

from flask import Flask

VERSION = Path(__file__).with_name("VERSION").read_text()
if "broken" in VERSION and Path("/var/lib/herd/fragile").exists():
    raise SystemExit("this host cannot run a broken release")

app = Flask(__name__)


@app.get("/")
def index():
    return VERSION
'''


class Herd:
    def __init__(self, members: dict[str, hosts.TestHost], repo, config):
        self.members, self.repo, self.config = members, repo, config
        self.edge = members["edge"]
        self.tls: ssl.SSLContext | None = None  # the balancer's certificate's root, once it has one

    def fab(self, *args: str):
        return fab("-S", str(self.config), *args, "--settings", str(self.repo / "deploy.toml"), timeout=1800)

    def serves(self) -> dict[str, str]:
        """What each app host's own site answers, asked on the host (its firewall lets in only the balancer)."""
        ask = ("python3 -c \"import urllib.request as u; print(u.urlopen(u.Request('http://127.0.0.1/', "
               "headers={'Host': 'herd.test'}), timeout=10).read().decode(), end='')\"")
        return {name: self.members[name].ssh(ask).stdout for name in NAMES}

    def release(self, version: str) -> None:
        (self.repo / "VERSION").write_text(version)
        git(self.repo, "commit", "-qam", f"version {version}")

    def load(self):
        """GETs through the balancer (over HTTPS once it has its certificate, self.tls). About 150 new
        connections a second at most: long rolls must not use up this machine's ephemeral ports
        (each closed connection waits 60 s in TIME_WAIT)."""
        return steady_load(443 if self.tls else 80, threads=3, limit=300, address=self.edge.address,
                           host="herd.test", paths=("/",), pause=0.02, tls=self.tls)


@pytest.fixture(scope="module")
def herd(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("herd")
    with hosts.named_hosts(workdir, ("edge", *NAMES)) as (members, config):
        repo = committed(workdir / "app", {"app.py": APP_SOURCE, "requirements.txt": FLASK_REQUIREMENTS,
                                           "VERSION": "one\n", "deploy.toml": f"""[app]
name = "{APP}"
wsgi = "app:app"
[nginx]
server_names = ["herd.test"]
rate_limit = "off"
connections_per_address = 0
[deploy]
ready_timeout = 30
[fleet]
app = [{", ".join(f'"{name}"' for name in NAMES)}]
balancer = ["edge"]
"""})
        yield Herd(members, repo, config)


def summary(out: str) -> dict[str, str]:
    return dict(re.findall(rf"^  ({'|'.join(NAMES)})  +(.*)$", out, re.M))


def test_rolling_deploys_and_a_rollback_through_the_balancer_fail_no_request(herd):
    out = herd.fab("provision")
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"^edge \|   balancer site +changed .*3 of 3 app hosts in", out.stdout, re.M), out.stdout
    # The app hosts' firewalls let their sites in from the balancer only; the balancer's, from anywhere.
    for name in NAMES:
        wall = rf"^{name} +\|   firewall +changed .*80/tcp from {re.escape(herd.edge.address)} \(http\)"
        assert re.search(wall, out.stdout, re.M), out.stdout
    assert re.search(r"^edge \|   firewall +changed .*80/tcp \(http\)[;,]", out.stdout, re.M), out.stdout
    out = herd.fab("deploy")
    assert out.returncode == 0, out.stdout + out.stderr
    assert herd.serves() == {name: "one\n" for name in NAMES}
    assert request(80, "/", host="herd.test", address=herd.edge.address)[2] == b"one\n"
    with pytest.raises(OSError):  # from here, not the balancer: no answer
        request(80, "/", host="herd.test", address=herd.members["app1"].address, timeout=3)

    herd.release("two\n")
    with herd.load() as counts:
        began = time.monotonic()
        out = herd.fab("deploy")
        rolled = time.monotonic() - began
    assert out.returncode == 0, out.stdout + out.stderr
    assert set(counts) == {200}, f"{counts}\n{out.stdout}"
    for name in NAMES:  # each taken out before its deploy, put back after
        assert re.search(rf"^edge \|   balancer site +changed .*2 of 3 app hosts in \({name} out\)", out.stdout,
                         re.M), out.stdout
    assert herd.serves() == {name: "two\n" for name in NAMES}
    print(f"rolling deploy of 3 hosts: {rolled:.1f} s, {sum(counts.values())} requests, none failed")

    with herd.load() as counts:
        out = herd.fab("rollback")
    assert out.returncode == 0 and set(counts) == {200}, f"{counts}\n{out.stdout}{out.stderr}"
    assert herd.serves() == {name: "one\n" for name in NAMES}

    # fab status: a row per app host, and how the balancer sees each (in its site, and asked from it).
    out = herd.fab("status")
    rows = status_table(out.stdout)
    assert out.returncode == 0 and [row["host"] for row in rows] == list(NAMES), out.stdout + out.stderr
    assert {row["edge sees"] for row in rows} == {"in, 200"}, out.stdout


def test_a_release_that_fails_on_the_second_host_stops_the_roll_and_the_site_serves_on(herd):
    herd.members["app2"].ssh("touch /var/lib/herd/fragile")
    herd.release("broken three\n")
    with herd.load() as counts:
        out = herd.fab("deploy")
    assert out.returncode == 1, out.stdout + out.stderr
    assert set(counts) == {200}, f"{counts}\n{out.stdout}"
    ended = summary(out.stdout)
    assert ended["app1"].startswith("ok") and ended["app2"].startswith("FAILED"), out.stdout
    assert ended["app3"].startswith("not started (stopped at app2)"), out.stdout
    assert herd.serves() == {"app1": "broken three\n", "app2": "one\n", "app3": "one\n"}
    # app2 is back in the balancer, on its old release.
    assert re.findall(r"^edge \|   balancer site .*", out.stdout, re.M)[-1].find("3 of 3 app hosts in") > 0, out.stdout
    herd.members["app2"].ssh("rm /var/lib/herd/fragile")


@pytest.mark.skipif(acme.MISSING is not None, reason=f"{acme.MISSING}")
def test_the_certificate_is_the_balancers_and_the_app_hosts_serve_it_plain_http(herd, tmp_path):
    edge = herd.edge
    with acme.pebble(tmp_path / "pebble", address=edge.network.gateway) as pebble:  # where edge reaches this machine
        acme.trust_and_resolve(edge, pebble, "herd.test", edge.address)
        settings = herd.repo / "deploy.toml"
        settings.write_text(settings.read_text().replace('rate_limit = "off"', (
            f'rate_limit = "off"\ntls = true\nacme_server = "{pebble.directory}"\nacme_email = "ops@example.com"')))
        git(herd.repo, "commit", "-qam", "HTTPS")
        out = herd.fab("deploy")
        assert out.returncode == 0 and "no certificate yet" not in out.stdout, out.stdout + out.stderr
        out = herd.fab("certificate")
        assert out.returncode == 0, out.stdout + out.stderr
        issued = r"^edge \|   certificate +changed .* for herd\.test, expires 20\d\d-"
        assert re.search(issued, out.stdout, re.M), out.stdout
        assert "edge | https://herd.test/ serves a certificate for herd.test" in out.stdout, out.stdout
        herd.tls = ssl.create_default_context(cadata=pebble.root())
        with herd.load() as counts:
            time.sleep(2)
        assert set(counts) == {200}, counts
        status, headers, _ = request(80, "/", host="herd.test", address=edge.address)
        assert status == 301 and headers["Location"] == "https://herd.test/", headers
        # The app hosts serve plain HTTP to the balancer, and no HTTPS of their own.
        assert herd.serves() == {name: "broken three\n" for name in NAMES}
        assert "listen 443" not in (herd.members["app1"].root / "etc/nginx/sites-available/herd.test.conf").read_text()


def test_an_app_host_killed_outright_costs_no_get(herd):
    with herd.load() as counts:
        time.sleep(2)
        herd.members["app3"].kill()
        time.sleep(5)
    assert set(counts) == {200}, counts
    out = herd.fab("status")
    rows = {row["host"]: row for row in status_table(out.stdout)}
    assert out.returncode == 1 and rows["app3"]["release"].startswith("FAILED"), out.stdout
    assert rows["app1"]["edge sees"] == "in, 200", out.stdout
    assert re.fullmatch(r"in, .*refused.*", rows["app3"]["edge sees"], re.I), out.stdout
