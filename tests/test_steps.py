"""The deploy's steps against a fake target (tests/fake.py): every branch of the cutover, which
release a rollback picks, what prune keeps, the secrets merge and the lock, in milliseconds.
The real end-to-end runs are in test_deploy.py (this machine) and test_remote.py (Debian hosts)."""
from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest

from deploy import cutover, deployment, lock, parts, state
from deploy.context import DeployError
from deploy.render import App
from deploy.state import Pointers, Release
from deploy.workers import WorkerPlan
from tests.fake import fake_context

OLD, NEW = "20261130T120000-aaaaaaa", "20261201T120000-bbbbbbb"


def release(id: str, model: str = "abc123") -> Release:
    return Release(id=id, revision=id[-7:], identity=id, venv="venv1", model=model, model_version="v1",
                   workers=2, explanation="2 workers set in deploy.toml", created="2026-12-01T12:00:00Z",
                   kit_dir=".modelhost")


def app_of(ctx) -> App:
    return App(ctx.settings, ctx.layout, WorkerPlan(2, "2 workers set in deploy.toml"))


def live_on_blue(ctx, target, release_id: str = OLD) -> None:
    """The target as a deploy left it: release_id live on blue, blue running, nginx up."""
    root = ctx.layout.root
    target.links.update({root / "current": "blue", root / "blue": f"releases/{release_id}"})
    target.states["blue"] = "RUNNING"


@pytest.fixture
def fake():
    return fake_context({"deploy": {"ready_timeout": 5}})


def test_a_first_deploy_starts_blue_points_nginx_at_it_and_links_current(fake):
    ctx, target = fake
    target.nginx = False
    step = cutover.activate(ctx, release(NEW), app_of(ctx))
    assert step.changed and step.detail == f"{NEW} live on blue"
    assert target.links[ctx.layout.root / "current"] == "blue"
    assert target.links[ctx.layout.root / "blue"] == f"releases/{NEW}"
    assert target.states == {"blue": "RUNNING", "green": "STOPPED"}
    site = ctx.layout.nginx_sites / "localhost.conf"
    assert "unix:" + str(ctx.layout.socket("blue")) in target.files[site]
    # nginx -t before nginx starts (the local one is supervisord's program), and nginx only once blue answered
    started = target.index(r"supervisorctl .* start nginx$")
    assert target.nginx and target.index(r"^probe .*blue.sock") < target.index(r"nginx.* -t -q") < started


def test_a_new_release_goes_to_the_idle_color_and_the_old_one_stops_after_the_switch(fake):
    ctx, target = fake
    live_on_blue(ctx, target)
    target.files[ctx.layout.nginx_sites / "localhost.conf"] = "the old site\n"
    step = cutover.activate(ctx, release(NEW), app_of(ctx))
    assert step.detail == f"{NEW} live on green; {OLD} on blue stopped"
    assert target.links[ctx.layout.root / "current"] == "green"
    assert target.states == {"blue": "STOPPED", "green": "RUNNING"}
    started, reloaded = target.index(r"startProcess[\s\S]* modelhost-green"), target.index(r"nginx.* -s reload")
    switched, stopped = target.index(r"mv -Tf \S+/.current.partial"), target.index("stop modelhost-blue")
    assert started < reloaded < switched < stopped
    # supervisor updates only a stopped color's program (updating a running one restarts it):
    # green before it starts, blue once it has stopped
    assert [c.split()[-1] for c in target.ran(" update modelhost")] == ["modelhost-green", "modelhost-blue"]
    assert target.index("update modelhost-green") < started and target.index("update modelhost-blue") > stopped


