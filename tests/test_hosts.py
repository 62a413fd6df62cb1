"""The test-host harness itself (tests/hosts.py): Debian hosts that start, take SSH logins as a
fresh server does, reach apt, listen only on loopback and leave nothing behind when stopped.

Needs root, debootstrap and unshare (skipped with the reason otherwise). The first run builds the
root filesystems (about a minute per flavor); later runs reuse them. MODELHOST_TEST_ARCH=arm64
runs the same tests on arm64 hosts under qemu.
"""
from __future__ import annotations

import os
import subprocess
import warnings
from pathlib import Path

import pytest

from tests import hosts

ARCH = hosts.arch_under_test()
MISSING = hosts.missing_requirements(ARCH)
pytestmark = [pytest.mark.skipif(MISSING is not None, reason=MISSING or ""), pytest.mark.slow]
# Under qemu everything inside a host is several times slower.
SLOW = 1 if ARCH == "amd64" else 6


@pytest.fixture(scope="module")
def key(tmp_path_factory) -> Path:
    return hosts.make_client_key(tmp_path_factory.mktemp("client-key"))


@pytest.fixture(scope="module")
def running(key, tmp_path_factory):
    """One host of each flavor, running at the same time for the whole module."""
    workdir = tmp_path_factory.mktemp("hosts")
    started = {}
    try:
        for flavor in hosts.FLAVORS:
            started[flavor] = hosts.start_host(flavor, None, workdir, key, arch=ARCH, timeout=60 * SLOW)
        yield started
    finally:
        for host in started.values():
            host.stop()


@pytest.fixture(params=hosts.FLAVORS)
def host(request, running) -> hosts.TestHost:
    return running[request.param]


def ok(result: subprocess.CompletedProcess) -> str:
    """stdout of a remote command that must succeed (its stderr in the failure message)."""
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr.strip()}"
    return result.stdout


def test_host_runs_bookworm_as_a_fresh_server(host):
    assert "VERSION_CODENAME=bookworm" in ok(host.ssh(["cat", "/etc/os-release"]))
    assert ok(host.ssh(["hostname"])).strip() == host.name
    assert ok(host.ssh(["uname", "-m"])).strip() == {"amd64": "x86_64", "arm64": "aarch64"}.get(ARCH, ARCH)
    installed = host.ssh("command -v nginx supervisord python3 || ls /usr/sbin/nginx")
    assert installed.returncode != 0, f"a fresh server has none of these: {installed.stdout}"


def test_host_files_are_readable_from_the_controller(host):
    ok(host.ssh("echo written-inside > /root/marker"))
    assert (host.root / "root/marker").read_text() == "written-inside\n"


def test_systemd_host_runs_systemd_as_pid_1(running):
    host = running["systemd"]
    ok(host.ssh(["test", "-d", "/run/systemd/system"]))
    assert ok(host.ssh(["cat", "/proc/1/comm"])).strip() == "systemd"
    state = host.ssh(["systemctl", "is-system-running", "--wait"], timeout=120).stdout.strip()
    failed = host.ssh(["systemctl", "--failed", "--no-legend", "--plain"]).stdout.strip()
    assert state in ("running", "degraded"), f"{state}; failed units: {failed}"
    if state == "degraded":
        warnings.warn(f"systemd host {host.name} is degraded; failed units: {failed}")
    assert ok(host.ssh(["systemctl", "is-active", "ssh"])).strip() == "active"


def test_service_host_runs_tini_and_init_scripts(running):
    host = running["service"]
    assert ok(host.ssh(["cat", "/proc/1/comm"])).strip() == "tini"
    assert host.ssh(["test", "-e", "/run/systemd/system"]).returncode != 0
    ok(host.ssh(["service", "ssh", "status"]))


def test_daemons_started_later_are_reaped_by_pid_1(running):
    host = running["service"]
    ok(host.ssh("nohup sh -c 'sleep 0.2' >/dev/null 2>&1 &"))
    # The orphaned sh is reparented to tini, which must collect it: no zombie stays.
    ok(host.ssh("sleep 1"))
    zombies = ok(host.ssh(["ps", "-eo", "stat=,comm="]))
    assert not [line for line in zombies.splitlines() if line.strip().startswith("Z")], zombies


def test_deployer_sudo_asks_for_the_password(host):
    assert "sudo" in ok(host.ssh(["id", "-nG"], user="deployer")).split()
    without = host.ssh(["sudo", "-n", "true"], user="deployer")
    assert without.returncode != 0 and "password" in without.stderr
    ok(host.ssh(["sudo", "-S", "-p", "", "true"], user="deployer", input=hosts.DEPLOYER_PASSWORD + "\n"))


def test_nopass_has_passwordless_sudo(host):
    assert ok(host.ssh(["sudo", "-n", "id", "-u"], user="nopass")).strip() == "0"


