"""[app.schedule] and [app.processes] without a target: schedules read in both forms and written in
the other, the next run, the settings' messages, the rendered units and cron lines, init's Procfile
reading, and launch.py's pieces (the argv it execs, its capped log)."""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tomllib
import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from deploy import schedules
from deploy.parts import crontab_with
from deploy.discover import deploy_toml, discover
from deploy.facts import parse_facts
from deploy.launch import Log, argv_of, catching_up
from deploy.layout import local_layout, system_layout
from deploy.render import App, jobs_of, render, schedule_files
from deploy.settings import SettingsError, check_settings
from deploy.workers import WorkerPlan

# schedule as given -> (OnCalendar= values, cron line or the reason cron cannot say it)
FORMS = [
    ("*/15 * * * *", ["*-*-* *:0/15:00"], "*/15 * * * *"),
    ("0 3 * * *", ["*-*-* 03:00:00"], "0 3 * * *"),
    ("@daily", ["*-*-* 00:00:00"], "0 0 * * *"),
    ("0 9-17 * * mon-fri", ["Mon..Fri *-*-* 9..17:00:00"], "0 9-17 * * 1-5"),
    ("5,10 */2 * jan,jul *", ["*-1,7-* 0/2:5,10:00"], "5,10 */2 * 1,7 *"),
    ("5/20 * * * *", ["*-*-* *:5/20:00"], "5-59/20 * * * *"),
    # cron: day of month OR weekday when both are given; systemd: two OnCalendar= lines, their union
    ("30 2 1 * sun", ["*-*-01 02:30:00", "Sun *-*-* 02:30:00"], "30 2 1 * 0"),
    ("daily", ["*-*-* 00:00:00"], "0 0 * * *"),
    ("weekly", ["Mon *-*-* 00:00:00"], "0 0 * * 1"),
    ("quarterly", ["*-1/3-01 00:00:00"], "0 0 1 */3 *"),
    ("Mon..Fri 09:00", ["Mon..Fri *-*-* 09:00:00"], "0 9 * * 1-5"),
    ("Sat,Sun 10:30", ["Sun,Sat *-*-* 10:30:00"], "30 10 * * 0,6"),
    ("*-*-* *:0/15", ["*-*-* *:0/15:00"], "*/15 * * * *"),
    ("*:*:0/5", ["*-*-* *:*:0/5"], "fires at seconds other than :00"),
    ("Mon *-*-01 00:00", ["Mon *-*-01 00:00:00"], "restricts both the day of the month and the weekday"),
]


