"""Apps nobody shaped for the kit, deployed as their users would: the `modelhost` command in the
app's own checkout, `modelhost init`, the lines the README's "Deploy your own app" says a user adds,
then `modelhost deploy`, which must work the first time. The apps are in tests/apps/:

    notes     an app factory in a package, SQLite in Flask's instance folder, an init-db command
    iris      one app.py, a pickled scikit-learn model (not in git), unpinned requirements.txt, a Procfile
    lexicon   its own model/ folder in git, pyproject.toml dependencies, no health route
    wordtally a src layout (src/wordtally/, `pip install -e .` in its README), SQLite beside its code

For each, on this machine and on the systemd test host: data written through the app survives a
redeploy, a rollback and enough deploys for prune to remove releases. Also: a health path that
answers 404 fails in seconds, a failing release command leaves the old release serving, `run`
passes exit codes through and works after a first deploy that never became ready.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from tests import hosts
from tests.servers import free_port, git, needs_nginx

pytestmark = [needs_nginx, pytest.mark.slow]

SAMPLES = Path(__file__).parent / "apps"
MODELHOST = Path(sys.executable).parent / "modelhost"


@dataclass
class Http:
    """The deployed site, as clients reach it."""
    port: int
    host: str = "localhost"
    address: str = "127.0.0.1"

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
        connection = http.client.HTTPConnection(self.address, self.port, timeout=30)
        try:
            connection.request(method, path, body=json.dumps(body) if body is not None else None,
                               headers={"Host": self.host, "Content-Type": "application/json"})
            response = connection.getresponse()
            text = response.read().decode()
            return response.status, json.loads(text) if "json" in response.getheader("Content-Type", "") else text
        finally:
            connection.close()


@dataclass
class Sample:
    """One app of tests/apps: the lines a user adds to what init wrote, how to write through it and
    how to see that the writes are still there."""
    name: str
    hand: dict[str, list[str]]  # section -> lines, as the README says
    write: Callable[[Http, str], None]
    holds: Callable[[Http, str], bool]
    prepare: Callable[[Path], None] = lambda checkout: None
    guessed: list[str] = field(default_factory=list)  # what init must have found
    instance: str = "instance"  # Flask's instance folder in a release
    database: str = ""  # a database file the app writes beside its code, kept in the data directory


def notes_write(site: Http, marker: str) -> None:
    assert site.call("POST", "/api/notes", {"text": marker})[0] == 201


def notes_hold(site: Http, marker: str) -> bool:
    status, notes = site.call("GET", "/api/notes")
    return status == 200 and marker in [n["text"] for n in notes]


def iris_train(checkout: Path) -> None:
    """The model is made by train.py and is not in git (.gitignore), as the app's README says."""
    subprocess.run([sys.executable, "train.py"], cwd=checkout, check=True, capture_output=True, timeout=300)


def iris_write(site: Http, marker: str) -> None:
    status, answer = site.call("POST", "/predict", {"features": [5.1, 3.5, 1.4, 0.2]})
    assert status == 200 and answer["class"] == "setosa", answer
    assert site.call("POST", "/feedback", {"features": [5.1, 3.5, 1.4, 0.2], "label": "setosa"})[0] == 201


def iris_hold(site: Http, marker: str) -> bool:
    status, answer = site.call("GET", "/feedback")
    return status == 200 and answer["count"] >= 1


def lexicon_write(site: Http, marker: str) -> None:
    assert site.call("POST", "/score", {"text": f"a good day {marker}"})[0] == 200


def lexicon_hold(site: Http, marker: str) -> bool:
    status, answer = site.call("GET", "/scores")
    return status == 200 and marker in json.dumps(answer)


def wordtally_write(site: Http, marker: str) -> None:
    assert site.call("POST", "/api/texts", {"text": f"the {marker} and the {marker}"}) == (
        201, {"id": 1, "top": [[marker, 2]]})


def wordtally_hold(site: Http, marker: str) -> bool:
    status, answer = site.call("GET", "/api/texts")
    return status == 200 and answer["words"].get(marker) == 2


