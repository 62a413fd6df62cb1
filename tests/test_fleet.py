"""A fleet of three app hosts in deploy.toml ([fleet] app), driven by the real `fab` with no -H: each
a systemd test host with a network namespace of its own (tests/hosts.py, `inbound`), so every nginx
listens on every address as on a real server, and this machine reaches them as a controller would.

provision runs on all three at once (their lines interleave, each marked with its host); deploy goes
one host at a time and stops at the first host that fails, leaving the rest on what they ran, and
says at the end what each host runs, the hosts of one run naming their release alike; a rollback
to a commit finds its release on every host; status and releases run at once; a task that acts on
one host (run) refuses a fleet. The app is a one-page Flask app, so a deploy takes seconds.
"""
from __future__ import annotations

import re
import time

import pytest

from tests import hosts
from tests.servers import FLASK_REQUIREMENTS, VERSIONED_APP, committed, fab, git, request, status_table

MISSING = hosts.missing_requirements()
pytestmark = [pytest.mark.skipif(MISSING is not None, reason=f"test hosts with networks of their own: {MISSING}"),
              pytest.mark.slow]

APP = "flock"
NAMES = ("fleet1", "fleet2", "fleet3")


class Fleet:
    def __init__(self, members: dict[str, hosts.TestHost], repo, config):
        self.members, self.repo, self.config = members, repo, config

    def fab(self, *args: str, hosts: str | None = None):
        return fab("-S", str(self.config), *(["-H", hosts] if hosts else []), *args,
                   "--settings", str(self.repo / "deploy.toml"), timeout=1800)

    def serves(self) -> dict[str, str]:
        return {name: (lambda answer: (answer[0], answer[2].decode()))(
                    request(80, "/", host="flock.test", address=host.address)) for name, host in self.members.items()}

    def release(self, version: str) -> None:
        (self.repo / "VERSION").write_text(version)
        git(self.repo, "commit", "-qam", f"version {version}")

    def secret_keys(self) -> dict[str, str]:
        """Each host's FLASK_SECRET_KEY, which the deploy made up."""
        return {name: re.search(r"^FLASK_SECRET_KEY=(.+)$", (host.root / f"etc/{APP}/secrets.env").read_text(),
                                re.M)[1] for name, host in self.members.items()}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("fleet")
    with hosts.named_hosts(workdir, NAMES) as (members, config):
        repo = committed(workdir / "app", {"app.py": VERSIONED_APP, "requirements.txt": FLASK_REQUIREMENTS,
                                           "VERSION": "one\n", "deploy.toml": f"""[app]
name = "{APP}"
wsgi = "app:app"
[nginx]
server_names = ["flock.test"]
rate_limit = "off"
[deploy]
ready_timeout = 60
[firewall]
enabled = false
[fleet]
app = [{", ".join(f'"{name}"' for name in NAMES)}]
"""})
        yield Fleet(members, repo, config)


def marked(out: str, name: str) -> list[str]:
    """The lines of one host, without their mark."""
    return [line.split(" | ", 1)[1] for line in out.splitlines() if line.startswith(f"{name} | ")]


def summary(out: str) -> dict[str, str]:
    """The closing line per host: host -> the rest of its line."""
    return dict(re.findall(rf"^  ({'|'.join(NAMES)})  +(.*)$", out, re.M))


def test_a_fleet_is_provisioned_at_once_and_deployed_one_host_at_a_time(fleet):
    began = time.monotonic()
    result = fleet.fab("provision")
    at_once = time.monotonic() - began
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert out.startswith(f"provision on 3 hosts ({', '.join(NAMES)}): all at once"), out
    lines = out.splitlines()
    firsts = [next(i for i, line in enumerate(lines) if line.startswith(f"{name} | provisioning")) for name in NAMES]
    readies = [next(i for i, line in enumerate(lines) if line.startswith(f"{name} | {name} is ready"))
               for name in NAMES]
    assert max(firsts) < min(readies), f"the hosts were not provisioned at once:\n{out}"
    assert "provision: 3 of 3 hosts ok" in out and all(v.startswith("ok") for v in summary(out).values()), out

    # Once provisioned, the same provision at once and one host after the other (fab -H a,b,c), side by side.
    began = time.monotonic()
    again = fleet.fab("provision")
    again_at_once = time.monotonic() - began
    began = time.monotonic()
    serial = fleet.fab("provision", hosts=",".join(NAMES))
    one_by_one = time.monotonic() - began
    assert again.returncode == 0 and serial.returncode == 0, again.stdout + serial.stdout + serial.stderr
    print(f"provision of 3 hosts: first {at_once:.1f} s at once; again {again_at_once:.1f} s at once, "
          f"{one_by_one:.1f} s one after the other (fab -H)")

    out = fleet.fab("deploy").stdout
    assert "deploy: 3 of 3 hosts ok" in out, out
    one = {name: re.search(r"(\d{8}T\d{6}-\w+) live$", text)[1] for name, text in summary(out).items()}
    assert len(set(one.values())) == 1, out  # the same release id everywhere
    assert fleet.serves() == {name: (200, "one\n") for name in NAMES}
    # The secret key made up is the same on every host: what one signed (a session) is good on another.
    assert len(set(fleet.secret_keys().values())) == 1
    # One at a time: fleet2 begins after fleet1 has ended.
    lines = out.splitlines()
    assert max(i for i, line in enumerate(lines) if line.startswith("fleet1 | ")) < min(
        i for i, line in enumerate(lines) if line.startswith("fleet2 | ")), out


