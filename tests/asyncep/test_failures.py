"""An AsyncEP group with a frozen peer and a killed peer (real CPU workers). Idle collective
ranks keeping a busy one going (no deadlock) is exercised by every equivalence test: each rank
answers its requests while the others idle in lockstep."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.asyncep.conftest import LABELS, requests_for_scoring
from tests.helpers import post, start_group, stop_all


def _one_score(url: str, timeout: float = 60) -> tuple[int, dict]:
    query, items = requests_for_scoring()[0]
    return post(f"{url}/v1/score", {"query": query, "items": items, "label_token_ids": LABELS},
                timeout=timeout)


def _signal_tree(worker, sig) -> None:
    os.killpg(worker.pid, sig)  # the launcher's process group: HTTP server, scheduler, ...


def _wait_for(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def _log(worker) -> str:
    return worker.config.log_path.read_text(errors="replace")


def test_busy_rank_never_waits_for_a_stopped_peer(tiny_model, log_dir):
    """peer: rank 1 frozen (SIGSTOP, alive but unresponsive); rank 0 keeps serving at once."""
    group = start_group(tiny_model, log_dir, 2, "peer")
    try:
        _signal_tree(group[1], signal.SIGSTOP)
        started = time.monotonic()
        for _ in range(5):
            status, body = _one_score(group[0].config.url, timeout=20)
            assert status == 200, body
        assert time.monotonic() - started < 20
    finally:
        _signal_tree(group[1], signal.SIGCONT)
        stop_all(group)


@pytest.mark.parametrize("backend", ["collective", "peer"])
def test_killed_peer_gives_a_clear_error_in_bounded_time(backend, tiny_model, log_dir):
    group = start_group(tiny_model, log_dir, 2, backend)
    try:
        _signal_tree(group[1], signal.SIGKILL)
        started = time.monotonic()
        # Rank 0 is idle: the lockstep agreement (collective) or the watchdog (both) notices.
        assert _wait_for(lambda: "lost a worker" in _log(group[0]), 30), _log(group[0])[-3000:]
        assert time.monotonic() - started < 30
        text = _log(group[0])
        assert "AsyncEPPeerLost" in text and "rank(s) [1]" in text, text[-3000:]
        assert _wait_for(lambda: not group[0].alive(), 30), "rank 0 kept running without rank 1"
    finally:
        stop_all(group)
