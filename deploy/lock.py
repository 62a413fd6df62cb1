"""One deploy at a time: a lock directory on the target (mkdir is atomic), naming its holder."""
from __future__ import annotations

import contextlib
import os

from deploy import commands
from deploy.context import Context, DeployError, now
from deploy.target import CommandFailed


class DeployLocked(DeployError):
    """Another deploy holds the target's deploy lock."""


@contextlib.contextmanager
def locked(ctx: Context, action: str):
    """Holds the target's deploy lock; a second deploy is refused, naming the holder."""
    lock = ctx.layout.lock
    ctx.run(commands.make_directory(ctx.layout.root))
    try:
        ctx.run(commands.make_directory(lock, parents=False))
    except CommandFailed:
        holder = (ctx.target.read(lock / "holder") or "unknown (no holder file yet)").strip()
        raise DeployLocked(
            f"another deploy is running on {ctx.target.name}: {holder}. Wait for it to finish; if no deploy "
            f"is running (it was killed), run the task again with --break-lock (deploy, rollback, certificate, "
            f"expose), or remove the lock: rm -r {lock}") from None
    try:
        ctx.target.write(lock / "holder", f"{action} by {ctx.who()} (pid {os.getpid()}) since {now()}\n")
        yield
    finally:
        ctx.run(commands.remove(lock), check=False)


def break_lock(ctx: Context) -> str | None:
    """Remove a lock left by a killed deploy; returns who held it (None: there was no lock)."""
    lock = ctx.layout.lock
    if not ctx.exists(lock):
        return None
    holder = (ctx.target.read(lock / "holder") or "no holder file").strip()
    ctx.run(commands.remove(lock))
    return holder
