"""Work beside the requests, with tests/apps/spool (a Procfile with a worker, a job meant for a
schedule): `modelhost init` reads the worker from the Procfile, the deploy runs it in the live
release and starts it again on the new one after each deploy without losing queued work, a worker
killed mid-job finishes the job after its restart, a process taken out of deploy.toml is stopped and
removed; scheduled runs never overlap, wait while a deploy holds its lock, and keep their output.

On this machine (supervisord of the target's own, the user's crontab) and on the systemd test host
(systemd units for the worker, a systemd timer firing every few seconds across a deploy).
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests import hosts
from tests.servers import eventually, free_port, needs_nginx
from tests.test_own_apps import Http, Sample, commit_all, initialised, modelhost, new_checkout, ok

pytestmark = [needs_nginx, pytest.mark.slow]

SPOOL = Sample("spool", {}, lambda site, marker: None, lambda site, marker: True,
               guessed=['worker = "python -m spool.worker"', 'wsgi = "spool:create_app()"'])


def submit(site: Http, steps: int) -> str:
    status, answer = site.call("POST", "/jobs", {"steps": steps})
    assert status == 202, answer
    return answer["id"]


def job(site: Http, job_id: str) -> dict:
    status, answer = site.call("GET", f"/jobs/{job_id}")
    assert status == 200, answer
    return answer


def done(site: Http, job_id: str, timeout: float = 60) -> dict:
    return eventually(lambda: (lambda j: j if j["state"] == "done" else None)(job(site, job_id)), timeout)


def ticks(data: Path) -> list[tuple[str, float, str, int]]:
    text = (data / "ticks.log").read_text() if (data / "ticks.log").exists() else ""
    return [(kind, float(at), release, int(pid)) for kind, at, release, pid in
            (line.split() for line in text.splitlines())]


def never_overlap(found: list) -> None:
    """Every start is followed by its own end before the next start."""
    kinds = [kind for kind, *_ in found]
    assert kinds == ["start", "end"] * (len(kinds) // 2) + ["start"] * (len(kinds) % 2), found
    for begin, end in zip(found[::2], found[1::2]):
        assert begin[3] == end[3], f"a run ended by another process: {begin} {end}"


# ---- this machine ---------------------------------------------------------------------------

@pytest.fixture
def spool_here(tmp_path):
    """The spool app's checkout, initialised for this machine; stopped, and its crontab lines gone, after."""
    port = free_port()
    root = tmp_path / "root"
    checkout = new_checkout(SPOOL, tmp_path)
    printed = initialised(SPOOL, checkout, {
        "local": [f'root = "{root}"', f"port = {port}"], "deploy": ["keep_releases = 3"],
        "app.env": ['TICK_SECONDS = "1"'],
        "app.schedule": ['tick = {schedule = "*/5 * * * *", command = "python -m spool.tick"}']})
    assert "found: the Procfile's worker: python -m spool.worker" in printed
    try:
        yield checkout, Http(port), root / "spool"
    finally:
        modelhost(checkout, "stop")
        current = subprocess.run(["crontab", "-l"], capture_output=True, text=True).stdout
        kept = "".join(line + "\n" for line in current.splitlines() if str(root) not in line)
        subprocess.run(["crontab", "-"], input=kept, text=True, check=True)


def crontab_line(root: Path) -> str:
    lines = [line for line in subprocess.run(["crontab", "-l"], capture_output=True, text=True).stdout.splitlines()
             if str(root) in line]
    assert len(lines) == 1, lines
    return lines[0]


def worker_pid(checkout: Path) -> int:
    line = next(line for line in ok(modelhost(checkout, "status")).splitlines() if "spool-worker" in line)
    found = re.search(r"RUNNING\s+pid (\d+)", line)
    assert found, line
    return int(found.group(1))


