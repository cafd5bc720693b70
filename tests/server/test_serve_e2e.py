"""`moep-sglang serve` end to end on CPU: one command starts two real tiny workers and the router,
reports ready, serves; a killed worker is restarted and re-admitted while no accepted request is
lost; SIGTERM stops every process it started."""

from __future__ import annotations

import concurrent.futures as cf
import os
import re
import signal
import subprocess
import sys
import threading
import time

from moep_sglang.server.node import free_base_port
from moep_sglang.server.worker_process import free_port
from tests.helpers import post


class _Output:
    """The serve process's stdout, collected by a thread; wait_for(regex) blocks on it."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc) -> None:
        for line in proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip())
                self._cond.notify_all()

    def wait_for(self, pattern: str, timeout_s: float) -> re.Match:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for line in self.lines:
                    if m := rx.search(line):
                        return m
                left = deadline - time.monotonic()
                assert left > 0, f"no {pattern!r} in serve's output:\n" + "\n".join(self.lines)
                self._cond.wait(left)


def _workers(url: str) -> dict[str, dict]:
    import json
    import urllib.request

    with urllib.request.urlopen(f"{url}/workers", timeout=10) as resp:
        return {w["url"]: w for w in json.loads(resp.read())["workers"]}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_serve_starts_supervises_and_stops_a_cpu_node(tiny_model, tmp_path):
    port, base = free_port(), free_base_port(2)
    proc = subprocess.Popen(
        [sys.executable, "-m", "moep_sglang.cli", "serve", "--model-path", str(tiny_model),
         "--workers", "2", "--cpu-threads", "1", "--port", str(port),
         "--worker-base-port", str(base), "--log-dir", str(tmp_path),
         "--router-arg=--health-interval-s=0.5", "--router-arg=--policy=round_robin"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "MOEP_FORCE_CPU": "1"})
    out = _Output(proc)
    url = f"http://127.0.0.1:{port}"
    try:
        out.wait_for(r"ready: moep-router on", 600)
        pids = {int(m[1]): int(m[2]) for m in (re.search(r"worker (\d+) serving \(pid (\d+)\)", l)
                                               for l in out.lines) if m}
        assert sorted(pids) == [0, 1]
        assert set(_workers(url)) == {f"http://127.0.0.1:{base}", f"http://127.0.0.1:{base + 1}"}
        body = {"query": "The doctor noticed that the fast phone was cheap. " * 60,
                "items": [" Answer:"], "label_token_ids": [661, 362]}
        assert post(f"{url}/v1/score", body)[0] == 200

        # Kill worker 0 with requests in flight: each accepted one is answered (retried on 1).
        with cf.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(post, f"{url}/v1/score", {**body, "query": f"{i} {body['query']}"},
                                   120) for i in range(40)]
            time.sleep(1.0)
            killed_at = time.monotonic()
            os.killpg(pids[0], signal.SIGKILL)
            statuses = [f.result()[0] for f in futures]
        assert statuses == [200] * 40

        m = out.wait_for(r"worker 0 restarted \(pid (\d+)\)", 600)
        assert int(m[1]) != pids[0]
        deadline = time.monotonic() + 120
        while not _workers(url)[f"http://127.0.0.1:{base}"]["healthy"]:
            assert time.monotonic() < deadline, "restarted worker not re-admitted"
            time.sleep(0.5)
        print(f"worker 0 back in service {time.monotonic() - killed_at:.0f} s after the kill")
        before = _workers(url)[f"http://127.0.0.1:{base}"]["requests"]
        assert all(post(f"{url}/v1/score", {**body, "query": f"again {i}"})[0] == 200
                   for i in range(4))
        assert _workers(url)[f"http://127.0.0.1:{base}"]["requests"] > before  # serving again
        new_pids = [int(m[1]), pids[1]]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
    assert code == 0
    out.wait_for(r"moep-serve: stopped", 5)
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in new_pids):
        assert time.monotonic() < deadline, "a worker outlived serve's SIGTERM"
        time.sleep(0.5)
