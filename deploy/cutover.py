"""The blue/green cutover: make a release live without failing a request.

Start the idle color on the release, wait until it is ready over its own socket (its health path
answers 200, or without one GET / answers below 500) and the smoke query answers as expected,
point nginx at it (nginx -t, graceful reload, old workers drained), verify through nginx, then
stop the old color gracefully. If the new color never gets ready it is stopped and nothing else
changes: the old color keeps serving. A release that is already live is only brought back where
it is not running (after `fab stop`, or a reboot).
"""
from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path

from deploy import commands, state
from deploy.context import Context, DeployError, Step
from deploy.layout import COLORS
from deploy.render import App, render
from deploy.state import Release
from deploy.target import CommandFailed
from deploy.workers import WorkerPlan

STOPPED = ("STOPPED", "EXITED", "FATAL", "DOWN")
EXITED = (*STOPPED, "BACKOFF")  # BACKOFF: it exited, and the process manager tries again


def configs(ctx: Context, app: App, live: str) -> dict[str, dict[Path, str]]:
    """The target's config files for a live color, by who reads them: "nginx", and "programs"
    (supervisor's or systemd's). Not the release's own gunicorn.conf.py, nor the host's boot
    files (provision writes those)."""
    grouped: dict[str, dict[Path, str]] = {"nginx": {}, "programs": {}}
    for file in render([served(ctx, app)], ctx.facts, live):
        if file.reader in grouped:
            grouped[file.reader][file.destination] = file.content
    return grouped


def release_app(ctx: Context, release: Release) -> App:
    """The app as a release runs it: its own gunicorn settings and the worker plan it was made with."""
    return App(ctx.settings, ctx.layout, WorkerPlan(release.workers, release.explanation))


def served(ctx: Context, app: App) -> App:
    """The app as the target can serve it: over HTTP while its TLS certificate is missing."""
    return replace(app, certificate=ctx.tls)


def activate(ctx: Context, release: Release, app: App) -> Step:
    """Make release the live one: start it on the idle color, gate on readiness, switch nginx."""
    pointers = state.pointers(ctx)
    with ctx.step("cutover") as step:
        if pointers.live and pointers.live_release == release.id:
            step.changed = bring_back(ctx, release, app, pointers.live)
            step.detail = f"{release.id} is live on {pointers.live}" + (" (started it)" if step.changed else "")
        else:
            new = switch(ctx, release, app, pointers)
            step.changed = True
            old = f"; {pointers.live_release} on {pointers.live} stopped" if pointers.live else ""
            step.detail = f"{release.id} live on {new}{old}"
    return step


def bring_back(ctx: Context, release: Release, app: App, live: str) -> bool:
    """The live release runs and nginx serves it, and the other color is stopped (a cutover cut
    short leaves it running); returns whether anything had to be started or stopped."""
    files = configs(ctx, app, live)
    started = ctx.programs.ensure(files["programs"], idle=[], live=live)
    program = ctx.programs.status(live)
    if program.state not in ("RUNNING", "STARTING"):
        start(ctx, live, release)
        started = True
    elif program.state == "STARTING" or started:
        wait_ready(ctx, live, release)
        wait_running(ctx, live)
    changed = bool(ctx.nginx.ensure(files["nginx"])) or started
    idle = next(c for c in COLORS if c != live)
    if ctx.programs.status(idle).state not in STOPPED:
        ctx.programs.stop(idle)
        changed = True
    return changed