def test_apt_installs_without_starting_daemons(host):
    ok(host.ssh("/usr/sbin/policy-rc.d; test $? = 101"))
    ok(host.ssh(["apt-get", "-q", "update"], timeout=300 * SLOW))
    ok(host.ssh("DEBIAN_FRONTEND=noninteractive apt-get -q -y install --no-install-recommends nginx-light",
                timeout=300 * SLOW))
    # policy-rc.d kept nginx's postinst from starting it on 0.0.0.0:80.
    assert host.ssh(["pgrep", "-x", "nginx"]).returncode != 0
    assert hosts.listening_outside_loopback([host]) == []


def test_host_trusts_the_controllers_certificates(host):
    bundle = "etc/ssl/certs/ca-certificates.crt"
    assert (host.root / bundle).read_bytes() == (Path("/") / bundle).read_bytes()
    assert "cert = /" + bundle in (host.root / "etc/pip.conf").read_text()


def test_unknown_host_key_is_refused(host, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    argv = [arg.replace(str(host.known_hosts), str(empty)) for arg in host.ssh_argv()]
    result = subprocess.run([*argv, "true"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 255
    assert "Host key verification failed" in result.stderr or "host key is known" in result.stderr


def test_known_hosts_line_names_the_hosts_own_key(host, tmp_path):
    line = host.known_hosts_line()
    public = (host.root / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()
    assert line == f"{host.address} {public[0]} {public[1]}"
    only_that = tmp_path / "known_hosts"
    only_that.write_text(line + "\n")
    argv = [arg.replace(str(host.known_hosts), str(only_that)) for arg in host.ssh_argv()]
    argv[argv.index("--"):argv.index("--")] = ["-o", "HostKeyAlgorithms=ssh-ed25519"]
    assert subprocess.run([*argv, "true"], capture_output=True, timeout=30).returncode == 0


def test_each_host_has_its_own_host_key(running):
    assert running["systemd"].known_hosts_line().split()[2] != running["service"].known_hosts_line().split()[2]


def test_nothing_listens_outside_loopback(running):
    assert hosts.listening_outside_loopback(list(running.values())) == []
    for host in running.values():
        listeners = hosts.run(["ss", "-ltnH", "src", host.address]).stdout.split()
        assert f"{host.address}:22" in listeners


@pytest.mark.parametrize("flavor", hosts.FLAVORS)
def test_stop_leaves_no_process_mount_or_file(flavor, key, tmp_path):
    host = hosts.start_host(flavor, None, tmp_path, key, arch=ARCH, timeout=60 * SLOW)
    try:
        ok(host.ssh("nohup sleep 600 >/dev/null 2>&1 &"))  # a daemon of its own, as nginx would be
        pids = host.processes()
        assert host.pid in pids and len(pids) >= 3
        assert host.mounts() == []  # the host's mounts are in its own namespace
    finally:
        host.stop()
    assert [pid for pid in pids if os.path.exists(f"/proc/{pid}")] == []
    assert host.processes() == [] and host.mounts() == []
    assert not host.directory.exists()
    assert all(not cgroup.exists() for cgroup in host.cgroups)
    host.stop()  # idempotent


def test_stop_after_pid_1_died(key, tmp_path):
    host = hosts.start_host("service", None, tmp_path, key, arch=ARCH, timeout=60 * SLOW)
    os.kill(host.pid, 9)
    host.stop()
    assert host.processes() == [] and not host.directory.exists()
    assert not hosts.listening(host.address)


def test_bad_address_is_refused_before_anything_starts(key, tmp_path):
    with pytest.raises(hosts.HostError, match="loopback"):
        hosts.start_host("service", "10.0.0.2", tmp_path, key, arch=ARCH)
    assert list(tmp_path.iterdir()) == []


def test_a_host_behind_nat_reaches_out_and_nothing_reaches_in(key, tmp_path):
    """A host with a network of its own (as a home server behind its router): it reaches another
    host (at the address that one also listens on) and the registries' names; that host cannot
    connect to it; the controller's ssh gets in through its namespace; stopping it removes it all."""
    forwarding = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    with hosts.start_host("service", None, tmp_path, key, arch=ARCH, network=True, timeout=60 * SLOW) as inside:
        network = inside.network
        assert hosts.ipaddress.ip_address(inside.address) in hosts.NETWORK_RANGE
        with hosts.start_host("service", None, tmp_path, key, arch=ARCH, also_listen=(network.gateway,),
                              timeout=60 * SLOW) as outside:
            reach = "timeout 5 bash -c '</dev/tcp/{}/22' && echo connected"
            assert inside.ssh(reach.format(network.gateway)).stdout.strip() == "connected"
            refused = outside.ssh(reach.format(inside.address))
            assert refused.returncode != 0 and "connected" not in refused.stdout
        assert inside.ssh("getent hosts deb.debian.org").returncode == 0  # DNS through the NAT
        assert inside.ssh("hostname").stdout.strip() == inside.name
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "link", "show"], capture_output=True, text=True).stdout
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert network.name not in names and network.outside not in links and network.name not in tables
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == forwarding or "mhnet" in names
