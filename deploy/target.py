"""The one place that runs commands: on this machine, or (through Fabric) on a host over SSH.

Everything else builds argument lists (deploy/commands/); this module joins them with shlex.join,
runs them, and turns a failure into CommandFailed carrying the command and what it printed.
"""
from __future__ import annotations

import contextlib
import io
import logging
import shlex
from dataclasses import dataclass
from pathlib import Path

from fabric import Connection
from invoke.exceptions import AuthFailure, CommandTimedOut
from paramiko import AuthenticationException, BadHostKeyException, MissingHostKeyPolicy, SSHException, WarningPolicy
from paramiko.ssh_exception import NoValidConnectionsError

from deploy import commands


class CommandFailed(Exception):
    """A command exited non-zero (or timed out); the message has the command and its output."""

    def __init__(self, command: str, exited: int | None, output: str):
        self.command, self.exited, self.output = command, exited, output
        status = "timed out" if exited is None else f"exited {exited}"
        super().__init__(f"{command} {status}:\n{output.strip()}" if output.strip() else f"{command} {status}")


@dataclass(frozen=True)
class Result:
    stdout: str
    stderr: str
    exited: int


class TargetError(Exception):
    """The target cannot be reached or used: no connection, an untrusted host key, sudo refused."""


SUDO_PROMPT_HELP = ("run fab with --prompt-for-sudo-password (-H user@host), or give the user passwordless sudo, "
                    "or connect as root")


class Target:
    """Runs argument lists through a Fabric Connection or an invoke Context (this machine).

    With root=True, a host's commands run as root: directly when the SSH user is root, else
    through sudo (passwordless, or with the password fab --prompt-for-sudo-password asked for).
    """

    def __init__(self, context, root: bool = False):
        self.context = context
        self.root = root
        self._sudo: str | None = None  # "", "nopasswd" or "password", decided by the first command

    @property
    def remote(self) -> bool:
        """A host over SSH (a Fabric Connection), not this machine."""
        return hasattr(self.context, "put")

    @property
    def name(self) -> str:
        """The host as the user named it (-H, [fleet]; an ssh_config alias, not what it stands for)."""
        return getattr(self.context, "original_host", None) or getattr(self.context, "host", None) or "this machine"

    def run(self, argv: list[str], *, env: dict | None = None, cwd: str | None = None,
            timeout: float = 300, check: bool = True, as_user: bool = False) -> Result:
        """Run a command (as root when the target is a root one, unless as_user); with check, a
        non-zero exit raises CommandFailed."""
        command = shlex.join(argv)
        if env:
            command = shlex.join(["env", *(f"{k}={v}" for k, v in env.items())]) + " " + command
        if cwd:
            command = f"cd {shlex.quote(cwd)} && {command}"
        run, command = self.runner(command, as_user)
        try:
            result = self.connected(run, command, hide=True, warn=True, timeout=timeout, in_stream=False)
        except CommandTimedOut:
            raise CommandFailed(command, None, f"no answer within {timeout} s") from None
        except AuthFailure:
            raise TargetError(f"sudo on {self.name} refused the password given: {SUDO_PROMPT_HELP}") from None
        if check and result.exited != 0:
            raise CommandFailed(command, result.exited, result.stdout + result.stderr)
        return Result(result.stdout, result.stderr, result.exited)

    def runner(self, command: str, as_user: bool = False):
        """The function that runs command, and the command as it goes to it (wrapped in sudo if need be)."""
        sudo = "" if as_user else self.sudo()
        if sudo == "nopasswd":
            return self.context.run, "sudo -n -H -- sh -c " + shlex.quote(command)
        if sudo == "password":  # Fabric's sudo answers the password prompt
            return self.context.sudo, "sh -c " + shlex.quote(command)
        return self.context.run, command

    def connected(self, call, *args, **kwargs):
        """call(...), with a failure to connect or authenticate turned into one line naming the host."""
        try:
            return call(*args, **kwargs)
        except (SSHException, OSError) as exc:
            if not self.remote:
                raise
            raise TargetError(connection_error(self.context, exc)) from None

    def sudo(self) -> str:
        """How this target's commands get root: "" (already root, or not needed), "nopasswd" or "password"."""
        if self._sudo is None:
            self._sudo = ""
            if self.root and self.remote and self.context.user != "root":
                if self.run(commands.passwordless_sudo(), check=False, as_user=True).exited == 0:
                    self._sudo = "nopasswd"
                elif self.context.config.sudo.password:
                    self._sudo = "password"
                else:
                    raise TargetError(f"sudo on {self.name} asks {self.context.user}'s password: "
                                      f"{SUDO_PROMPT_HELP}")
        return self._sudo

    def stream(self, argv: list[str], stdin: bool = False) -> int:
        """Run a command with its output going straight to the terminal (tail -F: until Ctrl-C), and
        with stdin, this terminal's input going to it; returns its exit status."""
        run, command = self.runner(shlex.join(argv))
        return self.connected(run, command, pty=False, warn=True, in_stream=None if stdin else False).exited

    def connects_again(self, timeout: float = 20) -> str | None:
        """Whether a new SSH connection to this host, made as this one was (the same SSH config, keys,
        jump host, host keys checked), logs in and runs a command: None when it does, else why not.
        After a firewall change the session in use proves nothing: the firewall lets it go on."""
        old = self.context
        fresh = Connection(old.original_host, user=old.user, port=old.port, config=old.config,
                           connect_timeout=int(timeout), connect_kwargs=dict(old.connect_kwargs))
        transport_log = logging.getLogger("paramiko.transport")  # its thread prints a traceback of what we return
        level = transport_log.level
        transport_log.setLevel(logging.CRITICAL)
        try:
            check_host_keys(fresh)
            result = fresh.run("true", hide=True, warn=True, timeout=timeout, in_stream=False)
        except CommandTimedOut:
            return f"it logged in, but `true` gave no answer within {timeout:g} s"
        except (SSHException, OSError) as exc:
            return connection_error(fresh, exc)
        finally:
            fresh.close()
            transport_log.setLevel(level)
        return None if result.exited == 0 else f"it logged in, but `true` exited {result.exited}"

    def read(self, path: Path) -> str | None:
        """A text file's content; None when it does not exist."""
        result = self.run(commands.cat(path), check=False)
        return result.stdout if result.exited == 0 else None

    @contextlib.contextmanager
    def staged(self, source: Path | bytes):
        """A copy of a local file (or bytes) on the target, readable only by the user who connected,
        removed afterwards; yields its path there. On this machine, the file itself."""
        if not self.remote and not isinstance(source, bytes):
            yield Path(source)
            return
        path = Path(self.run(commands.temporary_file(), as_user=True).stdout.strip())
        try:
            if self.remote:
                self.connected(self.context.put, io.BytesIO(source) if isinstance(source, bytes) else str(source),
                               str(path), preserve_mode=False)
            else:
                path.write_bytes(source)
            yield path
        finally:
            self.run(commands.remove(path), check=False, as_user=True)

    def upload(self, source: Path | bytes, path: Path, mode: int = 0o644, owner: str | None = None) -> None:
        """Put a local file (or bytes) at path on the target, atomically: written beside it with its
        mode (and owner) from the start, then renamed; a secret is never readable by others."""
        partial = path.with_name(f".{path.name}.partial")
        with self.staged(source) as staged:
            self.run(commands.install(staged, partial, mode, owner))
        self.run(commands.move(partial, path))

    def write(self, path: Path, text: str, mode: int = 0o644, owner: str | None = None) -> bool:
        """Make path hold text; returns whether it changed (an identical file is left alone)."""
        if self.read(path) == text:
            return False
        self.upload(text.encode("utf-8"), path, mode, owner)
        return True