def test_a_release_that_answers_and_then_exits_sends_nginx_back_before_the_old_color_stops(fake):
    # The start does not wait out supervisor's startsecs: the probe says ready, and the check that the
    # program stayed up (RUNNING) comes after nginx's switch, before the old color stops.
    ctx, target = fake
    live_on_blue(ctx, target)
    target.files.update(cutover.configs(ctx, app_of(ctx), "blue")["nginx"])  # as blue's deploy left them
    target.answer(r"supervisorctl .* status modelhost-green", "modelhost-green   BACKOFF   Exited too quickly\n", 3)
    with pytest.raises(DeployError, match=r"(?s)modelhost-green answered but did not stay up \(its manager says "
                                          r"BACKOFF\); last lines of .*green.log.*blue still serves"):
        cutover.activate(ctx, release(NEW), app_of(ctx))
    site = target.files[ctx.layout.nginx_sites / "localhost.conf"]
    assert "unix:" + str(ctx.layout.socket("blue")) in site and str(ctx.layout.socket("green")) not in site
    assert target.links[ctx.layout.root / "current"] == "blue" and target.states["blue"] == "RUNNING"
    assert len(target.ran(r"nginx.* -s reload")) == 2  # to green, and back to blue
    assert not target.ran("stop modelhost-blue")


def test_a_cutover_interrupted_after_nginx_switched_puts_nginx_back_and_stops_the_new_color(fake):
    """Ctrl-C while the new color is checked through nginx: what was serving serves again, then the
    interruption goes on."""
    ctx, target = fake
    live_on_blue(ctx, target)

    def interrupt(argv, command):
        raise KeyboardInterrupt

    target.respond(r'^probe \{"socket": ""', interrupt)  # asked through nginx
    with pytest.raises(KeyboardInterrupt):
        cutover.activate(ctx, release(NEW), app_of(ctx))
    site = target.files[ctx.layout.nginx_sites / "localhost.conf"]
    assert "unix:" + str(ctx.layout.socket("blue")) in site and str(ctx.layout.socket("green")) not in site
    assert target.states == {"blue": "RUNNING", "green": "STOPPED"}
    assert target.links[ctx.layout.root / "current"] == "blue"


def test_a_deploy_after_a_cutover_cut_off_puts_nginx_back_on_the_live_color_before_it_stops_the_other(fake):
    """A lost connection left nginx on green, which runs, while current still says blue: green is not
    stopped under nginx's feet."""
    ctx, target = fake
    live_on_blue(ctx, target)
    target.files.update(cutover.configs(ctx, app_of(ctx), "green")["nginx"])
    target.states["green"] = "RUNNING"
    cutover.activate(ctx, release(NEW), app_of(ctx))
    back, stopped = target.index(r"nginx.* -s reload"), target.index("stop modelhost-green")
    assert back < stopped < target.index(r"startProcess[\s\S]* modelhost-green")
    assert len(target.ran(r"nginx.* -s reload")) == 2  # back to blue, then to the new release on green
    assert target.links[ctx.layout.root / "current"] == "green" and target.states["green"] == "RUNNING"


def test_a_release_that_never_gets_ready_is_stopped_and_nginx_is_not_touched(fake):
    ctx, target = fake
    live_on_blue(ctx, target)
    target.ready["green"] = False
    site = ctx.layout.nginx_sites / "localhost.conf"
    target.files[site] = "the old site\n"
    with pytest.raises(DeployError) as error:
        cutover.activate(ctx, release(NEW), app_of(ctx))
    message = str(error.value)
    assert "modelhost-green did not answer GET /readyz with 200 within 5 s ([deploy] ready_timeout)" in message
    assert f"the release {NEW} was not activated; what was serving still is" in message
    assert "last lines of /home/pi/mh/modelhost/log/green.log" in message
    assert target.states == {"blue": "RUNNING", "green": "STOPPED"}
    assert target.links[ctx.layout.root / "current"] == "blue" and target.files[site] == "the old site\n"
    assert not target.ran(r"nginx.* -s reload") and ctx.steps[-1].failed


def test_a_program_that_dies_while_loading_is_reported_at_once(fake):
    ctx, target = fake
    live_on_blue(ctx, target)
    target.start_fails.add("green")
    with pytest.raises(DeployError, match=r"modelhost-green did not start: modelhost-green: ERROR \(spawn error\)"):
        cutover.activate(ctx, release(NEW), app_of(ctx))
    assert target.now < 5  # it did not wait for the ready timeout


