"""The app's two gunicorn programs (blue and green) under a process manager: supervisor or systemd.

Both managers offer the same operations, so callers never ask which one runs: status, start,
stop, loading new program files, the logs, and stopping everything for `fab stop`. The local
target always runs its own supervisord; a host runs the host's supervisor, or systemd units with
[app] process_manager = "systemd".
"""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from deploy import commands
from deploy.context import Context, DeployError
from deploy.layout import COLORS

LOG_LINES = 20  # of a failed program's log, in the error


@dataclass
class Program:
    name: str
    color: str
    state: str  # supervisor's: RUNNING, STOPPED, STARTING, BACKOFF, FATAL, ...; DOWN without supervisord
    pid: int | None = None
    uptime: str = ""
    release: str | None = None


class ProcessManager(ABC):
    """What both managers share; the subclasses say how."""

    daemon = ""  # the manager's own process, shown by `fab status` ("" when it is the init system)
    package = ""  # the Debian package (and service) a host needs for it ("": systemd, which every host has)

    def __init__(self, ctx: Context):
        self.ctx, self.layout = ctx, ctx.layout

    def name(self, color: str) -> str:
        return commands.program(self.layout, color)

    def check(self) -> None:
        """Refuses a target this manager cannot run on."""

    def status(self, color: str) -> Program:
        result = self.ctx.run(commands.program_status(self.layout, color), check=False)
        return Program(self.name(color), color, *self.parse_status(result.stdout, color))

    def start(self, color: str) -> str:
        """Start a color's program without waiting for it (the cutover's probe says when it is
        ready); returns what went wrong ("" when it is starting or already ran)."""
        result = self.ctx.run(commands.start_program(self.layout, color), check=False, timeout=120)
        return (result.stdout + result.stderr).strip() if result.exited != 0 else ""

    def stop(self, *colors: str) -> None:
        """Stop the colors' gunicorn gracefully (TERM: requests in flight finish first)."""
        self.ctx.run(commands.programs(self.layout, "stop", *colors), check=False,
                     timeout=self.ctx.settings.gunicorn.graceful_timeout + 60)

    def stop_all(self) -> list[int]:
        """Stop both colors (and a manager of the kit's own); returns the pids that are stopping."""
        pids = [p.pid for p in map(self.status, COLORS) if p.pid]
        self.stop(*COLORS)
        return pids

    def log_since(self, color: str, mark: str) -> str:
        """The last lines a program logged after mark (log_mark's), indented for an error message."""
        lines = self.ctx.run(self.log_after(color, mark), check=False).stdout.splitlines()[-LOG_LINES:]
        return "\n".join(f"    {line}" for line in lines) or "    (nothing)"

    def log_file(self, color: str) -> Path:
        return self.layout.log_dir / f"{color}.log"  # gunicorn's and the app's lines: one log

    # ---- the app's processes ([app.processes]) ------------------------------------------------

    settle = 0.0  # seconds a started process is given before its state counts (supervisor's startsecs waits)

    def ensure_processes(self, files: dict[Path, str], processes: list, restart: bool) -> list[str]:
        """The processes' program files are loaded (a process taken out is stopped and removed) and
        every process runs, started again when restart (the live release changed); returns what changed."""
        raise NotImplementedError

    def process_status(self, process) -> list[Program]:
        """Each copy of a process, with supervisor's state words."""
        raise NotImplementedError

    def process_logs(self, process, lines: int, follow: bool) -> list[str]:
        raise NotImplementedError

    def stop_processes(self, processes: list) -> list[int]:
        """Stops every process (TERM, then KILL after its stop timeout); returns the pids that ran."""
        pids = [p.pid for process in processes for p in self.process_status(process) if p.pid]
        self.ctx.run(self.process_command("stop", processes), check=False,
                     timeout=self.ctx.settings.gunicorn.graceful_timeout + 60)
        return pids

    def process_command(self, action: str, processes: list) -> list[str]:
        raise NotImplementedError

    def failed_processes(self, processes: list) -> list[str]:
        """What is wrong with processes that do not run ("" for none): each copy's state and last lines."""
        if self.settle:
            self.ctx.sleep(self.settle)
        found: dict[str, list[Program]] = {}

        def settled() -> bool:  # supervisor counts a process started once it has run for startsecs
            found.update({p.name: self.process_status(p) for p in processes})
            return all(copy.state != "STARTING" for copies in found.values() for copy in copies)
        self.ctx.wait(settled, 15)
        problems = []
        for process in processes:
            for copy in found[process.name]:
                if copy.state != "RUNNING":
                    lines = self.ctx.run(self.process_logs(process, 10, False), check=False).stdout.rstrip()
                    problems.append(f"{copy.name} is {copy.state}; its last lines:\n" +
                                    "\n".join(f"    {line}" for line in lines.splitlines()[-10:]))
                    break
        return problems

    @property
    def tunnel_name(self) -> str:
        """fab expose's tunnel program (deploy/tunnel.py)."""
        return f"{self.layout.app}-tunnel"

    def tunnel(self, changed: bool) -> bool:
        """The tunnel's program (its file written) runs: started again when changed, started when it
        does not run; returns whether it was."""
        raise NotImplementedError

    def tunnel_remove(self) -> bool:
        """The tunnel's program stopped and its file removed; returns whether there was one."""
        raise NotImplementedError

    def tunnel_log(self, lines: int, follow: bool) -> list[str] | None:
        """The command that shows the tunnel's log when it is not a file (None: <log_dir>/tunnel.log)."""
        return None

    def leftovers(self) -> tuple[int, list[int]]:
        """(pid, leftovers) of a manager daemon that died, by kill -9 or the OOM killer, leaving its
        programs running under PID 1 (nothing, (0, []), when it runs or stopped cleanly)."""
        return 0, []

    def recover(self, dead: int, pids: list[int]) -> str:
        """Stop what a dead manager left (leftovers' answer: gunicorn on the app's sockets, the local
        nginx on its port), so that starting it again never runs a second gunicorn on a socket; says
        what it stopped."""
        ctx = self.ctx
        gone = lambda: not set(ctx.run(commands.session(dead), check=False).stdout.split()) - {str(dead)}
        ctx.run(commands.signal_session(dead, "TERM"), check=False)  # gunicorn: graceful, nginx: fast
        if not ctx.wait(gone, ctx.settings.gunicorn.graceful_timeout + 10):
            ctx.run(commands.signal_session(dead, "KILL"), check=False)
            ctx.wait(gone, 10)
        return (f"{self.daemon} ({dead}) had died, leaving {len(pids)} processes of its programs running "
                f"({', '.join(map(str, pids))}): stopped them")

    @abstractmethod
    def pid(self) -> int | None:
        """The manager's own daemon's pid (None: not running, or none of its own)."""

    @abstractmethod
    def parse_status(self, output: str, color: str) -> tuple[str, int | None, str]:
        """(state in supervisor's words, pid, uptime) from program_status's output."""

    @abstractmethod
    def ensure(self, files: dict[Path, str], idle: list[str], live: str) -> bool:
        """The manager runs with these program files; returns whether anything changed."""

    @abstractmethod
    def log_name(self, color: str) -> str:
        """Where a program's log is, for people."""

    @abstractmethod
    def log_mark(self, color: str) -> str:
        """Where a program's log ends now (log_after takes it)."""

    @abstractmethod
    def log_after(self, color: str, mark: str) -> list[str]:
        """The command that prints what a program logged after mark."""

    @abstractmethod
    def log_command(self, color: str, lines: int, follow: bool) -> list[str] | None:
        """The command that shows a program's last lines (None: its log is a file to tail)."""


