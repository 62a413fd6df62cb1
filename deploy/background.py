"""The app's work beside its requests: processes ([app.processes]) and scheduled jobs ([app.schedule]).

After the web cutover, a deploy (or rollback) makes every process run on the release that is now
live (started again when the live release changed), and removes the ones deploy.toml no longer
names; then the jobs' timers or cron lines are brought in line. Both start their commands through
deploy/launch.py (uploaded to the target), which resolves the live release when a command starts.

    processes  supervisor programs (one file) or systemd template units, by [app] process_manager
    schedule   systemd timers on a host that runs systemd; a host's /etc/cron.d/<app> elsewhere;
               on the local target, marked lines in the crontab of the user who deploys
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from deploy import commands, schedules
from deploy.context import Context, DeployError
from deploy.parts import crontab_with, install_crontab, read_crontab
from deploy.render import (App, Job, RenderError, cron_marker, jobs_of, launch_config, process_files, processes_of,
                           schedule_files, timers)
from deploy.workers import WorkerPlan

LAUNCHER = (Path(__file__).resolve().parent / "launch.py").read_text(encoding="utf-8")


def app_of(ctx: Context) -> App:
    """The app as its processes and jobs see it: settings and layout (gunicorn's worker plan is not theirs)."""
    return App(ctx.settings, ctx.layout, WorkerPlan(0, "gunicorn's, not the processes'"))


def ensure(ctx: Context, restart: bool) -> None:
    """Processes and schedule as deploy.toml says, after a cutover (restart: the live release changed)."""
    app = app_of(ctx)
    ensure_launcher(ctx, app)
    ensure_processes(ctx, app, restart)
    ensure_schedule(ctx, app)


def ensure_launcher(ctx: Context, app: App) -> None:
    """launch.py and its settings on the target (before anything that starts a command through them)."""
    if app.settings.app.processes or app.settings.app.schedule:
        ctx.target.write(ctx.layout.config_dir / "launch.py", LAUNCHER)
        ctx.target.write(ctx.layout.config_dir / "launch.json", launch_config(app))


def ensure_processes(ctx: Context, app: App, restart: bool) -> None:
    processes = processes_of(app)
    with ctx.step("processes", quiet=not processes) as step:
        done = ctx.programs.ensure_processes(process_files(app), processes, restart)
        step.changed = bool(done)
        problems = ctx.programs.failed_processes(processes)
        if problems:
            raise DeployError("the site serves the new release, but not every process of the app runs:\n"
                              + "\n".join(problems) + "\nfix the command in [app.processes] (or the app) and deploy "
                              "again, or fab rollback")
        running = ", ".join(f"{p.name}" + (f" ×{p.count}" if p.count > 1 else "") for p in processes)
        step.detail = "; ".join(done) + (f"; running: {running}" if running and done else running and
                                         f"{running} running")


def ensure_schedule(ctx: Context, app: App) -> None:
    layout, jobs_wanted = ctx.layout, bool(app.settings.app.schedule)
    with_timers = timers(layout, ctx.facts)
    with ctx.step("schedule", quiet=not jobs_wanted) as step:
        try:
            jobs, files = jobs_of(app, cron=not with_timers), schedule_files(app, with_timers)
        except RenderError as exc:
            raise DeployError(str(exc)) from None
        if with_timers:
            done = ensure_timers(ctx, jobs, files)
        elif layout.cron_dir:
            done = ensure_cron_file(ctx, files, jobs)
        else:
            done = ensure_crontab(ctx, files, jobs)
        step.changed = bool(done)
        where = "systemd timers" if with_timers else f"{layout.cron_dir / layout.app}" if layout.cron_dir else \
            "your crontab"
        listed = ", ".join(f"{job.name} ({job.schedule})" for job in jobs)
        step.detail = "; ".join(done + ([f"{listed} in {where}"] if jobs else []))


def is_job_unit(first_line: str, app: str) -> bool:
    """A timer's first line says it is one of app's jobs (systemd/job.timer.j2), not one of an app
    whose name starts with app's (words-api's timers are words-*.timer too)."""
    return first_line.startswith("# modelhost job ") and f" of {app}: " in first_line


def ensure_timers(ctx: Context, jobs: list[Job], files: dict[Path, str]) -> list[str]:
    layout = ctx.layout
    listed = ctx.run(commands.first_lines(layout.systemd_dir, f"{layout.app}-*.timer")).stdout
    units = commands.parse_first_lines(listed)
    ours = {unit for unit, line in units.items() if is_job_unit(line, layout.app)}
    wanted = {f"{job.unit}.timer" for job in jobs}
    clash = sorted(wanted & set(units) - ours)
    if clash:
        raise DeployError(f"{layout.systemd_dir / clash[0]} is not a job of {layout.app} (another app's timer?): "
                          "rename the job in [app.schedule], or the other app")
    done = []
    for timer in sorted(ours - wanted):
        unit = timer.removesuffix(".timer")
        ctx.run(commands.systemctl("disable", "--now", "--quiet", timer), check=False, timeout=120)
        ctx.run(commands.remove(layout.systemd_dir / timer, layout.systemd_dir / f"{unit}.service"))
        done.append(f"removed {unit.removeprefix(layout.app + '-')}")
    earlier = ctx.write_files(files)
    if any(path.suffix == ".timer" for path in earlier):
        checked = ctx.run(commands.calendar_check([c for job in jobs for c in job.calendars]), check=False)
        if checked.exited != 0:
            ctx.restore(earlier)
            raise DeployError(f"systemd cannot read a schedule of [app.schedule] (the old timers are back):\n"
                              f"{(checked.stdout + checked.stderr).strip()}")
    if earlier or done:
        ctx.run(commands.systemctl("daemon-reload"))
    names = [f"{job.unit}.timer" for job in jobs]
    active = ctx.run(commands.systemctl("is-active", *names), check=False).stdout.split() if names else []
    for job, state in zip(jobs, active):
        timer = layout.systemd_dir / f"{job.unit}.timer"
        if timer in earlier:
            ctx.run(commands.systemctl("enable", "--quiet", timer.name))
            ctx.run(commands.systemctl("restart", timer.name))
            done.append(f"{'added' if earlier[timer] is None else 'changed'} {job.name}")
        elif state != "active":
            ctx.run(commands.systemctl("enable", "--now", "--quiet", timer.name))
            done.append(f"started {job.name}'s timer")
    return done


def ensure_cron_file(ctx: Context, files: dict[Path, str], jobs: list[Job]) -> list[str]:
    """A host without systemd: /etc/cron.d/<app> (cron reads it again when it changes)."""
    path = ctx.layout.cron_dir / ctx.layout.app
    text = files.get(path)
    if text and ctx.run(commands.has_command("cron"), check=False).exited != 0:
        raise DeployError(f"[app.schedule] needs cron on {ctx.target.name}, which is not installed: run fab -H "
                          f"{ctx.target.name} provision (it installs cron), then deploy again")
    before = ctx.target.read(path)
    if text == before:
        return []
    if text:
        ctx.target.write(path, text)
        return [f"{'wrote' if before is None else 'changed'} {path}"]
    ctx.run(commands.remove(path))
    return [f"removed {path}"]


def ensure_crontab(ctx: Context, files: dict[Path, str], jobs: list[Job]) -> list[str]:
    """The local target: the jobs' lines in the deploying user's crontab, marked with the app's directory."""
    layout, marker = ctx.layout, cron_marker(ctx.layout)
    record = layout.config_dir / "crontab"
    text = files.get(record, "")
    lines = [line for line in text.splitlines() if line.endswith(marker)]
    current = read_crontab(ctx)
    if lines and current is None:
        raise DeployError("[app.schedule] runs jobs with cron on this machine, which is not installed: sudo apt-get "
                          "install cron, then deploy again")
    current = current or ""
    wanted = crontab_with(current, lines, marker)
    done = []
    if wanted != current:
        install_crontab(ctx, wanted)
        done.append(f"your crontab has {len(lines)} line{'s' if len(lines) != 1 else ''} of {layout.app}")
    if text:
        ctx.target.write(record, text)
    else:
        ctx.run(commands.remove(record))
    if lines and ctx.run(commands.running("cron"), check=False).exited != 0:
        done.append("cron is not running here: the jobs run once it does (sudo service cron start)")
    return done


# ---- status and logs ------------------------------------------------------------------------------

@dataclass
class JobStatus:
    name: str
    schedule: str
    last: str  # the last run: when, its exit status, how long, in which release ("" for none yet)
    running: str  # a run going now ("" for none)
    next: str  # the next run, the target's time


def process_lines(ctx: Context) -> list[tuple[str, str]]:
    """(label, text) per copy of each process: its state, pid, uptime and the release it runs."""
    lines = []
    for process in processes_of(app_of(ctx)):
        for copy in ctx.programs.process_status(process):
            release = release_of(ctx, copy.pid) if copy.pid else ""
            pid = f"pid {copy.pid}, up {copy.uptime}" if copy.pid else ""
            lines.append((copy.name, f"{copy.state:<9}{pid:<24}release {release or '-'}"))
    return lines


def release_of(ctx: Context, pid: int) -> str:
    """The release a process runs in (its working directory's name)."""
    cwd = ctx.run(commands.working_directory(pid), check=False).stdout.strip()
    return Path(cwd).name if cwd else ""


def job_statuses(ctx: Context) -> list[JobStatus]:
    """Each job's last run and result (launch.py's record), a run going now, and the next run."""
    layout = ctx.layout
    jobs = jobs_of(app_of(ctx), cron=False)
    if not jobs:
        return []
    now_text, files = commands.parse_read_files(ctx.run(commands.read_files(
        [layout.job_dir / f"{job.name}.json" for job in jobs])).stdout)
    nexts: dict[str, str] = {}
    if timers(layout, ctx.facts):
        shown = commands.parse_timer_times(ctx.run(commands.timer_times([f"{j.unit}.timer" for j in jobs])).stdout)
        nexts = {job.name: shown.get(f"{job.unit}.timer", {}).get("NextElapseUSecRealtime", "") or "-"
                 for job in jobs}
    else:
        now = datetime.strptime(now_text, "%Y-%m-%dT%H:%M:%S%z")
        for job in jobs:
            when = schedules.next_run(schedules.parse(job.schedule), now.replace(tzinfo=None))
            nexts[job.name] = when.strftime("%Y-%m-%d %H:%M:%S") + now.strftime(" %z") if when else "-"
    found = []
    for job in jobs:
        try:
            record = json.loads(files.get(str(layout.job_dir / f"{job.name}.json")) or "{}")
        except ValueError:
            record = {}
        last = (f"{record['started']}: exit {record['exit']} after {record['seconds']} s, release {record['release']}"
                if "exit" in record else "")
        going = record.get("running")  # launch.py's mark while a run goes (a new run's record replaces it)
        running = f"since {going['started']} (pid {going['pid']}), release {going['release']}" if going else ""
        found.append(JobStatus(job.name, job.schedule, last, running, nexts.get(job.name, "-")))
    return found


def log_command(ctx: Context, name: str, lines: int, follow: bool) -> list[str] | None:
    """The command that shows a process's or a job's log (None: no process or job of that name)."""
    process = next((p for p in processes_of(app_of(ctx)) if p.name == name), None)
    if process:
        return ctx.programs.process_logs(process, lines, follow)
    if name in ctx.settings.app.schedule:
        return commands.tail([ctx.layout.job_dir / f"{name}.log"], lines, follow)
    return None


def stop(ctx: Context) -> list[int]:
    """Every process stopped (fab stop); returns the pids that ran."""
    processes = processes_of(app_of(ctx))
    return ctx.programs.stop_processes(processes) if processes else []

