"""The worker rule: 2n+1, capped by memory, never below 1; an explicit number wins."""
from __future__ import annotations

import subprocess

import pytest

from deploy import commands
from deploy.workers import Measured, ModelSizeError, measured, model_size_mb, parse_memory, plan_workers
from tests.servers import get, gunicorn

RESERVE, WORKER, THREADS, THREAD = 300, 64, 4, 4  # a worker: 64 + 4 x 4 = 80 MB
# Boards as they report themselves: MemTotal is below the nominal size, MemAvailable below that.
BOARDS = {"1 GB": (910, 700), "2 GB": (1900, 1600), "4 GB": (3800, 3500), "8 GB": (7800, 7500)}


@pytest.mark.parametrize("board, cores, model_mb, shared, expected", [
    # 1 GB: (700 - 300 - 120) / 80 = 3 shared; (700 - 300) / (80 + 120) = 2 unshared
    ("1 GB", 1, 120, True, 3),
    ("1 GB", 1, 120, False, 2),
    ("1 GB", 4, 120, True, 3),
    ("1 GB", 4, 120, False, 2),
    # 2 GB: (1600 - 420) / 80 = 14 shared; 1300 / 200 = 6 unshared
    ("2 GB", 1, 120, True, 3),
    ("2 GB", 2, 120, True, 5),
    ("2 GB", 4, 120, True, 9),
    ("2 GB", 4, 120, False, 6),
    ("2 GB", 8, 120, True, 14),
    # 4 GB: (3500 - 420) / 80 = 38 shared; 3200 / 200 = 16 unshared
    ("4 GB", 4, 120, True, 9),
    ("4 GB", 4, 120, False, 9),
    ("4 GB", 8, 120, False, 16),
    # 8 GB: cores decide with a small model; a 2 GB model per worker leaves room for 3
    ("8 GB", 8, 120, True, 17),
    ("8 GB", 8, 120, False, 17),
    ("8 GB", 8, 2048, True, 17),
    ("8 GB", 8, 2048, False, 3),
    # A model bigger than the memory left: still one worker
    ("1 GB", 4, 600, True, 1),
    ("1 GB", 4, 600, False, 1),
])
def test_workers_follow_2n_plus_1_capped_by_memory(board, cores, model_mb, shared, expected):
    total, available = BOARDS[board]
    plan = plan_workers(cores=cores, memory_total_mb=total, memory_available_mb=available, model_mb=model_mb,
                        shared=shared, reserve_mb=RESERVE, worker_mb=WORKER, threads=THREADS,
                        thread_mb=THREAD)
    assert plan.workers == expected
    assert plan.explanation.startswith(f"2n+1 = {2 * cores + 1} ({cores} core")
    assert f"-> {expected} worker" in plan.explanation
    assert f"{board} host, {model_mb} MB model {'shared' if shared else 'in every worker'}" in plan.explanation


def test_the_explanation_says_what_limited_the_count_in_words():
    plan = plan_workers(cores=4, memory_total_mb=910, memory_available_mb=700, model_mb=120, shared=True,
                        reserve_mb=300, worker_mb=64, threads=4, thread_mb=4)
    assert plan.explanation == (
        "2n+1 = 9 (4 cores); memory allows 3 ((700 MB available - 300 MB reserve - 120 MB model, counted once) "
        "/ 80 MB per worker (64 MB + 4 threads x 4 MB, estimated)) -> 3 workers (memory is the limit): 1 GB host, "
        "120 MB model shared")
    unshared = plan_workers(cores=1, memory_total_mb=7800, memory_available_mb=7500, model_mb=120, shared=False,
                            reserve_mb=300, worker_mb=64, threads=4, thread_mb=4)
    assert unshared.explanation == (
        "2n+1 = 3 (1 core); memory allows 36 ((7500 MB available - 300 MB reserve) / (80 MB (64 MB + 4 threads x "
        "4 MB, estimated) + 120 MB model) "
        "per worker) -> 3 workers (cores are the limit): 8 GB host, 120 MB model in every worker")


def test_a_host_short_of_memory_gets_one_worker_and_a_warning():
    plan = plan_workers(cores=4, memory_total_mb=427, memory_available_mb=350, model_mb=120, shared=True,
                        reserve_mb=300, worker_mb=64, threads=4, thread_mb=4)
    assert plan.workers == 1
    assert "memory allows 0" in plan.explanation and "0.4 GB host" in plan.explanation
    assert "expect swapping or the OOM killer" in plan.explanation


@pytest.mark.parametrize("explicit, warned", [(2, False), (3, False), (4, True)])
def test_an_explicit_number_wins_and_is_warned_about_above_the_memory_cap(explicit, warned):
    plan = plan_workers(cores=4, memory_total_mb=910, memory_available_mb=700, model_mb=120, shared=True,
                        reserve_mb=300, worker_mb=64, threads=4, thread_mb=4, explicit=explicit)
    assert plan.workers == explicit
    assert plan.explanation.startswith(f"{explicit} workers set in deploy.toml ([gunicorn] workers)")
    assert "The rule would say: 2n+1 = 9 (4 cores); memory allows 3" in plan.explanation
    assert ("more than memory allows" in plan.explanation) == warned


