"""Starts the app's own commands on a target: its processes ([app.processes]) and its scheduled jobs
([app.schedule]). `fab deploy` uploads it beside launch.json (its settings); Python's standard
library only, since it runs with the target's python3.

    launch.py CONFIG NAME        a process: exec its command in the live release (the process
                                 manager runs this as the app, and stops it with TERM)
    launch.py CONFIG --job NAME  a scheduled run (cron or a systemd timer runs this): skipped while
                                 the job's last run still goes (a lock), held while a deploy holds
                                 its lock, output appended to a size-capped log, the result kept for
                                 `fab status`

Either way the command runs in the release that is live when it starts (<root>/current resolved),
with the kit's environment for that release, the app's [app] env and the secrets file's values,
by sh when it needs a shell.
"""
from __future__ import annotations

import fcntl
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone

SHELL_CHARACTERS = set("|&;<>()$`\\\"'*?[#~=%{}\n")
DEPLOY_WAIT = 1800  # seconds a run waits for a deploy to let go of its lock before it is skipped


def argv_of(command: str) -> list[str]:
    """The command's argv: exec'd directly when it is simple (signals reach it), else by sh."""
    if SHELL_CHARACTERS & set(command) or not command.split():
        return ["sh", "-c", command]
    return shlex.split(command)


def environment(config: dict, release: str) -> dict:
    env = {name: value.replace("{release}", release) for name, value in config["env"].items()}
    env.update(config["app_env"])
    try:
        with open(config["secrets"], encoding="utf-8") as lines:
            for line in lines:
                name, sep, value = line.strip().partition("=")
                if sep and not name.startswith("#"):
                    env.setdefault(name.strip(), value.strip())
    except FileNotFoundError:
        pass
    return env


def live_release(config: dict) -> str | None:
    current = os.path.join(config["root"], "current")
    return os.path.realpath(current) if os.path.exists(current) else None


def now() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def process(config: dict, name: str) -> int:
    release = live_release(config)
    if release is None:
        print(f"launch: no live release in {config['root']} yet (fab deploy makes one)", file=sys.stderr, flush=True)
        time.sleep(5)  # the process manager starts it again
        return 1
    os.chdir(release)
    argv = argv_of(config["processes"][name])
    env = environment(config, release)
    os.execvpe(argv[0], argv, env)


class Log:
    """Appends to <dir>/<name>.log; past max_bytes it becomes .log.1 (and .1 .2, up to backups)."""

    def __init__(self, path: str, max_bytes: int, backups: int):
        self.path, self.max_bytes, self.backups = path, max_bytes, backups

    def write(self, data: bytes) -> None:
        try:
            if os.path.getsize(self.path) + len(data) > self.max_bytes:
                for n in range(self.backups - 1, 0, -1):
                    if os.path.exists(f"{self.path}.{n}"):
                        os.replace(f"{self.path}.{n}", f"{self.path}.{n + 1}")
                os.replace(self.path, f"{self.path}.1")
        except FileNotFoundError:
            pass
        with open(self.path, "ab") as out:
            out.write(data)

    def line(self, text: str) -> None:
        self.write(f"{now()} {text}\n".encode())


