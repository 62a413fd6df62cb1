"""The gunicorn programs: supervisor's (the local target's own supervisord, or a host's) or systemd
units; gunicorn's own config check. Each status command has its parser beside it."""
from __future__ import annotations

import re
import sys
from pathlib import Path

from deploy.commands.host import clean_env
from deploy.layout import Layout

TOOLS = Path(sys.executable).parent  # supervisord and supervisorctl of the local target
# supervisor's parser, as supervisord itself runs it at start: exits 2 with the reason.
SUPERVISOR_PARSE = "import sys; from supervisor.options import ServerOptions; ServerOptions().realize(['-c', sys.argv[1]])"
# startProcess without waiting for startsecs: `python -c SUPERVISOR_START NAME [-c CONF]`; an error is
# printed as supervisor's fault ("ALREADY_STARTED" counts as started) and exits 1.
SUPERVISOR_START = """import sys, xmlrpc.client
from supervisor.options import ClientOptions
options = ClientOptions()
options.realize(sys.argv[2:])
try:
    options.getServerProxy().supervisor.startProcess(sys.argv[1], False)
except xmlrpc.client.Fault as fault:
    if 'ALREADY_STARTED' not in fault.faultString:
        sys.exit(f'{sys.argv[1]}: ERROR ({fault.faultString})')
except OSError as exc:
    sys.exit(f'{options.serverurl}: {exc}')
"""


def systemd_manager(layout: Layout) -> bool:
    """The app's gunicorn programs are systemd units (a host's [app] process_manager)."""
    return layout.process_manager == "systemd"


def program(layout: Layout, color: str) -> str:
    """A color's program: supervisor's <app>-<color>, or the systemd unit <app>@<color>."""
    return f"{layout.app}@{color}" if systemd_manager(layout) else f"{layout.app}-{color}"


def programs(layout: Layout, action: str, *colors: str) -> list[str]:
    """start or stop the colors' programs, through supervisor or systemd."""
    names = [program(layout, color) for color in colors]
    return ["systemctl", action, *names] if systemd_manager(layout) else supervisorctl(layout, action, *names)


def start_program(layout: Layout, color: str) -> list[str]:
    """Starts a color's program and returns at once: readiness is the deploy's own probe, not the
    manager's (supervisorctl start waits out startsecs; a notify unit's start waits for gunicorn)."""
    if systemd_manager(layout):
        return ["systemctl", "start", "--no-block", program(layout, color)]
    # supervisorctl has no start that returns at once; its XML-RPC call startProcess(name, wait=False)
    # does, reached as supervisorctl reaches it (its config file, its server URL and credentials).
    python = sys.executable if layout.supervisord_conf else "python3"
    config = ["-c", str(layout.supervisord_conf)] if layout.supervisord_conf else []
    return [python, "-c", SUPERVISOR_START, program(layout, color), *config]


# ---- supervisor ---------------------------------------------------------------------------------

def supervisord_start(layout: Layout) -> list[str]:
    """Starts the local target's supervisord (it puts itself in the background)."""
    return [*clean_env(layout), str(TOOLS / "supervisord"), "-c", str(layout.supervisord_conf)]


def supervisorctl(layout: Layout, *args: str) -> list[str]:
    """supervisorctl of the local target's own supervisord, or of the host's."""
    if layout.supervisord_conf:
        return [str(TOOLS / "supervisorctl"), "-c", str(layout.supervisord_conf), *args]
    return ["supervisorctl", *args]


def parse_supervisord_pid(output: str) -> int | None:
    """supervisorctl pid's answer: supervisord's pid, or None when it does not run."""
    return int(output) if output.strip().isdigit() else None


def parse_supervisor_status(output: str, name: str) -> tuple[str, int | None, str]:
    """(state, pid, uptime) of `supervisorctl status NAME`; DOWN when supervisord does not answer."""
    parts = output.split(None, 2)
    if len(parts) < 2 or parts[0] != name:
        return "DOWN", None, ""
    pid = re.search(r"pid (\d+)", output)
    uptime = re.search(r"uptime (\S+)", output)
    return parts[1], int(pid.group(1)) if pid else None, uptime.group(1) if uptime else ""


def supervisor_refused(output: str) -> bool:
    """supervisorctl reread prints an ERROR line for a program file it cannot use (and exits 0)."""
    return "ERROR" in output


def supervisor_error(output: str) -> str:
    """What supervisorctl said went wrong: the fault's own words where it printed a traceback's
    summary (update's answer to a program file supervisord cannot read), else its output."""
    fault = re.search(r"<Fault \d+: ['\"](.*)['\"]>", output, re.S)
    return fault.group(1).replace("\\n", "\n") if fault else output.strip()


def supervisor_parse(python: str, conf: Path) -> list[str]:
    return [python, "-c", SUPERVISOR_PARSE, str(conf)]


# ---- systemd ------------------------------------------------------------------------------------

# systemd's view of a unit, as `systemctl show` prints it (KEY=value lines).
UNIT_PROPERTIES = "ActiveState,SubState,MainPID,ActiveEnterTimestamp"
# systemd's ActiveState in supervisor's words, which the deploy speaks.
UNIT_STATES = {"active": "RUNNING", "activating": "STARTING", "reloading": "RUNNING", "deactivating": "STOPPING",
               "inactive": "STOPPED", "failed": "FATAL"}


def program_status(layout: Layout, color: str) -> list[str]:
    return programs_status(layout, (color,))