def test_a_health_path_that_answers_404_fails_at_once_saying_what_to_set(fake):
    ctx, target = fake
    live_on_blue(ctx, target)
    target.routes = False
    with pytest.raises(DeployError, match=r"modelhost-green answers GET /readyz with 404: the app has no such route. "
                                          r"Set \[deploy\] health_path to a route"):
        cutover.activate(ctx, release(NEW), app_of(ctx))
    assert target.now == 0 and target.states == {"blue": "RUNNING", "green": "STOPPED"}


def test_a_program_that_exits_while_starting_fails_at_once(fake):
    ctx, target = fake
    live_on_blue(ctx, target)
    target.ready["green"] = False
    target.answer(r"supervisorctl .* status modelhost-green", "modelhost-green   BACKOFF   Exited too quickly\n", 3)
    with pytest.raises(DeployError, match=r"modelhost-green exited before it was ready \(BACKOFF\): the app fails"):
        cutover.activate(ctx, release(NEW), app_of(ctx))
    assert target.now <= 2  # one round of the probe, not the ready timeout


def test_a_program_that_keeps_exiting_after_startsecs_is_a_crash_loop_seen_by_its_pid(fake):
    """startsecs is 1 s: a program that exits later is started again at once, never BACKOFF. Its
    pid changing while the deploy waits for readiness fails the deploy long before the ready timeout."""
    ctx, target = fake
    live_on_blue(ctx, target)
    target.ready["green"] = False
    pids = iter(range(400, 500))
    target.respond(r"supervisorctl .* status modelhost-green",
                   lambda argv, command: (f"modelhost-green   RUNNING   pid {next(pids)}, uptime 0:00:02\n", "", 0))
    with pytest.raises(DeployError, match=r"modelhost-green exited before it was ready and was started again "
                                          r"\(pid \d+, then \d+\): the app fails to start"):
        cutover.activate(ctx, release(NEW), app_of(ctx))
    assert target.now <= 4 and target.states["blue"] == "RUNNING"  # two rounds of the probe; blue serves on


def test_without_a_health_path_any_answer_below_500_to_get_slash_is_ready():
    ctx, target = fake_context({"deploy": {"health_path": "", "smoke_path": ""}})
    target.routes = False  # GET / answers 404: the app is up, it just has no page there
    step = cutover.activate(ctx, release(NEW), app_of(ctx))
    assert step.changed and target.states["blue"] == "RUNNING"
    asked = [json.loads(c.split(" ", 1)[1]) for c in target.ran("^probe ")]
    assert {(a["paths"][0], a["ready"]) for a in asked} == {("/", "answer")}


@pytest.mark.parametrize("smoke, problem", [
    ({"status": 500, "body": "Internal Server Error"}, r"GET /api/v1/model: 500 \(not 200\) Internal Server Error"),
    ({"status": 200, "body": '{"version": "old", "sha256": "fff"}'},
     "GET /api/v1/model: the answer does not contain 'v1'"),
])
def test_a_failed_smoke_query_keeps_the_old_release_serving(fake, smoke, problem):
    ctx, target = fake
    live_on_blue(ctx, target)
    target.smoke = smoke
    with pytest.raises(DeployError, match="modelhost-green is ready but the smoke query failed: " + problem):
        cutover.activate(ctx, release(NEW), app_of(ctx))
    assert target.states == {"blue": "RUNNING", "green": "STOPPED"}
    assert target.links[ctx.layout.root / "current"] == "blue"


