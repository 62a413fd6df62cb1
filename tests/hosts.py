"""Real Debian hosts for the end-to-end tests: bookworm root filesystems with sshd on their own
loopback address, built once with debootstrap and each started in its own namespaces.

A host is a root filesystem extracted from a cached tarball (`rootfs`) into `workdir/<name>/root`
and started (`start_host`) by `unshare --pid --mount --uts --ipc` and `chroot`. It shares the
controller's network namespace: sshd listens only on the host's address (127.0.0.2, 127.0.0.3, ...:
all of 127.0.0.0/8 is on lo) port 22, and tests read the host's files directly under `host.root`.

A host that others must not reach (a home server behind its router) gets a network namespace of
its own instead (`start_host(..., network=True)`, see `Network`): it connects out through the
controller's NAT, nothing connects in, and the controller's ssh enters through the namespace. With
`inbound=True` as well, the controller connects to it as to a server on the internet, and nothing
but the host's own firewall stands in between: the one kind of host where a test may turn a
firewall on. On every host that shares the controller's network namespace, apt is pinned so that it
installs no firewall tool (`NO_FIREWALL`): a firewall there would filter the controller's own
traffic, so provision fails instead of taking the machine's network down.

Flavors:
- "systemd": systemd is PID 1 (like Ubuntu or Raspberry Pi OS); services are run by systemctl.
- "service": tini is PID 1 and reaps orphaned daemons; sshd is started by `service ssh start` and
  other daemons by their /etc/init.d scripts (`service nginx start`), as in many containers.

Like a fresh server, a host has no nginx, supervisor or python3. apt works inside (deb.debian.org
bookworm main, the controller's resolv.conf and CA bundle), but its package lists are empty: run
`apt-get update` first, as on a server whose lists are stale.

policy-rc.d: both flavors have /usr/sbin/policy-rc.d exiting 101, as Docker's Debian images do, so
a package's postinst never starts its daemon (nginx's default site would otherwise bind 0.0.0.0:80
and [::]:80, outside loopback and clashing between hosts). It affects only invoke-rc.d and
deb-systemd-invoke: `service x start` and `systemctl start x` work as usual, so whatever installs a
daemon on a host must also start it.

Users, all with the public key given to `start_host`: root; deployer, in group sudo, whose sudo asks
for DEPLOYER_PASSWORD; nopass, with passwordless sudo.

Needs root on the controller, debootstrap, util-linux's unshare and OpenSSH's client; a foreign
architecture (arm64) also needs qemu-user-static and binfmt-support, and changes the controller:
qemu's binfmt_misc entry is enabled with the C flag, so that sudo works inside (setuid binaries of
that architecture then run as their owner on the controller too). `missing_requirements` says
what is missing, for a skip reason.
"""
from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import ipaddress
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# Bump when the build steps below change in a way the hash inputs do not show: every cached
# tarball is then rebuilt.
RECIPE_VERSION = 1
BASE_PACKAGES = ("openssh-server", "sudo", "ca-certificates")
FLAVOR_PACKAGES = {
    "systemd": ("systemd", "systemd-sysv", "dbus"),
    "service": ("tini",),
}
FLAVORS = tuple(FLAVOR_PACKAGES)
# Foreign architectures run their binaries through this qemu user-mode emulator (binfmt_misc).
QEMU = {"arm64": "aarch64", "armhf": "arm", "amd64": "x86_64"}

DEPLOYER_PASSWORD = "deployer-test-password"
SSH_PORT = 22
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# Every host's cgroup (systemd flavor) lives under this one in each hierarchy of the controller.
CGROUP_PARENT = "modelhost-test-hosts"

# Units a systemd host never starts, and why.
MASKED_UNITS = {
    # A getty would open a console or tty the host does not have (its /dev is its own).
    "getty.target": "no consoles", "getty@.service": "no consoles", "serial-getty@.service": "no consoles",
    "console-getty.service": "no consoles", "container-getty@.service": "no consoles",
    # apt run by a timer would take the dpkg lock in the middle of a test's install.
    "apt-daily.timer": "dpkg lock", "apt-daily-upgrade.timer": "dpkg lock",
}

# Drop-ins for a systemd host of a foreign arch: qemu-user cannot emulate what these settings
# ask of the kernel (systemd's credential mounts, a private network's netlink setup), and the
# units they belong to would fail.
QEMU_DROP_INS = {
    "systemd-sysusers.service": "[Service]\nLoadCredential=\n",
    "systemd-tmpfiles-setup.service": "[Service]\nLoadCredential=\n",
    "systemd-tmpfiles-setup-dev.service": "[Service]\nLoadCredential=\n",
    "e2scrub_reap.service": "[Service]\nPrivateNetwork=no\n",
}

POLICY_RC_D = """#!/bin/sh
# Test host: a package's postinst never starts its daemon (as in Docker's Debian images);
# `service x start` and `systemctl start x` are not affected.
exit 101
"""

# On hosts in the controller's network namespace: no firewall tool can be installed (ufw or nftables
# rules there would be the controller's own). A pin, not a missing package: provision's firewall step
# then fails with apt's word for it instead of touching the network.
NO_FIREWALL = """# Test host in the controller's network namespace: no firewall tool, its rules would be the
# controller's (tests/hosts.py). Hosts with a network namespace of their own do not have this file.
Package: ufw nftables firewalld
Pin: release *
Pin-Priority: -1
"""

SERVICE_INIT = "/usr/local/sbin/test-host-init"
SERVICE_INIT_SCRIPT = """#!/bin/sh
# PID 1's only child on a "service" test host: tini is PID 1 and reaps the daemons that
# `service x start` leaves behind. Start sshd as a sysvinit server does, then stay: tini
# exits when this does.
set -e
service ssh start
exec sleep infinity
"""


