"""`moep-sglang launch_server`: SGLang's launch_server with the plugin and working CPU defaults.

Our own flags come first and are few; every other argument is SGLang's and passes through
unchanged. On a machine without a GPU, the CPU defaults below are added unless given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass

# SGLang flags (and values) that make SGLang 0.5.17 serve on CPU; each is added only if the user
# did not pass that flag. Facts: shared/notes/sglang-cpu.md.
CPU_DEFAULTS: tuple[tuple[str, str | None], ...] = (
    ("--device", "cpu"),
    ("--attention-backend", "torch_native"),  # the attention backend that runs on CPU
    ("--grammar-backend", "none"),  # no constrained decoding in prefill-only serving
    ("--max-total-tokens", "32768"),  # bound the KV pool (else ~15 GB sized from RAM)
    ("--page-size", "1"),  # the paged allocator needs Triton on GPU for page > 1
    ("--dtype", "float32"),  # SGLang maps float32 configs to fp16, which is slow on CPU
    ("--cuda-graph-backend-decode", "disabled"),
    ("--cuda-graph-backend-prefill", "disabled"),
)


@dataclass(frozen=True)
class LaunchConfig:
    sglang_args: tuple[str, ...]  # passed to sglang.launch_server as given
    kv_events_port: int | None  # --kv-events-port: publish KV events on tcp://*:PORT
    cpu_threads: int | None  # --cpu-threads: torch/OpenMP threads of this worker (CPU)
    on_cpu: bool  # no GPU visible (or MOEP_FORCE_CPU=1): CPU defaults apply


def parse_launch_args(argv: list[str], on_cpu: bool) -> LaunchConfig:
    parser = argparse.ArgumentParser(
        prog="moep-sglang launch_server",
        description="Start `python -m sglang.launch_server` with the moep plugin. Flags not "
        "listed here are SGLang's and pass through (see `python -m sglang.launch_server -h`).",
    )
    parser.add_argument("--kv-events-port", type=int, default=None,
                        help="publish KV cache events over ZMQ on tcp://*:PORT (topic 'kv'), "
                        "with their replay socket on PORT+1")
    parser.add_argument("--cpu-threads", type=int, default=None,
                        help="torch/OpenMP threads for this worker on CPU (default: all cores)")
    ours, rest = parser.parse_known_args(argv)
    if ours.kv_events_port is not None and _has_flag(rest, "--kv-events-config"):
        parser.error("give either --kv-events-port or SGLang's --kv-events-config, not both")
    return LaunchConfig(tuple(rest), ours.kv_events_port, ours.cpu_threads, on_cpu)


def build_command(config: LaunchConfig) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that start the worker."""
    args = list(config.sglang_args)
    env = dict(os.environ)
    if config.on_cpu:
        env["SGLANG_USE_CPU_ENGINE"] = "1"
        for flag, value in CPU_DEFAULTS:
            if not _has_flag(args, flag):
                args += [flag] if value is None else [flag, value]
    if config.cpu_threads:
        env["OMP_NUM_THREADS"] = str(config.cpu_threads)
    if config.kv_events_port is not None:
        args += ["--kv-events-config", kv_events_config(config.kv_events_port)]
    return [sys.executable, "-m", "sglang.launch_server", *args], env


def kv_events_config(port: int) -> str:
    """Events on PORT; replay of missed batches (moep-router's gap repair) on PORT + 1."""
    return json.dumps({"publisher": "zmq", "endpoint": f"tcp://*:{port}",
                       "replay_endpoint": f"tcp://*:{port + 1}", "topic": "kv"})


def gpu_available() -> bool:
    from moep_sglang import envs

    if envs.force_cpu():
        return False
    import torch

    return torch.cuda.is_available()


def run_launch_server(argv: list[str]) -> None:
    """Replace this process with the SGLang server (same PID: signals reach SGLang directly)."""
    config = parse_launch_args(argv, on_cpu=not gpu_available())
    cmd, env = build_command(config)
    os.execvpe(cmd[0], cmd, env)


def _has_flag(args: list[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in args)
