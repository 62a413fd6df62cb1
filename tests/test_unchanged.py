"""A deploy that has nothing to do finds out in one command (deploy/unchanged.py): what that command
prints, run for real on this machine, and each thing that sends a deploy the whole way instead.
The whole way and the one look on real targets: tests/test_deploy.py (this machine), test_remote.py
and test_fleet.py (test hosts)."""
from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, replace

import pytest

from deploy import commands, unchanged
from deploy.facts import FACTS_COMMAND, parse_facts, split_sections
from deploy.layout import system_layout
from deploy.settings import check_settings
from deploy.state import Release
from tests.fake import FACTS, fake_context

RELEASE = Release(id="20261202T101010-abc1234", revision="abc1234", identity="i", venv="v", model="m",
                  model_version="-", workers=3, explanation="2n+1", created="2026-12-02T10:10:10Z",
                  kit_dir=".modelhost")


def as_found(ctx, **changes) -> dict[str, str]:
    """The sections of a target just as its last deploy (inputs "wanted") left it, with changes."""
    found = {
        "record": json.dumps({"inputs": "wanted", "release": asdict(RELEASE), "files": 7}),
        "sums": "exit 0", "lock": "free",
        "links": f"current=blue\nblue={ctx.layout.releases}/{RELEASE.id}\ngreen=",
        "programs": f"{ctx.layout.app}-blue                 RUNNING   pid 4711, uptime 1:02:03\n"
                    f"{ctx.layout.app}-green                STOPPED   Dec 02 10:00 AM",
        "answer-blue": json.dumps({"path": "/", "status": 200, "body": "ok"}),
    }
    return {**found, **changes}


def test_a_target_as_its_last_deploy_left_it_has_nothing_to_do():
    ctx, _ = fake_context()
    release, detail = unchanged.nothing_to_do(ctx, as_found(ctx), "wanted")
    assert release == RELEASE
    assert detail == (f"{RELEASE.id} runs on blue (pid 4711) and answers 200; the code, settings, model and secrets "
                      "of its deploy, and its 7 config files as it left them")


@pytest.mark.parametrize("why, changes", [
    ("other inputs", {"record": json.dumps({"inputs": "earlier", "release": asdict(RELEASE)})}),
    ("no record yet", {"record": ""}),
    ("a record cut short", {"record": '{"inputs": "wan'}),
    ("a file changed by hand", {"sums": "/etc/nginx/sites-available/x.conf: FAILED\nexit 1"}),
    ("a file gone", {"sums": "sha256sum: /etc/x.conf: No such file or directory\nexit 1"}),
    ("a deploy holds the lock", {"lock": "held"}),
    ("rolled back since", {"links": "current=green\nblue=\ngreen=/x/releases/20261201T000000-old"}),
    ("nothing live", {"links": "current=\nblue=\ngreen="}),
    ("the live program stopped", {"programs": "modelhost-blue STOPPED Dec 02 10:00 AM\nmodelhost-green STOPPED"}),
    ("supervisord down", {"programs": "unix:///x/supervisor.sock no such file"}),
    ("not ready", {"answer-blue": json.dumps({"path": "/", "status": 503, "body": "loading"})}),
    ("no answer", {"answer-blue": json.dumps({"path": "/", "status": 0, "error": "refused"})}),
    ("no python3", {"answer-blue": "sh: 1: python3: not found"}),
])
def test_anything_else_sends_the_deploy_the_whole_way(why, changes):
    ctx, _ = fake_context()
    if changes.get("programs", "").startswith("modelhost-"):
        changes["programs"] = changes["programs"].replace("modelhost", ctx.layout.app)
    assert unchanged.nothing_to_do(ctx, as_found(ctx, **changes), "wanted") is None, why


def test_the_look_is_one_command_whose_sections_this_machine_answers(tmp_path):
    """Run for real before any deploy: the facts parse, and every look answers in its own section."""
    ctx, _ = fake_context()
    layout = replace(ctx.layout, root=tmp_path)
    argv = commands.snapshot(layout, FACTS_COMMAND, "python3", "/readyz", "ok", ("/nonexistent/a.pem", "/x.pem"),
                             tmp_path / unchanged.RECORD, tmp_path / unchanged.SUMS)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout
    assert parse_facts(out).cores >= 1
    sections = split_sections(out)
    assert sections["record"] == "" and sections["lock"] == "free" and sections["certificate"] == ""
    assert sections["sums"].endswith("exit 1") and "No such file" in sections["sums"]
    assert sections["links"] == "current=\nblue=\ngreen="
    answer = commands.parse_probe(sections["answer-blue"])[0]
    assert answer["status"] == 0 and answer["error"]
    # A record of one file (as record() writes it), the file as recorded, then changed; a deploy's lock.
    config = tmp_path / "site.conf"
    config.write_text("server {}\n")
    ctx.wrote(config, "server {}\n")
    (tmp_path / unchanged.SUMS).write_text(unchanged.sums_text(ctx.written))
    (tmp_path / "deploy.lock").mkdir()
    sections = split_sections(subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout)
    assert sections["sums"] == "exit 0" and sections["lock"] == "held"
    config.write_text("server { listen 81; }\n")
    sections = split_sections(subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout)
    assert sections["sums"].startswith(f"{config}: FAILED\n") and sections["sums"].endswith("\nexit 1")


def test_the_inputs_digest_changes_with_each_input():
    ctx, _ = fake_context()

    class Source:
        tree, requirements = "tree", type("R", (), {"text": "flask==3.1.0\n"})()

    ctx.__dict__["facts"] = parse_facts(FACTS.read_text())
    base = unchanged.inputs(ctx, Source, None, {})
    assert unchanged.inputs(ctx, Source, None, {}) == base
    assert unchanged.inputs(ctx, Source, None, {"FLASK_SECRET_KEY": "s"}) != base
    assert unchanged.inputs(ctx, Source, None, {"UNRELATED": "x"}) == base
    ctx.settings.gunicorn.timeout += 1
    assert unchanged.inputs(ctx, Source, None, {}) != base


def test_one_status_command_answers_for_both_colors():
    layout = system_layout(check_settings({"app": {"name": "words", "process_manager": "systemd"}}))
    argv = commands.programs_status(layout, ("blue", "green"))
    assert argv[:4] == ["systemctl", "show", "words@blue", "words@green"]
    out = "MainPID=4711\nActiveState=active\nSubState=running\n\nMainPID=0\nActiveState=inactive\nSubState=dead\n"
    parts = commands.split_programs_status(out, layout, ("blue", "green"))
    assert commands.parse_unit_status(parts["blue"])[:2] == ("RUNNING", 4711)
    assert commands.parse_unit_status(parts["green"])[0] == "STOPPED"
    layout = system_layout(check_settings({"app": {"name": "words"}}))
    assert commands.programs_status(layout, ("blue", "green")) == ["supervisorctl", "status", "words-blue",
                                                                   "words-green"]
    out = "words-blue    RUNNING   pid 4711, uptime 0:01:02\nwords-green   STOPPED   Not started\n"
    parts = commands.split_programs_status(out, layout, ("blue", "green"))
    assert commands.parse_supervisor_status(parts["green"], "words-green")[0] == "STOPPED"
    assert commands.parse_supervisor_status(parts["blue"], "words-blue")[:2] == ("RUNNING", 4711)
