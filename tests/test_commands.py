"""The commands a deploy runs, compared as whole argument lists (no target needed), and the executor's
file writes."""
from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

from invoke import Context

from deploy import commands
from deploy.layout import Directory, local_layout, system_layout
from deploy.settings import check_settings
from deploy.target import Target
from tests.servers import gunicorn

SETTINGS = check_settings({"local": {"root": "/home/pi/mh", "port": 8081}})
LOCAL = local_layout(SETTINGS, user="pi", group="pi", home=Path("/home/pi"))
SYSTEM = system_layout(SETTINGS)


def test_the_local_target_runs_its_own_supervisord_and_nginx_with_a_clean_environment():
    clean = ["env", "-i", "HOME=/home/pi", f"PATH={commands.CLEAN_PATH}", "LANG=C.UTF-8"]
    assert commands.supervisord_start(LOCAL) == [
        *clean, str(commands.TOOLS / "supervisord"), "-c", "/home/pi/mh/supervisor/supervisord.conf"]
    assert commands.supervisorctl(LOCAL, "start", "modelhost-green") == [
        str(commands.TOOLS / "supervisorctl"), "-c", "/home/pi/mh/supervisor/supervisord.conf", "start",
        "modelhost-green"]
    assert commands.nginx(LOCAL, "/usr/sbin/nginx", "-s", "reload") == [
        *clean, "/usr/sbin/nginx", "-p", "/home/pi/mh/nginx/", "-c", "/home/pi/mh/nginx/nginx.conf",
        "-e", "stderr", "-s", "reload"]
    # nginx itself is supervisord's program, started through it.
    assert commands.nginx_start(LOCAL, systemd=False) == [
        str(commands.TOOLS / "supervisorctl"), "-c", "/home/pi/mh/supervisor/supervisord.conf", "start", "nginx"]
    assert LOCAL.nginx_pid_file == Path("/home/pi/mh/run/nginx.pid")
    assert LOCAL.supervisord_pid_file == Path("/home/pi/mh/run/supervisord.pid")


def test_what_a_dead_daemon_left_is_found_and_stopped_by_its_session():
    assert commands.session(4242) == ["pgrep", "-s", "4242"]
    assert commands.signal_session(4242, "TERM") == ["pkill", "-TERM", "-s", "4242"]


def test_a_host_uses_its_system_services():
    assert commands.supervisorctl(SYSTEM, "status") == ["supervisorctl", "status"]
    assert commands.nginx(SYSTEM, "/usr/sbin/nginx", "-t") == ["/usr/sbin/nginx", "-t"]
    assert SYSTEM.nginx_pid_file == Path("/run/nginx.pid")


def test_a_hosts_services_are_driven_by_systemd_or_its_init_scripts():
    assert commands.service(True, "nginx", "is-enabled") == ["systemctl", "is-enabled", "nginx"]
    assert commands.service(False, "nginx", "is-active") == ["service", "nginx", "status"]
    assert commands.service(False, "supervisor", "start") == ["service", "supervisor", "start"]
    assert commands.service(False, "nginx", "enable")[:2] == ["sh", "-c"]


def test_the_programs_are_supervisors_or_systemd_units():
    units = system_layout(check_settings({"app": {"process_manager": "systemd"}}))
    assert commands.programs(SYSTEM, "start", "green") == ["supervisorctl", "start", "modelhost-green"]
    assert commands.programs(units, "stop", "blue", "green") == ["systemctl", "stop", "modelhost@blue",
                                                                 "modelhost@green"]
    assert commands.journal(units, "blue", 20, since="2026-11-22 03:00:00") == [
        "journalctl", "--no-pager", "--unit", "modelhost@blue", "--lines", "20", "--since", "2026-11-22 03:00:00"]
    # The local target always runs its own supervisord, whatever the setting says.
    local = local_layout(check_settings({"app": {"process_manager": "systemd"}}))
    assert commands.program(local, "blue") == "modelhost-blue"