class Supervisor(ProcessManager):
    """supervisord: the local target's own (started by the deploy) or the host's service."""

    daemon = "supervisord"
    package = "supervisor"

    def pid(self) -> int | None:
        result = self.ctx.run(commands.supervisorctl(self.layout, "pid"), check=False)
        return commands.parse_supervisord_pid(result.stdout) if result.exited == 0 else None

    def leftovers(self) -> tuple[int, list[int]]:
        """supervisord leads a session (it daemonizes, or systemd starts it in one), and its programs
        stay in it; its pid file is left behind when it is killed."""
        text = (self.ctx.target.read(self.layout.supervisord_pid_file) or "").strip()
        if not text.isdigit():
            return 0, []
        # A killed daemon is a zombie until init reaps it: dead, though kill -0 still finds it.
        state = self.ctx.run(commands.process_state(int(text)), check=False).stdout.strip()
        if state and not state.startswith("Z"):
            return 0, []
        found = self.ctx.run(commands.session(int(text)), check=False).stdout.split()
        return int(text), [int(pid) for pid in found if pid.isdigit() and pid != text]

    def parse_status(self, output: str, color: str) -> tuple[str, int | None, str]:
        return commands.parse_supervisor_status(output, self.name(color))

    def ensure(self, files: dict[Path, str], idle: list[str], live: str) -> bool:
        """supervisord runs with these program files (it is started if it is down); only the idle
        colors' programs are updated (updating a running program restarts it). Returns whether
        anything changed."""
        ctx = self.ctx
        earlier = ctx.write_files(files)
        update = None
        if idle:  # update rereads the files itself; supervisorctl pid only when it failed
            update = ctx.run(commands.supervisorctl(self.layout, "update", *map(self.name, idle)), check=False,
                             timeout=120)
        if (update is None or update.exited != 0) and self.pid() is None:
            start = (commands.supervisord_start(self.layout) if self.layout.supervisord_conf
                     else commands.service(ctx.facts.systemd, "supervisor", "start"))
            ctx.run(start, timeout=120)
            if not ctx.wait(lambda: self.pid() is not None, 30):
                raise DeployError(f"supervisord did not start: see {self.layout.supervisord_log}")
            return True
        if update and (update.exited != 0 or commands.supervisor_refused(update.stdout)):
            ctx.restore(earlier)
            raise DeployError(f"supervisor refused the program files in {self.layout.supervisor_dir} (the old "
                              f"ones are back):\n{commands.supervisor_error(update.stdout + update.stderr)}")
        if self.layout.supervisord_conf in earlier:  # the local nginx's program changed: restarted on it
            ctx.run(commands.supervisorctl(self.layout, "update", "nginx"), timeout=120)
        return bool(earlier)

    @property
    def processes_file(self) -> Path:
        return self.layout.supervisor_dir / f"{self.layout.app}-processes.conf"

    def ensure_processes(self, files: dict[Path, str], processes: list, restart: bool) -> list[str]:
        ctx, path = self.ctx, self.processes_file
        before = ctx.target.read(path) or ""
        text = files.get(path, "")
        old = re.findall(r"^\[program:([^\]]+)\]", before, re.M)
        updated, done = "", []
        if text != before:
            if text:
                ctx.target.write(path, text)
            else:
                ctx.run(commands.remove(path))
            reread = ctx.run(commands.supervisorctl(self.layout, "reread"), check=False)
            if reread.exited != 0 or commands.supervisor_refused(reread.stdout):
                ctx.restore({path: before or None})
                raise DeployError(f"supervisor refused {path} (the old one is back):\n"
                                  f"{(reread.stdout + reread.stderr).strip()}")
            names = sorted(set(old) | {p.program for p in processes})
            updated = ctx.run(commands.supervisorctl(self.layout, "update", *names), timeout=300).stdout
            done += [f"removed {name}" for name in old if name not in {p.program for p in processes}]
        for process in processes:
            if re.search(rf"^{re.escape(process.program)}: (added|updated)", updated, re.M):
                done.append(f"started {process.name} (its program {'changed' if process.program in old else 'is new'})")
            elif restart:
                ctx.run(commands.supervisorctl(self.layout, "restart", f"{process.program}:*"), check=False,
                        timeout=ctx.settings.gunicorn.graceful_timeout + 60)
                done.append(f"restarted {process.name}")
            elif any(p.state != "RUNNING" for p in self.process_status(process)):
                ctx.run(commands.supervisorctl(self.layout, "start", f"{process.program}:*"), check=False, timeout=120)
                done.append(f"started {process.name}")
        return done

    def process_status(self, process) -> list[Program]:
        output = self.ctx.run(commands.supervisorctl(self.layout, "status", f"{process.program}:*"), check=False).stdout
        found = [Program(name, "", state, pid, uptime)
                 for name, state, pid, uptime in commands.parse_group_status(output)]
        return found or [Program(process.program, "", "DOWN")]

    def process_log_files(self, process) -> list[Path]:
        copies = [f"-{n}" for n in range(1, process.count + 1)] if process.count > 1 else [""]
        return [self.layout.log_dir / f"{process.name}{copy}.log" for copy in copies]

    def process_logs(self, process, lines: int, follow: bool) -> list[str]:
        return commands.tail(self.process_log_files(process), lines, follow)

    def process_command(self, action: str, processes: list) -> list[str]:
        return commands.supervisorctl(self.layout, action, *(f"{p.program}:*" for p in processes))

    def tunnel(self, changed: bool) -> bool:
        ctx, name = self.ctx, self.tunnel_name
        updated = ctx.run(commands.supervisorctl(self.layout, "update", name), timeout=120).stdout
        if "added" in updated or "updated" in updated:  # started with its new settings
            return True
        state = commands.parse_supervisor_status(
            ctx.run(commands.supervisorctl(self.layout, "status", name), check=False).stdout, name)[0]
        if changed or state not in ("RUNNING", "STARTING"):
            ctx.run(commands.supervisorctl(self.layout, "restart", name), timeout=120)
            return True
        return False

    def tunnel_remove(self) -> bool:
        conf = self.layout.supervisor_dir / f"{self.tunnel_name}.conf"
        if not self.ctx.exists(conf):
            return False
        self.ctx.run(commands.supervisorctl(self.layout, "stop", self.tunnel_name), check=False, timeout=120)
        self.ctx.run(commands.remove(conf))
        self.ctx.run(commands.supervisorctl(self.layout, "update", self.tunnel_name), check=False, timeout=120)
        return True

    def stop_all(self) -> list[int]:
        """A host's supervisord serves more than this app: only its programs stop. The local
        target's own supervisord shuts down with them."""
        daemon = self.pid()
        if daemon is None:
            return []
        if not self.layout.supervisord_conf:
            return super().stop_all()
        pids = [daemon, *(p.pid for p in map(self.status, COLORS) if p.pid)]
        self.ctx.run(commands.supervisorctl(self.layout, "shutdown"), check=False)
        return pids

    def log_name(self, color: str) -> str:
        return str(self.log_file(color))

    def log_mark(self, color: str) -> str:
        """Where a program's log ends now: the log file's size."""
        out = self.ctx.run(commands.size(self.log_file(color)), check=False).stdout.strip()
        return out if out.isdigit() else "0"

    def log_after(self, color: str, mark: str) -> list[str]:
        return commands.tail_bytes(self.log_file(color), int(mark))

    def log_command(self, color: str, lines: int, follow: bool) -> list[str] | None:
        return None  # the log is a file: `fab logs` tails it with the others