SAMPLE_APPS = {
    "notes": Sample("notes", {"deploy": ['release_command = "flask --app notes init-db"']}, notes_write, notes_hold,
                    guessed=['wsgi = "notes:create_app()"', 'health_path = "/healthz"', 'static_dir = "notes/static"',
                             '# release_command = "flask --app notes init-db"']),
    "iris": Sample("iris", {"app": ['shared_paths = ["uploads"]']}, iris_write, iris_hold, iris_train,
                   guessed=['wsgi = "app:app"', 'path = "model.pkl"', '# shared_paths = ["uploads"]']),
    "lexicon": Sample("lexicon", {}, lexicon_write, lexicon_hold, guessed=['wsgi = "service:create_app()"']),
    "wordtally": Sample("wordtally", {}, wordtally_write, wordtally_hold, instance="src/instance",
                        database="wordtally.db",
                        guessed=['wsgi = "wordtally:create_app()"', 'pythonpath = ["src"]',
                                 'shared_files = ["wordtally.db"]', 'health_path = "/healthz"']),
}


def modelhost(checkout: Path, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    """The `modelhost` command in the app's checkout, without the test shell's FLASK_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASK_")}
    return subprocess.run([str(MODELHOST), *args], cwd=checkout, capture_output=True, text=True, timeout=timeout,
                          env=env)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def add_lines(text: str, lines: dict[str, list[str]]) -> str:
    """deploy.toml's text with lines set in their sections: a line replaces one setting the same key
    (as a user edits what init wrote), else goes at the top of its section, added if missing."""
    for section, added in lines.items():
        for line in added:
            key = line.split("=")[0].strip()
            setting = re.compile(rf"^{key} = .*$", re.M)
            header = f"[{section}]\n"
            if setting.search(text):
                text = setting.sub(lambda _: line, text, count=1)
            elif header in text:
                text = text.replace(header, header + line + "\n", 1)
            else:
                text += f"\n{header}{line}\n"
    return text


def commit_all(checkout: Path, message: str) -> None:
    git(checkout, "add", "-A")
    git(checkout, "commit", "-qm", message)


def new_checkout(sample: Sample, base: Path) -> Path:
    """The sample app as its author keeps it: a git repository of its own."""
    checkout = base / sample.name
    shutil.copytree(SAMPLES / sample.name, checkout)
    git(checkout, "init", "-q")
    git(checkout, "config", "user.name", "test")
    git(checkout, "config", "user.email", "test@example.com")
    commit_all(checkout, "the app")
    sample.prepare(checkout)
    return checkout


def initialised(sample: Sample, checkout: Path, lines: dict[str, list[str]]) -> str:
    """modelhost init, then the lines a user adds by hand; committed. Returns what init printed."""
    printed = ok(modelhost(checkout, "init"))
    written = (checkout / "deploy.toml").read_text()
    for guess in sample.guessed:
        assert guess in written, f"init did not write {guess!r}:\n{written}"
    (checkout / "deploy.toml").write_text(add_lines(written, lines))
    commit_all(checkout, "deploy.toml")
    return printed


def change(checkout: Path, n: int) -> None:
    with open(checkout / "README.md", "a") as readme:
        readme.write(f"\nChange {n}.\n")
    commit_all(checkout, f"change {n}")


def live_release(checkout: Path) -> str:
    return next(line for line in ok(modelhost(checkout, "releases")).splitlines() if "(live)" in line)


def release_dirs(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if not p.name.startswith("."))


def persists_through_redeploy_rollback_and_prune(sample: Sample, checkout: Path, site: Http, task: Callable,
                                                 releases: Callable[[], list[str]]) -> None:
    """The sample's writes survive a redeploy, a rollback and deploys until prune removes releases."""
    marker = f"kept-{sample.name}"
    sample.write(site, marker)
    assert sample.holds(site, marker)
    change(checkout, 1)
    ok(task("deploy"))
    assert sample.holds(site, marker), "lost by a redeploy"
    ok(task("rollback"))
    assert sample.holds(site, marker), "lost by a rollback"
    first = releases()[0]
    for n in (2, 3):
        change(checkout, n)
        ok(task("deploy"))
    assert first not in releases(), f"prune kept {first} ([deploy] keep_releases = 2)"
    assert sample.holds(site, marker), "lost by prune"


# ---- this machine ---------------------------------------------------------------------------

@pytest.fixture
def local(tmp_path):
    """A free port and a root for one app on this machine; whatever was deployed there is stopped."""
    started = []
    yield tmp_path, free_port(), started
    for checkout in started:
        modelhost(checkout, "stop")


def local_lines(sample: Sample, root: Path, port: int) -> dict[str, list[str]]:
    return {**sample.hand, "deploy": [*sample.hand.get("deploy", []), "keep_releases = 2"],
            "local": [f'root = "{root}"', f"port = {port}"]}


@pytest.mark.parametrize("name", SAMPLE_APPS)
def test_an_app_deploys_the_first_time_from_init_and_keeps_its_data_on_this_machine(local, name):
    base, port, started = local
    sample = SAMPLE_APPS[name]
    checkout = new_checkout(sample, base)
    print(initialised(sample, checkout, local_lines(sample, base / "root", port)))
    started.append(checkout)
    began = time.monotonic()
    out = ok(modelhost(checkout, "deploy"))
    print(f"{name}: first deploy on this machine in {time.monotonic() - began:.1f} s\n{out}")
    assert f"open http://127.0.0.1:{port}/" in out
    releases = base / "root" / name / "releases"
    persists_through_redeploy_rollback_and_prune(sample, checkout, Http(port), lambda *a: modelhost(checkout, *a),
                                                 lambda: release_dirs(releases))
    data = base / "root" / name / "data"
    assert (data / sample.instance).is_dir()
    assert all((releases / r / sample.instance).is_symlink() for r in release_dirs(releases))
    if sample.database:
        assert (data / sample.database).is_file()
        assert all((releases / r / sample.database).is_symlink() for r in release_dirs(releases))


def test_release_commands_health_paths_and_run_fail_safely_and_say_why(local):
    base, port, started = local
    sample = SAMPLE_APPS["lexicon"]
    checkout = new_checkout(sample, base)
    initialised(sample, checkout, local_lines(sample, base / "root", port))
    started.append(checkout)
    ok(modelhost(checkout, "deploy"))
    site = Http(port)
    sample.write(site, "before")
    live = live_release(checkout)

    # run: the live release, as the app, with DATA_DIR; the command's exit status is the task's
    result = modelhost(checkout, "run", 'echo "data in $DATA_DIR"; pwd; exit 7')
    assert result.returncode == 7, result.stderr
    assert f"data in {base / 'root' / 'lexicon' / 'data'}" in result.stdout
    assert "/lexicon/releases/" in result.stdout and "running in " in result.stderr
    assert ok(modelhost(checkout, "run", "python -c 'import numpy, flask; print(numpy.__version__)'")).strip()

    # a release command that fails: its output, and the old release serves on
    settings = checkout / "deploy.toml"
    settings.write_text(add_lines(settings.read_text(), {"deploy": [
        "release_command = \"python -c 'import sys; print(\\\"migrating...\\\"); sys.exit(4)'\""]}))
    commit_all(checkout, "a migration that fails")
    result = modelhost(checkout, "deploy")
    assert result.returncode == 1 and "release command" in result.stderr and "(exit 4)" in result.stderr
    assert "migrating..." in result.stderr and "what was serving still is" in result.stderr
    assert sample.holds(site, "before") and live_release(checkout) == live

    # a health path the app does not have: the deploy fails at once, not after ready_timeout
    settings.write_text(add_lines(re.sub(r"release_command = .*\n", "", settings.read_text()), {"deploy": [
        'health_path = "/no-such-route"', "ready_timeout = 600"]}))
    commit_all(checkout, "a health path that is not there")
    began = time.monotonic()
    result = modelhost(checkout, "deploy")
    took = time.monotonic() - began
    assert result.returncode == 1 and "answers GET /no-such-route with 404" in result.stderr, result.stderr
    assert took < 300, f"a 404 health path took {took:.0f} s to fail"
    assert sample.holds(site, "before") and live_release(checkout) == live


def test_run_works_after_a_first_deploy_that_never_became_ready(local):
    """notes answers /healthz with 503 until its database exists: without a release command the first
    deploy fails, `run` makes the database in that release, and the next deploy goes live."""
    base, port, started = local
    sample = SAMPLE_APPS["notes"]
    checkout = new_checkout(sample, base)
    initialised(sample, checkout, {"deploy": ["ready_timeout = 10"], "local": [f'root = "{base / "root"}"',
                                                                              f"port = {port}"]})
    started.append(checkout)
    result = modelhost(checkout, "deploy")
    assert result.returncode == 1 and "did not answer GET /healthz with 200 within 10 s" in result.stderr
    assert "Initialized the database." in ok(modelhost(checkout, "run", "flask --app notes init-db"))
    ok(modelhost(checkout, "deploy"))
    notes_write(Http(port), "after init-db")
    assert notes_hold(Http(port), "after init-db")


# ---- the systemd test host ---------------------------------------------------------------------

MISSING = hosts.missing_requirements() or (None if os.geteuid() == 0 else "needs root (debootstrap, unshare)")


@pytest.fixture(scope="module")
def systemd_host(tmp_path_factory):
    """A systemd test host of this module's own, so the session's shared hosts stay fresh for
    test_remote.py's first provision."""
    workdir = tmp_path_factory.mktemp("own-apps-host")
    host = hosts.start_host("systemd", None, workdir, hosts.make_client_key(workdir))
    try:
        yield host
    finally:
        host.stop()
        assert not host.processes(), f"{host.name} left processes"


@pytest.mark.skipif(MISSING is not None, reason=f"test hosts: {MISSING}")
@pytest.mark.parametrize("name", SAMPLE_APPS)
def test_an_app_deploys_the_first_time_from_init_and_keeps_its_data_on_a_host(systemd_host, tmp_path, name):
    host = systemd_host
    sample = SAMPLE_APPS[name]
    checkout = new_checkout(sample, tmp_path)
    domain = f"{name}.test"
    initialised(sample, checkout, {**sample.hand, "deploy": [*sample.hand.get("deploy", []), "keep_releases = 2"],
                                   "nginx": [f'server_names = ["{domain}"]', f'address = "{host.address}"'],
                                   "firewall": ["enabled = false"]})  # the host shares this machine's network
    known = tmp_path / "known_hosts"
    known.write_text(host.known_hosts_line() + "\n")
    config = tmp_path / "ssh_config"
    config.write_text(f"Host {host.address}\n  IdentityFile {host.key}\n  IdentitiesOnly yes\n"
                      f"  UserKnownHostsFile {known}\n  GlobalKnownHostsFile /dev/null\n")

    def task(*args: str) -> subprocess.CompletedProcess:
        return modelhost(checkout, "-S", str(config), "-H", f"root@{host.address}", *args)

    began = time.monotonic()
    out = ok(task("provision", "deploy"))
    print(f"{name}: provision and first deploy on the systemd host in {time.monotonic() - began:.1f} s\n{out}")
    assert f"open http://{domain}/" in out
    site = Http(80, host=domain, address=host.address)

    def releases() -> list[str]:
        return sorted(host.ssh(f"ls /srv/{name}/releases").stdout.split())

    persists_through_redeploy_rollback_and_prune(sample, checkout, site, task, releases)
    # The data directory is the app's own, 0750; the releases are root's and read-only to the app
    owner = host.ssh(f"stat -c '%U %a' /var/lib/{name} /srv/{name}/releases").stdout.split("\n")
    assert owner[:2] == [f"{name} 750", "root 755"], owner
    ok(task("stop"))