def test_directories_are_made_and_given_their_owner_and_mode_only_when_they_differ(tmp_path):
    user = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    group = subprocess.run(["id", "-gn"], capture_output=True, text=True).stdout.strip()
    made, kept = tmp_path / "a" / "b", tmp_path / "kept"
    kept.mkdir(mode=0o777)
    kept.chmod(0o2777)  # the setgid bit goes too: a three-digit mode means none
    wanted = [Directory(made, user, group, "750"), Directory(kept, user, group, "700"), Directory(tmp_path / "c")]
    first = subprocess.run(commands.ensure_directories(wanted), capture_output=True, text=True, check=True).stdout
    assert first.splitlines() == [f"made {made}", f"set {made} {user}:{group} 750", f"set {kept} {user}:{group} 700",
                                  f"made {tmp_path / 'c'}"]
    assert oct(made.stat().st_mode & 0o7777) == "0o750" and oct(kept.stat().st_mode & 0o7777) == "0o700"
    again = subprocess.run(commands.ensure_directories(wanted), capture_output=True, text=True, check=True)
    assert again.stdout == ""


def test_missing_packages_are_the_ones_dpkg_does_not_have_installed():
    out = subprocess.run(commands.missing_packages(["bash", "no-such-package-here"]), capture_output=True,
                         text=True, check=True).stdout
    assert out.split() == ["no-such-package-here"]


def test_a_symlink_is_switched_by_renaming_a_new_one_over_it():
    assert commands.symlink("releases/20261122T000000-abc1234", Path("/srv/modelhost/green")) == [
        ["ln", "-sfn", "releases/20261122T000000-abc1234", "/srv/modelhost/.green.partial"],
        ["mv", "-Tf", "/srv/modelhost/.green.partial", "/srv/modelhost/green"]]


def test_the_probe_waits_for_readyz_then_asks_the_smoke_query(demo_model):
    with gunicorn(demo_model) as (base, _):
        port = int(base.rsplit(":", 1)[1])
        argv = commands.probe("python3", paths=["/readyz", "/api/v1/model", "/nope"], port=port, wait=5)
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
    answers = [json.loads(line) for line in out.splitlines()]
    assert [a["status"] for a in answers] == [200, 200, 404]
    assert json.loads(answers[1]["body"])["name"] == "demo"


def test_the_probe_reports_no_answer_when_nothing_listens(tmp_path):
    argv = commands.probe("python3", paths=["/readyz", "/api/v1/model"], socket=tmp_path / "none.sock", wait=0.5)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
    (answer,) = [json.loads(line) for line in out.splitlines()]  # the smoke query is not asked
    assert answer["status"] == 0 and "FileNotFoundError" in answer["error"]


def test_the_target_writes_a_file_with_its_mode_only_when_its_content_differs(tmp_path):
    target, path = Target(Context()), tmp_path / "secrets.env"
    assert target.read(path) is None
    assert target.write(path, "FLASK_SECRET_KEY=x\n", mode=0o600) is True
    assert path.read_text() == "FLASK_SECRET_KEY=x\n" and path.stat().st_mode & 0o777 == 0o600
    assert target.write(path, "FLASK_SECRET_KEY=x\n", mode=0o600) is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secrets.env"]  # nothing left beside it


def test_kept_paths_become_links_into_the_data_directory_and_nothing_there_is_replaced(tmp_path):
    data, old, new = tmp_path / "data", tmp_path / "old", tmp_path / "new"
    (old / "instance").mkdir(parents=True)  # the live release of an older kit: its data inside it
    (old / "instance" / "app.sqlite").write_text("the users' data")
    (new / "instance").mkdir(parents=True)  # what the new release ships there
    (new / "instance" / "app.sqlite").write_text("an empty database from git")
    (new / "uploads").mkdir()
    (new / "uploads" / ".keep").write_text("")

    def keep(release: Path, seed: Path | None = None) -> str:
        return subprocess.run(commands.keep_paths(release, data, ("instance", "uploads", "a/b"), None, seed),
                              check=True, capture_output=True, text=True).stdout

    assert keep(new, seed=old).split("\n")[:3] == ["made instance", "made uploads", "made a/b"]
    assert (data / "instance" / "app.sqlite").read_text() == "the users' data"  # the live release's, first
    assert (data / "uploads" / ".keep").exists() and (data / "a" / "b").is_dir()
    for path in ("instance", "uploads", "a/b"):
        assert (new / path).is_symlink() and (new / path).resolve() == data / path
    (data / "uploads" / "photo.jpg").write_text("written by the app")
    later = tmp_path / "later"
    (later / "uploads").mkdir(parents=True)
    (later / "uploads" / "photo.jpg").write_text("from git")
    assert keep(later) == ""  # nothing made: everything is there
    assert (data / "uploads" / "photo.jpg").read_text() == "written by the app" and (later / "uploads").is_symlink()


