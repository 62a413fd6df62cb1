"""The app's two gunicorn programs (blue and green) under a process manager: supervisor or systemd.

Both managers offer the same operations, so callers never ask which one runs: status, start,
stop, loading new program files, the logs, and stopping everything for `fab stop`. The local
target always runs its own supervisord; a host runs the host's supervisor, or systemd units with
[app] process_manager = "systemd".
"""
from __future__ import annotations

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
        """Start a color's program; returns what went wrong ("" when it started or already ran)."""
        result = self.ctx.run(commands.programs(self.layout, "start", color), check=False, timeout=300)
        if result.exited != 0 and "already started" not in result.stdout:
            return (result.stdout + result.stderr).strip()
        return ""

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
        if self.pid() is None:
            start = (commands.supervisord_start(self.layout) if self.layout.supervisord_conf
                     else commands.service(ctx.facts.systemd, "supervisor", "start"))
            ctx.run(start, timeout=120)
            if not ctx.wait(lambda: self.pid() is not None, 30):
                raise DeployError(f"supervisord did not start: see {self.layout.supervisord_log}")
            return True
        if idle:
            reread = ctx.run(commands.supervisorctl(self.layout, "reread"), check=False)
            if reread.exited != 0 or commands.supervisor_refused(reread.stdout):
                ctx.restore(earlier)
                raise DeployError(f"supervisor refused the program files in {self.layout.supervisor_dir} (the old "
                                  f"ones are back):\n{(reread.stdout + reread.stderr).strip()}")
            for color in idle:
                ctx.run(commands.supervisorctl(self.layout, "update", self.name(color)))
        if self.layout.supervisord_conf in earlier:  # the local nginx's program changed: restarted on it
            ctx.run(commands.supervisorctl(self.layout, "update", "nginx"), timeout=120)
        return bool(earlier)

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


def process_manager(ctx: Context) -> ProcessManager:
    return SystemdUnits(ctx) if commands.systemd_manager(ctx.layout) else Supervisor(ctx)