def test_a_config_nginx_refuses_is_put_back_and_the_new_color_stopped(fake):
    ctx, target = fake
    live_on_blue(ctx, target)
    site = ctx.layout.nginx_sites / "localhost.conf"
    target.files[site] = "the old site\n"
    target.nginx_refuses = 'nginx: [emerg] unknown directive "proxy_buffering maybe"'
    with pytest.raises(DeployError) as error:
        cutover.activate(ctx, release(NEW), app_of(ctx))
    assert str(error.value).startswith("nginx -t refused the new configuration:\nnginx: [emerg] unknown directive")
    assert f"the release {NEW} was not activated (green is stopped); {OLD} on blue still serves" in str(error.value)
    assert target.files[site] == "the old site\n"
    assert target.states == {"blue": "RUNNING", "green": "STOPPED"}
    assert target.links[ctx.layout.root / "current"] == "blue" and not target.ran(r"-s reload")


def test_a_stopped_live_release_is_brought_back_without_a_switch(fake):
    ctx, target = fake
    live_on_blue(ctx, target, NEW)
    target.states["blue"], target.supervisord, target.nginx = "STOPPED", False, False
    step = cutover.activate(ctx, release(NEW), app_of(ctx))
    assert step.changed and step.detail == f"{NEW} is live on blue (started it)"
    assert target.supervisord and target.nginx and target.states["blue"] == "RUNNING"
    assert [c.split()[-2:] for c in target.ran("modelhost-green")] == [["status", "modelhost-green"]]  # a look only


def test_the_live_release_deployed_again_after_a_cutover_cut_off_stops_the_other_color(fake):
    ctx, target = fake
    live_on_blue(ctx, target, NEW)
    target.files.update(cutover.configs(ctx, app_of(ctx), "green")["nginx"])  # left on green, which runs
    target.states["green"] = "RUNNING"
    step = cutover.activate(ctx, release(NEW), app_of(ctx))
    assert step.changed and target.states == {"blue": "RUNNING", "green": "STOPPED"}
    assert target.index(r"nginx.* -s reload") < target.index("stop modelhost-green")


def test_a_running_live_release_changes_nothing(fake):
    ctx, target = fake
    live_on_blue(ctx, target, NEW)
    for file in cutover.configs(ctx, app_of(ctx), "blue").values():
        target.files.update(file)
    step = cutover.activate(ctx, release(NEW), app_of(ctx))
    assert not step.changed and step.detail == f"{NEW} is live on blue"
    assert not target.ran(r"start|stop|reload|update")


def test_systemd_units_enable_only_the_live_color():
    ctx, target = fake_context()
    ctx.layout = ctx.layout.__class__(**{**vars(ctx.layout), "process_manager": "systemd"})
    target.answer(r"systemctl is-enabled modelhost@blue", "enabled\n")
    target.answer(r"systemctl is-enabled modelhost@green", "disabled\n", exited=1)
    assert ctx.programs.ensure({ctx.layout.systemd_dir / "modelhost@.service": "[Unit]\n"}, idle=["blue"],
                               live="green")
    assert target.ran("systemctl") == ["systemctl daemon-reload", "systemctl is-enabled modelhost@blue",
                                       "systemctl disable --quiet modelhost@blue",
                                       "systemctl is-enabled modelhost@green",
                                       "systemctl enable --quiet modelhost@green"]


# ---- which release a rollback picks, and what prune keeps ---------------------------------------

RELEASES = [release(f"2026120{day}T000000-rev{day:04d}") for day in range(1, 8)]
IDS = [r.id for r in RELEASES]


def went_live(*indexes: int) -> list[dict]:
    return [{"release": IDS[i], "result": "ok"} for i in indexes]


@pytest.mark.parametrize("current, history, expected", [
    (IDS[4], went_live(1, 2, 4), IDS[2]),  # the newest older one that has been live
    (IDS[4], went_live(1, 4) + [{"release": IDS[3], "result": "failed"}], IDS[1]),  # never-live ones are skipped
    (IDS[1], went_live(1, 3), None),  # nothing older has been live
    (None, went_live(1), None),  # nothing is live
])
def test_a_rollback_goes_to_the_newest_older_release_that_has_been_live(current, history, expected):
    found = state.previous(RELEASES, current, history)
    assert (found.id if found else None) == expected