def switch(ctx: Context, release: Release, app: App, pointers: state.Pointers) -> str:
    """Start release on the idle color, point nginx at it once ready, stop the old color; returns
    the new live color."""
    layout, live = ctx.layout, pointers.live
    new = next(c for c in COLORS if c != live) if live else COLORS[0]
    before = configs(ctx, app, live) if live else None  # the old color's files (none on a first deploy)
    if ctx.programs.status(new).state not in STOPPED:
        # A cutover cut short (Ctrl-C, a lost connection) may have left nginx serving the idle color:
        # back to the live one, while it runs, before the idle one stops.
        if before and ctx.programs.status(live).state == "RUNNING":
            ctx.nginx.ensure(before["nginx"])
        ctx.programs.stop(new)
    ctx.link(f"releases/{release.id}", layout.release(new))
    after = configs(ctx, app, new)
    # Every color but the live one is idle: both of them on a first deploy.
    ctx.programs.ensure((before or after)["programs"], idle=[c for c in COLORS if c != live], live=live or new)
    mark = start(ctx, new, release, running=False)
    try:
        ctx.nginx.ensure(after["nginx"])
        verify(ctx)
        # Ready by the probe; still up once supervisor's startsecs have passed (no crash loop) before
        # the old color stops. nginx's switch took about that long.
        wait_running(ctx, new, mark)
    except BaseException as exc:
        if not isinstance(exc, (DeployError, CommandFailed)):  # interrupted (Ctrl-C), or cut off
            with contextlib.suppress(Exception):  # as much as can be put back; the next deploy does the rest
                put_back(ctx, before, new)
            raise
        put_back(ctx, before, new)
        serving = f"{pointers.live_release} on {live} still serves" if live else "nothing was serving"
        raise DeployError(f"{exc}\nthe release {release.id} was not activated ({new} is stopped); "
                          f"{serving}") from None
    ctx.link(new, layout.current)
    if live:
        ctx.programs.stop(live)
        # The old color's program is stopped now: its autostart can change without a restart.
        ctx.programs.ensure(after["programs"], idle=[live], live=new)
    return new


def put_back(ctx: Context, before: dict[str, dict[Path, str]] | None, new: str) -> None:
    """A switch that failed: nginx back to the old color's files first (written; it may have
    reloaded), then the new color stopped."""
    if before:
        # If nginx -t fails here too, nginx never loaded the new files: it still serves the old color.
        with contextlib.suppress(DeployError, CommandFailed):
            ctx.nginx.ensure(before["nginx"])
    ctx.programs.stop(new)


def start(ctx: Context, color: str, release: Release, running: bool = True) -> str:
    """Start a color's program and wait until it is ready, and with running until its process
    manager counts it as started; if it is not, stop it and say why. Returns where its log was
    (log_mark's) before the start."""
    programs = ctx.programs
    mark = programs.log_mark(color)
    try:
        problem = programs.start(color)
        if problem:
            raise DeployError(f"{programs.name(color)} did not start: {problem}")
        wait_ready(ctx, color, release)
        if running:
            wait_running(ctx, color, mark)
    except DeployError as exc:
        programs.stop(color)
        raise DeployError(f"{exc}\nthe release {release.id} was not activated; what was serving still is.\n"
                          f"last lines of {programs.log_name(color)}:\n{programs.log_since(color, mark)}") from None
    return mark


def wait_running(ctx: Context, color: str, mark: str | None = None) -> None:
    """Until the process manager counts the program as started (RUNNING: up for its startsecs);
    an error shows what it logged since mark (log_mark's)."""
    programs = ctx.programs
    if not ctx.wait(lambda: programs.status(color).state == "RUNNING", 30):
        logged = f"; last lines of {programs.log_name(color)}:\n{programs.log_since(color, mark)}" if mark else ""
        raise DeployError(f"{programs.name(color)} answered but did not stay up (its manager says "
                          f"{programs.status(color).state}){logged}")


def health(ctx: Context) -> tuple[str, str]:
    """The readiness check: (path, "ok") for [deploy] health_path (200), else ("/", "answer") (below 500)."""
    path = ctx.settings.deploy.health_path
    return (path, "ok") if path else ("/", "answer")


def is_ready(answer: dict, mode: str) -> bool:
    return answer["status"] == 200 if mode == "ok" else 0 < answer["status"] < 500