class HostError(RuntimeError):
    """A test host could not be built, started or stopped; the message says why and what to do."""


# ---- requirements ----------------------------------------------------------------------------

def native_arch() -> str:
    """The controller's Debian architecture (amd64, arm64, ...)."""
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()


def missing_requirements(arch: str = "amd64") -> str | None:
    """Why test hosts of this architecture cannot run here (a skip reason), or None."""
    if os.geteuid() != 0:
        return "test hosts need root (debootstrap, unshare, chroot, mounts)"
    tools = {"dpkg": "dpkg", "debootstrap": "debootstrap", "unshare": "util-linux", "chroot": "coreutils",
             "ssh": "openssh-client", "ssh-keygen": "openssh-client", "ss": "iproute2", "tar": "tar"}
    if shutil.which("dpkg", path=PATH) and arch != native_arch():
        tools |= {f"qemu-{QEMU[arch]}-static": "qemu-user-static", "update-binfmts": "binfmt-support"}
    missing = sorted({package for tool, package in tools.items() if not shutil.which(tool, path=PATH)})
    if missing:
        return f"test hosts need {', '.join(missing)}: apt-get install -y {' '.join(missing)}"
    return None


def require(arch: str) -> None:
    reason = missing_requirements(arch)
    if reason:
        raise HostError(reason)


def arch_under_test() -> str:
    """The architecture the test hosts run: $MODELHOST_TEST_ARCH (arm64 runs under qemu), else amd64."""
    return os.environ.get("MODELHOST_TEST_ARCH", "amd64")


# ---- root filesystems ------------------------------------------------------------------------