def test_a_worker_and_a_schedule_on_this_machine(spool_here):
    checkout, site, root = spool_here
    data = root / "data"
    out = ok(modelhost(checkout, "deploy"))
    assert re.search(r"processes +changed .*started worker", out), out
    assert re.search(r"schedule +changed .*tick \(\*/5 \* \* \* \*\) in your crontab", out), out
    first = done(site, submit(site, 1))
    live = first["release"]
    assert (root / "releases" / live).is_dir() and first["pid"] == worker_pid(checkout)

    # A deploy of a new revision: the worker finishes the job in hand, then starts again on the new
    # release; queued work waits for it and none is lost.
    queued = [submit(site, 16) for _ in range(5)]  # 8 s each: the deploy ends before the queue does
    (checkout / "README.md").write_text("changed\n")
    commit_all(checkout, "a change")
    out = ok(modelhost(checkout, "deploy"))
    assert re.search(r"processes +changed .*restarted worker", out), out
    results = [done(site, j, timeout=90) for j in queued]
    new = results[-1]["release"]
    assert new != live and (root / "releases" / new).is_dir(), results
    assert results[0]["release"] == live, "the job in hand was not finished by the old worker"
    assert all(r["state"] == "done" for r in results)
    status = ok(modelhost(checkout, "status"))
    assert re.search(rf"spool-worker +RUNNING +pid \d+, up \S+ +release {new}", status), status

    # kill -9 mid-job: supervisor starts it again, and the job is done by the new process.
    killed = worker_pid(checkout)
    job_id = submit(site, 16)  # 8 s: long enough to be killed mid-job
    eventually(lambda: job(site, job_id)["state"] == "work", 30)
    os.kill(killed, signal.SIGKILL)
    result = done(site, job_id, timeout=90)
    assert result["pid"] != killed
    assert "was interrupted; queued again" in ok(modelhost(checkout, "logs", "--what", "worker"))

    # The job, run as cron runs the line: one run at a time, held while a deploy holds its lock.
    line = crontab_line(root)
    command = line.split(" ", 5)[5]
    assert command.endswith(f"  # modelhost job: {root}") and "--job tick" in command
    run = lambda: subprocess.Popen(["sh", "-c", command], env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    a, b = run(), run()
    assert a.wait(30) == 0 and b.wait(30) == 0
    found = ticks(data)
    never_overlap(found)
    assert len(found) == 2, f"two runs at once: {found}"
    log = (root / "log" / "schedule" / "tick.log").read_text()
    assert "skipped: the run before is still going" in log and f"start in {root / 'releases' / new}" in log
    lock = root / "deploy.lock"
    lock.mkdir()
    held = run()
    time.sleep(2)
    assert held.poll() is None and len(ticks(data)) == 2, "a run started while a deploy held its lock"
    lock.rmdir()
    assert held.wait(30) == 0 and len(ticks(data)) == 4
    status = ok(modelhost(checkout, "status"))
    assert re.search(r"tick +\*/5 \* \* \* \* +last .*exit 0 after [\d.]+ s", status), status
    assert re.search(r"next \d{4}-\d\d-\d\d \d\d:\d[05]:00", status), status
    assert "tick in" in ok(modelhost(checkout, "logs", "--what", "tick"))

    # Taken out of deploy.toml: the worker stops and its program goes; the crontab line goes.
    settings = checkout / "deploy.toml"
    text = re.sub(r"\[app\.processes\][^\[]*", "", settings.read_text())
    settings.write_text(re.sub(r"\[app\.schedule\][^\[]*", "", text))
    commit_all(checkout, "no background work")
    out = ok(modelhost(checkout, "deploy"))
    assert re.search(r"processes +changed .*removed spool-worker", out), out
    assert re.search(r"schedule +changed", out), out
    assert not (root.parent / "supervisor" / "conf.d" / "spool-processes.conf").exists()
    assert str(root) not in subprocess.run(["crontab", "-l"], capture_output=True, text=True).stdout
    assert "spool-worker" not in ok(modelhost(checkout, "status"))


# ---- the test hosts: systemd units and a timer; supervisor and cron -----------------------------

MISSING = hosts.missing_requirements() or (None if os.geteuid() == 0 else "needs root (debootstrap, unshare)")
# Each flavor's way: the process manager, and a schedule as short as its scheduler allows.
FLAVORS = {"systemd": ("systemd", "*:*:0/5", 5), "service": ("supervisor", "* * * * *", 60)}


@pytest.fixture(scope="module")
def own_hosts(tmp_path_factory):
    """Hosts of this module's own, so the session's shared hosts stay fresh for test_remote.py."""
    workdir = tmp_path_factory.mktemp("background-hosts")
    key = hosts.make_client_key(workdir)
    started = {}
    try:
        for flavor in FLAVORS:
            started[flavor] = hosts.start_host(flavor, None, workdir, key)
        yield started
    finally:
        for host in started.values():
            host.stop()
            assert not host.processes(), f"{host.name} left processes"


class LockWatch(threading.Thread):
    """When a deploy's lock directory was seen on the host (polled every 50 ms)."""

    def __init__(self, lock: Path):
        super().__init__(daemon=True)
        self.lock, self.seen, self.stopping = lock, [], threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.05):
            if self.lock.exists():
                self.seen.append(time.time())

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.join()


