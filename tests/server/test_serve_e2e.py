"""`moep-sglang serve` end to end on CPU: one command starts two real tiny workers and the router,
reports ready, serves; a killed worker is restarted and re-admitted while no accepted request is
lost; a killed AsyncEP rank restarts its whole group; SIGTERM stops every process it started."""

from __future__ import annotations

import concurrent.futures as cf
import os
import re
import signal
import time
import urllib.request

import pytest

from bench.serve_restart import ServeProcess
from tests.helpers import post

BODY = {"query": "The doctor noticed that the fast phone was cheap. " * 60,
        "items": [" Answer:"], "label_token_ids": [661, 362]}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_healthy(serve: ServeProcess, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(w["healthy"] for w in serve.workers().values()):
        assert time.monotonic() < deadline, f"not re-admitted: {serve.workers()}"
        time.sleep(0.5)


def test_serve_starts_supervises_and_stops_a_cpu_node(tiny_model, tmp_path):
    serve = ServeProcess(tiny_model, tmp_path, "--router-arg=--policy=round_robin")
    try:
        serve.wait_for(r"ready: moep-router on", 600)
        pids = [serve.pid(0), serve.pid(1)]
        assert set(serve.workers()) == {serve.worker_url(0), serve.worker_url(1)}
        assert post(f"{serve.url}/v1/score", BODY)[0] == 200

        # Kill worker 0 with requests in flight: each accepted one is answered (retried on 1).
        mark = len(serve.lines)
        with cf.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(post, f"{serve.url}/v1/score",
                                   {**BODY, "query": f"{i} {BODY['query']}"}, 120)
                       for i in range(200)]
            while sum(f.done() for f in futures) < 20:  # kill once the stream is flowing:
                time.sleep(0.01)                          # 8 requests in flight, 4 on each
            os.killpg(pids[0], signal.SIGKILL)
            statuses = [f.result()[0] for f in futures]
        assert statuses == [200] * 200
        metrics = urllib.request.urlopen(f"{serve.url}/metrics", timeout=10).read().decode()
        retried = float(re.search(r"^moep_router_retries_total (\S+)$", metrics, re.M)[1])
        assert retried >= 1  # requests in flight on the killed worker were answered elsewhere

        new_pid = int(serve.wait_for(r"worker 0 restarted \(pid (\d+)\)", 600, after=mark)[1])
        assert new_pid != pids[0]
        _wait_healthy(serve)
        before = serve.workers()[serve.worker_url(0)]["requests"]
        assert all(post(f"{serve.url}/v1/score", {**BODY, "query": f"again {i}"})[0] == 200
                   for i in range(4))
        assert serve.workers()[serve.worker_url(0)]["requests"] > before  # serving again
    finally:
        code = serve.stop()
    assert code == 0
    serve.wait_for(r"moep-serve: stopped", 5)
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in (new_pid, pids[1])):
        assert time.monotonic() < deadline, "a worker outlived serve's SIGTERM"
        time.sleep(0.5)


# Two group starts (each up to 600 s on a slow 2-core machine) exceed the suite's 600-s timeout:
# the first start and the restart are each bounded by their own wait_for below.
@pytest.mark.timeout(1200)
def test_serve_restarts_an_asyncep_group_that_lost_a_rank(tiny_model, tmp_path):
    """One AsyncEP group of 2 CPU workers: a killed rank takes the group down (its peer exits,
    AsyncEPPeerLost); serve restarts both ranks and the router re-admits them."""
    serve = ServeProcess(tiny_model, tmp_path, "--mode=asyncep")
    body = {"query": "Is the hotel good?", "items": [" Answer:"], "label_token_ids": [661, 362]}
    try:
        serve.wait_for(r"ready: moep-router on", 600)
        serve.wait_for(r"as asyncep \(peer\)", 1)
        assert post(f"{serve.url}/v1/score", body)[0] == 200
        pids = [serve.pid(0), serve.pid(1)]
        mark = len(serve.lines)
        os.killpg(pids[0], signal.SIGKILL)
        serve.wait_for(r"worker 0,1: worker\(s\) \[0(, 1)?\] exited; restarting the group", 120,
                       after=mark)
        restarted = [int(serve.wait_for(rf"worker {i} restarted \(pid (\d+)\)", 600,
                                        after=mark)[1]) for i in (0, 1)]
        assert not set(restarted) & set(pids)
        _wait_healthy(serve)
        assert post(f"{serve.url}/v1/score", body)[0] == 200
    finally:
        code = serve.stop()
    assert code == 0
