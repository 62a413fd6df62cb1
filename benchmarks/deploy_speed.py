"""How long a deploy that changes nothing takes, and how many commands it sends, on a real SSH test
host; and how long a code-only cutover takes. Needs root (tests/hosts.py builds the host).

    .venv/bin/python benchmarks/deploy_speed.py [-n 3] [--flavor systemd|service]

The app is a one-page Flask app (it loads in well under a second), so the figures are the kit's own:
every command the deploy sends to the host is counted and timed (a command, a file read, an upload
each cost one SSH round trip or more), beside the deploy's wall time. Medians of n runs.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fabric import Config, Connection  # noqa: E402

from benchlib import bounded_int  # noqa: E402
from deploy import deployment, tasks  # noqa: E402
from deploy.source import read_source  # noqa: E402
from deploy.target import Target  # noqa: E402
from tests import hosts  # noqa: E402
from tests.servers import FLASK_REQUIREMENTS, VERSIONED_APP, committed, fab, git  # noqa: E402

class Counted:
    """Counts and times the Target calls that reach the host (commands, reads, uploads)."""

    METHODS = ("run", "read", "upload", "write", "stream")

    def __init__(self):
        self.calls: dict[str, int] = {}
        self.seconds = 0.0
        self.each: list[tuple[float, str]] = []  # (seconds, what) of every call
        self.depth = 0
        self.live_at = 0.0  # when the current link moved to the new color (nginx serves it already)
        self.originals = {name: getattr(Target, name) for name in self.METHODS}

    def __enter__(self):
        for name, original in self.originals.items():
            setattr(Target, name, self.wrap(name, original))
        return self

    def __exit__(self, *exc):
        for name, original in self.originals.items():
            setattr(Target, name, original)

    def wrap(self, name, original):
        def counted(target, *args, **kwargs):
            if not target.remote or self.depth:  # this machine's commands, or a call inside a counted one
                return original(target, *args, **kwargs)
            self.depth += 1
            began = time.monotonic()
            try:
                return original(target, *args, **kwargs)
            finally:
                self.seconds += time.monotonic() - began
                what = args[0] if args else ""
                if isinstance(what, list) and what[:1] == ["mv"] and what[-1].endswith("/current"):
                    self.live_at = time.monotonic()
                self.each.append((time.monotonic() - began, f"{name} " + (" ".join(what) if isinstance(what, list)
                                                                          else str(what))))
                self.calls[name] = self.calls.get(name, 0) + 1
                self.depth -= 1
        return counted


def deploy_once(host: hosts.TestHost, config: Path, settings: Path) -> tuple[float, Counted, dict[str, float]]:
    """One deploy in this process: (wall seconds, what reached the host, seconds per step, and
    "to live": from the cutover step's start until the new color was live, when there was one)."""
    fabric_config = Config(runtime_ssh_path=str(config))
    with Connection(f"root@{host.address}", config=fabric_config) as connection, Counted() as counted:
        began = time.monotonic()
        tasks.check_host_keys(connection)
        d = tasks.target_context(connection, str(settings), quiet=True)
        ended, report = {}, d.report
        d.report = lambda step: (ended.__setitem__(step.name, time.monotonic()), report(step))
        source = read_source(d.local, settings.parent, False, d.settings.app.requirements)
        deployment.deploy(d, source, None, {})
        wall = time.monotonic() - began
    seconds = {step.name: step.seconds for step in d.steps}
    if counted.live_at and "cutover" in seconds:
        seconds["to live"] = counted.live_at - (ended["cutover"] - seconds["cutover"])
    return wall, counted, seconds


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=bounded_int(1, 20), default=3, help="runs of each (median)")
    parser.add_argument("--flavor", choices=("systemd", "service"), default="systemd")
    parser.add_argument("--slowest", type=bounded_int(0, 50), default=5,
                        help="list this many of a code-only deploy's slowest calls to the host")
    parser.add_argument("--in-order", action="store_true", help="list every call of a code-only deploy, in order")
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="modelhost-bench-") as scratch:
        workdir = Path(scratch)
        key = hosts.make_client_key(workdir)
        host = hosts.start_host(options.flavor, None, workdir, key)
        try:
            known = workdir / "known_hosts"
            known.write_text(host.known_hosts_line() + "\n")
            config = workdir / "ssh_config"
            config.write_text(f"Host {host.address}\n  IdentityFile {key}\n  IdentitiesOnly yes\n"
                              f"  UserKnownHostsFile {known}\n  GlobalKnownHostsFile /dev/null\n")
            repo = committed(workdir / "app", {"app.py": VERSIONED_APP, "requirements.txt": FLASK_REQUIREMENTS,
                                               "VERSION": "0\n", "deploy.toml": f"""[app]
name = "speed"
wsgi = "app:app"
[nginx]
server_names = ["{host.address}"]
address = "{host.address}"  # the test host shares this machine's network: its own loopback address only
rate_limit = "off"
[firewall]
enabled = false
"""})
            settings = repo / "deploy.toml"
            first = fab("-S", str(config), "-H", f"root@{host.address}", "provision", "--settings", str(settings),
                        "deploy", "--settings", str(settings), timeout=1800)
            if first.returncode:
                print(first.stdout + first.stderr, file=sys.stderr)
                return 1
            noop, changed = [], []
            for n in range(options.n):
                noop.append(deploy_once(host, config, settings))
                (repo / "VERSION").write_text(f"{n + 1}\n")
                git(repo, "commit", "-qam", f"version {n + 1}")
                changed.append(deploy_once(host, config, settings))
        finally:
            host.stop()

    def median(values) -> float:
        return statistics.median(values)

    print(f"{options.flavor} test host, a one-page Flask app; medians of {options.n} runs")
    calls = noop[0][1].calls
    count = sum(calls.values())
    print(f"no-op deploy:      {median(w for w, _, _ in noop):5.2f} s wall, "
          f"{median(c.seconds for _, c, _ in noop):5.2f} s in {count} call{'' if count == 1 else 's'} to the host "
          f"({', '.join(f'{k} {v}' for k, v in sorted(calls.items()))})")
    calls = changed[0][1].calls
    print(f"code-only deploy:  {median(w for w, _, _ in changed):5.2f} s wall, "
          f"{median(c.seconds for _, c, _ in changed):5.2f} s in {sum(calls.values())} calls to the host; "
          f"cutover step {median(s['cutover'] for _, _, s in changed):5.2f} s, live after "
          f"{median(s['to live'] for _, _, s in changed):4.2f} s of it")
    slowest = sorted(((k, v) for k, v in changed[0][2].items() if k != "to live"), key=lambda item: -item[1])[:4]
    print("  slowest steps of a code-only deploy: " + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in slowest))
    for seconds, what in sorted(changed[0][1].each, reverse=True)[:options.slowest]:
        print(f"  {seconds:5.2f} s  {what[:150]}")
    if options.in_order:
        print("every call of the first code-only deploy, in order:")
        for seconds, what in changed[0][1].each:
            print(f"  {seconds:5.2f} s  {' '.join(what.split())[:110]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