def programs_status(layout: Layout, colors: tuple[str, ...]) -> list[str]:
    """The colors' programs' status in one command: one supervisorctl (a Python program: it takes
    its time to start) or one systemctl show; split_programs_status tells them apart."""
    names = [program(layout, color) for color in colors]
    if systemd_manager(layout):
        return ["systemctl", "show", *names, f"--property={UNIT_PROPERTIES}"]
    return supervisorctl(layout, "status", *names)


def split_programs_status(output: str, layout: Layout, colors: tuple[str, ...]) -> dict[str, str]:
    """color -> its part of programs_status' output, as program_status would have printed it:
    systemctl show's blocks in order (a blank line between them), supervisorctl's line per program."""
    if systemd_manager(layout):
        blocks = output.strip().split("\n\n")
        return {color: blocks[i] if i < len(blocks) else "" for i, color in enumerate(colors)}
    lines = output.splitlines()
    return {color: next((line for line in lines if line.split(None, 1)[:1] == [program(layout, color)]), output)
            for color in colors}


def parse_unit_status(output: str) -> tuple[str, int | None, str]:
    """(state, pid, since) of `systemctl show` with UNIT_PROPERTIES, the state in supervisor's words."""
    unit = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    pid = int(unit.get("MainPID", "0") or 0)
    since = unit.get("ActiveEnterTimestamp", "")
    state = UNIT_STATES.get(unit.get("ActiveState", ""), "DOWN")
    if unit.get("SubState") == "auto-restart":  # it exited and systemd starts it again soon
        state = "BACKOFF"
    return (state, pid or None,
            f"since {since}" if pid and since else "")


def systemctl(*args: str) -> list[str]:
    """daemon-reload, is-enabled UNIT, ...: systemd's own command."""
    return ["systemctl", *args]


def journal(layout: Layout, color: str, lines: int, follow: bool = False, since: str = "") -> list[str]:
    """A color's unit's log from the journal (systemd keeps gunicorn's output there)."""
    return unit_journal(program(layout, color), lines, follow, since)


def unit_journal(unit: str, lines: int, follow: bool = False, since: str = "") -> list[str]:
    return ["journalctl", "--no-pager", "--unit", unit, "--lines", str(lines),
            *(["--since", since] if since else []), *(["--follow"] if follow else [])]


def systemd_verify(unit: Path) -> list[str]:
    return ["systemd-analyze", "verify", "--man=no", str(unit)]


# ---- gunicorn -----------------------------------------------------------------------------------

def gunicorn_check(gunicorn: Path, conf: Path, wsgi: str) -> list[str]:
    """gunicorn loads its config and the app, then exits: 0 when both load."""
    return [str(gunicorn), "--check-config", "--config", str(conf), wsgi]


# ---- the app's processes and scheduled jobs -----------------------------------------------------

def first_lines(directory: Path, pattern: str) -> list[str]:
    """The files of directory matching the glob pattern, each with its first line: "name<TAB>line" lines."""
    script = ('cd "$1" 2>/dev/null || exit 0; '
              'for f in $2; do [ -f "$f" ] && printf "%s\\t%s\\n" "$f" "$(head -n 1 "$f")"; done; exit 0')
    return ["sh", "-c", script, "sh", str(directory), pattern]


def parse_first_lines(output: str) -> dict[str, str]:
    return dict(line.split("\t", 1) for line in output.splitlines() if "\t" in line)


def parse_group_status(output: str) -> list[tuple[str, str, int | None, str]]:
    """(process, state, pid, uptime) per line of `supervisorctl status GROUP:*`."""
    found = []
    for line in output.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2 and parts[1].isupper():
            pid, uptime = re.search(r"pid (\d+)", line), re.search(r"uptime (\S+)", line)
            found.append((parts[0].split(":")[-1], parts[1], int(pid.group(1)) if pid else None,
                          uptime.group(1) if uptime else ""))
    return found


def calendar_check(calendars: list[str]) -> list[str]:
    """systemd reads each OnCalendar= value (exit 1 naming one it cannot)."""
    return ["systemd-analyze", "calendar", *calendars]


def timer_times(units: list[str]) -> list[str]:
    """When each timer fires next and fired last (systemctl show, a blank line between units)."""
    return ["systemctl", "show", *units, "--property=Id,NextElapseUSecRealtime,LastTriggerUSec,ActiveState"]


def parse_timer_times(output: str) -> dict[str, dict[str, str]]:
    units, unit = {}, {}
    for line in output.splitlines() + [""]:
        if "=" in line:
            key, _, value = line.partition("=")
            unit[key] = value
        elif unit:
            units[unit.get("Id", "")] = unit
            unit = {}
    return units


def read_files(paths: list[Path]) -> list[str]:
    """The local time with its offset, then each file's content after a "==> path" line (nothing when missing)."""
    script = 'date +%Y-%m-%dT%H:%M:%S%z; for f; do echo "==> $f"; cat "$f" 2>/dev/null; echo; done'
    return ["sh", "-c", script, "sh", *map(str, paths)]


def parse_read_files(output: str) -> tuple[str, dict[str, str]]:
    lines = output.splitlines()
    now, files, name = (lines[0] if lines else ""), {}, None
    for line in lines[1:]:
        if line.startswith("==> "):
            name = line[4:]
            files[name] = ""
        elif name is not None:
            files[name] += line + "\n"
    return now, {k: v.strip() for k, v in files.items()}
