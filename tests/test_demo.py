"""`moep-sglang demo` end to end: results printed, and nothing left running, Ctrl-C included."""

import signal
import subprocess
import sys
import time

import psutil

DEMO = [sys.executable, "-m", "moep_sglang.cli", "demo", "--preset", "tiny", "--num-docs", "4",
        "--questions-per-doc", "3"]


def _descendants(pid: int, seen: set[int]) -> None:
    try:
        seen.update(c.pid for c in psutil.Process(pid).children(recursive=True))
    except psutil.NoSuchProcess:
        pass


def _worker_descendants(proc, seen, until, timeout_s=120):
    """Record every process the demo starts (SGLang servers and their children)."""
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline and not until():
        _descendants(proc.pid, seen)
        time.sleep(0.2)
    _descendants(proc.pid, seen)


def _alive(pids: set[int]) -> list[int]:
    return [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]


def test_demo_prints_results_and_leaves_no_processes(tiny_model, tmp_path):
    proc = subprocess.Popen([*DEMO, "--log-dir", str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen: set[int] = set()
    _worker_descendants(proc, seen, until=lambda: False, timeout_s=240)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, out
    assert "12 requests on 2 workers" in out and "cache hits:" in out and "P(yes)=" in out
    assert "GFLOP computed" in out
    assert "workers stopped" in out
    assert len(seen) >= 2 and not _alive(seen)


def _sigint_default() -> None:
    # A terminal's Ctrl-C reaches a process whose SIGINT is not ignored; a test run started as a
    # background job of a non-interactive shell inherits SIGINT ignored, so reset it for the demo.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_every_worker(tiny_model, tmp_path):
    proc = subprocess.Popen([*DEMO, "--log-dir", str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, preexec_fn=_sigint_default)
    seen: set[int] = set()
    # Interrupt once the SGLang servers have started their own children (scheduler etc.).
    _worker_descendants(proc, seen, until=lambda: len(seen) >= 4)
    assert proc.poll() is None, "demo ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode != 0 and "workers stopped" in out, out
    deadline = time.monotonic() + 10
    while _alive(seen) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(seen)
