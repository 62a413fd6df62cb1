"""The tasks on one app on one target, each a short list of steps: deploy, rollback, status, diff,
logs and stop. The steps live in the modules named for them:

    context     the target, settings, layout, facts; step timing and reporting
    lock        one deploy at a time (deploy.lock), and the audit log's writer in state
    parts       prerequisites, directories, secrets, model, Python environment, release, release
                command, prune; a command run as the app
    cutover     start the idle color, wait until ready, smoke query, switch nginx, stop the old one
    background  the app's processes started again on the live release; its scheduled jobs' timers or cron lines
    programs    the process manager (supervisor or systemd units) behind one interface
    nginx       site files, nginx -t, enable, reload and drain, put back
    state       releases, blue/green/current pointers, history; which release a rollback picks

Every command goes through `Target` (deploy/target.py), so the same code serves this machine and a host.
"""
from __future__ import annotations

import difflib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from deploy import background, certificate, commands, expose, firewall, state, unchanged
from deploy.context import Context, DeployError
from deploy.cutover import activate, ask, health, release_app, said, served, verify
from deploy.layout import COLORS
from deploy.lock import locked
from deploy.parts import (app_command, ensure_directories, ensure_model, ensure_prerequisites, ensure_release,
                          ensure_release_command, ensure_secrets, ensure_start_at_boot, prune)
from deploy.programs import Program
from deploy.render import App, plan_app, render
from deploy.source import Model, Source
from deploy.state import Release
from deploy.target import CommandFailed
from deploy.venv import ensure_venv


def deploy(ctx: Context, source: Source, model: Model | None, environ: dict) -> Release:
    """Ship the source (and model) as a release and make it live; when the target is as the last
    deploy of the same source, settings, model and secrets left it, say so and do nothing."""
    wanted, live = unchanged.check(ctx, source, model, environ)
    if live:
        return live
    with locked(ctx, "deploy"), tempfile.TemporaryDirectory(prefix="modelhost-deploy-") as scratch:
        scratch = Path(scratch)
        recover(ctx)
        ensure_prerequisites(ctx)
        ensure_directories(ctx)
        ensure_start_at_boot(ctx)
        secrets_digest = ensure_secrets(ctx, environ)
        model_key = ensure_model(ctx, model, scratch)
        venv = ensure_venv(ctx, source)
        # What the live release's workers use, after the traffic it has served, sizes a new release.
        measured = state.record_memory(ctx)
        app = plan_app(ctx.settings, ctx.layout, ctx.facts, model_mb=model.size_mb if model else 0, measured=measured)
        release = ensure_release(ctx, source, app, venv, model, model_key, secrets_digest, scratch)
        ensure_release_command(ctx, release, app)
        changed = go_live(ctx, "deploy", release, app)
        background.ensure(ctx, restart=changed)
        prune(ctx)
        unchanged.record(ctx, wanted, release)
    return release


def rollback(ctx: Context, to: str | None = None) -> Release:
    """Make an earlier release live again: the one before the live one, or the one named."""
    with locked(ctx, "rollback"):
        chosen = rollback_target(ctx, to)
        recover(ctx)
        ensure_prerequisites(ctx)
        background.ensure(ctx, restart=go_live(ctx, "rollback", chosen, release_app(ctx, chosen)))
    return chosen


def rollback_target(ctx: Context, to: str | None) -> Release:
    releases = state.releases(ctx)
    if to:
        chosen = named_release(ctx, releases, to)
        if not chosen.kit_dir:
            raise DeployError(f"{chosen.id} was made by an older modelhost, which this one cannot start: deploy "
                              f"its revision ({chosen.revision}) again instead (git checkout, then fab deploy)")
        return chosen
    current = state.pointers(ctx).live_release
    chosen = state.previous([r for r in releases if r.kit_dir], current, state.history(ctx))
    if chosen is None:
        raise DeployError(f"nothing to roll back to on {ctx.target.name}: no release older than "
                          f"{current or 'the live one'} has been live (fab releases lists them)")
    return chosen