def job(config: dict, name: str) -> int:
    directory = config["job_dir"]
    os.makedirs(directory, exist_ok=True)
    log = Log(os.path.join(directory, f"{name}.log"), config["log_bytes"], config["log_backups"])
    result_file = os.path.join(directory, f"{name}.json")
    lock = open(os.path.join(directory, f"{name}.lock"), "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        going = read_json(result_file).get("running", {})
        log.line(f"skipped: the run before is still going (pid {going.get('pid', '?')})")
        return 0
    ended = read_json(result_file).get("finished_at", 0)
    after = catching_up(config.get("timers", {}).get(name), ended)
    if after:
        log.line(f"skipped: came due while the run before went (systemd's catch-up); next due {after}")
        return 0
    waited = wait_for_deploy(config["deploy_lock"])
    if waited is None:
        log.line(f"skipped: a deploy has held {config['deploy_lock']} for {DEPLOY_WAIT} s")
        return 0
    release = live_release(config)
    if release is None:
        log.line("skipped: no live release yet")
        return 0
    started, clock = now(), time.monotonic()
    write_json(result_file, {**read_json(result_file), "running": {"started": started, "pid": os.getpid(),
                                                                     "release": os.path.basename(release)}})
    log.line(f"start in {release}" + (f" (after waiting {waited:.0f} s for a deploy)" if waited >= 1 else ""))
    child = subprocess.Popen(argv_of(config["jobs"][name]), cwd=release, env=environment(config, release),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **as_user(config.get("user")))
    signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
    for chunk in iter(lambda: child.stdout.read1(65536), b""):
        log.write(chunk)
    code = child.wait()
    seconds = round(time.monotonic() - clock, 3)
    log.line(f"exit {code} after {seconds} s")
    write_json(result_file, {"started": started, "finished": now(), "finished_at": time.time(), "seconds": seconds,
                             "exit": code, "release": os.path.basename(release)})
    return 0 if code == 0 else 1


def catching_up(timer: dict | None, ended: float) -> str | None:
    """When this run is systemd's catch-up for a time that came due while the run before went, the
    next due time (as systemd says it); otherwise None. A timer does not elapse while its service
    runs: when the run ends, the timer starts the service again at once for what it missed. Cron's
    second run finds the lock taken instead; skipping the catch-up makes both the same: at most one
    run a due time, none due while one goes. A catch-up is a run the timer started just now (not one
    started by hand) with no due time of the schedule since the run before ended."""
    if not timer or not ended or "INVOCATION_ID" not in os.environ:  # not a systemd unit's run
        return None
    try:
        # systemctl show gives this as "3h 38min 41.54s" (systemd 252); the bus gives "t 13121540723".
        path = "/org/freedesktop/systemd1/unit/" + "".join(  # the bus's escaping: _2d for -, _2e for .
            c if c.isascii() and (c.isalpha() or c.isdigit() and i) else f"_{ord(c):02x}"
            for i, c in enumerate(timer["unit"]))
        answer = subprocess.run(["busctl", "get-property", "org.freedesktop.systemd1", path,
                                 "org.freedesktop.systemd1.Timer", "LastTriggerUSecMonotonic"],
                                capture_output=True, text=True, timeout=30).stdout.split()
        if answer[:1] != ["t"] or time.monotonic() - int(answer[1]) / 1e6 > 10:
            return None  # started by hand (systemctl start), or the timer is not known
        upcoming = []
        for calendar in timer["calendars"]:
            answer = subprocess.run(["systemd-analyze", "calendar", f"--base-time=@{ended:.6f}", "--iterations=1",
                                     calendar], capture_output=True, text=True, timeout=30).stdout
            fields = dict(line.strip().split(": ", 1) for line in answer.splitlines() if ": " in line)
            if not fields.get("From now", "").endswith(" left"):
                return None  # due since the run before ended (or no answer: run rather than skip)
            upcoming.append(fields["Next elapse"])
        return ", ".join(upcoming) or None
    except (OSError, subprocess.SubprocessError, ValueError, KeyError, IndexError):
        return None


def as_user(user: str | None) -> dict:
    """Popen's arguments that run the command as the app's user (a host's runner starts as root)."""
    if not user or os.getuid() != 0:
        return {}
    import pwd
    entry = pwd.getpwnam(user)
    return dict(user=entry.pw_uid, group=entry.pw_gid, extra_groups=os.getgrouplist(user, entry.pw_gid))


def wait_for_deploy(deploy_lock: str) -> float | None:
    """Seconds waited until no deploy holds its lock (None: one still did after DEPLOY_WAIT)."""
    started = time.monotonic()
    while os.path.exists(deploy_lock):
        if time.monotonic() - started > DEPLOY_WAIT:
            return None
        time.sleep(1)
    return time.monotonic() - started


def read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except (FileNotFoundError, ValueError):
        return {}


def write_json(path: str, value: dict) -> None:
    with open(path + ".partial", "w", encoding="utf-8") as file:
        json.dump(value, file)
    os.replace(path + ".partial", path)


def main(argv: list[str]) -> int:
    if len(argv) == 2:
        config_file, name, is_job = argv[0], argv[1], False
    elif len(argv) == 3 and argv[1] == "--job":
        config_file, name, is_job = argv[0], argv[2], True
    else:
        print(__doc__, file=sys.stderr)
        return 2
    with open(config_file, encoding="utf-8") as file:
        config = json.load(file)
    known = config["jobs" if is_job else "processes"]
    if name not in known:
        print(f"launch: no {'job' if is_job else 'process'} {name!r} in {config_file} (known: "
              f"{', '.join(known) or 'none'}); fab deploy writes it from deploy.toml", file=sys.stderr, flush=True)
        return 2
    return job(config, name) if is_job else process(config, name)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