def wait_ready(ctx: Context, color: str, release: Release) -> None:
    """Until the color is ready over its socket and answers the smoke query as expected. A program
    that exits, or a health path that answers 404, fails at once."""
    name = ctx.programs.name(color)
    timeout = ctx.settings.deploy.ready_timeout
    deadline = ctx.clock() + timeout
    path, mode = health(ctx)
    smoke = ctx.settings.deploy.smoke_path
    first_pid = None
    while True:
        # Asked in rounds of 2 s: a program that exits is seen between them.
        answers = ask(ctx, [path] + ([smoke] if smoke else []), wait=max(0.0, min(2.0, deadline - ctx.clock())),
                      color=color, ready=mode)
        if is_ready(answers[0], mode):
            break
        if mode == "ok" and answers[0]["status"] == 404:
            raise DeployError(f"{name} answers GET {path} with 404: the app has no such route. Set [deploy] "
                              "health_path to a route that answers 200 once the app is ready, or to \"\" (ready "
                              "once GET / answers below 500)")
        program = ctx.programs.status(color)
        if program.state in EXITED:
            raise DeployError(f"{name} exited before it was ready ({program.state}): the app fails to start")
        # A program that exits after startsecs is started again at once: a crash loop, seen by its pid.
        first_pid = first_pid or program.pid
        if program.pid and program.pid != first_pid:
            raise DeployError(f"{name} exited before it was ready and was started again (pid {first_pid}, then "
                              f"{program.pid}): the app fails to start")
        if ctx.clock() >= deadline:
            wanted = f"answer GET {path} with 200" if mode == "ok" else "answer GET / (below 500)"
            raise DeployError(f"{name} did not {wanted} within {timeout} s ([deploy] ready_timeout); last "
                              f"answer: {answers[0]['status']} {said(answers[0], 300)}")
    if smoke:
        problem = smoke_problem(answers[1], release, ctx.settings.deploy)
        if problem:
            raise DeployError(f"{name} is ready but the smoke query failed: GET {smoke}: {problem}")


def verify(ctx: Context) -> str:
    """nginx answers the health check on the site's port."""
    path, mode = health(ctx)
    answer = ask(ctx, [path], wait=10, ready=mode)[0]
    address, port = ctx.site_address
    where = f"{'https' if ctx.tls else 'http'}://{address}:{port}{answer['path']}"
    if not is_ready(answer, mode):
        raise DeployError(f"nginx answered {where} with {answer['status']} {said(answer, 200)}")
    return f"{where} {answer['status']} (asked on {ctx.target.name})"


def ask(ctx: Context, paths: list[str], wait: float = 0, color: str | None = None, ready: str = "ok") -> list[dict]:
    """Answers of gunicorn (a color's socket) or, without a color, of nginx, asked on the target."""
    if color:
        argv = commands.probe(ctx.python, paths=paths, socket=ctx.layout.socket(color), wait=wait, ready=ready)
    else:  # the site as clients see it: its prefix, its first name, HTTPS if it has it
        address, port = ctx.site_address
        argv = commands.probe(ctx.python, paths=[ctx.settings.nginx.prefix + p for p in paths], address=address,
                              port=port, tls=ctx.tls, host=ctx.settings.nginx.server_names[0], wait=wait, ready=ready)
    return commands.parse_probe(ctx.run(argv, timeout=wait + 60).stdout)


def said(answer: dict, limit: int | None = None) -> str:
    """What an answer said: its body, or why there was none."""
    return (answer.get("body") or answer.get("error", "")).strip()[:limit]


def smoke_problem(answer: dict, release: Release, deploy) -> str:
    """What is wrong with the smoke query's answer ("" when nothing): its status, and the text it
    must contain ([deploy] smoke_status, smoke_contains; {model_version} is the release's model's)."""
    if answer["status"] != deploy.smoke_status:
        return f"{answer['status']} (not {deploy.smoke_status}) {said(answer, 300)}"
    wanted = deploy.smoke_contains.replace("{model_version}", release.model_version)
    if wanted not in answer.get("body", ""):
        return f"the answer does not contain {wanted!r}: {said(answer, 300)}"
    return ""