def test_a_kept_path_that_is_a_file_in_the_release_is_refused(tmp_path):
    (tmp_path / "release").mkdir()
    (tmp_path / "release" / "uploads").write_text("a file")
    result = subprocess.run(commands.keep_paths(tmp_path / "release", tmp_path / "data", ("uploads",), None),
                            capture_output=True, text=True)
    assert result.returncode == 1 and "uploads is a file in the release, not a directory" in result.stderr


def test_kept_files_become_links_into_the_data_directory_and_sqlite_writes_through_them(tmp_path):
    data, old, new = tmp_path / "data", tmp_path / "old", tmp_path / "new"
    old.mkdir()
    sqlite3.connect(old / "app.db").execute("CREATE TABLE users (name)").connection.commit()  # written in a release
    (new / "db").mkdir(parents=True)
    (new / "db" / "seed.sqlite").write_text("shipped by git")

    def keep(release: Path, seed: Path | None = None) -> str:
        return subprocess.run(commands.keep_files(release, data, ("app.db", "db/seed.sqlite", "var/new.db"), None,
                                                  seed), check=True, capture_output=True, text=True).stdout

    assert keep(new, seed=old).splitlines() == ["made app.db", "made db/seed.sqlite"]  # var/new.db: the app makes it
    for path in ("app.db", "db/seed.sqlite", "var/new.db"):
        assert (new / path).is_symlink() and (new / path).resolve() == data / path
    db = sqlite3.connect(new / "app.db")  # the live release's data, first
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("INSERT INTO users VALUES ('ada')")
    db.commit()
    assert (data / "app.db-wal").is_file() and not (new / "app.db-wal").exists()  # its journal beside the file
    db.close()
    with sqlite3.connect(new / "var" / "new.db") as made:  # made through a link to nothing yet
        made.execute("CREATE TABLE t (x)")
    assert (data / "var" / "new.db").is_file()
    later = tmp_path / "later"
    (later / "db").mkdir(parents=True)
    (later / "db" / "seed.sqlite").write_text("shipped by git, again")
    assert keep(later) == ""  # nothing copied: everything is there
    assert sqlite3.connect(later / "app.db").execute("SELECT name FROM users").fetchall() == [("ada",)]
    assert (data / "db" / "seed.sqlite").read_text() == "shipped by git"


def test_a_kept_file_that_is_a_directory_in_the_release_is_refused(tmp_path):
    (tmp_path / "release" / "app.db").mkdir(parents=True)
    result = subprocess.run(commands.keep_files(tmp_path / "release", tmp_path / "data", ("app.db",), None),
                            capture_output=True, text=True)
    assert result.returncode == 1 and "app.db is a directory in the release, not a file" in result.stderr


def test_the_releases_listing_reads_each_release_json_where_its_kit_put_it(tmp_path):
    (tmp_path / "new" / ".modelhost").mkdir(parents=True)
    (tmp_path / "new" / ".modelhost" / "release.json").write_text('{"id": "new"}')
    (tmp_path / "new" / "release.json").write_text('{"id": "the app\'s own file"}')
    (tmp_path / "old").mkdir()  # made before the kit had its own place
    (tmp_path / "old" / "release.json").write_text('{"id": "old"}')
    (tmp_path / ".partial").mkdir()
    out = subprocess.run(commands.cat_releases(tmp_path, ".modelhost"), check=True, capture_output=True,
                         text=True).stdout
    assert sorted(json.loads(line)["id"] for line in out.splitlines() if line) == ["new", "old"]
    assert subprocess.run(commands.cat_releases(tmp_path / "none", ".modelhost"), capture_output=True).returncode == 0


def test_supervisors_refusal_is_said_in_its_own_words():
    # supervisorctl update prints a Fault from reloadConfig as a traceback's summary, exit status 1
    output = ("error: <class 'xmlrpc.client.Fault'>, <Fault 92: \"CANT_REREAD: not a valid boolean value: 'maybe' in "
              "section 'program:by-hand' (file: '/etc/supervisor/conf.d/zz-by-hand.conf')\">: file: "
              "/usr/lib/python3/dist-packages/supervisor/xmlrpc.py line: 557\n")
    assert commands.supervisor_error(output) == ("CANT_REREAD: not a valid boolean value: 'maybe' in section "
                                                 "'program:by-hand' (file: '/etc/supervisor/conf.d/zz-by-hand.conf')")
    assert commands.supervisor_error("ERROR: CANT_REREAD: something\n") == "ERROR: CANT_REREAD: something"