def test_a_deploy_stops_at_the_first_host_that_fails_and_says_what_each_host_runs(fleet):
    before = summary(fleet.fab("releases").stdout)
    old = {name: re.search(r"live: (\S+)", text)[1] for name, text in before.items()}
    fleet.release("two\n")
    fleet.members["fleet2"].ssh(f"mkdir -p /srv/{APP}/deploy.lock && echo 'deploy by someone' > "
                                f"/srv/{APP}/deploy.lock/holder")
    result = fleet.fab("deploy")
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    ended = summary(result.stdout)
    new = re.search(r"(\S+) live$", ended["fleet1"])[1]
    assert ended["fleet1"].startswith("ok") and new != old["fleet1"], out
    assert ended["fleet2"].startswith("FAILED") and "deploy by someone" in ended["fleet2"], out
    assert ended["fleet2"].endswith(f"live: {old['fleet2']}"), out
    assert ended["fleet3"] == f"not started (stopped at fleet2); live: {old['fleet3']}", out
    assert "error: deploy failed on fleet2" in result.stderr, out
    assert any("deploy by someone" in line for line in marked(result.stderr, "fleet2")), out
    assert fleet.serves() == {"fleet1": (200, "two\n"), "fleet2": (200, "one\n"), "fleet3": (200, "one\n")}

    # The lock gone, the same deploy again: fleet1 has the release already, the others get it.
    fleet.members["fleet2"].ssh(f"rm -r /srv/{APP}/deploy.lock")
    out = fleet.fab("deploy").stdout
    assert "deploy: 3 of 3 hosts ok" in out, out
    assert {re.search(r"-(\w+) live\b", text)[1] for text in summary(out).values()} == {new.split("-")[1]}, out
    assert summary(out)["fleet1"].endswith(f"{new} live (nothing to do)"), out
    assert re.search(r"^fleet1 \|   unchanged +unchanged ", out, re.M), out
    # Again: every host has nothing to do, found out at once; nothing is deployed.
    began = time.monotonic()
    out = fleet.fab("deploy").stdout
    print(f"a no-op deploy of 3 hosts: {time.monotonic() - began:.1f} s")
    assert all(text.endswith("live (nothing to do)") for text in summary(out).values()), out
    assert "deploying " not in out and "deploy: 3 of 3 hosts ok" in out, out
    assert fleet.serves() == {name: (200, "two\n") for name in NAMES}

    # The fleet's own lock, on its first host: a second deploy of the fleet is refused before any host.
    fleet.members["fleet1"].ssh(f"mkdir -p /srv/{APP}-fleet/deploy.lock && echo 'deploy of the fleet by someone' "
                                f"> /srv/{APP}-fleet/deploy.lock/holder")
    fleet.release("three\n")
    result = fleet.fab("deploy")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "another deploy is running on fleet1: deploy of the fleet by someone" in result.stderr, result.stderr
    assert fleet.serves() == {name: (200, "two\n") for name in NAMES}
    # fleet3 holds a secret key of its own (made before hosts shared it): it takes fleet1's.
    shared = fleet.secret_keys()["fleet1"]
    fleet.members["fleet3"].ssh(f"sed -i 's/^FLASK_SECRET_KEY=.*/FLASK_SECRET_KEY=its-own/' /etc/{APP}/secrets.env")
    out = fleet.fab("deploy", "--break-lock").stdout
    assert "deploy: 3 of 3 hosts ok" in out, out
    assert "FLASK_SECRET_KEY: fleet3 held a value of its own; every host now has fleet1's" in out, out
    assert fleet.secret_keys() == dict.fromkeys(NAMES, shared)
    assert "removed the deploy lock on fleet1 (deploy of the fleet by someone)" in out, out
    assert fleet.serves() == {name: (200, "three\n") for name in NAMES}


def test_a_rollback_to_a_commit_finds_its_release_on_every_host(fleet):
    first = git(fleet.repo, "rev-list", "--max-parents=0", "HEAD").strip()  # "one", made by the first deploy
    result = fleet.fab("rollback", "--to", first)
    assert result.returncode == 0, result.stdout + result.stderr
    ids = {name: re.search(r"(\S+) live again$", text)[1] for name, text in summary(result.stdout).items()}
    assert len(set(ids.values())) == 1 and next(iter(ids.values())).endswith(f"-{first[:7]}"), result.stdout
    assert fleet.serves() == {name: (200, "one\n") for name in NAMES}


def test_status_and_releases_run_at_once_and_a_one_host_task_refuses_a_fleet(fleet):
    result = fleet.fab("status")
    assert result.returncode == 0, result.stdout + result.stderr
    for name in NAMES:
        assert marked(result.stdout, name)[0].startswith(f"{APP} on {name}: http://flock.test/"), result.stdout
    # One table: a row per host.
    rows = status_table(result.stdout)
    assert [row["host"] for row in rows] == list(NAMES), result.stdout
    assert len({row["release"] for row in rows}) == 1, result.stdout  # the same release everywhere
    for row in rows:
        assert re.fullmatch(r"\d{8}T\d{6}-\w+", row["release"]) and row["ready"].startswith("200 "), result.stdout
        assert row["workers"].isdigit() and re.fullmatch(r"[\d.]+ of \d+ cores", row["load"]), result.stdout
    refused = fleet.fab("run", "true")
    assert refused.returncode == 2 and "run acts on one host, and deploy.toml lists a fleet" in refused.stderr
    assert "fab -H fleet1 run" in refused.stderr
    # -H still picks one host of the fleet.
    out = fleet.fab("releases", hosts="fleet3").stdout
    assert out.startswith(f"releases of {APP} on ") and " | " not in out, out
