"""Forming the AsyncEP group: a rank whose group never forms fails with a message that says what
to do, and two in-process ranks agree and see each other's liveness."""

from __future__ import annotations

import threading

import pytest

from moep_sglang.asyncep.config import AsyncEPConfig
from moep_sglang.asyncep.group import AsyncEPGroup
from moep_sglang.server.worker_process import free_port


def test_a_rank_without_its_group_exits_with_a_clear_message():
    config = AsyncEPConfig(rank=1, size=2, store=f"127.0.0.1:{free_port()}", timeout_s=2)
    with pytest.raises(SystemExit, match="could not reach rank 0's store.*--asyncep-store"):
        AsyncEPGroup.join(config)


def test_two_ranks_agree_on_work_and_see_each_other_alive():
    store = f"127.0.0.1:{free_port()}"
    groups: dict[int, AsyncEPGroup] = {}
    agreed: dict[int, bool] = {}

    def rank(r: int) -> None:
        groups[r] = AsyncEPGroup.join(AsyncEPConfig(rank=r, size=2, store=store, timeout_s=30))
        agreed[r] = groups[r].agree_any(r == 1)  # only rank 1 has work

    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert agreed == {0: True, 1: True}
    assert groups[0].dead_peers() == [] and groups[0].lost is None