@pytest.mark.parametrize("given, calendars, cron", FORMS)
def test_a_schedule_is_written_in_both_forms_or_says_why_cron_cannot(given, calendars, cron):
    calendar = schedules.parse(given)
    assert schedules.to_systemd(calendar) == calendars
    if " " in cron and not cron.startswith(("fires", "restricts")):
        assert schedules.to_cron(calendar, given) == cron
        assert schedules.parse(cron) == schedules.parse(schedules.to_cron(calendar, given))
    else:
        with pytest.raises(schedules.ScheduleError, match=cron):
            schedules.to_cron(calendar, given)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_reads_every_oncalendar_value_the_kit_writes():
    values = [value for given, _, _ in FORMS for value in schedules.to_systemd(schedules.parse(given))]
    result = subprocess.run(["systemd-analyze", "calendar", *values], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("given, problem", [
    ("@reboot", "an [app.processes] entry"),
    ("61 * * * *", "outside the minutes 0-59"),
    ("* * *", "not a cron schedule"),
    ("sometimes", "not a cron schedule"),
    ("2027-01-01 00:00", "names a year"),
    ("*-*-* 25:00", "outside the hours 0-23"),
    ("*-*-~1 00:00", "no ~"),
    ("0 0 31 feb-mar/x *", "is not a month"),
])
def test_a_schedule_that_cannot_be_read_is_refused_with_the_reason(given, problem):
    with pytest.raises(schedules.ScheduleError, match=re.escape(problem)):
        schedules.parse(given)


@pytest.mark.parametrize("given, after, expected", [
    ("*/15 * * * *", "2026-12-02 13:07:03", "2026-12-02 13:15:00"),
    ("0 3 * * *", "2026-12-02 03:00:00", "2026-12-03 03:00:00"),
    ("30 2 1 * sun", "2026-12-02 13:00:00", "2026-12-06 02:30:00"),  # a Sunday before the 1st
    ("0 0 29 2 *", "2026-03-01 00:00:00", "2028-02-29 00:00:00"),
    ("*:*:0/5", "2026-12-02 13:07:03", "2026-12-02 13:07:05"),
])
def test_the_next_run_is_the_first_time_the_schedule_fires_after_now(given, after, expected):
    found = schedules.next_run(schedules.parse(given), datetime.fromisoformat(after))
    assert found == datetime.fromisoformat(expected)


@pytest.mark.parametrize("app, problem", [
    ({"processes": {"web": "gunicorn x"}}, "[app] processes = {web = "),
    ({"processes": {"worker": {"command": "x", "count": 0}}}, "count = 1-16"),
    ({"processes": {"worker": "a\nb"}}, "commands one line"),
    ({"processes": {"Worker": "x"}}, "names of lowercase letters"),
    ({"schedule": {"report": "python -m r"}}, "[app] schedule = {report = "),
    ({"schedule": {"report": {"schedule": "61 * * * *", "command": "x"}}}, "report: '61' is outside the minutes"),
    ({"processes": {"report": "y"}, "schedule": {"report": {"schedule": "daily", "command": "x"}}},
     "'report' names both a process and a scheduled job"),
])
def test_bad_processes_and_schedules_are_refused_naming_the_key(app, problem):
    with pytest.raises(SettingsError) as caught:
        check_settings({"app": app})
    assert problem in str(caught.value)


def background_app(layout_of, schedule: str = "0 3 * * *", manager: str = "supervisor"):
    settings = check_settings({"app": {
        "name": "words", "process_manager": manager, "env": {"FLASK_LOG_LEVEL": "INFO"},
        "processes": {"worker": "python -m app.worker", "beat": {"command": "python -m app.beat", "count": 2}},
        "schedule": {"report": {"schedule": schedule, "command": "python -m app.report --all"}}}})
    return App(settings, layout_of(settings), WorkerPlan(3, "test"))


FACTS = dataclasses.replace(parse_facts((Path(__file__).parent / "data" / "facts" / "debian-12-amd64.txt").read_text()),
                            init="systemd")


def rendered(app: App, facts: HostFacts = FACTS) -> dict[str, str]:
    return {str(f.destination): f.content for f in render([app], facts) if f.destination}


def test_processes_and_timers_render_for_a_systemd_host():
    files = rendered(background_app(system_layout, manager="systemd"))
    unit = files["/etc/systemd/system/words-beat@.service"]
    assert unit.startswith("# modelhost process beat of words ")
    assert "ExecStart=/usr/bin/python3 /etc/words/launch.py /etc/words/launch.json beat" in unit
    assert "User=words" in unit and "KillMode=control-group" in unit and "TimeoutStopSec=45" in unit
    timer = files["/etc/systemd/system/words-report.timer"]
    assert "OnCalendar=*-*-* 03:00:00" in timer and "AccuracySec=1s" in timer
    assert "--job report" in files["/etc/systemd/system/words-report.service"]
    assert "/etc/cron.d/words" not in files
    launch = files["/etc/words/launch.json"]
    assert '"worker": "python -m app.worker"' in launch and '"report": "python -m app.report --all"' in launch
    assert '"PATH": "{release}/.modelhost/venv/bin:' in launch and '"FLASK_LOG_LEVEL": "INFO"' in launch


def test_processes_and_cron_lines_render_for_supervisor_without_systemd():
    files = rendered(background_app(system_layout), dataclasses.replace(FACTS, init="init"))
    programs = files["/etc/supervisor/conf.d/words-processes.conf"]
    assert "[program:words-beat]" in programs and "numprocs=2" in programs
    assert "stdout_logfile=/var/log/words/beat-%(process_num)d.log" in programs
    assert "[program:words-worker]" in programs and "stdout_logfile=/var/log/words/worker.log" in programs
    assert "stopasgroup=true" in programs and "user=words" in programs
    cron = files["/etc/cron.d/words"]
    assert cron.splitlines()[-1] == ("0 3 * * * root /usr/bin/python3 /etc/words/launch.py /etc/words/launch.json "
                                     "--job report")


def test_a_schedule_cron_cannot_say_is_refused_where_cron_runs_it():
    app = background_app(local_layout, schedule="*:*:0/10")
    with pytest.raises(Exception, match="at most once a minute"):
        schedule_files(app, timers=False)
    assert jobs_of(background_app(system_layout, schedule="*:*:0/10"), cron=False)[0].calendars == (
        "*-*-* *:*:0/10",)


def test_a_timer_or_unit_is_ours_by_its_first_line_not_by_a_name_another_app_shares():
    from deploy.background import is_job_unit
    from deploy.programs import is_process_unit
    files = rendered(background_app(system_layout, manager="systemd"))
    timer = files["/etc/systemd/system/words-report.timer"].splitlines()[0]
    unit = files["/etc/systemd/system/words-worker@.service"].splitlines()[0]
    assert is_job_unit(timer, "words") and is_process_unit(unit, "words")
    # the app words-api's are words-*.timer and words-*@.service too
    assert not is_job_unit(timer.replace(" of words:", " of words-api:"), "words")
    assert not is_process_unit(unit.replace(" of words ", " of words-api "), "words")


def test_the_local_targets_lines_in_your_crontab_are_marked_and_replaced_alone():
    app = background_app(local_layout)
    (path, text), = schedule_files(app, timers=False).items()
    marker = f"  # modelhost job: {app.layout.root}"
    line = next(line for line in text.splitlines() if line.endswith(marker))
    assert line.startswith("0 3 * * * python3 ")
    mine = "0 1 * * * backup\n"
    old = f"* * * * * python3 old --job x{marker}\n"
    assert crontab_with(mine + old, [line], marker) == mine + line + "\n"
    assert crontab_with(mine + old, [], marker) == mine


def test_init_reads_a_procfiles_other_lines_into_app_processes(tmp_path):
    (tmp_path / "app.py").write_text("from flask import Flask\napp = Flask(__name__)\n")
    (tmp_path / "Procfile").write_text("web: gunicorn app:app\nworker: celery -A app worker -l info\n"
                                       "release: flask db upgrade\nclock_2: python clock.py\nweb2: x --port $PORT\n")
    found = discover(tmp_path)
    assert found.processes == (("worker", "celery -A app worker -l info"), ("clock-2", "python clock.py"),
                               ("web2", "x --port $PORT"))
    assert any("release: line runs 'flask db upgrade'" in note for note in found.notes)
    assert any("web2: line uses $PORT" in note for note in found.notes)
    text = deploy_toml(found)
    assert '[app.processes]' in text and 'worker = "celery -A app worker -l info"' in text
    assert check_settings(tomllib.loads(text)).app.processes["clock-2"] == {"command": "python clock.py", "count": 1}


@pytest.mark.parametrize("command, argv", [
    ("python -m app.worker", ["python", "-m", "app.worker"]),
    ("celery -A app worker", ["celery", "-A", "app", "worker"]),
    ("cd sub && python x.py", ["sh", "-c", "cd sub && python x.py"]),
    ("python x.py > out.log", ["sh", "-c", "python x.py > out.log"]),
    ("echo $HOME", ["sh", "-c", "echo $HOME"]),
])
def test_the_launcher_execs_a_simple_command_itself_and_gives_the_rest_to_sh(command, argv):
    assert argv_of(command) == argv


def test_a_jobs_log_is_capped_and_keeps_its_backups(tmp_path):
    log = Log(str(tmp_path / "job.log"), max_bytes=100, backups=2)
    for n in range(30):
        log.write(f"line {n:02d} ".ljust(20).encode() + b"\n")
    names = sorted(p.name for p in Path(tmp_path).iterdir())
    assert names == ["job.log", "job.log.1", "job.log.2"]
    assert all(p.stat().st_size <= 100 for p in Path(tmp_path).iterdir())
    assert "line 29" in (tmp_path / "job.log").read_text()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_launcher_skips_systemds_catch_up_run_but_not_a_run_due_since_or_started_by_hand(tmp_path, monkeypatch):
    """A timer starts its service again at once when a run outlasted a due time. Such a run was
    started by the timer just now (the bus's LastTriggerUSecMonotonic; a stand-in busctl here) and
    has no due time of the schedule since the run before ended (the real systemd-analyze)."""
    import time

    def triggered(seconds_ago: float) -> None:
        busctl = tmp_path / "busctl"
        busctl.write_text(f"#!/bin/sh\necho t {int((time.monotonic() - seconds_ago) * 1e6)}\n")
        busctl.chmod(0o755)

    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv("INVOCATION_ID", "0123")
    timer = {"unit": "words-report.timer", "calendars": ["*-*-* *:*:0/5"]}
    triggered(0.1)
    ended = time.time() - 600  # due times since: this run is one of them
    assert catching_up(timer, ended) is None
    far = {"unit": "words-report.timer", "calendars": ["2099-01-01 03:00:00"]}
    assert catching_up(far, ended).startswith("Thu 2099-01-01 03:00:00")  # none since: the catch-up
    assert catching_up(far, 0) is None  # no run before
    triggered(60)  # systemctl start by hand, a minute after the timer's last run
    assert catching_up(far, ended) is None
    monkeypatch.delenv("INVOCATION_ID")  # cron (or a shell) ran it: its lock is the rule
    triggered(0.1)
    assert catching_up(far, ended) is None
