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
from pathlib import Path

from moep_sglang.asyncep.config import AsyncEPConfig, AsyncEPConfigError, BatchingConfig
from moep_sglang.asyncep.formats import check_checkpoint
from moep_sglang.server.memory import activation_bytes_per_token, activation_reserve_mb

# SGLang flags (and values) that make SGLang 0.5.17 serve on CPU; each is added only if the user
# did not pass that flag. Facts: shared/notes/sglang-cpu.md.
CPU_DEFAULTS: tuple[tuple[str, str | None], ...] = (
    ("--device", "cpu"),
    ("--attention-backend", "torch_native"),  # the attention backend that runs on CPU
    ("--grammar-backend", "none"),  # no constrained decoding in prefill-only serving
    ("--max-total-tokens", "32768"),  # bound the KV pool (else ~15 GB sized from RAM)
    ("--page-size", "1"),  # the paged allocator needs Triton on GPU for page > 1
    ("--dtype", "float32"),  # SGLang maps float32 configs to fp16, which is slow on CPU
    # (a quantized checkpoint, or --quantization, gets bfloat16: SGLang's FP8 layers refuse float32)
    ("--cuda-graph-backend-decode", "disabled"),
    ("--cuda-graph-backend-prefill", "disabled"),
)


@dataclass(frozen=True)
class LaunchConfig:
    sglang_args: tuple[str, ...]  # passed to sglang.launch_server as given
    kv_events_port: int | None  # --kv-events-port: publish KV events on tcp://*:PORT
    cpu_threads: int | None  # --cpu-threads: torch/OpenMP threads of this worker (CPU)
    on_cpu: bool  # no GPU visible (or MOEP_FORCE_CPU=1): CPU defaults apply
    asyncep: AsyncEPConfig | None = None  # --asyncep-*: this worker's AsyncEP group
    batching: BatchingConfig | None = None  # --min-batch-flops / --max-batch-wait-ms
    kv_cache_free: bool = False  # --kv-cache-free: no prefix cache, KV pool sized to one batch
    gpu_major: int | None = None  # compute capability major of the GPU (9: Hopper); None on CPU
    quantization: str | None = None  # quant_method of the checkpoint's config.json (None: none)
    # bf16 activation bytes a prefill-only batch keeps alive per token (server/memory.py), from
    # the checkpoint's config.json; None: not a local checkpoint or an unknown shape
    activation_bytes_per_token: int | None = None