@pytest.mark.parametrize("files, expected", [
    ({"vectors.kv": 3 * 1024 * 1024, "sub/vectors.kv.vectors.npy": 117 * 1024 * 1024 + 1}, 121),
    ({"model.pkl": 10}, 1),
])
def test_model_size_is_the_sum_of_its_files_rounded_up(tmp_path, files, expected):
    for name, size in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x" * size)
    assert model_size_mb(tmp_path) == expected
    if len(files) == 1:  # a model that is one file
        assert model_size_mb(tmp_path / next(iter(files))) == expected


def test_a_missing_model_says_how_to_fix_it(tmp_path):
    with pytest.raises(ModelSizeError, match=r"no model at .*model.pkl \(\[model\] path in deploy.toml\): put it "
                                             r"there, or set \[model\] size_mb"):
        model_size_mb(tmp_path / "model.pkl")


def test_the_demo_model_size_counts_every_file(demo_model):
    total = sum(path.stat().st_size for path in demo_model.iterdir())
    assert model_size_mb(demo_model) == -(-total // (1024 * 1024))


# Measured workers ------------------------------------------------------------------------------

# `commands.memory_of` on a master with two workers: pid, Rss and private memory in KiB.
READING = "4100 180224 40960\n4107 190464 30720\n4108 170000 18000\nnot a line\n"


def test_a_reading_takes_the_largest_worker_and_the_masters_shared_pages_once():
    reading = measured(parse_memory(READING), "r1", 4, "t1", None)
    assert reading == Measured("r1", 4, worker_mb=30, master_mb=40, shared_mb=136, readings=1, at="t1")
    assert measured(parse_memory("4100 180224 40960\n"), "r1", 4, "t1", None) is None  # no worker to read


def test_readings_of_one_release_keep_the_largest_and_a_new_release_or_thread_count_starts_again():
    first = measured(parse_memory(READING), "r1", 4, "t1", None)
    grown = measured(parse_memory("4100 180224 40960\n4107 250000 61440\n"), "r1", 4, "t2", first)
    assert (grown.worker_mb, grown.readings, grown.at) == (60, 2, "t2")
    assert measured(parse_memory(READING), "r1", 4, "t3", grown).worker_mb == 60  # a smaller one does not lower it
    assert measured(parse_memory(READING), "r2", 4, "t3", grown).readings == 1
    assert measured(parse_memory(READING), "r1", 8, "t3", grown).readings == 1


# What the boards report (MemTotal, MemAvailable after boot with nginx and supervisor running) and
# their cores; the reference app's demo model is 2 MB, a real one 120 MB.
PIS = {"Pi Zero 2 W": (4, 427, 300), "Pi 3B+": (4, 909, 700), "Pi 4B 2 GB": (4, 1848, 1550),
       "Pi 5 8 GB": (4, 8048, 7600)}


@pytest.mark.parametrize("board, estimated, after", [
    ("Pi Zero 2 W", 1, 1),  # short of memory either way: never fewer than 1
    ("Pi 3B+", 3, 9),
    ("Pi 4B 2 GB", 9, 9),
    ("Pi 5 8 GB", 9, 9),
])
def test_a_measured_worker_replaces_the_estimate(board, estimated, after):
    cores, total, available = PIS[board]
    plan = dict(cores=cores, memory_total_mb=total, memory_available_mb=available, model_mb=120, shared=True,
                reserve_mb=RESERVE, worker_mb=WORKER, threads=THREADS, thread_mb=THREAD)
    reading = Measured("r1", 4, worker_mb=28, master_mb=40, shared_mb=150, readings=3, at="t")
    before, now = plan_workers(**plan), plan_workers(**plan, measured=reading)
    assert (before.workers, now.workers) == (estimated, after)
    assert "80 MB per worker (64 MB + 4 threads x 4 MB, estimated)" in before.explanation
    assert "28 MB per worker (28 MB measured)" in now.explanation


def test_a_change_of_threads_after_a_measurement_is_counted():
    reading = Measured("r1", 4, worker_mb=28, master_mb=40, shared_mb=150, readings=3, at="t")
    plan = plan_workers(cores=4, memory_total_mb=909, memory_available_mb=700, model_mb=120, shared=True,
                        reserve_mb=RESERVE, worker_mb=WORKER, threads=16, thread_mb=THREAD, measured=reading)
    assert "76 MB per worker (28 MB measured + 12 threads x 4 MB)" in plan.explanation and plan.workers == 3


def test_memory_of_reads_a_real_gunicorn_master_and_its_workers(demo_model):
    with gunicorn(demo_model, workers=2) as (base, process):
        for _ in range(20):
            assert get(f"{base}/api/v1/similar?word=fire&topn=3")[0] == 200
        out = subprocess.run(commands.memory_of(process.pid), capture_output=True, text=True, check=True).stdout
    rows = parse_memory(out)
    assert len(rows) == 3 and rows[0][0] == process.pid, out  # the master first, then its two workers
    assert all(0 < private < rss for _, rss, private in rows), out
    reading = measured(rows, "r1", 4, "t", None)
    # A worker's own memory is what it did not share with the master: far below the master's whole size.
    assert 1 <= reading.worker_mb < reading.master_mb + reading.shared_mb, reading
