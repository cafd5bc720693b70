"""One SGLang worker as a child process: start, wait until it serves, stop with its children.

Used by `make demo` and by the tests (one real server per test module).
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class WorkerConfig:
    model_path: Path  # Hugging Face checkpoint directory
    port: int  # HTTP port of the SGLang server
    log_path: Path  # stdout+stderr of the server
    kv_events_port: int | None = None  # publish KV events on tcp://*:PORT
    cpu_threads: int | None = None  # torch threads on CPU
    extra_args: tuple[str, ...] = ()  # more SGLang flags
    plain_sglang: bool = False  # start `python -m sglang.launch_server` (plugin via entry point)
    # SGLang as its users run it (the benchmarks' baseline): `python -m sglang.launch_server`
    # with the given flags only, the moep plugin not loaded, none of our defaults added.
    baseline: bool = False
    env: dict[str, str] = field(default_factory=dict)  # extra environment variables
    host: str = "127.0.0.1"  # bind address of its HTTP server (0.0.0.0: reachable from others)

    @property
    def url(self) -> str:
        """Where this machine reaches it (loopback when it binds every interface)."""
        return f"http://{connect_host(self.host)}:{self.port}"


class WorkerStartError(RuntimeError):
    pass


class WorkerProcess:
    """A started SGLang server; `stop()` ends its whole process group."""

    def __init__(self, config: WorkerConfig):
        self.config = config
        self._proc: subprocess.Popen | None = None

    # Public API ---------------------------------------------------------------------------
    def start(self) -> WorkerProcess:
        cmd, env = self._command()
        self.config.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.config.log_path, "wb")
        self._proc = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        return self

    def wait_ready(self, timeout_s: float = 180.0) -> WorkerProcess:
        """Block until SGLang says it is up (its own warm-up request has finished) and a tiny
        prefill-only /generate succeeds (see _probe)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise WorkerStartError(self._failure(f"exited with code {self._proc.returncode}"))
            if _probe(self.config.url):
                return self
            time.sleep(0.5)
        raise WorkerStartError(self._failure(f"not ready after {timeout_s:.0f} s"))

    def terminate(self) -> None:
        """Ask the server to stop (SIGTERM to its process group) without waiting; see stop_all."""
        if self._proc is not None and self._proc.poll() is None:
            _signal_group(self._proc.pid, signal.SIGTERM)

    def stop(self, timeout_s: float = 15.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
        _signal_group(proc.pid, signal.SIGKILL)  # SGLang's children may outlive the parent
        proc.wait(timeout=timeout_s)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> WorkerProcess:
        return self.start().wait_ready()

    def __exit__(self, *exc) -> None:
        self.stop()

    # Internals ----------------------------------------------------------------------------
    def _command(self) -> tuple[list[str], dict[str, str]]:
        from moep_sglang.server.launch import (
            _has_flag,
            build_command,
            gpu_major,
            kv_events_config,
            parse_launch_args,
        )

        c = self.config
        argv = ["--model-path", str(c.model_path), "--port", str(c.port), "--host", c.host]
        if c.kv_events_port is not None:
            argv += (["--kv-events-config", kv_events_config(c.kv_events_port)] if c.baseline
                     else ["--kv-events-port", str(c.kv_events_port)])
        if c.cpu_threads:
            argv += ["--cpu-threads", str(c.cpu_threads)]
        argv += list(c.extra_args)
        if not _has_flag(argv, "--nccl-port"):
            # SGLang picks its torch.distributed port at random; workers started together
            # collided on it (EADDRINUSE). Ours come from free_port, never handed out twice.
            argv += ["--nccl-port", str(free_port())]
        if c.baseline:
            cmd = [sys.executable, "-m", "sglang.launch_server", *argv]
            # SGLang loads only the plugins this list names: none of ours.
            env = {**os.environ, "SGLANG_PLUGINS": "none"}
        elif c.plain_sglang:
            major = gpu_major()
            cmd, env = build_command(parse_launch_args(argv, on_cpu=major is None,
                                                       gpu_major=major))
        else:
            cmd = [sys.executable, "-m", "moep_sglang.cli", "launch_server", *argv]
            env = dict(os.environ)
        env.update(c.env)
        return cmd, env

    def _failure(self, what: str) -> str:
        tail = _tail(self.config.log_path, 40)
        return f"SGLang worker on port {self.config.port} {what}; last log lines:\n{tail}"


def connect_host(bind_host: str) -> str:
    """The address to reach a server bound to bind_host from this machine."""
    return "127.0.0.1" if bind_host in ("0.0.0.0", "::", "", "localhost") else bind_host


_HANDED_OUT: set[int] = set()  # ports given out by this process, bound or not yet


def stop_all(workers: list[WorkerProcess]) -> None:
    """Stop several servers at once (an AsyncEP group): signal all, then wait for each."""
    for w in workers:
        w.terminate()
    for w in workers:
        w.stop()


def free_port() -> int:
    """A free port not handed out before by this process (servers bind theirs later).

    Chosen below the kernel's ephemeral range: a port picked with bind(0) is itself ephemeral,
    and an outgoing connection (gloo, a TCPStore client) could take it before the server that
    was promised it binds it (seen: a worker's HTTP port taken, EADDRINUSE)."""
    low, high = _PORT_RANGE
    for _ in range(200):
        port = random.randrange(low, high)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free port found in [{low}, {high})")


def _port_range() -> tuple[int, int]:
    """Ports below the ephemeral range (Linux: /proc/sys/net/ipv4/ip_local_port_range)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral_low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    low = 10000 if ephemeral_low > 12000 else 1024
    return low, max(ephemeral_low, low + 1000)


_PORT_RANGE = _port_range()


def free_port_pair() -> int:
    """A port P with P + 1 also free (KV events on P, their replay socket on P + 1)."""
    for _ in range(100):
        port = free_port()
        if port + 1 in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        _HANDED_OUT.add(port + 1)
        return port
    raise RuntimeError("no two adjacent free ports found")


def _probe(url: str) -> bool:
    """Ready: /health answers 200 (SGLang answers 503 until its warm-up request, an 8-token
    generation sent once /model_info answers, has finished) and a prefill-only /generate
    succeeds. A /generate alone succeeds before that warm-up ends, and work sent then runs
    beside its decode: plain SGLang 0.5.17's overlap scheduler fails a decode batch that also
    carries a finished scoring request (`token_ids_logprob`: "'list' object has no attribute
    'tolist'", one H100, 2026-12-07), so its scheduler dies."""
    body = json.dumps({"input_ids": [1, 2], "sampling_params": {"max_new_tokens": 0}}).encode()
    checks = (urllib.request.Request(f"{url}/health"),
              urllib.request.Request(f"{url}/generate", data=body,
                                     headers={"Content-Type": "application/json"}))
    try:
        for req in checks:
            with urllib.request.urlopen(req, timeout=5) as resp:
                if resp.status != 200:
                    return False
        return True
    except (urllib.error.URLError, OSError):
        return False


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: Path, num_lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-num_lines:])
    except OSError:
        return "(no log)"