def test_prune_keeps_the_newest_the_colors_and_the_rollback_target():
    pointers = Pointers("green", {"blue": IDS[0], "green": IDS[6]})
    kept = state.kept(RELEASES, pointers, went_live(0, 2, 5, 6), keep=2)
    assert kept == {IDS[5], IDS[6], IDS[0]}
    # Releases that never went live are not kept, and do not count: the live ones before them are kept
    kept = state.kept(RELEASES, pointers, went_live(0, 2, 6), keep=2)
    assert kept == {IDS[2], IDS[6], IDS[0]}


def test_a_rollback_without_an_earlier_live_release_says_so(fake):
    ctx, target = fake
    target.answer(r"^sh -c 'for r in", "".join(json.dumps(vars(r)) + "\n" for r in RELEASES[:2]))
    live_on_blue(ctx, target, IDS[1])
    with pytest.raises(DeployError, match=f"nothing to roll back to on fake: no release older than {IDS[1]}"):
        deployment.rollback_target(ctx, None)
    with pytest.raises(DeployError, match=r"no release nope on fake \(neither a release id nor the git revision of "
                                          r"one\); fab releases lists them"):
        deployment.rollback_target(ctx, "nope")
    assert deployment.rollback_target(ctx, IDS[0]).id == IDS[0]


@pytest.mark.parametrize("to, expected", [
    ("20261202T000000-9f8e7d6", "20261202T000000-9f8e7d6"),  # its id
    ("9f8e7d6", "20261204T000000-9f8e7d6"),  # its revision: the newest release of it
    ("9f8e", "20261204T000000-9f8e7d6"),  # a shorter prefix of the commit
    ("9F8E7D6C5B4A39281706F5E4D3C2B1A0F9E8D7C6", "20261204T000000-9f8e7d6"),  # the whole commit hash
    ("1a2b3c4+dirty", "20261205T000000-1a2b3c4+dirty"),  # a build of uncommitted changes, named whole
    ("1a2b3c4", "20261203T000000-1a2b3c4"),  # the commit itself, not the uncommitted changes on it
    ("9f8", None),  # too short to name a commit
    ("0000000", None),
])
def test_a_rollback_names_a_release_by_its_id_or_its_git_revision(fake, to, expected):
    """Each host of a fleet names its releases after its own deploy's time: the revision names them alike."""
    ctx, target = fake
    made = [replace(release(f"2026120{day}T000000-{revision}"), revision=revision) for day, revision in
            [(2, "9f8e7d6"), (3, "1a2b3c4"), (4, "9f8e7d6"), (5, "1a2b3c4+dirty")]]
    target.answer(r"^sh -c 'for r in", "".join(json.dumps(vars(r)) + "\n" for r in made))
    if expected:
        assert deployment.rollback_target(ctx, to).id == expected
    else:
        with pytest.raises(DeployError, match=f"no release {re.escape(to)} on fake"):
            deployment.rollback_target(ctx, to)


def test_prune_removes_releases_environments_and_models_no_kept_release_uses(fake):
    ctx, target = fake
    old = [release(IDS[0], model="m-old"), *RELEASES[1:4]]
    target.answer(r"^sh -c 'for r in", "".join(json.dumps(vars(r)) + "\n" for r in old))
    target.files[ctx.layout.history] = "".join(json.dumps(h) + "\n" for h in went_live(0, 1, 2, 3))
    target.answer(r"^ls -A \S+/releases$", "\n".join(IDS[:4]) + "\n.20261201T000000-x.partial\n")
    target.answer(r"^ls -A \S+/models$", "m-old\nabc123\n")
    target.answer(r"^ls -A \S+/venvs$", "venv1\n")
    live_on_blue(ctx, target, IDS[3])
    ctx.settings.deploy.keep_releases = 2
    parts.prune(ctx)
    root = ctx.layout.root
    assert target.ran("^rm ") == [f"rm -rf -- {root}/releases/{IDS[0]} {root}/releases/{IDS[1]} "
                                  f"{root}/releases/.20261201T000000-x.partial {root}/models/m-old"]
    assert ctx.steps[-1].detail == "removed 3 releases, removed 1 models"


