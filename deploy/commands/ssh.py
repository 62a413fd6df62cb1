"""fab expose's tunnel: the key pair made on the app's target, the ssh -R it runs, the relay's
sshd and the tunnel user's authorized_keys lines, and what listens on the relay."""
from __future__ import annotations

import re
from pathlib import Path

TUNNEL_SOURCE = (Path(__file__).resolve().parent.parent / "tunnel.py").read_text(encoding="utf-8")
# Keep-alives: a dead connection is noticed within 15 s, by ssh here and by the relay's sshd.
ALIVE_INTERVAL, ALIVE_COUNT = 5, 3
FIRST_PORT, LAST_PORT = 20001, 29999  # the relay's listen points, on its loopback


def keygen(path: Path, comment: str) -> list[str]:
    """An ed25519 key pair without a passphrase (path and path.pub)."""
    return ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)]


def machine_name() -> list[str]:
    return ["uname", "-n"]


def sshd_check() -> list[str]:
    return ["sshd", "-t"]


def tunnel(key: Path, known_hosts: Path, key_type: str, user: str, relay: str, port: int, listen: int,
           site: Path) -> list[str]:
    """ssh -R: the relay's 127.0.0.1:listen forwarded to the site's socket here; nothing else (-N,
    no pty). It exits when the forwarding cannot be made or the connection dies, and trusts only
    the relay's pinned host key."""
    options = {"BatchMode": "yes", "IdentitiesOnly": "yes", "StrictHostKeyChecking": "yes",
               "UserKnownHostsFile": str(known_hosts), "GlobalKnownHostsFile": "/dev/null",
               "HostKeyAlgorithms": key_type, "ExitOnForwardFailure": "yes", "ServerAliveInterval": str(ALIVE_INTERVAL),
               "ServerAliveCountMax": str(ALIVE_COUNT), "ConnectTimeout": "10", "TCPKeepAlive": "yes",
               "LogLevel": "ERROR"}
    return ["ssh", "-F", "/dev/null", "-N", "-T", "-i", str(key), "-p", str(port),
            *[arg for name, value in options.items() for arg in ("-o", f"{name}={value}")],
            "-R", f"127.0.0.1:{listen}:{site}", f"{user}@{relay}"]


def authorized_line(public_key: str, listen: int, owner: str) -> str:
    """The relay's line for one tunnel key: remote forwarding of its own listen point only (no
    shell, pty, agent or X11: `restrict`), named by the app and machine it belongs to."""
    key = " ".join(public_key.split()[:2])
    return f'restrict,port-forwarding,permitlisten="127.0.0.1:{listen}" {key} modelhost-tunnel {owner}'


def parse_authorized(text: str) -> dict[str, tuple[int, str]]:
    """The tunnel lines of an authorized_keys file: owner -> (listen port, line)."""
    found = {}
    for line in text.splitlines():
        match = re.match(r'restrict,port-forwarding,permitlisten="127\.0\.0\.1:(\d+)" \S+ \S+ modelhost-tunnel (\S+)$',
                         line)
        if match:
            found[match.group(2)] = (int(match.group(1)), line)
    return found


def listening_ports(text: str) -> set[int]:
    """TCP ports in the LISTEN state, from /proc/net/tcp and tcp6 (no ss needed)."""
    ports = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 3 and fields[3] == "0A" and ":" in fields[1]:
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports
