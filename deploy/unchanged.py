"""A deploy that has nothing to do, found out in one round trip.

Each deploy that goes through leaves a record on the target, beside its releases:

    deployed.json    what it was given, as a digest (the kit, deploy.toml, the source tree, the
                     model, the secrets given, the host facts a plan rests on), and the release it
                     made live
    deployed.sha256  the sum of every config file it wrote or found as wanted, and of the env file
                     (sha256sum's format)

The next deploy first runs one command (commands.snapshot): the host's facts, that record, which
files no longer have their sums, the deploy lock, the links, both colors' programs and their
answers to the health path, the certificate's files. When the digest is the same, every file is
as it was, no deploy holds the lock, and the live color runs the recorded release and answers
ready, the deploy is done: one step says what was checked. Anything else, and the deploy goes the
whole way, as it would have (and records again at its end).

A deploy that finds nothing to do changes nothing either way: the release would be the one made
already (the same identity), its worker plan kept. What the quick look does not see is what a
deploy does not write: the releases' and environments' files themselves, and other apps' files.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

from deploy import commands
from deploy.context import Context, Step
from deploy.cutover import health, is_ready
from deploy.facts import FACTS_COMMAND, parse_facts, split_sections
from deploy.layout import COLORS
from deploy.render import CONFIGS, DEPLOY, certificate_paths
from deploy.source import Model, Source, digest
from deploy.state import Pointers, Release

RECORD, SUMS = "deployed.json", "deployed.sha256"


def kit_digest() -> str:
    """The kit's own code and templates: a new modelhost deploys the whole way once."""
    files = sorted([*DEPLOY.rglob("*.py"), *DEPLOY.rglob("*.j2"), *CONFIGS.glob("*/*.j2")])
    return hashlib.sha256(b"".join(path.read_bytes() for path in files)).hexdigest()[:16]


def inputs(ctx: Context, source: Source, model: Model | None, environ: dict) -> str:
    """What a deploy is given, and the host facts its plan rests on, as one digest."""
    settings = {k: vars(v) for k, v in vars(ctx.settings).items() if k != "source"}
    given = {name: environ[name] for name in ctx.settings.app.secrets if name in environ}
    f = ctx.facts
    host = (f.cores, f.memory_total_mb, f.architecture, f.os_id, f.os_version, f.init, f.nginx_version,
            f.python_version)
    return digest(kit_digest(), settings, source.tree, source.requirements.text, model.key if model else "",
                  hashlib.sha256(json.dumps(given, sort_keys=True).encode()).hexdigest(), host)


def look(ctx: Context) -> dict[str, str]:
    """The snapshot's sections; the host's facts (and whether its certificate is there) are kept
    in the context, so the rest of the deploy asks for them no more."""
    path, ready = health(ctx)
    out = ctx.run(commands.snapshot(ctx.layout, FACTS_COMMAND, ctx.python, path, ready,
                                    certificate_paths(ctx.settings), ctx.layout.root / RECORD,
                                    ctx.layout.root / SUMS)).stdout
    ctx.__dict__["facts"] = parse_facts(out)
    sections = split_sections(out)
    ctx.__dict__["tls"] = ctx.layout.tls(ctx.settings) and sections.get("certificate") == "present"
    return sections


def check(ctx: Context, source: Source, model: Model | None, environ: dict) -> tuple[str, Release | None]:
    """(these inputs as a digest, the live release when there is nothing to do: a step says so)."""
    started = ctx.clock()
    found = look(ctx)
    wanted = inputs(ctx, source, model, environ)
    said = nothing_to_do(ctx, found, wanted)
    if said is None:
        return wanted, None
    release, detail = said
    step = Step("unchanged", detail=detail, seconds=ctx.clock() - started)
    ctx.steps.append(step)
    ctx.report(step)
    return wanted, release


def nothing_to_do(ctx: Context, found: dict[str, str], wanted: str) -> tuple[Release, str] | None:
    """The live release and what was checked, when the target (as look found it) is as the last
    deploy left it for these inputs (wanted); None when a deploy has something to do, or to check."""
    try:
        record = json.loads(found.get("record") or "null")
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("inputs") != wanted or found.get("sums") != "exit 0":
        return None
    if found.get("lock") != "free":
        return None  # the deploy's own lock says who holds it
    pointers = Pointers.parse(commands.parse_links(found.get("links", "")))
    release = Release.parse(json.dumps(record["release"])) if isinstance(record.get("release"), dict) else None
    if release is None or pointers.live is None or pointers.live_release != release.id:
        return None
    status = commands.split_programs_status(found.get("programs", ""), ctx.layout, COLORS)[pointers.live]
    state, pid, _ = ctx.programs.parse_status(status, pointers.live)
    try:
        answers = commands.parse_probe(found.get(f"answer-{pointers.live}", ""))
    except ValueError:  # no python3 answered
        return None
    # STARTING: supervisor counts a program started once it has run startsecs (1 s); it answers already.
    if state not in ("RUNNING", "STARTING") or not answers or not is_ready(answers[0], health(ctx)[1]):
        return None
    return release, (f"{release.id} runs on {pointers.live} (pid {pid}) and answers {answers[0]['status']}; the "
                     f"code, settings, model and secrets of its deploy, and its {record.get('files', 0)} config "
                     "files as it left them")


def record(ctx: Context, wanted: str, release: Release) -> None:
    """After a deploy that went through: what it was given, and the sums of the files it wrote. Both
    readable by their owner only: the sums include the env file's, which a weak secret could be
    guessed back from, and the digest includes the secrets given."""
    ctx.target.write(ctx.layout.root / SUMS, sums_text(ctx.written), mode=0o600)
    ctx.target.write(ctx.layout.root / RECORD, json.dumps(
        {"inputs": wanted, "release": asdict(release), "files": len(ctx.written)}, sort_keys=True) + "\n",
        mode=0o600)


def sums_text(written: dict) -> str:
    """sha256sum's own format, which `sha256sum --check` reads: a line per file."""
    return "".join(f"{sha256}  {path}\n" for path, sha256 in sorted(written.items()))