# ---- the release command and one-off commands --------------------------------------------------

def test_a_failing_release_command_stops_the_deploy_with_its_output_and_runs_again_next_time():
    ctx, target = fake_context({"deploy": {"release_command": "flask --app notes init-db"}})
    target.answer(r"runuser|flask --app notes init-db", "", 1, "sqlite3.OperationalError: unable to open database\n")
    with pytest.raises(DeployError, match=r"(?s)the release command 'flask --app notes init-db' failed in .* "
                                          r"\(exit 1\); the release was not started.*unable to open database"):
        parts.ensure_release_command(ctx, release(NEW), app_of(ctx))
    assert not target.ran(r"startProcess[\s\S]* modelhost-") and not target.ran(r"^touch .*release-command.done")
    target.answer(r"flask --app notes init-db", "Initialized the database.\n")
    parts.ensure_release_command(ctx, release(NEW), app_of(ctx))
    assert ctx.steps[-1].changed and ctx.steps[-1].detail.endswith("Initialized the database.")
    done = ctx.layout.releases / NEW / ".modelhost" / "release-command.done"
    assert target.ran(f"^touch -- {done}$")


def test_the_command_runs_in_the_release_with_the_apps_environment_and_secrets(fake):
    ctx, target = fake
    ctx.settings.app.env = {"FLASK_LOG_LEVEL": "DEBUG"}
    path = ctx.layout.releases / NEW
    argv = parts.app_command(ctx, app_of(ctx), path, "flask routes")
    assert argv[:2] == ["env", "-i"] and argv[-3:] == ["sh", "-c", "flask routes"]  # no user switch on this machine
    env = dict(a.split("=", 1) for a in argv[2:argv.index(f"{path}/.modelhost/venv/bin/python")])
    assert env["DATA_DIR"] == str(ctx.layout.data_dir) and env["FLASK_LOG_LEVEL"] == "DEBUG"
    assert env["PATH"].startswith(f"{path}/.modelhost/venv/bin:")
    assert argv[argv.index("-c") + 2:argv.index("-c") + 4] == [str(ctx.layout.env_file), str(path)]


@pytest.mark.parametrize("live, wanted, expected", [
    (IDS[1], None, IDS[1]),  # the live one
    (None, None, IDS[2]),  # none went live yet: the newest (a first deploy that never got ready)
    (IDS[1], IDS[0], IDS[0]),  # the one asked for
])
def test_run_picks_the_live_release_else_the_newest(fake, live, wanted, expected):
    ctx, target = fake
    target.answer(r"^sh -c 'for r in", "".join(json.dumps(vars(r)) + "\n" for r in RELEASES[:3]))
    if live:
        live_on_blue(ctx, target, live)
    chosen, argv = deployment.run_command(ctx, "true", wanted)
    assert chosen.id == expected and str(ctx.layout.releases / expected) in argv


def test_run_without_any_release_says_to_deploy_first(fake):
    with pytest.raises(DeployError, match="no release on fake yet: fab deploy makes one"):
        deployment.run_command(fake[0], "true")


# ---- secrets -----------------------------------------------------------------------------------