def cache_dir() -> Path:
    """Where root filesystem tarballs are kept between runs (outside the repository)."""
    configured = os.environ.get("MODELHOST_TEST_HOSTS_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "modelhost" / "test-hosts"


def packages(flavor: str) -> tuple[str, ...]:
    return BASE_PACKAGES + FLAVOR_PACKAGES[flavor]


def rootfs_name(flavor: str, arch: str) -> str:
    """The cache file's name: a short hash of everything that defines the build, so a changed
    recipe is a new file (the old one is deleted once the new one is built)."""
    recipe = {"version": RECIPE_VERSION, "suite": SUITE, "mirror": MIRROR, "arch": arch, "flavor": flavor,
              "packages": packages(flavor), "masked": sorted(MASKED_UNITS), "password": DEPLOYER_PASSWORD,
              "policy-rc.d": POLICY_RC_D, "init": SERVICE_INIT_SCRIPT}
    if flavor == "systemd" and arch != native_arch():
        recipe["qemu"] = QEMU_DROP_INS
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    return f"{SUITE}-{flavor}-{arch}-{digest}.tar"


def check_flavor(flavor: str, arch: str) -> None:
    if flavor not in FLAVOR_PACKAGES:
        raise HostError(f"unknown test host flavor {flavor!r}: use one of {', '.join(FLAVORS)}")
    if arch not in QEMU:
        raise HostError(f"unknown test host architecture {arch!r}: use one of {', '.join(QEMU)}")


def rootfs(flavor: str, arch: str = "amd64") -> Path:
    """The cached tarball of a bookworm root filesystem of this flavor, built first if missing.

    A build takes about a minute (several under qemu for a foreign arch). Another process building
    the same tarball is waited for, not repeated.
    """
    check_flavor(flavor, arch)
    tarball = cache_dir() / rootfs_name(flavor, arch)
    if tarball.exists():
        return tarball
    require(arch)
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with locked(tarball.with_name(tarball.name + ".lock")):
        if not tarball.exists():
            build_rootfs(flavor, arch, tarball)
    return tarball


@contextlib.contextmanager
def locked(path: Path):
    """An exclusive fcntl lock on path for the duration, waiting for whoever holds it."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_rootfs(flavor: str, arch: str, tarball: Path) -> None:
    """debootstrap, customize and pack into tarball; all in a partial directory renamed only at
    the end, so an interrupted build never leaves a tarball that looks complete."""
    partial = tarball.with_name(tarball.name + ".partial")
    remove_tree(partial)  # what an interrupted build left
    root = partial / "root"
    root.mkdir(parents=True)
    debootstrap(root, flavor, arch, partial / "debootstrap.log")
    customize(root, flavor, foreign=arch != native_arch())
    packed = partial / tarball.name
    run(["tar", "--create", "--file", str(packed), "--directory", str(root),
         "--numeric-owner", "--acls", "--xattrs", "--xattrs-include=*", "."])
    os.replace(packed, tarball)
    remove_tree(partial)
    for older in tarball.parent.glob(f"{SUITE}-{flavor}-{arch}-*.tar"):
        if older != tarball:  # an earlier recipe's, never used again
            older.unlink()
            older.with_name(older.name + ".lock").unlink(missing_ok=True)


def debootstrap(root: Path, flavor: str, arch: str, log: Path) -> None:
    """A minbase bookworm with the flavor's packages; a foreign arch in two stages, the second
    run under qemu. debootstrap's own mounts (proc, sys) stay in a private mount namespace, so an
    interrupted build leaves none behind."""
    foreign = arch != native_arch()
    argv = ["debootstrap", "--variant=minbase", f"--include={','.join(packages(flavor))}", f"--arch={arch}"]
    if foreign:
        enable_binfmt(arch)
        argv.append("--foreign")
    run_logged(private_mounts(argv + [SUITE, str(root), MIRROR]), log, "debootstrap")
    if foreign:
        emulator = f"qemu-{QEMU[arch]}-static"
        shutil.copy2(shutil.which(emulator, path=PATH), root / "usr" / "bin" / emulator)
        run_logged(private_mounts(["chroot", str(root), "/debootstrap/debootstrap", "--second-stage"]),
                   log, "debootstrap --second-stage")


def enable_binfmt(arch: str) -> None:
    """Let the kernel run arch's binaries through qemu: binfmt_misc mounted, qemu's entry enabled,
    with the C flag so setuid binaries (sudo) run as their owner; Debian registers it without."""
    binfmt = Path("/proc/sys/fs/binfmt_misc")
    if not (binfmt / "status").exists():
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)])
    name = f"qemu-{QEMU[arch]}"
    entry = binfmt / name
    if not entry.exists():
        run(["update-binfmts", "--enable", name])
    if not entry.exists():
        raise HostError(f"no binfmt_misc entry {name} after update-binfmts --enable {name}: "
                        f"apt-get install --reinstall qemu-user-static binfmt-support")
    fields = binfmt_entry(entry)
    if "C" not in fields["flags"]:
        entry.write_text("-1")  # an entry cannot be changed, only removed and registered again
        hexes = {key: "".join(f"\\x{fields[key][i:i + 2]}" for i in range(0, len(fields[key]), 2))
                 for key in ("magic", "mask")}
        (binfmt / "register").write_text(f":{name}:M:{fields['offset']}:{hexes['magic']}:{hexes['mask']}:"
                                         f"{fields['interpreter']}:{fields['flags']}OC")
    if not entry.read_text().startswith("enabled"):
        entry.write_text("1")


def binfmt_entry(entry: Path) -> dict[str, str]:
    """A binfmt_misc entry's fields: interpreter, flags, offset, magic, mask (hex), state."""
    fields = {"state": "", "flags": "", "mask": ""}
    for line in entry.read_text().splitlines():
        key, _, value = line.partition(" ")
        if not value:
            fields["state"] = key
        else:
            fields[key.rstrip(":")] = value.strip()
    return fields


def customize(root: Path, flavor: str, foreign: bool) -> None:
    """What every host of the flavor shares: users, policy-rc.d, init; no host keys, no apt lists."""
    write(root / "usr/sbin/policy-rc.d", POLICY_RC_D, 0o755)
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()  # each host makes its own
    chroot(root, "useradd", "--create-home", "--shell", "/bin/bash", "--groups", "sudo", "deployer")
    chroot(root, "chpasswd", input=f"deployer:{DEPLOYER_PASSWORD}\n")
    chroot(root, "useradd", "--create-home", "--shell", "/bin/bash", "nopass")
    chroot(root, "usermod", "--password", "*", "nopass")  # no password, yet not a locked account
    write(root / "etc/sudoers.d/nopass", "nopass ALL=(ALL:ALL) NOPASSWD:ALL\n", 0o440)
    if flavor == "systemd":
        for unit in MASKED_UNITS:
            mask = root / "etc/systemd/system" / unit
            mask.unlink(missing_ok=True)
            mask.symlink_to("/dev/null")
        for unit, text in (QEMU_DROP_INS.items() if foreign else ()):
            write(root / "etc/systemd/system" / f"{unit}.d" / "qemu.conf", text)
    else:
        write(root / SERVICE_INIT.lstrip("/"), SERVICE_INIT_SCRIPT, 0o755)
    write(root / "etc/machine-id", "", 0o444)  # each host gets its own
    for leftover in [*root.glob("var/cache/apt/archives/*.deb"), *root.glob("var/cache/apt/*.bin"),
                     *(p for p in root.glob("var/lib/apt/lists/*") if p.is_file())]:
        leftover.unlink()


def chroot(root: Path, *argv: str, input: str | None = None) -> None:
    run(["chroot", str(root), *argv], input=input)


# ---- running a host --------------------------------------------------------------------------

class TestHost:
    """A running test host; `stop()` (or leaving a `with` block) ends it and deletes its files."""

    __test__ = False  # not a pytest test class

    def __init__(self, name: str, address: str, flavor: str, arch: str, directory: Path, key: Path):
        self.name = name
        self.address = address
        self.flavor = flavor
        self.arch = arch
        self.directory = directory
        self.root = directory / "root"
        self.key = key
        self.known_hosts = directory / "known_hosts"
        self.log = directory / "host.log"
        self.pid: int | None = None  # the controller's pid of the host's PID 1
        self.pid_namespace: str | None = None
        self.cgroups: list[Path] = []
        self.process: subprocess.Popen | None = None  # unshare
        self.address_lock = None
        self.network: Network | None = None  # a network namespace of its own (behind "NAT")
        self.stopped = False

    def __repr__(self) -> str:
        return f"<TestHost {self.name} {self.flavor}/{self.arch} {self.address} pid={self.pid}>"

    def __enter__(self) -> TestHost:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def known_hosts_line(self, key_type: str = "ssh-ed25519") -> str:
        """The known_hosts line of this host's key of this type: "127.0.0.2 ssh-ed25519 AAAA..."."""
        for line in self.known_hosts.read_text().splitlines():
            if line.split()[1] == key_type:
                return line
        raise HostError(f"{self.name} has no {key_type} host key (see {self.known_hosts})")

    def ssh_argv(self, user: str = "root") -> list[str]:
        """ssh to this host as user with the test key, checking its host key strictly; append the
        remote command. Ignores the controller's ssh config and known hosts."""
        proxy = ["-o", f"ProxyCommand={self.proxy_command}"] if self.network and not self.network.inbound else []
        return ["ssh", "-F", "/dev/null", "-i", str(self.key), "-p", str(SSH_PORT),
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR", *proxy, "--", f"{user}@{self.address}"]

    @property
    def proxy_command(self) -> str:
        """How the controller reaches the sshd of a host in a network of its own (which drops every
        connection from outside): a netcat started inside its namespace. For ssh_config's ProxyCommand."""
        return f"ip netns exec {self.network.name} nc %h %p"

    def ssh(self, command: str | list[str], user: str = "root", input: str | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
        """Run command (a shell string, or an argv joined with shlex) on the host over SSH."""
        remote = command if isinstance(command, str) else shlex.join(command)
        return subprocess.run([*self.ssh_argv(user), remote], input=input, capture_output=True, text=True,
                              timeout=timeout)

    def processes(self) -> list[int]:
        """The controller's pids of every process of this host (those in its pid namespace)."""
        return processes_in_namespace(self.pid_namespace) if self.pid_namespace else []

    def mounts(self) -> list[str]:
        """Mount points under this host's directory in the controller's mount namespace (none
        expected: the host mounts in its own)."""
        return mounts_under(self.directory)

    def stop(self) -> None:
        """End every process of the host by pid, then delete its files. Idempotent; also works
        when PID 1 already died."""
        if self.stopped:
            return
        self.kill()
        remove_cgroups(self.cgroups)
        remove_tree(self.directory)
        release(self.address_lock)
        if self.network:
            self.network.remove()
        self.stopped = True

    def kill(self) -> None:
        """SIGKILL the host's PID 1, so the kernel kills all of its pid namespace, and wait until
        none of its processes is left."""
        if self.pid and self.pid_namespace and namespace_of(self.pid) == self.pid_namespace:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        if self.process:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=STOP_TIMEOUT)
        deadline = time.monotonic() + STOP_TIMEOUT
        while (left := self.processes()) and time.monotonic() < deadline:
            time.sleep(0.05)
        if left:
            raise HostError(f"{self.name}: processes {left} outlived SIGKILL of its PID 1 {self.pid} for "
                            f"{STOP_TIMEOUT:.0f}s; see `ps -o pid,stat,cmd -p {','.join(map(str, left))}`")
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)


def start_host(flavor: str, address: str | None, workdir: Path, key: Path, arch: str = "amd64",
               name: str | None = None, timeout: float = START_TIMEOUT, network: bool = False,
               also_listen: tuple[str, ...] = (), inbound: bool = False) -> TestHost:
    """A running host of this flavor with sshd on address:22 (None: the first free one from
    127.0.0.2), in workdir/<name>. With network, the host gets a network namespace of its own
    behind "NAT" instead (see Network; address must be None): nothing outside can connect to it, and
    the controller's ssh reaches it through TestHost.proxy_command; with inbound too, the controller
    connects to it directly (only the host's own firewall, if any, stands in between). also_listen:
    more addresses of the controller for sshd (a Network's gateway, where hosts behind it reach this one).

    key is the private key that root, deployer and nopass accept (its public half beside it as
    key.pub, see `make_client_key`). The rootfs is built first when not cached. Raises HostError,
    with the end of the host's output, when sshd does not accept the key within timeout seconds.

    Start hosts from a thread that outlives them: a host is killed when the thread that started it
    ends (PR_SET_PDEATHSIG), so a killed test run leaves none behind.
    """
    check_flavor(flavor, arch)
    require(arch)
    if arch != native_arch():
        enable_binfmt(arch)  # also after a reboot, with the rootfs already cached
    public_key = Path(f"{key}.pub").read_text().strip()
    if network and address is not None:
        raise HostError("a host with a network of its own gets its address from it: give address=None")
    if inbound and not network:
        raise HostError("inbound is for a host with a network of its own: give network=True")
    behind = make_network(inbound) if network else None
    address, address_lock = (behind.address, None) if behind else claim_address(address)
    try:
        directory = host_directory(Path(workdir), name or f"{flavor}-{address.replace('.', '-')}", not name)
    except BaseException:
        release(address_lock)
        if behind:
            behind.remove()
        raise
    host = TestHost(directory.name, address, flavor, arch, directory, Path(key))
    host.address_lock, host.network = address_lock, behind
    try:
        tarball = rootfs(flavor, arch)
        host.root.mkdir(parents=True)
        run(["tar", "--extract", "--file", str(tarball), "--directory", str(host.root),
             "--numeric-owner", "--acls", "--xattrs", "--xattrs-include=*"])
        configure(host, public_key, also_listen)
        launch(host)
        wait_until_ready(host, timeout)
    except BaseException:
        with contextlib.suppress(Exception):
            host.stop()
        release(host.address_lock)
        raise
    return host


def host_directory(workdir: Path, name: str, named_by_address: bool) -> Path:
    """workdir/name, which must not exist; one named after the address we hold is a killed
    run's and is deleted."""
    directory = workdir / name
    if directory.exists() and named_by_address:
        remove_tree(directory)
    if directory.exists():
        raise HostError(f"{directory} exists: a host named {name} runs or was not stopped; "
                        f"stop it, or delete the directory when nothing is mounted under it")
    return directory


@contextlib.contextmanager
def named_hosts(workdir: Path, names: tuple[str, ...], flavor: str = "systemd"):
    """Hosts with networks of their own that reach each other as on a LAN, and an ssh_config that
    names them (Host <name>: its address, root, the client key, only its own host key trusted).
    Yields (hosts by name, the ssh_config's path); stops them all at the end."""
    key = make_client_key(workdir)
    members: dict[str, TestHost] = {}
    try:
        for name in names:
            members[name] = start_host(flavor, None, workdir, key, network=True, inbound=True, name=name)
        known = workdir / "known_hosts"
        known.write_text("".join(host.known_hosts_line() + "\n" for host in members.values()))
        config = workdir / "ssh_config"
        config.write_text("".join(
            f"Host {name}\n  HostName {host.address}\n  User root\n  IdentityFile {key}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {known}\n  GlobalKnownHostsFile /dev/null\n" for name, host in members.items()))
        yield members, config
    finally:
        for host in members.values():
            host.stop()


def make_client_key(directory: Path) -> Path:
    """A fresh passphrase-less ed25519 key in directory: the private key's path (public: + .pub)."""
    key = Path(directory) / "id_ed25519"
    if not key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "modelhost-test", "-f", str(key)])
    return key