class SystemdUnits(ProcessManager):
    """The template unit's instances <app>@blue and <app>@green; their output is in the journal."""

    def check(self) -> None:
        facts = self.ctx.facts
        if not facts.systemd:
            raise DeployError(f'[app] process_manager = "systemd", but systemd does not run on {self.ctx.target.name} '
                              f'(PID 1 is {facts.init or "unknown"}): set process_manager = "supervisor"')

    def pid(self) -> int | None:
        return None  # systemd is PID 1: no daemon of its own to show

    def parse_status(self, output: str, color: str) -> tuple[str, int | None, str]:
        return commands.parse_unit_status(output)

    def ensure(self, files: dict[Path, str], idle: list[str], live: str) -> bool:
        """The unit file is loaded (daemon-reload restarts nothing) and only the live color is
        enabled, to start at boot. Returns whether the unit file changed."""
        ctx = self.ctx
        earlier = ctx.write_files(files)
        if earlier:
            ctx.run(commands.systemctl("daemon-reload"))
        for color in COLORS:
            enabled = ctx.run(commands.systemctl("is-enabled", self.name(color)), check=False)
            if (enabled.stdout.strip() == "enabled") != (color == live):
                ctx.run(commands.systemctl("enable" if color == live else "disable", "--quiet", self.name(color)))
        return bool(earlier)

    settle = 2.0  # a unit that exits at once is seen by then (systemctl start returns before)

    def ensure_processes(self, files: dict[Path, str], processes: list, restart: bool) -> list[str]:
        ctx, layout = self.ctx, self.layout
        listed = ctx.run(commands.first_lines(layout.systemd_dir, f"{layout.app}-*@.service")).stdout
        units = commands.parse_first_lines(listed)
        ours = [unit for unit, line in units.items() if is_process_unit(line, layout.app)]
        wanted = {f"{p.program}@.service" for p in processes}
        clash = sorted(wanted & set(units) - set(ours))
        if clash:
            raise DeployError(f"{layout.systemd_dir / clash[0]} is not a process of {layout.app} (another app's "
                              "unit?): rename the process in [app.processes], or the other app")
        enabled = ctx.run(commands.listing(layout.systemd_dir / "multi-user.target.wants"), check=False).stdout.split()
        done = []
        for unit in sorted(set(ours) - wanted):
            program = unit.removesuffix("@.service")
            ctx.run(commands.systemctl("stop", f"{program}@*.service"), check=False, timeout=300)
            instances = [name for name in enabled if name.startswith(f"{program}@")]
            if instances:
                ctx.run(commands.systemctl("disable", "--quiet", *instances), check=False)
            ctx.run(commands.remove(layout.systemd_dir / unit))
            done.append(f"removed {program}")
        earlier = ctx.write_files(files)
        if earlier or done:
            ctx.run(commands.systemctl("daemon-reload"))
        for process in processes:
            copies = [f"{process.program}@{n}.service" for n in range(1, process.count + 1)]
            extra = [name for name in enabled if name.startswith(f"{process.program}@") and name not in copies]
            if extra:
                ctx.run(commands.systemctl("disable", "--now", "--quiet", *extra), timeout=300)
            if set(copies) - set(enabled):
                ctx.run(commands.systemctl("enable", "--quiet", *copies))
            changed = layout.systemd_dir / f"{process.program}@.service" in earlier
            if restart or changed or extra:
                ctx.run(commands.systemctl("restart", *copies), timeout=ctx.settings.gunicorn.graceful_timeout + 60)
                done.append(f"{'restarted' if restart else 'started'} {process.name}"
                            + (" (its unit changed)" if changed and not restart else ""))
            elif any(p.state != "RUNNING" for p in self.process_status(process)):
                ctx.run(commands.systemctl("start", *copies), timeout=120)
                done.append(f"started {process.name}")
        return done

    def process_status(self, process) -> list[Program]:
        found = []
        for n in range(1, process.count + 1):
            name = f"{process.program}@{n}"
            output = self.ctx.run(commands.systemctl("show", name, f"--property={commands.UNIT_PROPERTIES}"),
                                  check=False).stdout
            found.append(Program(name, "", *commands.parse_unit_status(output)))
        return found

    def process_logs(self, process, lines: int, follow: bool) -> list[str]:
        return commands.unit_journal(f"{process.program}@*", lines, follow)

    def process_command(self, action: str, processes: list) -> list[str]:
        return commands.systemctl(action, *(f"{p.program}@*.service" for p in processes))

    def tunnel(self, changed: bool) -> bool:
        ctx, name = self.ctx, self.tunnel_name
        if changed:
            ctx.run(commands.systemctl("daemon-reload"))
        ctx.run(commands.systemctl("enable", "--quiet", name))
        if changed or ctx.run(commands.systemctl("is-active", "--quiet", name), check=False).exited != 0:
            ctx.run(commands.systemctl("restart", name), timeout=120)
            return True
        return False

    def tunnel_log(self, lines: int, follow: bool) -> list[str] | None:
        return commands.unit_journal(self.tunnel_name, lines, follow)

    def tunnel_remove(self) -> bool:
        unit = self.layout.systemd_dir / f"{self.tunnel_name}.service"
        if not self.ctx.exists(unit):
            return False
        self.ctx.run(commands.systemctl("disable", "--now", "--quiet", self.tunnel_name), check=False, timeout=120)
        self.ctx.run(commands.remove(unit))
        self.ctx.run(commands.systemctl("daemon-reload"))
        return True

    def log_name(self, color: str) -> str:
        return f"journalctl -u {self.name(color)}"

    def log_mark(self, color: str) -> str:
        """Where a unit's log ends now: the target's time."""
        return self.ctx.run(commands.now()).stdout.strip()

    def log_after(self, color: str, mark: str) -> list[str]:
        return commands.journal(self.layout, color, LOG_LINES, since=mark)

    def log_command(self, color: str, lines: int, follow: bool) -> list[str] | None:
        return commands.journal(self.layout, color, lines, follow)


def is_process_unit(first_line: str, app: str) -> bool:
    """A unit file's first line says it is one of app's processes (systemd/process@.service.j2)."""
    return first_line.startswith("# modelhost process ") and f" of {app} " in first_line


def process_manager(ctx: Context) -> ProcessManager:
    return SystemdUnits(ctx) if commands.systemd_manager(ctx.layout) else Supervisor(ctx)
