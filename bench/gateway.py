"""SGLang's gateway (`smg launch`, PyPI smg), the router baseline of every router benchmark: one
process in front of a set of SGLang servers, started and stopped here, with its CPU time read
from outside (psutil)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from moep_sglang.server.worker_process import free_port

LOGS = Path(".cache/bench")
LEGACY_ROUTER_DIR = Path(".cache/sglang-router-0.3.2")  # `make bench-install` puts it there


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process (and its children) has used so far."""
    import psutil

    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        t = p.cpu_times()
        total += t.user + t.system
    return total


def smg_version() -> str | None:
    """The installed smg's version; None when it is not installed (then no smg rows either)."""
    try:
        from importlib.metadata import version

        return version("smg")
    except Exception:  # noqa: BLE001 - any failure means: not usable here
        return None


def num_workers(listed) -> int:
    """Workers in smg's GET /workers reply ({"workers": [...]} or a bare list)."""
    if isinstance(listed, dict):
        listed = listed.get("workers", listed.get("urls", []))
    return len(listed) if isinstance(listed, list) else 0


class SmgGateway:
    """`smg launch` (SGLang Model Gateway), default thresholds; cache_aware unless told. start()
    and stop() as moep-router's RouterProcess has them, or a context manager."""

    def __init__(self, worker_urls: list[str], policy: str = "cache_aware",
                 legacy: bool = False, log_path: Path | None = None) -> None:
        """legacy: sglang-router 0.3.2, the gateway's last release under that name, from its own
        folder (LEGACY_ROUTER_DIR, `make bench-install`): it also installs an `smg` command,
        so it cannot share the environment with smg 1.x."""
        self.port = free_port()
        self.worker_urls = worker_urls
        self.policy = policy
        self.log_path = log_path or LOGS / "sglang-router.log"
        self.env = None
        # Its Prometheus exporter on a free port too (default 29000: one at a time otherwise)
        args = ["--host", "127.0.0.1", "--port", str(self.port), "--policy", policy,
                "--worker-urls", *worker_urls, "--log-level", "warn",
                "--prometheus-port", str(free_port())]
        if legacy:
            if not (LEGACY_ROUTER_DIR / "sglang_router").is_dir():
                raise SystemExit(f"sglang-router 0.3.2 is not in {LEGACY_ROUTER_DIR}: run "
                                 "`make bench-install`")
            self.cmd = [sys.executable, "-m", "sglang_router.launch_router", *args]
            self.env = {**os.environ, "PYTHONPATH": str(LEGACY_ROUTER_DIR)}
        else:
            smg = Path(sys.executable).with_name("smg")
            self.cmd = [str(smg) if smg.exists() else (shutil.which("smg") or "smg"), "launch",
                        *args]
        self.proc = None
        self.url = f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    def __enter__(self) -> SmgGateway:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> SmgGateway:
        """Start it; return once it lists every worker."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT,
                                         env=self.env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                # smg 1.x answers /health before it has registered its workers (~30 s): wait
                # until /workers lists every one.
                listed = json.loads(urllib.request.urlopen(f"{self.url}/workers", timeout=2).read())
                if num_workers(listed) >= len(self.worker_urls):
                    return self
            except (OSError, ValueError):
                if self.proc.poll() is not None:
                    raise RuntimeError(f"smg exited; see {self.log_path}") from None
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"smg not ready after 120 s; see {self.log_path}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
