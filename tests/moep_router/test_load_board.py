"""The shared load board of `moep-router --processes N`: slots, per-process rows, and a second
process (spawned, as the router's are) that sees what the first wrote and vice versa."""

import multiprocessing as mp

import pytest

from moep_router.load_board import MAX_WORKERS, LoadBoard, WorkerLoad


@pytest.fixture
def board():
    b = LoadBoard.create(3, mp.get_context("spawn").Lock())
    yield b
    b.close()


def test_a_url_keeps_its_slot_and_urls_do_not_share_one(board):
    slots = {board.slot(f"http://10.0.0.{i}:30000") for i in range(200)}
    assert len(slots) == 200 and all(0 <= s < MAX_WORKERS for s in slots)
    assert board.slot("http://10.0.0.7:30000") == board.slot("http://10.0.0.7:30000")


def test_others_sum_every_process_but_the_caller(board):
    s = board.slot("http://w:1")
    board.publish(0, s, 3, 30.0)
    board.publish(1, s, 5, 50.0)
    board.publish(2, s, 7, 70.0)
    assert board.others(0, s) == (12, 120.0)
    assert board.others(1, s) == (10, 100.0)
    board.clear_process(2)  # process 2 died: its requests died with it
    assert board.others(0, s) == (5, 50.0)


def test_worker_state_routes_on_the_sum_over_processes(board):
    from moep_router.config import WorkerSpec
    from moep_router.prefix_keys import PromptKeys
    from moep_router.workers import WorkerRegistry

    mine = WorkerRegistry(board=board, proc=0).add(WorkerSpec("http://w:1"))
    theirs = WorkerLoad(board, 1, "http://w:1")
    theirs.publish(4, 4e12)
    keys = PromptKeys([1, 2, 3])
    mine.reserve(keys, 1e12)
    assert mine.load() == (5, 5e12)
    assert board.others(1, theirs.slot) == (1, 1e12)  # what process 1 sees of process 0
    view = mine.view(keys, lambda m: 0.0)
    assert (view.num_inflight, view.outstanding_flops) == (5, 5e12)
    mine.release(keys, 1e12)
    assert mine.load() == (4, 4e12)


def _child_publishes(name, lock, url):
    child = LoadBoard.attach(name, 3, lock)
    WorkerLoad(child, 2, url).publish(9, 9.0)
    child.close()


def test_a_spawned_process_shares_the_board(board):
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=_child_publishes, args=(board.name, board._lock, "http://w:2"))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    assert board.others(0, board.slot("http://w:2")) == (9, 9.0)