def named_release(ctx: Context, releases: list[Release], to: str) -> Release:
    """The release rollback --to names: by its id, or by its git revision (a short or whole commit
    hash, as `git log` shows it; each host of a fleet has its own ids), the newest release of it."""
    chosen = next((r for r in releases if r.id == to), None)
    if chosen:
        return chosen
    commit = to.lower()  # a build of uncommitted changes (abc1234+dirty) is named whole, or by its id
    of_revision = [r for r in releases if r.revision == to or r.revision and "+" not in r.revision
                   and len(commit) >= 4 and (r.revision.startswith(commit) or commit.startswith(r.revision))]
    if not of_revision:
        raise DeployError(f"no release {to} on {ctx.target.name} (neither a release id nor the git revision of "
                          "one); fab releases lists them")
    return of_revision[-1]


def recover(ctx: Context) -> None:
    """First, stop what a process manager that died left running (a step only when it did)."""
    dead, pids = ctx.programs.leftovers()
    if pids:
        with ctx.step("recover") as step:
            step.changed = True
            step.detail = ctx.programs.recover(dead, pids)


def go_live(ctx: Context, action: str, release: Release, app: App) -> bool:
    """The cutover and the check through nginx, recorded in the audit log; returns whether the live
    release changed (or had to be started)."""
    try:
        cutover = activate(ctx, release, app)
        with ctx.step("verify") as check:
            check.detail = verify(ctx)
    except (DeployError, CommandFailed):
        state.record(ctx, action, release.id, None, "failed")
        raise
    if cutover.changed:
        state.record(ctx, action, release.id, state.pointers(ctx).live, "ok")
    return cutover.changed


@dataclass
class Status:
    target: str
    url: str
    manager: str  # the process manager's own daemon ("supervisord"), "" when it is systemd
    manager_pid: int | None
    leftovers: list[int]  # processes a dead manager left running
    nginx: int | None
    live: str | None
    release: Release | None
    programs: list[Program] = field(default_factory=list)
    health: str = ""  # the path asked: [deploy] health_path, or /
    ready: str = ""  # the live color's answer to it over its socket
    through_nginx: str = ""  # its answer through nginx
    certificate: str = ""  # with [nginx] tls on a host: the certificate's names and expiry
    tunnel: str = ""  # with [expose]: the tunnel to the relay, and its last end-to-end check
    firewall: str = ""  # on a host: which firewall, whether on, what it lets in
    memory: str = ""  # what the live release's workers use: the largest readings so far, with one taken now
    processes: list[tuple[str, str]] = field(default_factory=list)  # (name, state) per copy of each process
    jobs: list[background.JobStatus] = field(default_factory=list)


def status(ctx: Context) -> Status:
    pointers = state.pointers(ctx)
    releases = {r.id: r for r in state.releases(ctx)}
    pm = ctx.programs
    programs = [pm.status(color) for color in COLORS]
    for program in programs:
        program.release = pointers.release[program.color]
    path, _ = health(ctx)
    result = Status(target=ctx.target.name, url=ctx.url, manager=pm.daemon, manager_pid=pm.pid(),
                    leftovers=pm.leftovers()[1],
                    nginx=ctx.nginx.pid(), live=pointers.live, release=releases.get(pointers.live_release),
                    programs=programs, health=path)
    live = next((p for p in programs if p.color == pointers.live and p.state == "RUNNING"), None)
    if live:
        answer = ask(ctx, [path], color=pointers.live)[0]
        result.ready = f"{answer['status']} {said(answer, 200)}"
        reading = state.measure(ctx, live.pid, result.release, state.measured_memory(ctx)) if result.release else None
        result.memory = reading.describe() if reading else ""
    if result.nginx:
        answer = ask(ctx, [path])[0]
        result.through_nginx = f"{answer['status']} {said(answer, 200)}"
    if ctx.layout.tls(ctx.settings):
        result.certificate = certificate.describe(ctx)
    if ctx.settings.expose.domain:
        result.tunnel = expose.describe(ctx)
    result.processes = background.process_lines(ctx)
    result.jobs = background.job_statuses(ctx)
    if ctx.layout.needs_provision:  # a host's firewall is provision's
        result.firewall = firewall.describe(ctx)
    return result


