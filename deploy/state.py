"""What a target holds: its releases, where blue, green and current point, and the audit log.

The readers run one command each; the decisions made from what they read (which release a
rollback goes to, which releases prune keeps) are pure functions.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from deploy import commands
from deploy.context import Context, now
from deploy.layout import COLORS
from deploy.settings import KIT_DIR
from deploy.workers import Measured, measured, parse_memory


@dataclass(frozen=True)
class Release:
    id: str  # <UTC time>-<revision>: sorts by age
    revision: str
    identity: str  # the same code, environment, model, settings and secrets give the same identity
    venv: str
    model: str
    model_version: str
    workers: int
    explanation: str
    created: str
    kit_dir: str = ""  # where its kit entries are (.modelhost); "" for a release made before they had a place
    threads: int = 0  # threads per worker; 0 for a release made before they were recorded

    @classmethod
    def parse(cls, text: str) -> Release:
        return cls(**{k: v for k, v in json.loads(text).items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Pointers:
    live: str | None  # the color current points at
    release: dict[str, str | None]  # the release id each color points at

    @property
    def live_release(self) -> str | None:
        return self.release[self.live] if self.live else None

    @classmethod
    def parse(cls, links: dict[str, str]) -> Pointers:
        """From where the links current, blue and green point ("" for a missing link)."""
        live = links.get("current") if links.get("current") in COLORS else None
        return cls(live, {color: links.get(color, "").rsplit("/", 1)[-1] or None for color in COLORS})


def pointers(ctx: Context) -> Pointers:
    """Where current, blue and green point, read in one command."""
    return Pointers.parse(commands.parse_links(ctx.run(commands.read_links(ctx.layout.root)).stdout))


def releases(ctx: Context) -> list[Release]:
    """Every complete release on the target, oldest first."""
    out = ctx.run(commands.cat_releases(ctx.layout.releases, KIT_DIR), check=False).stdout
    return sorted((Release.parse(line) for line in out.splitlines() if line.strip()), key=lambda r: r.id)


def live(ctx: Context) -> tuple[Pointers, Release | None]:
    """The pointers, and the release the live color runs (None before the first went live)."""
    found = pointers(ctx)
    return found, next((r for r in releases(ctx) if r.id == found.live_release), None)


def history(ctx: Context) -> list[dict]:
    """Every deploy and rollback, oldest first: time, user, action, release, color, result."""
    text = ctx.target.read(ctx.layout.history) or ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def record(ctx: Context, action: str, release: str, color: str | None, result: str) -> None:
    line = json.dumps({"time": now(), "user": ctx.who(),
                       "action": action, "release": release, "color": color, "result": result})
    ctx.run(commands.append_line(ctx.layout.history, line))


def measured_memory(ctx: Context) -> Measured | None:
    """The live release's workers as measured so far (layout.memory), None before a reading."""
    text = ctx.target.read(ctx.layout.memory)
    try:
        return Measured(**json.loads(text)) if text else None
    except (ValueError, TypeError):  # a file from another version: measured again
        return None


def measure(ctx: Context, master: int | None, release: Release, earlier: Measured | None) -> Measured | None:
    """A reading of the release's gunicorn (its master's pid) merged into earlier (None when it does not run)."""
    if not master or not release.threads:
        return None
    rows = parse_memory(ctx.run(commands.memory_of(master), check=False).stdout)
    return measured(rows, release.id, release.threads, now(), earlier)


def record_memory(ctx: Context) -> Measured | None:
    """Measure the live release's workers and keep the largest reading on the target; the reading."""
    pointers, release = live(ctx)
    if release is None:
        return None
    earlier = measured_memory(ctx)
    reading = measure(ctx, ctx.programs.status(pointers.live).pid, release, earlier)
    if reading and reading != earlier:
        ctx.target.write(ctx.layout.memory, json.dumps(asdict(reading)) + "\n")
    return reading or earlier


def went_live(history: list[dict]) -> set[str]:
    return {h["release"] for h in history if h["result"] == "ok"}


def previous(releases: list[Release], current: str | None, history: list[dict]) -> Release | None:
    """The newest release older than current that has been live: where a rollback goes."""
    older = [r for r in releases if current and r.id < current and r.id in went_live(history)]
    return older[-1] if older else None


def kept(releases: list[Release], pointers: Pointers, history: list[dict], keep: int) -> set[str]:
    """The releases prune keeps: the newest `keep` of those that have been live, the ones blue and
    green run, and the one a rollback would go to. A release that never went live is not kept
    (nor counted): a deploy that failed leaves nothing worth a rollback."""
    live_ones = [r for r in releases if r.id in went_live(history)]
    back = previous(releases, pointers.live_release, history)
    return ({r.id for r in live_ones[-keep:]} | {id for id in pointers.release.values() if id}
            | ({back.id} if back else set()))
