"""Record the KV-event stream of a real tiny CPU worker into kv_events_tiny.msgpack.

    .venv/bin/python -m tests.moep_router.data.record_kv_events

Two prompts sharing a prefix are prefilled, then the cache is flushed; every (seq, payload)
batch is saved as SGLang sent it.
"""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import zmq

from moep_sglang import envs
from moep_sglang.server.worker_process import (
    WorkerConfig, WorkerProcess, free_port, free_port_pair,
)
from tests.helpers import ensure_model, post


def _drain(sock, seconds: float) -> list[tuple[int, bytes]]:
    out, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        if sock.poll(200):
            _, seq, payload = sock.recv_multipart()
            out.append((int.from_bytes(seq, "big"), payload))
    return out


def main() -> None:
    model = ensure_model(envs.model_cache_dir(), "tiny")
    kv = free_port_pair()
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(f"tcp://127.0.0.1:{kv}")
    cfg = WorkerConfig(model, free_port(), Path("/tmp/record-kv.log"), kv_events_port=kv)
    with WorkerProcess(cfg) as w:
        _drain(sub, 1.0)  # the warmup's events
        a = list(range(100, 140))
        b = a[:25] + list(range(300, 320))
        for p in (a, b):
            post(f"{w.config.url}/generate", {"input_ids": p,
                                              "sampling_params": {"max_new_tokens": 0}})
        before = _drain(sub, 2.0)
        post(f"{w.config.url}/flush_cache", {})
        flush = _drain(sub, 2.0)
    data = {"prompts": {"a": a, "b": b, "shared_len": 25}, "before_flush": before,
            "flush": flush}
    Path(__file__).with_name("kv_events_tiny.msgpack").write_bytes(msgspec.msgpack.encode(data))
    print(f"recorded {len(before)} + {len(flush)} batches")


if __name__ == "__main__":
    main()