def claim_address(address: str | None) -> tuple[str, object]:
    """(address, an open file holding its lock), so two test runs never start hosts on the same
    address; None claims the first free one from 127.0.0.2. HostError when it is not IPv4
    loopback or is in use."""
    if address is None:
        for candidate in (f"127.0.0.{n}" for n in range(2, 255)):
            with contextlib.suppress(HostError):
                return claim_address(candidate)
        raise HostError("no free test host address in 127.0.0.2-254: stop some hosts")
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        parsed = None
    if parsed is None or parsed.version != 4 or not parsed.is_loopback:
        raise HostError(f"test host address {address!r}: use an IPv4 loopback address such as "
                        f"127.0.0.2 (all of 127.0.0.0/8 is on lo)")
    locks = cache_dir() / "addresses"
    locks.mkdir(parents=True, exist_ok=True)
    handle = open(locks / f"{address}.lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise HostError(f"{address} is taken by a test host of another process: use another address") from None
    if listening(address):
        release(handle)
        raise HostError(f"something already listens on {address}:{SSH_PORT} (a test host left by a killed "
                        f"run?): find it with `ss -ltnp src {address}` and end it, or use another address")
    return address, handle


# TEST-NET-2 (RFC 5737): documentation addresses, never routed; make_network checks that the
# machine uses none of them before it takes a /30 (a clash would take the machine's network down).
NETWORK_RANGE = ipaddress.ip_network("198.51.100.0/24")
NETWORKS = 64  # /30s in the range


class Network:
    """A network namespace for one host, behind "NAT" as a home server is behind its router.

    A veth pair joins it to the controller's namespace: the controller at `gateway`, the host at
    `address` (one /30 of NETWORK_RANGE). Its outbound traffic is masqueraded by the controller
    (net.ipv4.ip_forward on, an nftables table of its own), so the host reaches apt, PyPI and the
    controller's loopback-free addresses (another host's also_listen); inside, nftables drops every
    connection that does not start there, so nothing outside can connect to it; with inbound,
    everything may (only the host's own firewall stands in between). `remove()` takes it all away.
    """

    def __init__(self, index: int, lock, inbound: bool = False):
        subnet = list(NETWORK_RANGE.subnets(new_prefix=30))[index]
        self.name = f"mhnet{index}"
        self.gateway, self.address = str(subnet[1]), str(subnet[2])
        self.subnet = str(subnet)
        self.outside, self.inside = f"{self.name}c", f"{self.name}h"
        self.lock = lock
        self.inbound = inbound
        self.removed = False

    def __repr__(self) -> str:
        return f"<Network {self.name} {self.address} via {self.gateway}>"

    def run(self, *argv: str, input: str | None = None) -> subprocess.CompletedProcess:
        """argv inside the namespace."""
        return run(["ip", "netns", "exec", self.name, *argv], input=input)

    def create(self) -> None:
        run(["ip", "netns", "add", self.name])
        run(["ip", "link", "add", self.outside, "type", "veth", "peer", "name", self.inside])
        run(["ip", "link", "set", self.inside, "netns", self.name])
        run(["ip", "addr", "add", f"{self.gateway}/30", "dev", self.outside])
        run(["ip", "link", "set", self.outside, "up"])
        run(["ip", "-n", self.name, "addr", "add", f"{self.address}/30", "dev", self.inside])
        for link in ("lo", self.inside):
            run(["ip", "-n", self.name, "link", "set", link, "up"])
        run(["ip", "-n", self.name, "route", "add", "default", "via", self.gateway])
        if not self.inbound:
            self.run("nft", "-f", "-", input=(
                "table inet modelhost_test {\n  chain input {\n    type filter hook input priority 0; policy drop;\n"
                '    iifname "lo" accept\n    ct state established,related accept\n  }\n}\n'))
        run(["nft", "-f", "-"], input=(
            f"table ip {self.name} {{\n  chain postrouting {{\n    type nat hook postrouting priority srcnat;\n"
            # Not between test networks: hosts reach each other by their own addresses, as on a LAN.
            f'    ip saddr {self.subnet} ip daddr != {NETWORK_RANGE} oifname != "{self.outside}" masquerade\n'
            "  }\n}\n"))
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")

    def cut(self) -> None:
        """The host's link goes down: what a network drop does to it."""
        run(["ip", "-n", self.name, "link", "set", self.inside, "down"])

    def restore(self) -> None:
        run(["ip", "-n", self.name, "link", "set", self.inside, "up"])
        run(["ip", "-n", self.name, "route", "replace", "default", "via", self.gateway])

    def remove(self) -> None:
        """The namespace (and with it both ends of the veth pair) and the NAT table; forwarding
        off again once no network of ours is left. Idempotent."""
        if self.removed:
            return
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        subprocess.run(["ip", "link", "del", self.outside], capture_output=True)  # gone with the namespace
        subprocess.run(["nft", "delete", "table", "ip", self.name], capture_output=True)
        if not any(name.startswith("mhnet") for name in run(["ip", "netns", "list"]).stdout.split()):
            Path("/proc/sys/net/ipv4/ip_forward").write_text("0\n")
        release(self.lock)
        self.removed = True


def make_network(inbound: bool = False) -> Network:
    """The first free Network (a lock per /30, as for addresses), after checking that the machine
    has no address or route in NETWORK_RANGE but ours; with inbound, one that lets connections in."""
    missing = [tool for tool in ("ip", "nft", "nc") if not shutil.which(tool, path=PATH)]
    if missing:
        raise HostError(f"a host behind NAT needs {', '.join(missing)}: apt-get install -y iproute2 nftables "
                        "netcat-openbsd")
    ours = {str(subnet) for subnet in NETWORK_RANGE.subnets(new_prefix=30)}
    kinds = {"local", "broadcast", "unicast", "multicast", "unreachable", "blackhole", "prohibit", "throw", "nat"}
    for line in run(["ip", "-4", "route", "show", "table", "all"]).stdout.splitlines():
        words = line.split()
        if "dev" in words and words[words.index("dev") + 1].startswith("mhnet"):
            continue  # another test network's (of this run, or of another one)
        destination = (words[1] if words[0] in kinds and len(words) > 1 else words[0]) if words else ""
        with contextlib.suppress(ValueError):
            if destination not in ours and ipaddress.ip_network(destination, strict=False).overlaps(NETWORK_RANGE):
                raise HostError(f"this machine routes {destination}, which overlaps the test networks' "
                                f"{NETWORK_RANGE}: a namespace there would clash with it")
    locks = cache_dir() / "networks"
    locks.mkdir(parents=True, exist_ok=True)
    for index in range(NETWORKS):
        handle = open(locks / f"{index}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        network = Network(index, handle, inbound)
        subprocess.run(["ip", "netns", "del", network.name], capture_output=True)  # a killed run's
        subprocess.run(["ip", "link", "del", network.outside], capture_output=True)
        subprocess.run(["nft", "delete", "table", "ip", network.name], capture_output=True)
        try:
            network.create()
        except BaseException:
            network.remove()
            raise
        return network
    raise HostError(f"no free test network in {NETWORK_RANGE}: stop some hosts")


def listening(address: str) -> bool:
    """Whether anything accepts connections on address:22."""
    with contextlib.suppress(OSError), socket.create_connection((address, SSH_PORT), timeout=1):
        return True
    return False


def release(handle) -> None:
    if handle and not handle.closed:
        handle.close()


def configure(host: TestHost, public_key: str, also_listen: tuple[str, ...] = ()) -> None:
    """What makes this host itself: name, machine id, sshd address, host keys, authorized keys,
    and the controller's DNS and CAs (so apt and pip reach the registries as the controller does)."""
    root = host.root
    write(root / "etc/hostname", f"{host.name}\n")
    write(root / "etc/hosts", f"127.0.0.1\tlocalhost\n{host.address}\t{host.name}\n"
                              "::1\tlocalhost ip6-localhost ip6-loopback\n")
    write(root / "etc/machine-id", f"{uuid.uuid4().hex}\n", 0o444)
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    write(root / "etc/resolv.conf", Path("/etc/resolv.conf").read_text())
    shutil.copyfile("/etc/ssl/certs/ca-certificates.crt", root / "etc/ssl/certs/ca-certificates.crt")
    # Kept by update-ca-certificates when a package install inside regenerates the bundle.
    for certificate in Path("/usr/local/share/ca-certificates").glob("*.crt"):
        shutil.copyfile(certificate, root / "usr/local/share/ca-certificates" / certificate.name)
    # pip trusts its own certifi otherwise, which knows no egress proxy's CA.
    write(root / "etc/pip.conf", "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")
    listens = "".join(f"ListenAddress {address}:{SSH_PORT}\n" for address in (host.address, *also_listen))
    write(root / "etc/ssh/sshd_config.d/test-host.conf", f"# Test host: only its own address.\n{listens}")
    if not host.network:
        write(root / "etc/apt/preferences.d/test-host-no-firewall", NO_FIREWALL)
    # The controller's ssh-keygen writes under the root prefix: no qemu for a foreign arch.
    run(["ssh-keygen", "-A", "-f", str(root)])
    lines = [f"{host.address} {' '.join(pub.read_text().split()[:2])}"
             for pub in sorted((root / "etc/ssh").glob("ssh_host_*_key.pub"))]
    write(host.known_hosts, "\n".join(lines) + "\n")
    for user in ("root", "deployer", "nopass"):
        authorize(root, user, public_key)


def authorize(root: Path, user: str, public_key: str) -> None:
    """user's ~/.ssh/authorized_keys holds public_key, owned by user with the modes sshd demands."""
    uid, gid, home = account(root, user)
    ssh_dir = root / home.lstrip("/") / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    write(ssh_dir / "authorized_keys", public_key + "\n", 0o600)
    for path in (ssh_dir, ssh_dir / "authorized_keys"):
        os.chown(path, uid, gid)


def account(root: Path, user: str) -> tuple[int, int, str]:
    """(uid, gid, home) of user in the host's /etc/passwd (not the controller's)."""
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2]), int(fields[3]), fields[5]
    raise HostError(f"no user {user} in {root}/etc/passwd: the rootfs is damaged; delete {cache_dir()}")


