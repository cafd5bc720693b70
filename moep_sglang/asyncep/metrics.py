"""AsyncEP and batching metrics on the worker's /metrics (SGLang's --enable-metrics).

SGLang serves /metrics from its HTTP process in Prometheus multiprocess mode; metrics created here,
in the scheduler process, land in the same directory and appear there. Without --enable-metrics
every function is a no-op (the same figures are in /server_info under internal_states[*].moep).
"""

from __future__ import annotations

import os
from functools import cache

_LAT = (1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1.0, 5.0)
_FLOPS = tuple(10.0 ** e for e in range(6, 16))
_TOKENS = (1, 16, 64, 256, 1024, 4096, 16384, 65536, 262144)


@cache
def _m():
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    from prometheus_client import Counter, Gauge, Histogram

    return {
        "gather": Histogram("moep_asyncep_gather_seconds", "Time to assemble one MoE layer's "
                            "experts from the group", buckets=_LAT),
        "stall": Histogram("moep_asyncep_stall_seconds", "Time the MoE layer waited for its "
                           "experts (0 when the gather was hidden)", buckets=_LAT),
        "bytes": Counter("moep_asyncep_gathered_bytes", "Bytes received from peers"),
        "flops": Histogram("moep_forward_flops_per_layer", "FLOPs per layer of each forward",
                           buckets=_FLOPS),
        "tokens": Histogram("moep_batch_tokens", "Tokens of each prefill batch",
                            buckets=_TOKENS),
        "threshold": Gauge("moep_threshold_flops", "Saturation threshold T (FLOPs per layer)",
                           multiprocess_mode="mostrecent"),
        "weight_bytes": Gauge("moep_weight_bytes", "Model weight bytes held by this worker",
                              multiprocess_mode="mostrecent"),
        "expert_bytes": Gauge("moep_asyncep_shard_bytes", "Expert bytes this worker stores",
                              multiprocess_mode="mostrecent"),
        "ring_bytes": Gauge("moep_asyncep_ring_bytes", "Bytes of the full-layer gather ring",
                            multiprocess_mode="mostrecent"),
        "held": Counter("moep_batches_held", "Scheduler steps that held a batch below T"),
    }


def observe_gather(seconds: float) -> None:
    if m := _m():
        m["gather"].observe(seconds)


def observe_stall(seconds: float) -> None:
    if m := _m():
        m["stall"].observe(seconds)


def observe_step(step: dict, received_bytes: int, threshold: float) -> None:
    if m := _m():
        m["bytes"].inc(received_bytes)
        m["threshold"].set(threshold)


def observe_batch(tokens: int, flops_per_layer: float, threshold: float | None) -> None:
    if m := _m():
        m["tokens"].observe(tokens)
        m["flops"].observe(flops_per_layer)
        if threshold is not None:
            m["threshold"].set(threshold)


def observe_hold() -> None:
    if m := _m():
        m["held"].inc()


def set_memory(weight_bytes: int, shard_bytes: int, ring_bytes: int) -> None:
    if m := _m():
        m["weight_bytes"].set(weight_bytes)
        m["expert_bytes"].set(shard_bytes)
        m["ring_bytes"].set(ring_bytes)