@pytest.mark.skipif(MISSING is not None, reason=f"test hosts: {MISSING}")
@pytest.mark.parametrize("flavor", FLAVORS)
def test_a_worker_and_a_schedule_on_a_host(own_hosts, tmp_path, flavor):
    host = own_hosts[flavor]
    manager, schedule, period = FLAVORS[flavor]
    checkout = new_checkout(SPOOL, tmp_path)
    initialised(SPOOL, checkout, {
        "app": [f'process_manager = "{manager}"'], "deploy": ["keep_releases = 3"],
        "nginx": ['server_names = ["spool.test"]', f'address = "{host.address}"'],
        "firewall": ["enabled = false"],  # the host shares this machine's network (tests/test_firewall.py)
        "app.env": ['TICK_SECONDS = "1"'],
        "app.schedule": [f'tick = {{schedule = "{schedule}", command = "python -m spool.tick"}}']})
    known = tmp_path / "known_hosts"
    known.write_text(host.known_hosts_line() + "\n")
    config = tmp_path / "ssh_config"
    config.write_text(f"Host {host.address}\n  IdentityFile {host.key}\n  IdentitiesOnly yes\n"
                      f"  UserKnownHostsFile {known}\n  GlobalKnownHostsFile /dev/null\n")

    def task(*args: str) -> str:
        return ok(modelhost(checkout, "-S", str(config), "-H", f"root@{host.address}", *args))

    out = task("provision")
    if flavor == "service":
        assert re.search(r"packages .*installed .*cron", out), out
    out = task("deploy")
    assert re.search(r"processes +changed .*started worker", out), out
    where = "systemd timers" if flavor == "systemd" else "/etc/cron.d/spool"
    assert re.search(rf"schedule +changed .*tick \({re.escape(schedule)}\) in {re.escape(where)}", out), out
    site = Http(80, "spool.test", host.address)
    data = host.root / "var/lib/spool"
    live = done(site, submit(site, 1))["release"]
    if flavor == "systemd":
        unit = (host.root / "etc/systemd/system/spool-worker@.service").read_text()
        assert "User=spool" in unit and "ExecStart=/usr/bin/python3 /etc/spool/launch.py" in unit
        assert "OnCalendar=*-*-* *:*:0/5" in (host.root / "etc/systemd/system/spool-tick.timer").read_text()
    else:
        line = (host.root / "etc/cron.d/spool").read_text().splitlines()[-1]
        assert line == "* * * * * root /usr/bin/python3 /etc/spool/launch.py /etc/spool/launch.json --job tick"
    # The worker runs as the app's user; the job's output goes to its log.
    pid = int(re.search(r"spool-worker\S* +RUNNING +pid (\d+)", task("status")).group(1))
    assert host.ssh(f"ps -o user= -p {pid}").stdout.strip() == "spool"

    # A deploy of a new revision while jobs are queued and the schedule fires: the worker finishes the
    # job in hand and starts again on the new release; no run of the job starts while the lock is held.
    queued = [submit(site, 16) for _ in range(5)]
    (checkout / "README.md").write_text("changed\n")
    commit_all(checkout, "a change")
    with LockWatch(host.root / "srv/spool/deploy.lock") as watch:
        out = task("deploy")
    assert re.search(r"processes +changed .*restarted worker", out), out
    results = [done(site, j, timeout=120) for j in queued]
    new = results[-1]["release"]
    logs = host.ssh("tail -n 30 /var/log/spool/worker.log /var/log/supervisor/supervisord.log").stdout
    assert new != live and results[0]["release"] == live, f"{results}\n{out}\n{logs}"
    assert watch.seen, "the deploy's lock was never seen"
    # A run that looked a moment before the deploy made its lock goes on in the release it started in
    # (the deploy keeps it): 1 s covers the launcher's look, python's start and the poll.
    held = (watch.seen[0] + 1.0, watch.seen[-1] - 0.1)
    results = host.root / "var/log/spool/schedule/tick.json"
    # Runs go on after the deploy (two on the timer: a skipped catch-up must not stop the ones after).
    eventually(lambda: sum(r == new for kind, _, r, _ in ticks(data) if kind == "end") >= (2 if period < 60 else 1)
               and json.loads(results.read_text()).get("release") == new, period * 3 + 30)
    found = ticks(data)
    never_overlap(found)
    starts = [at for kind, at, _, _ in found if kind == "start"]
    assert not [at for at in starts if held[0] < at < held[1]], f"a run started while the deploy held its lock {held}"
    log = (host.root / "var/log/spool/schedule/tick.log").read_text()
    # A run due while the lock was held waited and ran after it; one due while a run went was skipped.
    assert "exit 0" in log and ("after waiting" in log or held[1] - held[0] < period), log
    # One start a period (periods as the schedule counts them): a run that waited for the deploy starts
    # late, in a period whose own due time came while it waited (and was skipped), so the run due next
    # may follow it closely.
    per_period = Counter(int(at // period) for at in starts)
    assert max(per_period.values()) == 1, f"more than one run a period: {found}\n{log}"
    status = task("status")
    assert re.search(r"tick +.* last .*exit 0 after [\d.]+ s, release", status), status
    assert "tick in" in task("logs", "--what", "tick")

    if flavor == "systemd":
        # A run longer than the period: the timer does not elapse while its service runs, and starts it
        # again at once when it ends; the launcher skips that catch-up as cron's lock skips its second
        # run. Runs every other period, none back to back, and every period again once it is short.
        slow, before = data / "tick-seconds", len(ticks(data))
        slow.write_text("6.5")
        eventually(lambda: [kind for kind, *_ in ticks(data)[before:]].count("end") >= 3, 60)
        slow.unlink()
        eventually(lambda: [kind for kind, *_ in ticks(data)[before:]].count("end") >= 6, 60)
        found = ticks(data)[before:]
        found = found[[kind for kind, *_ in found].index("start"):]  # from the first run begun since
        never_overlap(found)
        log = (host.root / "var/log/spool/schedule/tick.log").read_text()
        gaps = [round(b[1] - a[1], 1) for a, b in zip(found[1::2], found[2::2])]  # an end to the next start
        assert "skipped: came due while the run before went (systemd's catch-up)" in log, log
        assert min(gaps) > 1 and max(gaps) < period, f"{gaps}\n{found}\n{log}"

    # kill -9 mid-job: the process manager starts the worker again, which finishes the job.
    shown = int(re.search(r"spool-worker\S* +RUNNING +pid (\d+)", task("status")).group(1))  # the host's pid
    job_id = submit(site, 16)  # 8 s: long enough to be killed mid-job
    eventually(lambda: job(site, job_id)["state"] == "work", 30)
    (pid,) = [p for p in host.processes() if b"spool.worker" in Path(f"/proc/{p}/cmdline").read_bytes()]
    os.kill(pid, signal.SIGKILL)  # from this machine, which sees the host's processes by its own pids
    result = done(site, job_id, timeout=90)
    log = task("logs", "--what", "worker")  # its capped file with supervisor, the journal with systemd
    assert "was interrupted; queued again" in log and result["pid"] != shown, (result, log)

    # Taken out: the worker's unit or program and the job's timer or cron file go.
    settings = checkout / "deploy.toml"
    text = re.sub(r"\[app\.processes\][^\[]*", "", settings.read_text())
    settings.write_text(re.sub(r"\[app\.schedule\][^\[]*", "", text))
    commit_all(checkout, "no background work")
    out = task("deploy")
    assert re.search(r"processes +changed .*removed spool-worker", out), out
    leftovers = ["etc/systemd/system/spool-worker@.service", "etc/systemd/system/spool-tick.timer",
                 "etc/supervisor/conf.d/spool-processes.conf", "etc/cron.d/spool"]
    assert not [p for p in leftovers if (host.root / p).exists()]
    assert "spool-worker" not in host.ssh("ps -eo args").stdout