def start_script(host: TestHost) -> str:
    """The shell run as the new namespaces' PID 1 until it execs the host's init.

    Its mounts stay in the host's mount namespace (propagation private), and die with it.
    """
    root = shlex.quote(str(host.root))
    lines = ["set -eu", f"root={root}"]
    lines += [f"echo 0 > {shlex.quote(str(cgroup / 'cgroup.procs'))}" for cgroup in host.cgroups]
    lines += [
        # Before /proc/sys turns read-only; sets the name in the host's own UTS namespace only.
        f"echo {shlex.quote(host.name)} > /proc/sys/kernel/hostname",
        # systemd's per-service mount namespaces need / to be a mount point.
        'mount --bind "$root" "$root"',
        'mount -t proc proc "$root/proc"',
        # Kernel settings are the controller's: read-only for the host (systemd-sysctl then skips).
        'mount --bind "$root/proc/sys" "$root/proc/sys"',
        'mount -o remount,bind,ro "$root/proc/sys"',
        'mount -t tmpfs -o mode=755,nosuid,nodev tmpfs "$root/run"',
        # A /dev of its own: the controller's disks, consoles and ttys stay out of reach.
        'mount -t tmpfs -o mode=755,nosuid tmpfs "$root/dev"',
        'for node in null zero full random urandom tty; do',
        '  touch "$root/dev/$node"; mount --bind "/dev/$node" "$root/dev/$node"',
        'done',
        'mkdir "$root/dev/pts" "$root/dev/shm"',
        'mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$root/dev/pts"',
        'ln -s pts/ptmx "$root/dev/ptmx"',
        'mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/dev/shm"',
    ]
    if host.flavor == "systemd":
        lines += [
            # With the cgroup hierarchies, which systemd manages below the cgroup joined above.
            'mount --rbind /sys "$root/sys"',
            'mount -o remount,bind,ro "$root/sys"',
            'exec chroot "$root" /lib/systemd/systemd',
        ]
    else:
        lines += [
            'mount -t sysfs -o ro sysfs "$root/sys"',
            f'exec chroot "$root" /usr/bin/tini -- {SERVICE_INIT}',
        ]
    return "\n".join(lines) + "\n"