# Prefill-only serving on GPU, each added unless the user passes the flag (issue 11; measured on
# one H200, shared/notes/device.md and bench/results/gpu/h200_*.json):
GPU_DEFAULTS: tuple[tuple[str, str | None], ...] = (
    # Nothing is decoded: decode CUDA graphs only cost start-up time (capture of every batch size).
    ("--cuda-graph-backend-decode", "disabled"),
)
# Prompts that share nothing (radix cache off: --disable-radix-cache, --kv-cache-free) and every
# AsyncEP / batching worker: prefill batches of up to 32K tokens, no prefill graphs (with AsyncEP
# a captured graph would replay its forward without the ring's gathers between layers). SGLang caps
# a batch at --max-prefill-tokens (16,384 by default): on 4xH200 every 30B AsyncEP batch stopped
# there, below the measured T of ~20-30K tokens, and the gathers stalled ~12% of the time
# (asyncep_30b_4k_peer_replicas.json). On one H200, Qwen3-30B-A3B at 4K: 65.4K tok/s against
# plain SGLang's 61.5K (h200_30b_one_gpu.json); its breakable prefill graphs, captured up to a
# 32K chunk, took 192 s of a 234 s start for no gain (h200_30b_one_gpu_graphs.json).
NO_REUSE_DEFAULTS: tuple[tuple[str, str | None], ...] = (
    ("--cuda-graph-backend-prefill", "disabled"),
    ("--chunked-prefill-size", "32768"),
    ("--max-prefill-tokens", "32768"),
)
# Prompts that share prefixes (radix cache on, SGLang's default), where nothing was measured:
# SGLang's own 8K chunks. Before the plugin's in-batch prefix deduplication
# (moep_sglang/plugin/prefix_dedup.py) a 32K batch took several prompts of one group at once,
# before their shared prefix was cached, and computed it once per prompt: on the Table-2-shaped
# mix on one H200, 32K batches without graphs got 77% of the ideal cached tokens and 50.0K tok/s,
# 8K chunks 100% and 60.8K, 8K chunks with prefill graphs 72.4K / 70.5K (the many small batches
# of short prompts are launch-bound) (h200_30b_table2_one_gpu*.json).
REUSE_DEFAULTS: tuple[tuple[str, str | None], ...] = (
    ("--chunked-prefill-size", "8192"),
    ("--max-prefill-tokens", "16384"),
)
# The same on Hopper, measured with the deduplication on one H100 (2026-12-06, the mix, medians of
# 3): 32K batches with breakable prefill graphs for batches up to 8K tokens 68.7K tok/s against
# plain SGLang's 62.0K in the same call (h100_30b_table2_one_gpu_dd3.json); 16K batches 66.1K,
# 8K chunks 60.9K (h100_30b_table2_one_gpu_dd2.json). Graphs are captured only up to 8K: to 32K
# they cost 192 s of start for no gain (h200_30b_one_gpu_graphs.json).
HOPPER_REUSE_DEFAULTS: tuple[tuple[str, str | None], ...] = (
    ("--chunked-prefill-size", "32768"),
    ("--max-prefill-tokens", "32768"),
    ("--cuda-graph-backend-prefill", "breakable"),
    ("--cuda-graph-max-bs-prefill", "8192"),
)
# On Hopper (compute capability 9.x): FlashAttention-3, SGLang's own Hopper default, ahead-of-time
# compiled (FlashInfer measured the same speed, 63.5K vs 62.4-63.6K tok/s on Qwen3-30B-A3B at 4K,
# but JIT-compiles at first use: 179 s to a first answer on a bare machine). Named explicitly so
# the choice does not depend on SGLang's model-by-model rules.
HOPPER_DEFAULTS: tuple[tuple[str, str | None], ...] = (("--attention-backend", "fa3"),)

# KV pool of --kv-cache-free: one batch at the AsyncEP chunk size and nothing retained; a prompt
# must fit in it (raise it with --max-total-tokens).
KV_CACHE_FREE_TOKENS = 32768


def parse_launch_args(argv: list[str], on_cpu: bool,
                      gpu_major: int | None = None) -> LaunchConfig:
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
    _add_asyncep_args(parser)
    ours, rest = parser.parse_known_args(argv)
    if ours.kv_events_port is not None and _has_flag(rest, "--kv-events-config"):
        parser.error("give either --kv-events-port or SGLang's --kv-events-config, not both")
    checkpoint = _checkpoint_config(_flag_value(rest, "--model-path"))
    quant_config = checkpoint.get("quantization_config")
    quant_config = quant_config if isinstance(quant_config, dict) else None
    try:
        asyncep = _asyncep_config(ours)
        batching = (BatchingConfig(ours.min_batch_flops, ours.max_batch_wait_ms)
                    if asyncep or ours.min_batch_flops is not None else None)
        if asyncep is not None:  # fail before SGLang loads anything
            check_checkpoint(quant_config, _flag_value(rest, "--quantization"))
    except AsyncEPConfigError as exc:
        parser.error(str(exc))
    quantization = str(quant_config.get("quant_method", "unnamed")) if quant_config else None
    return LaunchConfig(tuple(rest), ours.kv_events_port, ours.cpu_threads, on_cpu, asyncep,
                        batching, ours.kv_cache_free, None if on_cpu else gpu_major,
                        quantization, activation_bytes_per_token(checkpoint))


def _checkpoint_config(model_path: str | None) -> dict:
    """config.json of a local checkpoint ({}: a hub name or an unreadable file)."""
    if not model_path:
        return {}
    try:
        config = json.loads((Path(model_path) / "config.json").read_text())
    except (OSError, ValueError):
        return {}  # SGLang reports it
    return config if isinstance(config, dict) else {}