@pytest.mark.parametrize("current, environ, text, made, missing", [
    ("", {}, None, ["FLASK_SECRET_KEY"], ["API_TOKEN"]),
    ("FLASK_SECRET_KEY=kept\nAPI_TOKEN=t1\n", {}, "API_TOKEN=t1\nFLASK_SECRET_KEY=kept\n", [], []),
    ("FLASK_SECRET_KEY=kept\nAPI_TOKEN=t1\nOTHER=x\n", {"API_TOKEN": "t2", "UNRELATED": "u"},
     "API_TOKEN=t2\nFLASK_SECRET_KEY=kept\nOTHER=x\n", [], []),
    ("# a comment\nFLASK_SECRET_KEY=\nAPI_TOKEN=t1\n", {}, None, ["FLASK_SECRET_KEY"], []),
])
def test_secrets_come_from_the_environment_else_the_file_and_a_secret_key_is_made_once(
        current, environ, text, made, missing):
    got_text, got_made, got_missing = parts.merge_secrets(current, ["FLASK_SECRET_KEY", "API_TOKEN"], environ)
    assert (got_made, got_missing) == (made, missing)
    if text is not None:
        assert got_text == text
    if made:
        assert len(got_text.split("FLASK_SECRET_KEY=")[1].split("\n")[0]) == 64


def test_the_secrets_file_is_written_private_and_a_missing_secret_stops_the_deploy(fake):
    ctx, target = fake
    parts.ensure_secrets(ctx, {})
    env_file = ctx.layout.env_file
    assert target.ran("^write ") == [f"write {env_file} mode 600"]
    assert parts.ensure_secrets(ctx, {}) == parts.ensure_secrets(ctx, {})  # the same file: the same digest
    assert target.ran(f"^sh -c 'chmod .* 600 {env_file}")  # a file left as it was still gets its mode
    ctx.settings.app.secrets = ["FLASK_SECRET_KEY", "API_TOKEN"]
    with pytest.raises(DeployError, match=rf"secret API_TOKEN has no value on fake: give it once, .* {env_file}"):
        parts.ensure_secrets(ctx, {})
    assert ctx.steps[-1].name == "secrets" and ctx.steps[-1].failed


# ---- the lock ----------------------------------------------------------------------------------

def test_a_second_deploy_is_refused_naming_the_holder_and_the_lock_goes_with_the_first(fake):
    ctx, target = fake
    holder = r"another deploy is running on fake: deploy by \S+@\S+ \(pid \d+\)"
    with lock.locked(ctx, "deploy"):
        with pytest.raises(lock.DeployLocked, match=holder):
            with lock.locked(ctx, "rollback"):
                pass
    assert ctx.layout.lock not in target.directories
    with lock.locked(ctx, "deploy"):  # free again
        assert lock.break_lock(ctx).startswith("deploy by ")
    assert lock.break_lock(ctx) is None


def test_a_failed_step_is_reported_with_its_time(fake):
    ctx, target = fake
    reported = []
    ctx.report = reported.append
    target.now = 10.0
    with pytest.raises(RuntimeError):
        with ctx.step("model"):
            target.now += 2.5
            raise RuntimeError("boom")
    assert [(s.name, s.failed, s.seconds) for s in reported] == [("model", True, 2.5)]


def test_start_at_boot_puts_one_marked_reboot_line_in_the_users_crontab_and_takes_it_away():
    ctx, target = fake_context({"local": {"start_at_boot": True}})
    parts.ensure_start_at_boot(ctx)
    staged = ctx.layout.config_dir / ".crontab"
    assert target.ran(f"^crontab {staged}$") and target.ran(f"^rm .*{staged}")
    step = ctx.steps[-1]
    assert step.name == "boot" and step.changed
    assert "@reboot env -i HOME=/home/pi" in step.detail and "supervisord -c /home/pi/mh/supervisor/supervisord.conf" in step.detail
    # The user's other lines stay; only the line marked with this target's root comes and goes.
    assert parts.crontab_with("0 3 * * * backup\n", ["@reboot start  # modelhost: /r"], "  # modelhost: /r") == (
        "0 3 * * * backup\n@reboot start  # modelhost: /r\n")
    assert parts.crontab_with("0 3 * * * backup\n@reboot old  # modelhost: /r\n", [],
                              "  # modelhost: /r") == "0 3 * * * backup\n"
    off, target = fake_context()
    parts.ensure_start_at_boot(off)  # off, and no line of ours: nothing done, no step
    assert not off.steps and not target.ran("^crontab /")
