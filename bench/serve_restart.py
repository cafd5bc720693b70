"""How long a node started by `moep-sglang serve` is short of a worker after one is killed, and
whether any accepted request is lost meanwhile (issue 13's target: back within 120 s on CPU).

Starts `moep-sglang serve` with 2 tiny CPU workers (replicas) or one 2-rank AsyncEP group, sends
a stream of /v1/score requests through its router, SIGKILLs worker 0's process group in the
middle, and records: every request's status, the seconds from the kill until serve printed the
restart and until the router listed the worker healthy again, and that it serves again.
Usage: python -m bench.serve_restart [--mode replicas|asyncep] [--repeats 3]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.common import print_table, write_result


class ServeProcess:
    """`moep-sglang serve` as a child, its stdout collected: wait_for(regex), workers(), stop()."""

    def __init__(self, model: Path, log_dir: Path, *flags: str, workers: int = 2) -> None:
        from moep_sglang.server.node import free_base_port
        from moep_sglang.server.worker_process import free_port

        self.port, self.base = free_port(), free_base_port(workers)
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moep_sglang.cli", "serve", "--model-path", str(model),
             "--workers", str(workers), "--cpu-threads", "1", "--port", str(self.port),
             "--worker-base-port", str(self.base), "--log-dir", str(log_dir),
             "--router-arg=--health-interval-s=0.5", *flags],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "MOEP_FORCE_CPU": "1"})
        self.lines: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip())
                self._cond.notify_all()

    def wait_for(self, pattern: str, timeout_s: float, after: int = 0) -> re.Match:
        """The first output line from index `after` on that matches; AssertionError on timeout."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for line in self.lines[after:]:
                    if m := rx.search(line):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {pattern!r} in serve's output:\n" +
                                         "\n".join(self.lines))
                self._cond.wait(left)

    def worker_url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.base + i}"

    def workers(self) -> dict[str, dict]:
        with urllib.request.urlopen(f"{self.url}/workers", timeout=10) as resp:
            return {w["url"]: w for w in json.loads(resp.read())["workers"]}

    def pid(self, i: int) -> int:
        return int(self.wait_for(rf"worker {i} (?:serving|restarted) \(pid (\d+)\)", 5)[1])

    def stop(self, timeout_s: float = 120) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout_s)


def post(url: str, body: dict, timeout: float = 120) -> int:
    req = urllib.request.Request(url, json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except (urllib.error.URLError, OSError):
        return -1


def one_run(model: Path, log_dir: Path, mode: str, num_requests: int) -> dict:
    serve = ServeProcess(model, log_dir, f"--mode={mode}",
                         *(["--router-arg=--policy=round_robin"] if mode == "replicas" else []))
    body = {"query": "The doctor noticed that the fast phone was cheap. " * 60,
            "items": [" Answer:"], "label_token_ids": [661, 362]}
    try:
        serve.wait_for(r"ready: moep-router on", 600)
        mark = len(serve.lines)
        with cf.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(post, f"{serve.url}/v1/score", {**body, "query": f"{i} " +
                                                                   body["query"]})
                       for i in range(num_requests)]
            while sum(f.done() for f in futures) < min(20, num_requests // 4):
                time.sleep(0.01)  # the stream is flowing: requests in flight on every worker
            killed = time.monotonic()
            os.killpg(serve.pid(0), signal.SIGKILL)
            statuses = [f.result() for f in futures]
        serve.wait_for(r"worker 0 restarted", 900, after=mark)
        restarted_s = time.monotonic() - killed
        while not serve.workers()[serve.worker_url(0)]["healthy"]:
            time.sleep(0.25)
        back_s = time.monotonic() - killed
        serving = post(f"{serve.url}/v1/score", body) == 200
    finally:
        code = serve.stop()
    return {"mode": mode, "requests": num_requests,
            "answered_200": sum(s == 200 for s in statuses),
            "other_statuses": sorted({s for s in statuses if s != 200}),
            "restart_printed_s": round(restarted_s, 1), "back_in_service_s": round(back_s, 1),
            "serves_after": serving, "serve_exit_code": code}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mode", default="replicas", choices=["replicas", "asyncep"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--log-dir", type=Path, default=Path(".cache/serve_restart"))
    args = p.parse_args()
    from moep_sglang import envs
    from moep_sglang.models.checkpoint import ensure_model

    model = ensure_model(envs.model_cache_dir(), "tiny")
    runs = [one_run(model, args.log_dir / f"run{i}", args.mode,
                    args.requests if args.mode == "replicas" else 0)
            for i in range(args.repeats)]
    path = write_result(f"serve_restart_{args.mode}_cpu", {
        "config": {"preset": "tiny", "workers": 2, "mode": args.mode,
                   "requests_in_flight_at_kill": args.requests if args.mode == "replicas" else 0,
                   "health_interval_s": 0.5}, "runs": runs})
    print_table(runs, [("mode", "mode", ""), ("requests", "requests", "d"),
                       ("answered_200", "answered 200", "d"),
                       ("restart_printed_s", "restarted (s)", ".1f"),
                       ("back_in_service_s", "back in service (s)", ".1f")])
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