def launch(host: TestHost) -> None:
    """Start the host's namespaces and init; sets host.process, host.pid and host.pid_namespace."""
    if host.flavor == "systemd":
        remove_stale_cgroups()
        host.cgroups = make_cgroups(f"{host.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    env = {"PATH": PATH, "LANG": "C.UTF-8"}
    if host.flavor == "systemd":
        env["container"] = "other"  # systemd then runs as a container's init
    argv = ["unshare", "--pid", "--fork", "--kill-child", "--mount", "--propagation", "private",
            "--uts", "--ipc", "sh", "-c", start_script(host)]
    if host.network and host.flavor == "systemd":
        # nsenter, not ip netns exec: that mounts a sysfs of its own on /sys, which hides the cgroup
        # hierarchies mounted below it, and a systemd host joins one (its /sys is the controller's).
        argv = ["nsenter", f"--net=/run/netns/{host.network.name}", *argv]
    elif host.network:  # ip netns exec execs unshare in the namespace: still unshare's pid
        argv = ["ip", "netns", "exec", host.network.name, *argv]
    with open(host.log, "wb") as log:
        host.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                        env=env, cwd="/", preexec_fn=die_with_parent, start_new_session=True)
    try:
        host.pid = first_child(host.process)
    except HostError as error:
        raise HostError(f"{host.name}: {error}:\n{diagnostics(host)}") from None
    host.pid_namespace = namespace_of(host.pid)


