"""The one place that runs commands: on this machine, or (through Fabric) on a host over SSH.

Everything else builds argument lists; this module joins them with shlex.join, runs them, and
turns a failure into CommandFailed carrying the command and what it printed.
"""
from __future__ import annotations

import io
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

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

    @property
    def remote(self) -> bool:
        """A host over SSH (a Fabric Connection), not this machine."""
        return hasattr(self.context, "put")

    @property
    def name(self) -> str:
        return getattr(self.context, "host", None) or "this machine"

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

    def stream(self, argv: list[str]) -> None:
        """Run a command with its output going straight to the terminal (tail -F: until Ctrl-C)."""
        self.context.run(shlex.join(argv), pty=False, warn=True, in_stream=False)

    def read(self, path: Path) -> str | None:
        """A text file's content; None when it does not exist."""
        result = self.run(["cat", "--", str(path)], check=False)
        return result.stdout if result.exited == 0 else None

    def upload(self, source: Path | bytes, path: Path, mode: int = 0o644) -> None:
        """Put a local file (or bytes) at path on the target, atomically: written beside it, then renamed."""
        partial = path.with_name(f".{path.name}.partial")
        # Made empty with its mode first, then filled: a secret is never readable by others, not even briefly.
        self.run(["install", "-m", f"{mode:o}", "/dev/null", str(partial)])
        if self.remote:
            self.context.put(io.BytesIO(source) if isinstance(source, bytes) else str(source), str(partial),
                             preserve_mode=False)
        elif isinstance(source, bytes):
            partial.write_bytes(source)  # an existing file keeps its mode
        else:
            shutil.copyfile(source, partial)
        self.run(["mv", "-f", "--", str(partial), str(path)])

    def write(self, path: Path, text: str, mode: int = 0o644) -> bool:
        """Make path hold text; returns whether it changed (an identical file is left alone)."""
        if self.read(path) == text:
            return False
        self.upload(text.encode("utf-8"), path, mode)
        return True
