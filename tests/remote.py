"""Sites on the test hosts (tests/hosts.py): an app checkout deployed to a host with the real `fab`,
over SSH with the host's key trusted; the steps a task printed."""
from __future__ import annotations

import re
import time
from pathlib import Path

from tests import hosts
from tests.servers import REFERENCE_DEPLOY, app_checkout, fab, ok, request

APP = "modelhost"
# What only the controller needs (Fabric and its SSH stack, supervisor for the local target): never
# in an app's virtualenv on a host.
KITS_TOOLS = {"fabric", "paramiko", "invoke", "supervisor", "cryptography", "bcrypt", "pynacl", "cffi"}
STEPS = re.compile(r"^  ([\w ]+?) +(changed|unchanged) +[\d.]+ s", re.M)


def ssh_config(path: Path, host: hosts.TestHost, known_hosts: Path) -> Path:
    path.write_text(f"Host {host.address}\n  IdentityFile {host.key}\n  IdentitiesOnly yes\n"
                    f"  UserKnownHostsFile {known_hosts}\n  GlobalKnownHostsFile /dev/null\n")
    return path


class Site:
    """One host and the app checkout deployed to it; fab(task, ...) runs a task there."""

    def __init__(self, host: hosts.TestHost, repo: Path, config: Path):
        self.host, self.repo, self.config = host, repo, config

    def fab(self, *args: str, user: str = "root", config: Path | None = None, env: dict | None = None):
        return fab("-S", str(config or self.config), "-H", f"{user}@{self.host.address}", *args,
                   "--settings", str(self.repo / "deploy.toml"), timeout=1800, env=env)

    def get(self, path: str):
        return request(80, path, host=self.host.address, address=self.host.address)

    def on_host(self, command: str) -> str:
        result = self.host.ssh(command)
        assert result.returncode == 0, result.stderr
        return result.stdout


def make_site(host: hosts.TestHost, base: Path, model: Path, app: str = APP, manager: str = "supervisor",
              names: str = "", firewall: bool = False) -> Site:
    """An app checkout for this host (nginx on its address) and an SSH config that trusts its key.

    The firewall is off unless asked for: provision may turn one on only on a host with a network
    namespace of its own that lets the controller in (see tests/hosts.py); elsewhere its rules would
    filter this machine's own traffic, or shut the controller's ssh out."""
    if firewall and not (host.network and host.network.inbound):
        raise hosts.HostError(f"{host.name} shares this machine's network (or lets nothing in): no firewall there")
    base.mkdir(parents=True, exist_ok=True)
    known = base / "known_hosts"
    known.write_text(host.known_hosts_line() + "\n")
    repo = app_checkout(base / "app", f"""
[app]
name = "{app}"
process_manager = "{manager}"
[model]
path = "{model}"
env = "FLASK_MODEL_PATH"
[gunicorn]
workers = 2
graceful_timeout = 10
[nginx]
address = "{host.address}"
server_names = [{names or f'"localhost", "{host.address}"'}]
rate_limit = "off"
static_dir = "app/static"
[deploy]
ready_timeout = 120
keep_releases = 3
{REFERENCE_DEPLOY}[firewall]
enabled = {"true" if firewall else "false"}
""")
    return Site(host, repo, ssh_config(base / "ssh_config", host, known))


def steps(out: str) -> dict[str, str]:
    return dict(STEPS.findall(out))


def label(host: hosts.TestHost) -> str:
    """The host's flavor, and its architecture when it is not amd64: "systemd", "systemd-arm64"."""
    return host.flavor + ("" if host.arch == "amd64" else f"-{host.arch}")


def timed(what: str, site: Site, *args: str) -> str:
    began = time.monotonic()
    out = ok(site.fab(*args))
    print(f"{label(site.host)}: {what} {time.monotonic() - began:.1f} s")
    return out
