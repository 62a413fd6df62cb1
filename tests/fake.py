"""A fake target for unit tests of the deploy's steps: it records every command it is asked to run
and answers like a small local target would (supervisord with two programs, nginx, the links a
deploy switches), from state the test can change. No process is started and no time passes but
the fake clock's, so a branch of the cutover runs in milliseconds.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shlex
from pathlib import Path

from deploy.commands import PROBE_SOURCE, SUPERVISOR_START
from deploy.context import Context
from deploy.layout import local_layout
from deploy.settings import check_settings
from deploy.target import CommandFailed, Result

FACTS = Path(__file__).parent / "data" / "facts" / "debian-12-amd64.txt"
SUPERVISORD_PID, NGINX_PID = 100, 200


class FakeTarget:
    """Answers commands from its state; `answer(pattern, result)` scripts any other command (the
    last matching pattern wins; a regex searched in the command as a shell would read it)."""

    remote = False
    name = "fake"
    context = None

    def __init__(self, layout):
        self.layout = layout
        self.files: dict[Path, str] = {}
        self.links: dict[Path, str] = {}
        self.directories: set[Path] = set()
        self.commands: list[str] = []
        self.scripted: list[tuple[str, Result]] = []
        self.now = 0.0
        self.supervisord = True
        self.nginx = True
        self.states = {"blue": "STOPPED", "green": "STOPPED"}
        self.ready = {"blue": True, "green": True}  # what the color answers /readyz once started
        self.routes = True  # False: the app has no such route as the health path (404)
        self.smoke = {"status": 200, "body": json.dumps({"name": "demo", "version": "v1", "sha256": "abc123"})}
        self.start_fails: set[str] = set()
        self.nginx_refuses = ""  # nginx -t's complaint, "" when it passes
        self.reconnect_fails = ""  # why a new SSH connection fails, "" when it logs in

    # ---- the Target interface ----------------------------------------------------------------

    def run(self, argv: list[str], *, check: bool = True, timeout: float = 300, **_) -> Result:
        command = ("probe " + argv[3]) if PROBE_SOURCE in argv else shlex.join(argv)
        self.commands.append(command)
        result = next((r for pattern, r in reversed(self.scripted) if re.search(pattern, command)), None)
        if callable(result):
            result = Result(*result(argv, command))
        result = result or self.answer_from_state([a for a in argv if a != "--"], command)
        if check and result.exited != 0:
            raise CommandFailed(command, result.exited, result.stdout + result.stderr)
        return result

    def read(self, path: Path) -> str | None:
        return self.files.get(Path(path))

    def connects_again(self, timeout: float = 20) -> str | None:
        self.commands.append("connects again")
        return self.reconnect_fails or None

    def write(self, path: Path, text: str, mode: int = 0o644, owner: str | None = None) -> bool:
        if self.files.get(Path(path)) == text:
            return False
        self.upload(text.encode("utf-8"), path, mode, owner)
        return True

    def upload(self, source: bytes, path: Path, mode: int = 0o644, owner: str | None = None) -> None:
        self.files[Path(path)] = source.decode("utf-8")
        self.commands.append(f"write {path} mode {mode:o}" + (f" owner {owner}" if owner else ""))

    @contextlib.contextmanager
    def staged(self, source):
        yield Path(source)

    # ---- test helpers ------------------------------------------------------------------------

    def answer(self, pattern: str, stdout: str = "", exited: int = 0, stderr: str = "") -> None:
        self.scripted.append((pattern, Result(stdout, stderr, exited)))

    def respond(self, pattern: str, answer) -> None:
        """Script a command's answer as a function of it: answer(argv, command) -> (stdout, stderr, exited)."""
        self.scripted.append((pattern, answer))

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def ran(self, pattern: str) -> list[str]:
        """The commands run so far that match pattern, in order."""
        return [c for c in self.commands if re.search(pattern, c)]

    def index(self, pattern: str) -> int:
        """Where the first command matching pattern ran (a large number when none did)."""
        return next((i for i, c in enumerate(self.commands) if re.search(pattern, c)), 10**9)

    # ---- the small target --------------------------------------------------------------------

    def answer_from_state(self, argv: list[str], command: str) -> Result:
        ok = Result("", "", 0)
        name = Path(argv[0]).name
        if command.startswith("probe "):
            return self.probe(json.loads(argv[-1]))
        if name == "supervisorctl":
            return self.supervisorctl(argv[3:])
        if argv[1:3] == ["-c", SUPERVISOR_START]:  # startProcess(name, wait=False)
            return self.supervisorctl(["start", argv[3]])
        if any(Path(a).name == "supervisord" for a in argv[:6]):
            self.supervisord = True
            self.start_nginx()  # its program, autostart
            return ok
        if "/usr/sbin/nginx" in argv:
            return self.nginx_command(argv)
        if name == "sh" and "### nproc" in argv[2]:  # the host facts
            return Result(FACTS.read_text(), "", 0)
        if name == "sh" and "readlink" in argv[2]:
            root = Path(argv[4])
            return Result("".join(f"{n}={self.links.get(root / n, '')}\n" for n in argv[5:]), "", 0)
        if name == "sh" and "sha256sum" in argv[2]:  # the sums of the files that exist
            found = [Path(a) for a in argv[4:] if Path(a) in self.files]
            return Result("".join(f"{hashlib.sha256(self.files[p].encode()).hexdigest()}  {p}\n" for p in found), "", 0)
        if name == "sh" and "command -v nginx" in argv[2]:
            return Result("/usr/sbin/nginx\n", "", 0)
        if name == "ln":
            self.links[Path(argv[3])] = argv[2]
            return ok
        if name == "mv" and Path(argv[2]) in self.links:
            self.links[Path(argv[3])] = self.links.pop(Path(argv[2]))
            return ok
        if name == "kill":
            alive = (int(argv[2]) == NGINX_PID and self.nginx) or int(argv[2]) == SUPERVISORD_PID and self.supervisord
            return Result("", "", 0 if alive else 1)
        if name == "mkdir" and "-p" not in argv:  # the lock
            if Path(argv[1]) in self.directories:
                return Result("", f"mkdir: cannot create directory '{argv[1]}': File exists", 1)
            self.directories.add(Path(argv[1]))
            return ok
        if name == "rm":
            for path in map(Path, argv[2:]):
                self.directories.discard(path)
                for known in [p for p in self.files if p == path or path in p.parents]:
                    del self.files[known]
            return ok
        if name == "test":
            path = Path(argv[2])
            return Result("", "", 0 if path in self.files or path in self.links or path in self.directories else 1)
        return ok

    def supervisorctl(self, args: list[str]) -> Result:
        if not self.supervisord:
            return Result("unix:///fake/supervisor.sock no such file\n", "", 7)
        action, names = args[0], args[1:]
        if names == ["nginx"]:  # the local nginx, supervisord's program
            if action == "pid":
                return Result(f"{NGINX_PID if self.nginx else 0}\n", "", 0)
            if action == "start":
                self.start_nginx()
            return Result("", "", 0)
        colors = [n.rsplit("-", 1)[1] for n in names]
        if action == "pid":
            return Result(f"{SUPERVISORD_PID}\n", "", 0)
        if action == "status":
            color = colors[0]
            pid = "   pid 300, uptime 0:00:09" if self.states[color] == "RUNNING" else ""
            return Result(f"{names[0]}   {self.states[color]}{pid}\n", "", 0 if self.states[color] == "RUNNING" else 3)
        if action == "start":
            color = colors[0]
            if color in self.start_fails:
                self.states[color] = "FATAL"
                return Result(f"{names[0]}: ERROR (spawn error)\n", "", 7)
            self.states[color] = "RUNNING"
        if action == "stop":
            for color in colors:
                self.states[color] = "STOPPED"
        if action == "shutdown":
            self.supervisord = self.nginx = False
            self.states = dict.fromkeys(self.states, "STOPPED")
        return Result("", "", 0)

    def nginx_command(self, argv: list[str]) -> Result:
        if "-t" in argv:
            return Result("", self.nginx_refuses, 1 if self.nginx_refuses else 0)
        if argv[-2:] == ["-s", "quit"]:
            self.nginx = False
        elif "-s" not in argv:  # started
            self.start_nginx()
        return Result("", "", 0)

    def start_nginx(self) -> None:
        self.nginx = True
        self.files[self.layout.nginx_pid_file] = f"{NGINX_PID}\n"

    def probe(self, spec: dict) -> Result:
        color = Path(spec["socket"]).stem if spec["socket"] else None
        up = self.states[color] == "RUNNING" and self.ready[color] if color else self.nginx
        if not (up and not self.routes and spec["ready"] == "ok"):  # the probe returns at once on a 404
            self.now += spec["wait"]
        first = ({"status": 404, "body": "Not Found"} if up and not self.routes else
                 {"status": 200, "body": '{"status": "ready"}'} if up else
                 {"status": 503, "body": '{"status": "loading"}'} if color and self.states[color] == "RUNNING" else
                 {"status": 0, "error": "FileNotFoundError: no socket"})
        answers = [{"path": spec["paths"][0], **first}]
        if first["status"] == 200:
            answers += [{"path": path, **self.smoke} for path in spec["paths"][1:]]
        return Result("".join(json.dumps(a) + "\n" for a in answers), "", 0)


# The reference app's readiness and smoke query (deploy.toml), which settings given to fake_context add to.
REFERENCE = {"local": {"root": "/home/pi/mh", "port": 8081},
             "deploy": {"health_path": "/readyz", "smoke_path": "/api/v1/model", "smoke_contains": "{model_version}"}}


def fake_context(settings: dict | None = None, **layout_options) -> tuple[Context, FakeTarget]:
    """A context of the local layout under /home/pi/mh on a fake target, with the fake's clock."""
    given = settings or {}
    loaded = check_settings({section: {**REFERENCE.get(section, {}), **given.get(section, {})}
                             for section in {*REFERENCE, *given}})
    layout = local_layout(loaded, user="pi", group="pi", home=Path("/home/pi"), **layout_options)
    target = FakeTarget(layout)
    target.files[layout.nginx_pid_file] = f"{NGINX_PID}\n"
    ctx = Context(target, loaded, layout, local=target, clock=lambda: target.now, sleep=target.sleep)
    return ctx, target
