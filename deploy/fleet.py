"""A task on every host of [fleet] app: at once on all of them (threads, one SSH connection each), or
one host at a time stopping at the first that fails; every line of output marked with its host, and
at the end one line per host saying how it went.

Fabric's ThreadingGroup runs one command on many hosts; a task here is many commands and decisions
per host, so each host gets a thread running the whole task, as `fab -H a,b` would run it serially.
"""
from __future__ import annotations

import io
import os
import secrets
import signal
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from invoke.exceptions import Exit


class Prefixed(io.TextIOBase):
    """A stream that writes each whole line with the prefix of the thread that wrote it (a host's
    name), so the lines of hosts working at once stay apart and say whose they are."""

    def __init__(self, stream):
        self.stream = stream
        self.lock = threading.Lock()
        self.local = threading.local()

    def mark(self, prefix: str) -> None:
        """Lines this thread writes from now on start with prefix."""
        self.local.prefix, self.local.partial = prefix, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *lines, rest = (getattr(self.local, "partial", "") + text).split("\n")
        self.local.partial = rest
        if lines:
            prefix = getattr(self.local, "prefix", "")
            with self.lock:
                try:
                    self.stream.write("".join(f"{prefix}{line}\n" for line in lines))
                    self.stream.flush()
                except BrokenPipeError:  # the hosts' work goes on: a deploy is not cut short by it
                    drop_output()
        return len(text)

    def flush(self) -> None:
        """A line without its end yet stays until it ends (or the thread's work does: `end`)."""

    def end(self) -> None:
        """The rest of this thread's last line, if it never ended."""
        if getattr(self.local, "partial", ""):
            self.write("\n")


OUTPUT_GONE = 128 + signal.SIGPIPE  # a task's exit status when its output's reader went away, as SIGPIPE's


def drop_output() -> None:
    """The reader of a task's output went away (`modelhost status | head`): what is printed from
    now on goes nowhere instead of failing (Python's advice for SIGPIPE, in its signal module's docs)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.__stdout__.fileno())
    os.close(devnull)


@dataclass
class Outcome:
    host: str
    result: str = ""  # what the task said it did (or, when it failed, its error)
    failed: bool = False
    started: bool = True  # False: a task that stops at the first failure never got to this host
    seconds: float = 0.0
    row: dict[str, str] = field(default_factory=dict)  # a task's answer as columns (fab status's)


def run(hosts: list[str], task: Callable[[str], str], at_once: bool) -> list[Outcome]:
    """task(host) on every host, with sys.stdout and sys.stderr marked by host: all at once, or one
    after the other until one fails (the rest are then not started). task returns what it did in a
    few words, or as columns (a dict, for `table`); an exception is its failure (Fabric's Exit with
    its message; any other with its traceback, marked too)."""
    outcomes = {host: Outcome(host, started=False) for host in hosts}
    width = max(len(host) for host in hosts)
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = Prefixed(streams[0]), Prefixed(streams[1])

    def one(host: str) -> bool:
        for stream in (sys.stdout, sys.stderr):
            stream.mark(f"{host:<{width}} | ")
        outcome, started = outcomes[host], time.monotonic()
        outcome.started = True
        try:
            said = task(host) or "done"
            if isinstance(said, dict):
                outcome.row, said = said, "; ".join(f"{key} {value}" for key, value in said.items())
            outcome.result = said
        except Exit as exc:  # the task's own message (an error, or only an exit status)
            outcome.failed = bool(exc.code)
            outcome.result = str(exc.message or f"exit status {exc.code}")
            if exc.message:
                print(exc.message, file=sys.stderr)  # where it happened, among the host's lines
        except Exception as exc:  # a bug or an error no task turned into a message: keep the traceback
            traceback.print_exc()
            outcome.failed, outcome.result = True, f"{type(exc).__name__}: {exc}"
        finally:
            outcome.seconds = time.monotonic() - started
            for stream in (sys.stdout, sys.stderr):
                stream.end()
        return not outcome.failed

    try:
        if at_once:
            with ThreadPoolExecutor(max_workers=len(hosts), thread_name_prefix="fleet") as pool:
                list(pool.map(one, hosts))
        else:
            for host in hosts:
                if not one(host):
                    break
    finally:
        sys.stdout, sys.stderr = streams
    return [outcomes[host] for host in hosts]


def summary(outcomes: list[Outcome], stopped_at: str | None = None) -> list[str]:
    """One line per host: ok or failed, seconds, and what it said; hosts never started say why."""
    width = max(len(o.host) for o in outcomes)
    lines = []
    for o in outcomes:
        if not o.started:
            lines.append(f"  {o.host:<{width}}  not started{f' (stopped at {stopped_at})' if stopped_at else ''}"
                         + (f"; {o.result}" if o.result else ""))
        else:
            lines.append(f"  {o.host:<{width}}  {'FAILED' if o.failed else 'ok':<6} {o.seconds:6.1f} s  {o.result}")
    return lines


def table(rows: list[dict[str, str]]) -> list[str]:
    """Rows of columns (the first row's keys, then any others in the order met) as aligned lines under
    a header; a row without a column shows "-"."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cells = [columns] + [[row.get(column) or "-" for column in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return ["  " + "  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in cells]


def shared_secrets(found: dict[str, dict[str, str] | None], names: list[str]) -> tuple[dict[str, str], list[str]]:
    """The value of each secret a deploy makes up, alike on every app host: the hosts behind a
    balancer must share it, or a session or form token one host signed fails on the next. found is
    each host's env file ([fleet] app's order; None when it could not be read). The first host's
    value that has one, else a new one (none while a host that could not be read may hold one);
    returns the values and a line for each secret that some hosts held another value of (they take
    the shared one)."""
    values, lines = {}, []
    for name in names:
        holders = [(host, env[name]) for host, env in found.items() if env and env.get(name)]
        if not holders and None in found.values():
            continue
        values[name] = holders[0][1] if holders else secrets.token_hex(32)
        others = [host for host, value in holders if value != values[name]]
        if others:
            lines.append(f"{name}: {', '.join(others)} held a value of {'its' if len(others) == 1 else 'their'} own; "
                         f"every host now has {holders[0][0]}'s (the hosts behind one balancer share it, so a "
                         "session or form one signed is good on the others)")
    return values, lines
