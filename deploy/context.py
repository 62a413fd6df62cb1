"""What every step of a deploy (and of provision) works with: one app on one target.

A Context holds the target (the one place commands run), the app's settings, its layout on that
target, the host's facts (gathered once), the target's nginx and process manager, and the steps
reported so far. Steps are timed and reported as they end, the one that fails too.
"""
from __future__ import annotations

import contextlib
import functools
import getpass
import hashlib
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from invoke import Context as Local

from deploy import commands
from deploy.facts import HostFacts, gather
from deploy.layout import Layout
from deploy.render import certificate_paths
from deploy.settings import LOOPBACK_NAMES
from deploy.target import Target


class DeployError(Exception):
    """A deploy step failed; the message says what happened, what is still serving, and what to do."""


@dataclass
class Step:
    """One step's outcome, as `fab` prints it: what it did, whether anything changed, how long it took."""
    name: str
    detail: str = ""
    changed: bool = False
    seconds: float = 0.0
    failed: bool = False


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def release_time() -> str:
    """The UTC time a new release is named after (its id is <time>-<revision>)."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")


class Context:
    """One app on one target. report(step) is called as each step ends (fab prints it).

    clock and sleep are time's unless a test gives its own (the fake target's clock)."""

    python = "python3"  # the target's, for venvs and probes

    def __init__(self, target: Target, settings, layout: Layout, report: Callable[[Step], None] = lambda s: None,
                 local: Target | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.target, self.settings, self.layout, self.report = target, settings, layout, report
        self.local = local or Target(Local())  # this machine, where the source and the model are
        self.clock, self.sleep = clock, sleep
        self.steps: list[Step] = []
        self.written: dict[Path, str] = {}  # path -> sha256 of each config file written or found as wanted
        self.release_time: str | None = None  # a new release's, when not now: a fleet's hosts name theirs alike

    @functools.cached_property
    def facts(self) -> HostFacts:
        return gather(self.target)

    @functools.cached_property
    def nginx(self):
        from deploy.nginx import Nginx
        return Nginx(self)

    @functools.cached_property
    def programs(self):
        """The process manager of the app's gunicorn programs (supervisor or systemd units)."""
        from deploy.programs import process_manager
        return process_manager(self)

    # ---- the site, as clients reach it ---------------------------------------------------------

    @functools.cached_property
    def tls(self) -> bool:
        """HTTPS: [nginx] tls on a target that serves it, once the certificate and its key are there
        (until then the site is served over HTTP: `fab certificate` gets one)."""
        return self.layout.tls(self.settings) and all(self.exists(Path(p)) for p in certificate_paths(self.settings))

    @property
    def site_address(self) -> tuple[str, int]:
        """Where the target itself reaches the site's nginx: its TLS listen with [nginx] tls, else HTTP."""
        return self.layout.tls_address if self.tls else self.layout.http_address

    @property
    def url(self) -> str:
        """The site's address as a browser reaches it: a name the site answers (nginx drops the
        others), its scheme and its port."""
        scheme, default = ("https", 443) if self.tls else ("http", 80)
        address, port = self.site_address
        return f"{scheme}://{self.site_name}{'' if port == default else f':{port}'}{self.settings.nginx.prefix}/"

    @property
    def site_name(self) -> str:
        """The name in the site's URL: on this machine the address it listens on when the site
        answers it, else the first name of [nginx] server_names that is not a wildcard, preferring
        on a host one that is not this machine's own (localhost)."""
        names = [n for n in self.settings.nginx.server_names if not n.startswith("*")] or ["localhost"]
        if not self.target.remote:
            return self.site_address[0] if self.site_address[0] in names else names[0]
        return next((n for n in names if n not in LOOPBACK_NAMES), names[0])

    @property
    def reached_from_elsewhere(self) -> bool:
        """The site answers a name that is not the target's own (localhost): others can reach it."""
        return self.site_name not in LOOPBACK_NAMES

    # ---- small helpers -------------------------------------------------------------------------

    def run(self, argv: list[str], **kwargs):
        return self.target.run(argv, **kwargs)

    @contextlib.contextmanager
    def step(self, name: str, quiet: bool = False):
        """Times a step and reports it when it ends, also when it fails (marked failed); a quiet step
        (one for a feature the app does not use) is reported only when it changed something or failed."""
        step = Step(name)
        started = self.clock()
        try:
            yield step
        except BaseException:
            step.failed = True
            raise
        finally:
            step.seconds = self.clock() - started
            if not quiet or step.changed or step.failed:
                self.steps.append(step)
                self.report(step)

    def exists(self, path: Path) -> bool:
        return self.run(commands.exists(path), check=False).exited == 0

    def link(self, target: str | Path, link: Path) -> None:
        for argv in commands.symlink(target, link):
            self.run(argv)

    def wait(self, done: Callable[[], bool], seconds: float) -> bool:
        """Until done() (True), or seconds pass (False)."""
        deadline = self.clock() + seconds
        while not done():
            if self.clock() >= deadline:
                return False
            self.sleep(0.2)
        return True

    def who(self) -> str:
        """Who acts: user@machine of whoever runs fab, and the SSH user on a host."""
        ssh_user = getattr(self.target.context, "user", None) if self.target.remote else None
        return f"{getpass.getuser()}@{socket.gethostname()}" + (f" as {ssh_user}" if ssh_user else "")

    def write_files(self, files: dict[Path, str]) -> dict[Path, str | None]:
        """Writes the files; returns the earlier content of each one that changed (None: it was new)."""
        earlier = {}
        found = commands.parse_sums(self.run(commands.sums(list(files))).stdout)  # one look at them all
        for path, text in files.items():
            self.wrote(path, text)
            if found.get(str(path)) != self.written[path]:
                earlier[path] = self.target.read(path) if str(path) in found else None
                self.target.upload(text.encode("utf-8"), path)
        return earlier

    def wrote(self, path: Path, text: str) -> None:
        """Notes a file a deploy wants as it is (deploy/unchanged.py checks it is still so next time)."""
        self.written[path] = hashlib.sha256(text.encode("utf-8")).hexdigest()

    def restore(self, earlier: dict[Path, str | None]) -> None:
        """Puts back what write_files replaced, and removes what it made."""
        for path, text in earlier.items():
            if text is None:
                self.run(commands.remove(path))
            else:
                self.target.write(path, text)