def die_with_parent() -> None:
    """In the forked child: SIGKILL when the thread that started it ends (PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def first_child(process: subprocess.Popen, timeout: float = 10) -> int:
    """The pid of unshare's forked child: the new pid namespace's PID 1."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = children_of(process.pid)
        if found:
            return found[0]
        if process.poll() is not None:
            break
        time.sleep(0.01)
    raise HostError(f"unshare (pid {process.pid}) forked no child within {timeout:.0f}s "
                    f"(exit status {process.poll()})")


def children_of(pid: int) -> list[int]:
    """Pids whose parent is pid (scanning /proc when the kernel has no children file)."""
    with contextlib.suppress(OSError):
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return sorted(found)


def wait_until_ready(host: TestHost, timeout: float) -> None:
    """Until sshd answers with its banner and root's key login works; HostError with the host's
    last output (and journal) otherwise."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if host.process.poll() is not None:
            raise HostError(f"{host.name}: its init exited with status {host.process.returncode}:\n"
                            f"{diagnostics(host)}")
        if host.network or ssh_banner(host.address):
            result = host.ssh(["true"], timeout=15)
            if result.returncode == 0:
                return
            last = result.stderr.strip() or f"ssh exited {result.returncode}"
        time.sleep(0.2)
    raise HostError(f"{host.name}: sshd on {host.address}:{SSH_PORT} did not accept root's key within "
                    f"{timeout:g}s (last: {last}):\n{diagnostics(host)}")


def ssh_banner(address: str) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((address, SSH_PORT), timeout=2) as sock:
        sock.settimeout(2)
        return sock.recv(64).startswith(b"SSH-")
    return False


def diagnostics(host: TestHost, lines: int = 30) -> str:
    """The end of what the host printed and, for systemd, of its journal."""
    text = host.log.read_text(errors="replace").splitlines()[-lines:] if host.log.exists() else []
    journal = host.root / "var/log/journal"
    if host.flavor == "systemd" and journal.is_dir() and shutil.which("journalctl"):
        result = subprocess.run(["journalctl", "--directory", str(journal), "--no-pager", "-n", str(lines)],
                                capture_output=True, text=True)
        text += ["--- journal ---", *result.stdout.splitlines()]
    return "\n".join(text) or "(it printed nothing)"


# ---- processes, mounts, cgroups, sockets ------------------------------------------------------

def namespace_of(pid: int) -> str | None:
    """pid's pid namespace ("pid:[4026532...]"), or None when the process is gone."""
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def processes_in_namespace(namespace: str) -> list[int]:
    """Pids (as the controller sees them) of every process in that pid namespace."""
    return sorted(int(entry.name) for entry in Path("/proc").iterdir()
                  if entry.name.isdigit() and namespace_of(int(entry.name)) == namespace)


