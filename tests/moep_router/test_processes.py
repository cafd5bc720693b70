"""`moep-router --processes 2` in front of two real CPU workers: both processes serve the one
port, each routes on exact cache indexes (requests sharing a prefix all find it cached, whichever
process took them), a worker added at run time reaches both, /metrics sums both, and a killed
process is restarted while the other keeps serving."""

import os
import re
import signal
import time

import psutil

from tests.helpers import RouterProcess, post, worker_spec

PREFIX = list(range(100, 400))  # 300 tokens shared by every request below


def _score(router, i: int) -> tuple[int, dict]:
    return post(f"{router.url}/v1/score", {"query": PREFIX, "items": [[7, 8, 9 + i]],
                                           "label_token_ids": [5, 6]})


def _processes_seen(router, timeout_s: float = 60) -> set[int]:
    """Which processes answer /health over fresh connections (the kernel spreads them); until
    both have (a process still starting is not listening yet)."""
    seen = set()
    deadline = time.monotonic() + timeout_s
    while len(seen) < 2 and time.monotonic() < deadline:
        seen.add(router.get("/health")[1]["process"])
        time.sleep(0.05)
    return seen


def _children(router) -> list[psutil.Process]:
    procs = psutil.Process(router.proc.pid).children()
    return [p for p in procs if "resource_tracker" not in " ".join(p.cmdline())]


def test_two_processes_route_exactly_share_workers_and_metrics(workers, tiny_model, log_dir):
    router = RouterProcess(tiny_model, [worker_spec(w) for w in workers],
                           log_dir / "router-processes.log", "--processes", "2").wait_healthy()
    try:
        assert _processes_seen(router) == {0, 1}
        status, first = _score(router, 0)
        assert status == 200
        time.sleep(1.0)  # the first request's KV events reach both processes' indexes
        replies = [_score(router, i) for i in range(1, 9)]
        assert all(s == 200 for s, _ in replies)
        # Both processes took some of these (fresh connections); every one found the prefix
        # cached, so every process knew which worker holds it.
        assert all(r["usage"]["cached_tokens"] >= len(PREFIX) - 1 for _, r in replies), replies

        _, listed = router.get("/workers")
        assert all(w["inflight"] == 0 for w in listed["workers"])  # the board drained
        metrics = router.get("/metrics")[1]
        total = sum(float(m) for m in re.findall(
            r'^moep_router_requests_total\{endpoint="/v1/score",status="200"\} (\S+)$',
            metrics, re.M))
        assert total == 9  # both processes' counters, from whichever rendered

        extra = "http://127.0.0.1:9"  # never answers: added, listed by both, removed
        assert post(f"{router.url}/workers", {"url": extra})[0] == 201
        time.sleep(0.5)
        for _ in range(20):
            assert extra in {w["url"] for w in router.get("/workers")[1]["workers"]}
        import urllib.request

        req = urllib.request.Request(f"{router.url}/workers?url={extra}", method="DELETE")
        urllib.request.urlopen(req, timeout=10).read()
        time.sleep(0.5)
        for _ in range(20):
            assert extra not in {w["url"] for w in router.get("/workers")[1]["workers"]}

        victim = _children(router)[0]
        os.kill(victim.pid, signal.SIGKILL)
        # Connections the kernel had queued on the victim's socket are reset with it (a client
        # sees the error); new ones go to the other process, which keeps serving meanwhile.
        time.sleep(0.2)
        for i in range(10):
            assert _score(router, 100 + i)[0] == 200
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            children = _children(router)
            if len(children) == 2 and victim.pid not in {c.pid for c in children}:
                break
            time.sleep(0.5)
        router.wait_healthy()
        assert _processes_seen(router) == {0, 1}
        assert _score(router, 200)[0] == 200
        children = _children(router)
    finally:
        router.stop()
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive  # SIGTERM to the supervisor stopped every router process