def connection_error(connection, exc: Exception) -> str:
    """One line: which host, what went wrong, and what to do when the host key is the problem."""
    host = connection.host + (f":{connection.port}" if connection.port != 22 else "")
    if isinstance(exc, BadHostKeyException):
        return (f"the host key of {host} is not the one in known_hosts: the host was reinstalled, or someone is "
                f"in between. If you know why it changed, remove the old key with ssh-keygen -R {connection.host} "
                "and trust the new one")
    if isinstance(exc, UnknownHostKey):
        return (f"{host} is not a known host (its key is not in known_hosts). Check its key's fingerprint, then "
                f"trust it: ssh {connection.user}@{host} once and answer yes, or ssh-keyscan -H "
                f"{'-p ' + str(connection.port) + ' ' if connection.port != 22 else ''}{connection.host} >> "
                "~/.ssh/known_hosts")
    if isinstance(exc, AuthenticationException):
        return (f"cannot log in to {host} as {connection.user}: {exc}. Put your public key in "
                f"~{connection.user}/.ssh/authorized_keys there (ssh-copy-id {connection.user}@{host})")
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    if isinstance(exc, NoValidConnectionsError):
        reason = "; ".join(sorted({e.strerror or str(e) for e in exc.errors.values()}))
    return f"cannot connect to {host}: {reason}"


class UnknownHostKey(SSHException):
    """The host's key is not in known_hosts (and StrictHostKeyChecking is not "no")."""


class RejectUnknown(MissingHostKeyPolicy):
    def missing_host_key(self, client, hostname, key):
        raise UnknownHostKey(f"{hostname} is not a known host")


def check_host_keys(connection) -> None:
    """Make a Fabric Connection check host keys as ssh does (Fabric accepts any key by default):
    known_hosts files from the SSH config (UserKnownHostsFile, GlobalKnownHostsFile) or ssh's
    defaults; an unknown host is refused unless the SSH config says StrictHostKeyChecking no."""
    config = connection.ssh_config
    files = []
    for key, default in (("userknownhostsfile", "~/.ssh/known_hosts ~/.ssh/known_hosts2"),
                         ("globalknownhostsfile", "/etc/ssh/ssh_known_hosts /etc/ssh/ssh_known_hosts2")):
        value = config.get(key, default)
        files += value.split() if isinstance(value, str) else list(value)
    for path in (Path(name).expanduser() for name in files):
        if path.is_file():
            connection.client.load_system_host_keys(str(path))  # read only: nothing is ever added
    strict = str(config.get("stricthostkeychecking", "yes")).lower()
    connection.client.set_missing_host_key_policy(WarningPolicy() if strict == "no" else RejectUnknown())
