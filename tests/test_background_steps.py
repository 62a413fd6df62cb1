"""The processes step's branches on the fake target (supervisor, the local target): nothing to do
says nothing, a new program is loaded and started, a new release restarts the processes, one taken
out is removed, one that does not run fails the deploy naming it and its last lines."""
from __future__ import annotations

import pytest

from deploy import background
from deploy.context import DeployError
from tests.fake import fake_context

WORKER = {"app": {"processes": {"worker": "python -m app.worker"}}}


def supervisorctl(target) -> list[str]:
    return [c for c in target.commands if "supervisorctl" in c and " status " not in c]


def running(target, state: str = "RUNNING") -> None:
    target.answer(r"supervisorctl .* status 'modelhost-worker:\*'",
                  f"modelhost-worker                 {state}   pid 321, uptime 0:00:05\n")


def test_an_app_without_processes_has_no_processes_step():
    ctx, target = fake_context()
    background.ensure_processes(ctx, background.app_of(ctx), restart=True)
    assert ctx.steps == [] and supervisorctl(target) == []


def test_a_new_process_is_loaded_and_started():
    ctx, target = fake_context(WORKER)
    target.answer(r"supervisorctl .* update", "modelhost-worker: added process group\n")
    running(target)
    background.ensure_processes(ctx, background.app_of(ctx), restart=True)
    conf = ctx.layout.supervisor_dir / "modelhost-processes.conf"
    assert "[program:modelhost-worker]" in target.files[conf]
    assert [c.split("supervisorctl")[1].split(" ", 3)[-1] for c in supervisorctl(target)] == [
        "reread", "update modelhost-worker"]
    step = ctx.steps[-1]
    assert step.changed and "started worker (its program is new)" in step.detail


def test_a_new_release_restarts_a_process_whose_program_is_unchanged():
    ctx, target = fake_context(WORKER)
    target.answer(r"supervisorctl .* update", "modelhost-worker: added process group\n")
    running(target)
    background.ensure_processes(ctx, background.app_of(ctx), restart=True)
    target.commands.clear()
    background.ensure_processes(ctx, background.app_of(ctx), restart=True)
    assert any(c.endswith("restart 'modelhost-worker:*'") for c in supervisorctl(target)), target.commands
    target.commands.clear()
    background.ensure_processes(ctx, background.app_of(ctx), restart=False)  # a deploy that changed nothing
    assert supervisorctl(target) == [] and not ctx.steps[-1].changed
    assert ctx.steps[-1].detail == "worker running"


def test_a_process_taken_out_is_stopped_and_its_program_removed():
    ctx, target = fake_context(WORKER)
    target.answer(r"supervisorctl .* update", "modelhost-worker: added process group\n")
    running(target)
    background.ensure_processes(ctx, background.app_of(ctx), restart=True)
    bare, _ = fake_context()
    bare.target.files.update(target.files)
    bare.target.commands.clear()
    background.ensure_processes(bare, background.app_of(bare), restart=True)
    assert ctx.layout.supervisor_dir / "modelhost-processes.conf" not in bare.target.files
    assert any(c.endswith("update modelhost-worker") for c in supervisorctl(bare.target))
    assert bare.steps[-1].changed and "removed modelhost-worker" in bare.steps[-1].detail


def test_a_process_that_does_not_run_fails_the_deploy_with_its_last_lines():
    ctx, target = fake_context(WORKER)
    target.answer(r"supervisorctl .* update", "modelhost-worker: added process group\n")
    running(target, "FATAL")
    target.answer(r"tail .*worker\.log", "ModuleNotFoundError: No module named 'app.worker'\n")
    with pytest.raises(DeployError) as caught:
        background.ensure_processes(ctx, background.app_of(ctx), restart=True)
    message = str(caught.value)
    assert "modelhost-worker is FATAL" in message and "No module named 'app.worker'" in message
    assert "the site serves the new release" in message and ctx.steps[-1].failed