def _add_asyncep_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group(
        "AsyncEP", "experts sharded across N workers of a node, gathered in the background")
    d = AsyncEPConfig(rank=0, size=1, store="h:1")
    g.add_argument("--asyncep-size", type=int, default=None,
                   help="N workers that share one copy of the experts (enables AsyncEP)")
    g.add_argument("--asyncep-rank", type=int, default=None, help="this worker's rank, 0..N-1")
    g.add_argument("--asyncep-store", default=None,
                   help="HOST:PORT where rank 0 hosts the group's rendezvous store")
    g.add_argument("--asyncep-backend", default=d.backend, choices=("collective", "peer"),
                   help="collective: all-gather (lockstep); peer: one-sided reads of peers' "
                   "shards (shared memory / CUDA IPC)")
    g.add_argument("--asyncep-ring-slots", type=int, default=d.ring_slots,
                   help="full-layer expert buffers in the ring (S)")
    g.add_argument("--asyncep-lookahead", type=int, default=d.lookahead,
                   help="layers gathered ahead of the computing one (K < S)")
    g.add_argument("--asyncep-gamma", type=float, default=d.gamma,
                   help="safety factor of T = t_gather x F x gamma")
    g.add_argument("--asyncep-offload", action="store_true",
                   help="hybrid offload: expert shards in pinned host memory, copied to the "
                   "device ahead of the gather")
    g.add_argument("--asyncep-timeout", type=float, default=d.timeout_s,
                   help="seconds to wait for the group at startup and for a collective")
    g.add_argument("--asyncep-shm-dir", default=d.shm_dir,
                   help="directory for the peer backend's shared shards on CPU")
    g.add_argument("--min-batch-flops", type=float, default=None,
                   help="force T (FLOPs per layer) for prefill batching instead of measuring it")
    g.add_argument("--max-batch-wait-ms", type=float, default=BatchingConfig().max_wait_ms,
                   help="longest extra wait for a prefill batch to reach T")
    g.add_argument("--kv-cache-free", action="store_true",
                   help="no prefix cache and a KV pool of one batch (workloads without reuse)")


def _asyncep_config(ours: argparse.Namespace) -> AsyncEPConfig | None:
    given = [ours.asyncep_size, ours.asyncep_rank, ours.asyncep_store]
    if all(v is None for v in given):
        return None
    if any(v is None for v in given):
        raise AsyncEPConfigError(
            "AsyncEP needs all of --asyncep-size, --asyncep-rank and --asyncep-store")
    return AsyncEPConfig(
        rank=ours.asyncep_rank, size=ours.asyncep_size, store=ours.asyncep_store,
        backend=ours.asyncep_backend, ring_slots=ours.asyncep_ring_slots,
        lookahead=ours.asyncep_lookahead, gamma=ours.asyncep_gamma,
        offload=ours.asyncep_offload, timeout_s=ours.asyncep_timeout,
        shm_dir=ours.asyncep_shm_dir)


