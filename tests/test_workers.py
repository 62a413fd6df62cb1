"""The worker rule: 2n+1, capped by memory, never below 1; an explicit number wins."""
from __future__ import annotations

import json

import pytest

from deploy.workers import ModelSizeError, model_size_mb, plan_workers

RESERVE, WORKER = 300, 80
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
                        shared=shared, reserve_mb=RESERVE, worker_mb=WORKER)
    assert plan.workers == expected
    assert plan.explanation.startswith(f"2n+1 = {2 * cores + 1} ({cores} core")
    assert f"-> {expected} worker" in plan.explanation
    assert f"{board} host, {model_mb} MB model {'shared' if shared else 'in every worker'}" in plan.explanation


def test_the_explanation_says_what_limited_the_count_in_words():
    plan = plan_workers(cores=4, memory_total_mb=910, memory_available_mb=700, model_mb=120, shared=True,
                        reserve_mb=300, worker_mb=80)
    assert plan.explanation == (
        "2n+1 = 9 (4 cores); memory allows 3 ((700 MB available - 300 MB reserve - 120 MB model, counted once) "
        "/ 80 MB per worker) -> 3 workers (memory is the limit): 1 GB host, 120 MB model shared")
    unshared = plan_workers(cores=1, memory_total_mb=7800, memory_available_mb=7500, model_mb=120, shared=False,
                            reserve_mb=300, worker_mb=80)
    assert unshared.explanation == (
        "2n+1 = 3 (1 core); memory allows 36 ((7500 MB available - 300 MB reserve) / (80 MB + 120 MB model) "
        "per worker) -> 3 workers (cores are the limit): 8 GB host, 120 MB model in every worker")


def test_a_host_short_of_memory_gets_one_worker_and_a_warning():
    plan = plan_workers(cores=4, memory_total_mb=427, memory_available_mb=350, model_mb=120, shared=True,
                        reserve_mb=300, worker_mb=80)
    assert plan.workers == 1
    assert "memory allows 0" in plan.explanation and "0.4 GB host" in plan.explanation
    assert "expect swapping or the OOM killer" in plan.explanation


@pytest.mark.parametrize("explicit, warned", [(2, False), (3, False), (4, True)])
def test_an_explicit_number_wins_and_is_warned_about_above_the_memory_cap(explicit, warned):
    plan = plan_workers(cores=4, memory_total_mb=910, memory_available_mb=700, model_mb=120, shared=True,
                        reserve_mb=300, worker_mb=80, explicit=explicit)
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