def diff(ctx: Context, model_mb: float | None = None) -> list[str]:
    """Unified diffs of every rendered config against the file on the target (changes nothing).

    Rendered for the live color, with the live release's worker plan (or, before the first
    deploy, the plan a deploy would make now)."""
    pointers, release = state.live(ctx)
    app = release_app(ctx, release) if release else plan_app(ctx.settings, ctx.layout, ctx.facts, model_mb=model_mb)
    diffs = []
    for file in render([served(ctx, app)], ctx.facts, pointers.live or COLORS[0]):
        if file.destination is None:
            continue
        current = ctx.target.read(file.destination)
        if current != file.content:
            diffs.append("".join(difflib.unified_diff(
                (current or "").splitlines(keepends=True), file.content.splitlines(keepends=True),
                f"{ctx.target.name}:{file.destination}" + ("" if current is not None else " (missing)"),
                f"rendered:{file.destination}")))
    return diffs


def log_command(ctx: Context, what: str, lines: int, follow: bool = False) -> list[str]:
    """The command that shows the last lines of the live app's log (or nginx's, or supervisord's)."""
    live = state.pointers(ctx).live or COLORS[0]
    app = ctx.programs.log_file(live)
    files = {"app": [app], "gunicorn": [app], "nginx": list(ctx.layout.nginx_logs),
             "supervisord": [ctx.layout.supervisord_log], "tunnel": [ctx.layout.log_dir / "tunnel.log"]}
    if what not in files:
        own = background.log_command(ctx, what, lines, follow)
        if own:
            return own
        named = [*files, *ctx.settings.app.processes, *ctx.settings.app.schedule]
        raise DeployError(f"--what {what}: must be one of {', '.join(named)}")
    journal = (ctx.programs.log_command(live, lines, follow) if what in ("app", "gunicorn") else
               ctx.programs.tunnel_log(lines, follow) if what == "tunnel" else None)
    return journal or commands.tail(files[what], lines, follow)


def stop(ctx: Context) -> list[int]:
    """Stop gunicorn (both colors), and on this machine the supervisord and nginx the deploy started;
    returns the pids that were stopped. On a host only the app's programs: supervisord and nginx are
    the host's, and may serve more. Not while a deploy runs (it holds the lock)."""
    with locked(ctx, "stop"):
        dead, leftovers = ctx.programs.leftovers()
        if leftovers:
            ctx.programs.recover(dead, leftovers)
        pids = leftovers + background.stop(ctx) + ctx.programs.stop_all() + ctx.nginx.stop_own()
        timeout = ctx.settings.gunicorn.graceful_timeout + 30
        if not ctx.wait(lambda: all(ctx.run(commands.alive(p), check=False).exited != 0 for p in pids), timeout):
            raise DeployError(f"processes still running {timeout} s after stopping: {pids}")
        return pids


def run_command(ctx: Context, command: str, release_id: str | None = None) -> tuple[Release, list[str]]:
    """The release a one-off command runs in (the one named, else the live one, else the newest: a
    first deploy that never became ready), and the command that runs it there as the app."""
    releases = state.releases(ctx)
    wanted = release_id or state.pointers(ctx).live_release
    chosen = next((r for r in releases if r.id == wanted), None) if wanted else (releases[-1] if releases else None)
    if chosen is None:
        raise DeployError(f"no release {wanted} on {ctx.target.name}; fab releases lists them" if wanted else
                          f"no release on {ctx.target.name} yet: fab deploy makes one (run works even if it fails)")
    if not chosen.kit_dir:
        raise DeployError(f"{chosen.id} was made by an older modelhost: deploy again, then run the command")
    return chosen, app_command(ctx, release_app(ctx, chosen), ctx.layout.releases / chosen.id, command)
