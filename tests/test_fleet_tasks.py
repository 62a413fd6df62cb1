"""A task on a fleet, without hosts: the output of hosts working at once stays whole and marked by
host, all-at-once tasks run every host, one-at-a-time tasks stop at the first failure, the end
says how each host went, and [fleet] app is checked."""
from __future__ import annotations

import io
import sys
import threading
import time

import pytest
from invoke.exceptions import Exit

from deploy import fleet
from deploy.settings import SettingsError, check_settings


def test_lines_written_at_once_by_threads_stay_whole_and_marked_with_their_thread():
    out = io.StringIO()
    stream = fleet.Prefixed(out)
    barrier = threading.Barrier(3)

    def write(name: str) -> None:
        stream.mark(f"{name} | ")
        barrier.wait()
        for n in range(200):
            stream.write(f"{name} line ")  # a line in pieces, as print writes it
            stream.write(f"{n}\nsecond {n}")
            stream.write("\n")
        stream.write("no end")
        stream.end()

    threads = [threading.Thread(target=write, args=(name,)) for name in ("pi1", "pi2", "edge")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 * 401
    for name in ("pi1", "pi2", "edge"):
        mine = [line for line in lines if line.startswith(f"{name} | ")]
        assert mine[:4] == [f"{name} | {name} line 0", f"{name} | second 0", f"{name} | {name} line 1",
                            f"{name} | second 1"]
        assert mine[-1] == f"{name} | no end" and len(mine) == 401


def test_an_all_at_once_task_runs_every_host_together_and_says_how_each_went(capsys):
    started = {}

    def task(host: str) -> str:
        started[host] = time.monotonic()
        print(f"working on {host}")
        time.sleep(0.3)
        if host == "pi2":
            raise Exit("error: pi2 is locked", code=1)
        if host == "pi3":
            raise KeyError("a bug")
        return f"{host} fine"

    outcomes = fleet.run(["pi1", "pi2", "pi3", "edge"], task, at_once=True)
    assert max(started.values()) - min(started.values()) < 0.25, "not started together"
    assert [(o.host, o.failed) for o in outcomes] == [("pi1", False), ("pi2", True), ("pi3", True), ("edge", False)]
    assert outcomes[1].result == "error: pi2 is locked" and outcomes[2].result == "KeyError: 'a bug'"
    out, err = capsys.readouterr()
    assert "pi1  | working on pi1\n" in out and "edge | working on edge\n" in out
    assert "pi3  | Traceback (most recent call last):" in err  # a bug's traceback, marked too
    assert sys.stdout is not None and not isinstance(sys.stdout, fleet.Prefixed)
    lines = fleet.summary(outcomes)
    assert lines[0].split()[:2] == ["pi1", "ok"] and lines[0].endswith("pi1 fine")
    assert lines[1].split()[:2] == ["pi2", "FAILED"] and lines[1].endswith("error: pi2 is locked")


def test_a_one_at_a_time_task_stops_at_the_first_host_that_fails():
    ran = []

    def task(host: str) -> str:
        ran.append(host)
        if host == "pi2":
            raise Exit("error: the new release never became ready", code=1)
        return "live"

    outcomes = fleet.run(["pi1", "pi2", "pi3"], task, at_once=False)
    assert ran == ["pi1", "pi2"]
    assert [(o.started, o.failed) for o in outcomes] == [(True, False), (True, True), (False, False)]
    assert fleet.summary(outcomes, "pi2")[2] == "  pi3  not started (stopped at pi2)"


def test_columns_a_task_returns_make_one_aligned_table():
    rows = {"pi1": {"release": "20261202T101010-abc1234", "ready": "200 ok", "load": "0.10 of 4 cores"},
            "pi2": {"release": "none", "ready": "no live program"}}
    outcomes = fleet.run(list(rows), rows.get, at_once=True)
    assert outcomes[0].row == rows["pi1"] and outcomes[1].result == "release none; ready no live program"
    lines = fleet.table([{"host": o.host, **o.row} for o in outcomes] + [{"host": "edge", "edge sees": "in, 200"}])
    assert lines == [
        "  host  release                  ready            load             edge sees",
        "  pi1   20261202T101010-abc1234  200 ok           0.10 of 4 cores  -",
        "  pi2   none                     no live program  -                -",
        "  edge  -                        -                -                in, 200"]


def test_an_exit_without_an_error_is_not_a_failure():
    outcomes = fleet.run(["pi1"], lambda host: (_ for _ in ()).throw(Exit(code=0)), at_once=True)
    assert not outcomes[0].failed


@pytest.mark.parametrize("hosts, message", [
    (["pi1", "pi1"], "[fleet] app names pi1 more than once"),
    ("pi1", '[fleet] app = "pi1": must be a list of items, each a host such as "pi1"'),
    (["pi 1"], "must be a list of items, each a host"),
])
def test_fleet_hosts_are_checked(hosts, message):
    with pytest.raises(SettingsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_settings({"fleet": {"app": hosts}})
    assert check_settings({"fleet": {"app": ["pi1", "deploy@10.0.0.12:2222"]}}).fleet.app == (
        "pi1", "deploy@10.0.0.12:2222")


def test_the_secrets_a_deploy_makes_up_are_the_same_on_every_host_of_a_fleet():
    names = ["FLASK_SECRET_KEY"]
    made, lines = fleet.shared_secrets({"pi1": {}, "pi2": {"OTHER": "x"}}, names)  # a first deploy
    assert len(made["FLASK_SECRET_KEY"]) == 64 and lines == []
    # A host added later takes the fleet's; hosts that made their own (before fleets shared them)
    # take the first host's, and the output says which.
    found = {"pi1": {}, "pi2": {"FLASK_SECRET_KEY": "b"}, "pi3": {"FLASK_SECRET_KEY": "c"}}
    values, lines = fleet.shared_secrets(found, names)
    assert values == {"FLASK_SECRET_KEY": "b"}
    assert lines == ["FLASK_SECRET_KEY: pi3 held a value of its own; every host now has pi2's (the hosts behind one "
                     "balancer share it, so a session or form one signed is good on the others)"]
    # A host that could not be read may hold the value: none is made up then (each host keeps its own).
    assert fleet.shared_secrets({"pi1": None, "pi2": {}}, names) == ({}, [])
    assert fleet.shared_secrets({"pi1": None, "pi2": {"FLASK_SECRET_KEY": "b"}}, names)[0] == {"FLASK_SECRET_KEY": "b"}
