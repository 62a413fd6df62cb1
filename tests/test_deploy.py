"""`fab deploy` with no host, for real: nginx, supervisord and gunicorn on this machine, as this user,
under a temporary root on a free port, deploying a git checkout made from this one.

The tests run in order and share one target: first deploy, no-op, status, code change under load,
rollback under load, a release that never gets ready, a concurrent deploy, deploys cut short
mid-cutover under load, a dirty tree, stop.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.servers import (FAB, MIN_REQUESTS, REFERENCE_DEPLOY, ROOT, app_checkout, assert_gone, children, eventually,
                           commit_change, drill, fab, free_port, git, needs_nginx, ok, request, steady_load)

pytestmark = [needs_nginx, pytest.mark.slow]


@pytest.fixture(scope="module")
def site(tmp_path_factory, demo_model):
    """A git checkout of this app with a deploy.toml for a temporary root and a free port."""
    base = tmp_path_factory.mktemp("deploy")
    port = free_port()
    repo = app_checkout(base / "app", f"""
[model]
path = "{demo_model}"
env = "FLASK_MODEL_PATH"
[gunicorn]
workers = 2
graceful_timeout = 10
[nginx]
rate_limit = "off"
static_dir = "app/static"
[deploy]
ready_timeout = 20
keep_releases = 3
{REFERENCE_DEPLOY}[app.processes]
worker = "python -m app.worker"
[local]
root = "{base / 'host'}"
port = {port}
""")
    yield repo, port, base / "host"
    fab("stop", "--settings", str(repo / "deploy.toml"))


def deploy(site, *args: str) -> subprocess.CompletedProcess:
    return fab("deploy", "--settings", str(site[0] / "deploy.toml"), *args)


def livez(port: int) -> dict:
    status, _, body = request(port, "/livez")
    assert status == 200
    return json.loads(body)


def test_first_deploy_serves_the_ui_the_api_and_readyz_through_nginx(site):
    repo, port, _ = site
    out = ok(deploy(site))
    assert f"open http://127.0.0.1:{port}/   (health: http://127.0.0.1:{port}/readyz)" in out
    for step in ("prerequisites", "directories", "secrets", "model", "python", "release", "cutover", "verify"):
        assert f"  {step}" in out
    status, _, page = request(port, "/")
    assert status == 200 and b"<form" in page
    status, _, body = request(port, "/api/v1/similar?word=fire&topn=3")
    assert status == 200 and len(json.loads(body)["results"]) == 3
    status, _, body = request(port, "/readyz")
    assert status == 200 and json.loads(body)["status"] == "ready"


def test_a_second_deploy_sees_in_one_look_that_it_has_nothing_to_do(site):
    out = ok(deploy(site))
    steps = dict(re.findall(r"^  (\w+) +(changed|unchanged) ", out, re.M))
    assert steps == {"unchanged": "unchanged"}, out
    assert re.search(r"unchanged +unchanged .*-\w+ runs on blue \(pid \d+\) and answers 200; the code, settings, "
                     r"model and secrets of its deploy, and its \d+ config files as it left them", out), out
    assert " 0 of 1 steps changed something" in out
    for record in ("deployed.json", "deployed.sha256"):  # the env file's sum and the secrets' digest
        assert (site[2] / "modelhost" / record).stat().st_mode & 0o777 == 0o600


def test_a_deploy_after_a_config_file_changed_by_hand_goes_the_whole_way_and_puts_it_back(site):
    site_file = site[2] / "nginx/sites/localhost.conf"
    before = site_file.read_text()
    site_file.write_text(before + "# by hand\n")
    out = ok(deploy(site))
    steps = dict(re.findall(r"^  (\w+) +(changed|unchanged) ", out, re.M))
    assert len(steps) == 10 and steps["cutover"] == "changed" and site_file.read_text() == before, out
    assert "unchanged" not in steps and steps["release"] == "unchanged", out


def test_status_shows_the_live_processes(site):
    out = ok(fab("status", "--settings", str(site[0] / "deploy.toml")))
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    live = lines["modelhost-blue"]
    assert "RUNNING" in live and "(live)" in live
    pid = int(live.split("pid ")[1].split(",")[0])
    assert Path(f"/proc/{pid}").exists() and len(children(pid)) == 2  # the master and its 2 workers
    assert "STOPPED" in lines["modelhost-green"]
    assert "2 workers" in lines["release"] and "MB + 4 threads x 4 MB, estimated" in lines["release"]
    assert lines["ready"].split()[1] == "200" and "/readyz through nginx: 200" in lines["nginx"]
    supervisord = int(lines["supervisord"].split("pid ")[1])
    assert Path(f"/proc/{supervisord}").exists()
    # What the live workers use, read now and after the deploy; the machine's own facts.
    assert re.search(r"memory +a worker up to \d+ MB of its own with 4 threads, the master \d+ MB", lines["memory"])
    assert "cores" in lines["host"] and "RAM" in lines["host"]


def test_logs_show_the_live_programs_log_and_nginxs(site):
    repo, _, host = site
    out = ok(fab("logs", "--settings", str(repo / "deploy.toml"), "--lines", "200"))
    assert out.startswith(f"==> {host}/modelhost/log/blue.log <==")
    # Requests are logged once, by nginx (buffered: within 5 s); gunicorn keeps no access log.
    assert "Booting worker" in out and "GET /" not in out
    nginx = eventually(lambda: '"GET /readyz HTTP/1.1" 200' in ok(fab(
        "logs", "--settings", str(repo / "deploy.toml"), "--what", "nginx", "--lines", "3")))
    out = ok(fab("logs", "--settings", str(repo / "deploy.toml"), "--what", "nginx", "--lines", "3"))
    assert nginx and f"==> {host}/log/nginx-access.log <==" in out and '"GET /readyz HTTP/1.1" 200' in out


def test_a_code_change_goes_live_without_a_failed_request(site):
    repo, port, _ = site
    commit_change(repo, "app/health.py", 'return jsonify({"status": "ok"})',
                  'return jsonify({"status": "ok", "build": "two"})', "livez says which build")
    with steady_load(port) as counts:
        out = ok(deploy(site))
    assert "live on green" in out and "on blue stopped" in out
    assert re.search(r"python +unchanged", out)  # a code-only deploy skips pip
    print(f"redeploy under load: {dict(counts)}")
    assert sum(counts.values()) >= MIN_REQUESTS and set(counts) == {200}, counts
    assert livez(port) == {"status": "ok", "build": "two"}
    # The new release was sized by what the first one's workers were measured to use.
    lines = {line.split()[0]: line for line in ok(fab("status", "--settings", str(repo / "deploy.toml"))).splitlines()}
    assert re.search(r"/ \d+ MB per worker \(\d+ MB measured\)", lines["release"]), lines["release"]


def test_rollback_goes_back_to_the_previous_release_without_a_failed_request(site):
    repo, port, _ = site
    with steady_load(port) as counts:
        ok(fab("rollback", "--settings", str(repo / "deploy.toml")))
    print(f"rollback under load: {dict(counts)}")
    assert sum(counts.values()) >= MIN_REQUESTS and set(counts) == {200}, counts
    assert livez(port) == {"status": "ok"}
    out = ok(fab("releases", "--settings", str(repo / "deploy.toml")))
    newest, older = out.splitlines()[1:3]
    assert newest.rstrip().endswith("green") and older.rstrip().endswith("blue (live)")


def submit_job(port: int, lines: list[str]) -> tuple[int, dict, dict]:
    """POST /api/v1/jobs with a file of query words: (status, headers, answer)."""
    body = ("--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"q.txt\"\r\n\r\n"
            + "\n".join(lines) + "\r\n--x--\r\n").encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", "/api/v1/jobs", body=body, headers={
            "Host": "localhost", "Content-Type": "multipart/form-data; boundary=x"})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read())
    finally:
        connection.close()


def test_a_release_that_never_gets_ready_is_stopped_and_the_old_one_keeps_serving(site):
    repo, port, _ = site
    commit_change(repo, "app/health.py", '    model_state = state()\n',
                  '    model_state = state()\n    return jsonify({"status": "not ready", "reason": "broken"}), 503\n',
                  "a broken readiness check")
    result = deploy(site)
    assert result.returncode == 1
    assert "modelhost-green did not answer GET /readyz with 200 within 20 s" in result.stderr
    assert "broken" in result.stderr  # its last answer
    assert "what was serving still is" in result.stderr and "last lines of" in result.stderr
    assert request(port, "/readyz")[0] == 200 and livez(port) == {"status": "ok"}
    status = ok(fab("status", "--settings", str(repo / "deploy.toml")))
    assert "STOPPED" in next(line for line in status.splitlines() if "modelhost-green" in line)
    git(repo, "revert", "--no-edit", "HEAD")


def deploy_beside_a_broken_file(site, kept: str, broken: str, text: str) -> tuple[subprocess.CompletedProcess, str]:
    """Deploy a code change while a file someone put there by hand breaks a config directory;
    returns the result and the kept file's content before (paths are under the target's root)."""
    repo, _, host = site
    before = (host / kept).read_text()
    (host / broken).write_text(text)
    commit_change(repo, "app/health.py", '"build": "two"', '"build": "refused"', "a build that is refused")
    try:
        return deploy(site), before
    finally:
        (host / broken).unlink()
        git(repo, "revert", "--no-edit", "HEAD")


def test_a_config_nginx_refuses_never_reaches_it_and_the_old_release_keeps_serving(site):
    result, before = deploy_beside_a_broken_file(site, "nginx/sites/localhost.conf", "nginx/sites/zz-by-hand.conf",
                                                 "server { listen maybe; }\n")
    assert result.returncode == 1
    assert "nginx -t refused the new configuration" in result.stderr and "zz-by-hand.conf" in result.stderr
    assert "was not activated (green is stopped)" in result.stderr and "on blue still serves" in result.stderr
    assert (site[2] / "nginx/sites/localhost.conf").read_text() == before  # the old file is back
    assert livez(site[1]) == {"status": "ok"}


def test_program_files_supervisor_refuses_are_put_back_and_the_old_release_keeps_serving(site):
    result, before = deploy_beside_a_broken_file(site, "supervisor/conf.d/modelhost.conf",
                                                 "supervisor/conf.d/zz-by-hand.conf",
                                                 "[program:by-hand]\ncommand=/bin/true\nautostart=maybe\n")
    assert result.returncode == 1
    assert "supervisor refused the program files in" in result.stderr and "by-hand" in result.stderr
    assert "CANT_REREAD" in result.stderr and "'program:by-hand'" in result.stderr  # supervisor's words,
    assert "xmlrpc.py line" not in result.stderr  # not a traceback's summary
    assert (site[2] / "supervisor/conf.d/modelhost.conf").read_text() == before  # the old file is back
    assert livez(site[1]) == {"status": "ok"}


def test_a_second_deploy_while_one_runs_is_refused_naming_the_holder(site):
    repo, port, host = site
    commit_change(repo, "app/health.py", '"build": "two"', '"build": "three"', "build three")
    first = subprocess.Popen([str(FAB), "deploy", "--settings", str(repo / "deploy.toml")], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lock = host / "modelhost" / "deploy.lock" / "holder"
        deadline = time.monotonic() + 60
        while not lock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        second = deploy(site)
        assert second.returncode == 1
        assert "another deploy is running on this machine: deploy by " in second.stderr
        assert f"(pid {first.pid})" in second.stderr and "rm -r " in second.stderr
    finally:
        out, err = first.communicate(timeout=300)
    assert first.returncode == 0, out + err
    assert livez(port) == {"status": "ok", "build": "three"}


def edit_without_committing(repo: Path) -> None:
    (repo / "app" / "health.py").write_text((repo / "app" / "health.py").read_text() + "\n# local edit\n")


def cut_short(site, sig: int, switched) -> tuple[int, str]:
    """A deploy whose process group gets sig once switched() (a terminal's Ctrl-C: SIGINT; the
    controller dying: SIGKILL); returns its exit status and output."""
    repo = site[0]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FLASK_")}
    deploying = subprocess.Popen([str(FAB), "deploy", "--settings", str(repo / "deploy.toml")], cwd=ROOT,
                                 env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 start_new_session=True)
    try:
        assert eventually(lambda: deploying.poll() is None and switched() or deploying.poll() is not None, 300,
                          every=0.005)
        assert deploying.poll() is None, "the deploy ended before it could be cut short:\n" + deploying.stdout.read()
        os.killpg(deploying.pid, sig)
        return deploying.wait(timeout=120), deploying.stdout.read()
    finally:
        if deploying.poll() is None:
            os.killpg(deploying.pid, signal.SIGKILL)


def test_a_deploy_cut_short_mid_cutover_never_fails_a_request(site):
    """Ctrl-C (SIGINT to the deploy's process group) once nginx has the new color's file: the deploy
    stops and puts nginx back, or (invoke passes a Ctrl-C on to the command it waits on, which may
    shrug it off) goes through. The controller killed once nginx serves the new color (nothing put
    back, current not moved): the next deploy points nginx at the live color again before it stops
    the other one. No request fails, and nginx serves the color current names."""
    repo, port, host = site
    current = host / "modelhost" / "current"
    site_file = next((host / "nginx" / "sites").glob("*.conf"))

    def serves_current() -> bool:
        live = os.readlink(current)
        other = next(c for c in ("blue", "green") if c != live)
        return f"{live}.sock" in site_file.read_text() and f"{other}.sock" not in site_file.read_text()

    commit_change(repo, "app/health.py", '"build": "three"', '"build": "cut"', "a build cut short")
    idle = next(c for c in ("blue", "green") if c != os.readlink(current))
    with steady_load(port) as counts:
        status, out = cut_short(site, signal.SIGINT, lambda: f"{idle}.sock" in site_file.read_text())
    print(f"Ctrl-C mid-cutover under load ({'stopped' if status else 'went through'}): {dict(counts)}")
    assert set(counts) == {200} and serves_current(), f"{counts}\n{out}"
    assert livez(port) == {"status": "ok", "build": "three" if status else "cut"}, out

    commit_change(repo, "app/health.py", '"build": "cut"', '"build": "killed"', "a build whose deploy is killed")
    live = os.readlink(current)
    with steady_load(port) as counts:
        status, out = cut_short(site, signal.SIGKILL, lambda: livez(port).get("build") == "killed")
        assert status == -signal.SIGKILL, out
        # Killed between nginx's switch and current's move (about the time of two checks) unless the
        # machine was too slow to see it in time: then the deploy had ended, which must fail nothing either.
        mid = os.readlink(current) == live
        git(repo, "revert", "--no-edit", "HEAD~2..HEAD")
        again = deploy(site, "--break-lock")  # build three again, while nginx may serve the idle color
    print(f"controller killed {'mid-cutover' if mid else 'after the cutover'}, then deploy --break-lock, under load: "
          f"{dict(counts)}")
    assert again.returncode == 0 and set(counts) == {200} and serves_current(), f"{counts}\n{again.stdout}"
    assert livez(port) == {"status": "ok", "build": "three"}


def test_a_dirty_checkout_is_refused_unless_asked(site):
    repo, port, _ = site
    edit_without_committing(repo)
    try:
        result = deploy(site)
        assert result.returncode == 1
        assert "has uncommitted changes (app/health.py): commit them, or deploy" in result.stderr
        assert "--allow-dirty" in result.stderr
        out = ok(deploy(site, "--allow-dirty"))
        assert "+dirty" in out
    finally:
        git(repo, "checkout", "-q", "app/health.py")


def supervisorctl(host: Path, *args: str) -> str:
    conf = host / "supervisor" / "supervisord.conf"
    return subprocess.run([str(FAB.parent / "supervisorctl"), "-c", str(conf), *args], capture_output=True,
                          text=True, timeout=60).stdout


def live_master(host: Path) -> int:
    return int(supervisorctl(host, "pid", f"modelhost-{os.readlink(host / 'modelhost' / 'current')}"))


def pid_in(path: Path) -> int:
    return int(path.read_text())


# fault -> (failed requests allowed, seconds to recovery allowed); what restarts it is in the test.
ALLOWED = {
    "kill -9 of a gunicorn worker": (4, 5),  # the requests it held (one per load thread); gunicorn forks another
    "kill -9 of the live gunicorn master": (None, 20),  # supervisord starts it again; the app loads again
    "kill -9 of nginx's master": (None, 5),  # supervisord starts it again, after killing the old workers
    "kill -9 of supervisord": (0, 0),  # what it ran serves on (under PID 1) ...
    "the next fab deploy, after supervisord died": (None, 30),  # ... until a deploy stops it and starts all again
}


def test_kill_9_drills_on_this_machine(site):
    """Each fault under steady load, every answer counted; the figures are printed for the notes."""
    repo, port, host = site
    faults = {
        "kill -9 of a gunicorn worker": lambda: os.kill(children(live_master(host))[0], signal.SIGKILL),
        "kill -9 of the live gunicorn master": lambda: os.kill(live_master(host), signal.SIGKILL),
        "kill -9 of nginx's master": lambda: os.kill(pid_in(host / "run" / "nginx.pid"), signal.SIGKILL),
        "kill -9 of supervisord": lambda: os.kill(pid_in(host / "run" / "supervisord.pid"), signal.SIGKILL),
    }
    drills = []
    for fault, inject in faults.items():
        drills.append(drill(fault, inject, port))
        print(drills[-1])
    status = ok(fab("status", "--settings", str(repo / "deploy.toml")))
    assert re.search(r"supervisord +not running: it died, and what it ran still runs", status), status
    edit_without_committing(repo)  # the live release is the dirty one: a deploy of it makes nothing new
    try:
        drills.append(drill("the next fab deploy, after supervisord died",
                            lambda: drills.append(ok(deploy(site, "--allow-dirty"))), port))
    finally:
        git(repo, "checkout", "-q", "app/health.py")
    out = drills.pop(-2)
    print(drills[-1])
    assert re.search(r"recover +changed .* supervisord \(\d+\) had died, leaving \d+ processes", out), out
    for result in drills:
        failed, seconds = ALLOWED[result.fault]
        assert failed is None or sum(result.failed.values()) <= failed, result
        assert result.recovered <= seconds, result
    # Nothing is orphaned: every gunicorn and nginx process descends from the new supervisord.
    supervisord = pid_in(host / "run" / "supervisord.pid")
    family = [supervisord, *children(supervisord)]
    for pid in list(family):
        family += children(pid)
    ours = subprocess.run(["pgrep", "-f", str(host)], capture_output=True, text=True).stdout.split()
    assert set(map(int, ours)) <= set(family), (ours, family)


def test_stop_leaves_no_process_behind(site):
    repo, _, host = site
    pids = []
    for pid_file in ("run/supervisord.pid", "run/nginx.pid"):
        pid = int((host / pid_file).read_text())
        pids += [pid, *children(pid)]
    for pid in list(pids):
        pids += children(pid)  # gunicorn's workers
    assert len(pids) >= 6  # supervisord, a gunicorn master and 2 workers, nginx and a worker
    out = ok(fab("stop", "--settings", str(repo / "deploy.toml")))
    assert out.startswith("stopped ")
    assert_gone(pids, "deployed")
    assert ok(fab("stop", "--settings", str(repo / "deploy.toml"))).strip() == "nothing was running"


def test_a_deploy_after_stop_starts_the_live_release_again_and_makes_nothing_new(site):
    repo, port, host = site
    before = ok(fab("releases", "--settings", str(repo / "deploy.toml")))
    assert len(before.splitlines()) == 4  # a header, then [deploy] keep_releases of the 6 made
    app_root = host / "modelhost"
    (model,) = os.listdir(app_root / "models")  # stored once, shared by every release
    (venv,) = os.listdir(app_root / "venvs")
    for release in (app_root / "releases").iterdir():
        assert os.readlink(release / ".modelhost" / "model") == f"../../../models/{model}"
        assert os.readlink(release / ".modelhost" / "venv") == f"../../../venvs/{venv}"
    edit_without_committing(repo)  # the same files as the live release (the dirty one) again
    try:
        out = ok(deploy(site, "--allow-dirty"))
    finally:
        git(repo, "checkout", "-q", "app/health.py")
    assert re.search(r"cutover +changed .* is live on \w+ \(started it\)", out), out
    assert re.search(r"release +unchanged", out)
    assert request(port, "/readyz")[0] == 200
    assert ok(fab("releases", "--settings", str(repo / "deploy.toml"))) == before
    ok(fab("stop", "--settings", str(repo / "deploy.toml")))


def test_a_job_submitted_before_a_deploy_completes_after_it(site):
    """The reference app's worker process runs in the live release: a job running when a deploy
    restarts it on the new release is finished there, every line once; the UI shows it. Last in the
    module: it starts the site again after `fab stop`, and leaves it stopped."""
    repo, port, host = site
    ok(deploy(site))
    words = ["fire", "water", "blaze", "zzqq", "computer", "tree"]
    lines = [words[n % len(words)] for n in range(100_000)]
    status, headers, job = submit_job(port, lines)
    assert status == 202 and headers["Location"] == f"/api/v1/jobs/{job['id']}", (status, job)
    eventually(lambda: json.loads(request(port, headers["Location"])[2])["status"] == "running", 30)
    commit_change(repo, "README.md", "# modelhost\n", "# modelhost (a release while a job runs)\n",
                  "a release while a job runs")
    out = ok(deploy(site))
    assert re.search(r"processes +changed .*restarted worker", out), out
    during = json.loads(request(port, headers["Location"])[2])
    finished = eventually(lambda: (lambda j: j if j["status"] == "done" else None)(
        json.loads(request(port, headers["Location"])[2])), 300)
    assert finished["progress"] == {"done": 100_000, "total": 100_000}, finished
    print(f"a 100,000-line job across a deploy: {during['progress']} done when the deploy ended")
    page = json.loads(request(port, headers["Location"] + "?offset=99990&limit=10")[2])["results"]
    assert [entry["line"] for entry in page] == list(range(99_991, 100_001))
    assert page[-1]["word"] == lines[-1] and ("results" in page[-1] or "error" in page[-1])
    status, _, html = request(port, f"/jobs/{job['id']}")
    assert status == 200 and b"done" in html.lower() and b"http-equiv=\"refresh\"" not in html
    log = (host / "modelhost" / "log" / "worker.log").read_text()
    # The old worker stopped at a checkpoint (TERM), the new one went on from there.
    assert f"job {job['id']}: stopping after line" in log and "queued again" in log, log[-3000:]
    assert re.search(rf"job {job['id']}: resumed at line \d+ of 100000", log), log[-3000:]
    git(repo, "revert", "--no-edit", "HEAD")
    ok(fab("stop", "--settings", str(repo / "deploy.toml")))