def build_command(config: LaunchConfig) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that start the worker."""
    args = list(config.sglang_args)
    env = dict(os.environ)
    # /health then answers 200 exactly when SGLang's warm-up has finished and it is not shutting
    # down, at no cost: SGLang's default also runs a one-token generation per call, which queues
    # behind a prefill-only worker's batches (the router and Kubernetes probe it). The user's wins.
    env.setdefault("SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION", "0")
    if config.on_cpu:
        env["SGLANG_USE_CPU_ENGINE"] = "1"
        if config.quantization is not None or _has_flag(args, "--quantization"):
            args = _add_defaults(args, (("--dtype", "bfloat16"),))
        args = _add_defaults(args, CPU_DEFAULTS)
    else:
        args = _add_defaults(args, GPU_DEFAULTS)
        reuse = not (config.kv_cache_free or config.asyncep or config.batching
                     or _has_flag(args, "--disable-radix-cache"))
        if reuse and config.gpu_major == 9:
            args = _add_defaults(args, HOPPER_REUSE_DEFAULTS)
        args = _add_defaults(args, REUSE_DEFAULTS if reuse else NO_REUSE_DEFAULTS)
        if config.gpu_major == 9:
            args = _add_defaults(args, HOPPER_DEFAULTS)
        reserve_mb = _activation_reserve_mb(config, args)
        if reserve_mb is not None:
            env["MOEP_ACTIVATION_RESERVE_MB"] = f"{reserve_mb:.0f}"
    if config.cpu_threads:
        env["OMP_NUM_THREADS"] = str(config.cpu_threads)
    if config.kv_events_port is not None:
        args += ["--kv-events-config", kv_events_config(config.kv_events_port)]
    if config.asyncep is not None:
        env["MOEP_ASYNCEP"] = config.asyncep.to_json()
    if config.batching is not None:
        env["MOEP_BATCHING"] = config.batching.to_json()
    if config.kv_cache_free:
        args += [f for f in ("--disable-radix-cache",) if not _has_flag(args, f)]
        if not _has_flag(list(config.sglang_args), "--max-total-tokens"):  # the user's wins
            args = _set_flag(args, "--max-total-tokens", str(KV_CACHE_FREE_TOKENS))
    return [sys.executable, "-m", "sglang.launch_server", *args], env


def _activation_reserve_mb(config: LaunchConfig, args: list[str]) -> float | None:
    """GPU memory to keep free for the batches the launcher chose (server/memory.py); None where
    SGLang's own sizing stays: the user chose the batch size or the memory fraction, the model's
    shape is unknown, or AsyncEP / batching (their runs were measured with SGLang's sizing)."""
    user = list(config.sglang_args)
    # A batch holds up to --max-prefill-tokens (several prompts' chunks), each chunk at most
    # --chunked-prefill-size tokens: the larger bounds the batch.
    batch_tokens = max(int(_flag_value(args, flag) or 0)
                       for flag in ("--chunked-prefill-size", "--max-prefill-tokens"))
    if (config.activation_bytes_per_token is None or config.asyncep or config.batching
            or batch_tokens <= 0 or _has_flag(user, "--mem-fraction-static")
            or _has_flag(user, "--chunked-prefill-size")):
        return None
    return activation_reserve_mb(config.activation_bytes_per_token, batch_tokens)


def kv_events_config(port: int) -> str:
    """Events on PORT; replay of missed batches (moep-router's gap repair) on PORT + 1."""
    return json.dumps({"publisher": "zmq", "endpoint": f"tcp://*:{port}",
                       "replay_endpoint": f"tcp://*:{port + 1}", "topic": "kv"})


def gpu_major() -> int | None:
    """Compute capability major of GPU 0, or None where no GPU serves (CPU defaults apply)."""
    if not gpu_available():
        return None
    import torch

    return torch.cuda.get_device_capability(0)[0]


def gpu_available() -> bool:
    from moep_sglang import envs

    if envs.force_cpu():
        return False
    import torch

    return torch.cuda.is_available()


def run_launch_server(argv: list[str]) -> None:
    """Replace this process with the SGLang server (same PID: signals reach SGLang directly)."""
    major = gpu_major()
    config = parse_launch_args(argv, on_cpu=major is None, gpu_major=major)
    cmd, env = build_command(config)
    os.execvpe(cmd[0], cmd, env)


def _set_flag(args: list[str], flag: str, value: str) -> list[str]:
    """args with `flag value` replacing any earlier value of flag."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a == flag:
            skip = True
            continue
        if a.startswith(flag + "="):
            continue
        out.append(a)
    return out + [flag, value]


def _add_defaults(args: list[str], defaults: tuple[tuple[str, str | None], ...]) -> list[str]:
    """args plus each default flag the user did not pass (a user's own flag always wins)."""
    out = list(args)
    for flag, value in defaults:
        if not _has_flag(out, flag):
            out += [flag] if value is None else [flag, value]
    return out


def _flag_value(args: list[str], flag: str) -> str | None:
    """The last value given to `flag` (as `flag V` or `flag=V`), None if absent."""
    value = None
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            value = args[i + 1]
        elif a.startswith(flag + "="):
            value = a[len(flag) + 1:]
    return value


def _has_flag(args: list[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in args)
