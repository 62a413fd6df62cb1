"""A balancer and three app hosts ([fleet] balancer, app), each a systemd test host with a network
namespace of its own (tests/hosts.py, `inbound`; the hosts reach each other by their own addresses,
as on a LAN), driven by the real `fab` with no -H, under continuous bounded load through the
balancer with every answer counted:

- provision: the app hosts at once, then the balancer (nginx, its site over the three);
- rolling deploys and a fleet rollback: each app host taken out of the balancer, deployed and put
  back, one at a time: no request fails;
- a release that fails to start on the second host: the roll stops there, that host is back in the
  balancer on its old release, the third untouched, the site keeps serving;
- an app host killed outright: no GET fails (the balancer sends it to another host).
"""
from __future__ import annotations

import re
import time

import pytest

from tests import hosts
from tests.servers import FLASK_REQUIREMENTS, committed, fab, git, request, steady_load

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

    def fab(self, *args: str):
        return fab("-S", str(self.config), *args, "--settings", str(self.repo / "deploy.toml"), timeout=1800)

    def serves(self) -> dict[str, str]:
        """What each app host's own site answers."""
        return {name: request(80, "/", host="herd.test", address=self.members[name].address)[2].decode()
                for name in NAMES}

    def release(self, version: str) -> None:
        (self.repo / "VERSION").write_text(version)
        git(self.repo, "commit", "-qam", f"version {version}")

    def load(self):
        # About 150 new connections a second at most: long rolls must not use up this machine's
        # ephemeral ports (each closed connection waits 60 s in TIME_WAIT).
        return steady_load(80, threads=3, limit=300, address=self.edge.address, host="herd.test", paths=("/",),
                           pause=0.02)


@pytest.fixture(scope="module")
def herd(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("herd")
    key = hosts.make_client_key(workdir)
    members: dict[str, hosts.TestHost] = {}
    try:
        for name in ("edge", *NAMES):
            members[name] = hosts.start_host("systemd", None, workdir, key, network=True, inbound=True, name=name)
        known = workdir / "known_hosts"
        known.write_text("".join(host.known_hosts_line() + "\n" for host in members.values()))
        config = workdir / "ssh_config"
        config.write_text("".join(
            f"Host {name}\n  HostName {host.address}\n  User root\n  IdentityFile {key}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {known}\n  GlobalKnownHostsFile /dev/null\n" for name, host in members.items()))
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
[firewall]
enabled = false
[fleet]
app = [{", ".join(f'"{name}"' for name in NAMES)}]
balancer = ["edge"]
"""})
        yield Herd(members, repo, config)
    finally:
        for host in members.values():
            host.stop()


def summary(out: str) -> dict[str, str]:
    return dict(re.findall(rf"^  ({'|'.join(NAMES)})  +(.*)$", out, re.M))


def test_rolling_deploys_and_a_rollback_through_the_balancer_fail_no_request(herd):
    out = herd.fab("provision")
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"^edge \|   balancer site +changed .*3 of 3 app hosts in", out.stdout, re.M), out.stdout
    out = herd.fab("deploy")
    assert out.returncode == 0, out.stdout + out.stderr
    assert herd.serves() == {name: "one\n" for name in NAMES}
    assert request(80, "/", host="herd.test", address=herd.edge.address)[2] == b"one\n"

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


def test_an_app_host_killed_outright_costs_no_get(herd):
    with herd.load() as counts:
        time.sleep(2)
        herd.members["app3"].kill()
        time.sleep(5)
    assert set(counts) == {200}, counts