def mount_points() -> list[str]:
    """Mount points of the controller's mount namespace (/proc/self/mountinfo, unescaped)."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        points.append(point.encode().decode("unicode_escape"))  # \040 for a space, etc.
    return points


def mounts_under(directory: Path) -> list[str]:
    top = str(Path(directory).resolve())
    return [point for point in mount_points() if point == top or point.startswith(top + "/")]


def remove_tree(directory: Path) -> None:
    """Delete directory, refusing when anything is mounted under it (that would delete the
    mounted files: the controller's /dev, /sys or a disk)."""
    if not Path(directory).exists():
        return
    mounted = mounts_under(directory)
    if mounted:
        raise HostError(f"not deleting {directory}: {', '.join(mounted)} still mounted; "
                        f"unmount with `umount -R {mounted[0]}` first")
    shutil.rmtree(directory)


def cgroup_hierarchies() -> list[Path]:
    """Where the controller mounts the hierarchies systemd manages: cgroup2 and v1 name=systemd."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        before, after = line.split(" - ", 1)
        fstype, _source, options = after.split()[:3]
        if fstype == "cgroup2" or (fstype == "cgroup" and "name=systemd" in options.split(",")):
            found.append(Path(before.split()[4]))
    return found


def make_cgroups(name: str) -> list[Path]:
    """A cgroup per hierarchy for one systemd host. systemd manages the cgroup it starts in, so
    each host needs its own, or two hosts' systemd would share (and kill) each other's units."""
    made = []
    for hierarchy in cgroup_hierarchies():
        cgroup = hierarchy / CGROUP_PARENT / name
        cgroup.mkdir(parents=True)
        made.append(cgroup)
    return made


def remove_stale_cgroups() -> None:
    """Remove the cgroups of hosts whose test run was killed (their creator's pid, in the name,
    is gone; so are their processes, killed with it)."""
    for hierarchy in cgroup_hierarchies():
        parent = hierarchy / CGROUP_PARENT
        for cgroup in (parent.iterdir() if parent.is_dir() else ()):
            creator = cgroup.name.rsplit("-", 2)[-2] if cgroup.name.count("-") >= 2 else ""
            if cgroup.is_dir() and creator.isdigit() and not Path(f"/proc/{creator}").exists():
                with contextlib.suppress(HostError):
                    remove_cgroups([cgroup], timeout=0)


def remove_cgroups(cgroups: list[Path], timeout: float = STOP_TIMEOUT) -> None:
    """rmdir each cgroup and what systemd made below it, deepest first (they are empty once the
    host's processes are gone, but the kernel may take a moment to say so)."""
    for cgroup in cgroups:
        deadline = time.monotonic() + timeout
        while cgroup.exists():
            try:
                for directory, _subdirs, _files in os.walk(cgroup, topdown=False):
                    os.rmdir(directory)
            except OSError as error:
                if time.monotonic() > deadline:
                    raise HostError(f"cannot remove cgroup {cgroup}: {error}; "
                                    f"see `cat {cgroup}/cgroup.procs`") from None
                time.sleep(0.05)
        with contextlib.suppress(OSError):
            cgroup.parent.rmdir()  # only when no other host uses it


def listening_outside_loopback(hosts: list[TestHost] | None = None) -> list[str]:
    """TCP listeners not bound to 127.0.0.0/8 or ::1, as "0.0.0.0:80 nginx pid=1234".

    With hosts, only sockets of their processes count (the controller's own listeners, such as a
    sandbox's 0.0.0.0:2024, are not the hosts' doing); without, every one does.
    """
    namespaces = {host.pid_namespace for host in hosts} if hosts is not None else None
    output = run(["ss", "-ltnpH"]).stdout
    found = []
    for line in output.splitlines():
        fields = line.split()
        local, process = fields[3], " ".join(fields[5:])
        if is_loopback(local.rsplit(":", 1)[0]):
            continue
        pids = [int(p) for p in _pids_in(process)]
        if namespaces is not None and not any(namespace_of(pid) in namespaces for pid in pids):
            continue
        found.append(f"{local} {process}".strip())
    return found


def _pids_in(process: str) -> list[str]:
    """The pids in ss's users:(("nginx",pid=12,fd=6),...) column."""
    return [part.split("=", 1)[1] for part in process.replace(")", ",").split(",") if part.startswith("pid=")]


def is_loopback(host: str) -> bool:
    host = host.strip("[]").split("%", 1)[0]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # "*": every address
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or bool(mapped and mapped.is_loopback)


# ---- small helpers ----------------------------------------------------------------------------

def private_mounts(argv: list[str]) -> list[str]:
    """argv run in a mount namespace of its own: whatever it mounts is gone when it ends."""
    return ["unshare", "--mount", "--propagation", "private", *argv]


def run(argv: list[str], input: str | None = None) -> subprocess.CompletedProcess:
    """Run argv on the controller; HostError with its output when it fails."""
    result = subprocess.run(argv, input=input, capture_output=True, text=True, env={"PATH": PATH, "LANG": "C.UTF-8"})
    if result.returncode != 0:
        raise HostError(f"{shlex.join(argv)} failed with status {result.returncode}:\n"
                        f"{(result.stdout + result.stderr).strip()[-3000:]}")
    return result


def run_logged(argv: list[str], log: Path, what: str) -> None:
    """Run a long command with its output appended to log; HostError with the log's end on failure."""
    with open(log, "ab") as handle:
        status = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
                                env={"PATH": PATH, "LANG": "C.UTF-8"}, preexec_fn=die_with_parent).returncode
    if status != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise HostError(f"{what} failed with status {status} (check that {MIRROR} is reachable); "
                        f"end of {log}:\n{tail}")


def write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
