"""`moep-router` as a child process: used by `make demo`, the benchmarks and the tests."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from moep_sglang.server.worker_process import connect_host, free_port


class RouterStartError(RuntimeError):
    pass


class RouterProcess:
    def __init__(self, model: Path, workers: list[str], log_path: Path, *flags: str,
                 port: int | None = None, host: str = "127.0.0.1") -> None:
        self.port = port or free_port()
        self.url = f"http://{connect_host(host)}:{self.port}"
        self.cmd = [sys.executable, "-m", "moep_router.cli", "--model-path", str(model),
                    "--host", host, "--port", str(self.port), *flags]
        for w in workers:
            self.cmd += ["--worker", w]
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 60, wait_healthy: bool = False) -> RouterProcess:
        """Start; return once it answers /health (with wait_healthy: once it answers 200,
        i.e. a worker is healthy and every cache index has replayed its worker's events)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RouterStartError(f"router exited: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2):
                    return self
            except urllib.error.HTTPError:
                if not wait_healthy:
                    return self  # answering at all (503: no healthy worker yet) means it is up
                time.sleep(0.2)
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        self.stop()
        raise RouterStartError(f"router not ready after {timeout_s:.0f} s")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> RouterProcess:
        return self.start(wait_healthy=True)

    def __exit__(self, *exc) -> None:
        self.stop()


def worker_spec(url: str, kv_events_port: int | None) -> str:
    """The --worker SPEC of a worker started with --kv-events-port."""
    return url + (f",kv=tcp://127.0.0.1:{kv_events_port}" if kv_events_port else "")
