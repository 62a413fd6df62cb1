"""The one place that runs commands: on this machine, or (through Fabric) on a host over SSH.

Everything else builds argument lists; this module joins them with shlex.join, runs them, and
turns a failure into CommandFailed carrying the command and what it printed.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass

from invoke.exceptions import CommandTimedOut


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


class Target:
    """Runs argument lists through a Fabric Connection or an invoke Context (this machine)."""

    def __init__(self, context):
        self.context = context

    def run(self, argv: list[str], *, env: dict | None = None, cwd: str | None = None,
            timeout: float = 300, check: bool = True) -> Result:
        """Run a command; with check, a non-zero exit raises CommandFailed."""
        command = shlex.join(argv)
        if env:
            command = shlex.join(["env", *(f"{k}={v}" for k, v in env.items())]) + " " + command
        if cwd:
            command = f"cd {shlex.quote(cwd)} && {command}"
        try:
            result = self.context.run(command, hide=True, warn=True, timeout=timeout, in_stream=False)
        except CommandTimedOut:
            raise CommandFailed(command, None, f"no answer within {timeout} s") from None
        if check and result.exited != 0:
            raise CommandFailed(command, result.exited, result.stdout + result.stderr)
        return Result(result.stdout, result.stderr, result.exited)
