"""What publishing KV events costs a real worker: prefill tokens/s with events off, with SGLang's
own events (one BlockStored per page) and with the moep plugin's (one per radix node).

One CPU worker (`tiny` preset by default, 1 torch thread, --sleep-on-idle) per variant, the same
distinct prompts (no prefix shared, so every token is inserted into the radix cache and evicted
again: the event path's worst case) sent as prefill-only /generate requests; variants interleaved
(ABCABC...), one server start per variant and repeat. The events go to a ZMQ PUB socket that
nobody subscribes to: the worker encodes and sends them all the same.

    python -m bench.kv_events_worker [--preset small] [--repeats 3] [--requests 120]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from pathlib import Path

import aiohttp

from bench.common import print_table, write_result
from moep_sglang import envs
from moep_sglang.models.checkpoint import ensure_model
from moep_sglang.server.worker_process import (
    WorkerConfig,
    WorkerProcess,
    free_port,
    free_port_pair,
)

LOGS = Path(".cache/bench")
# name -> (publish KV events, MOEP_KV_EVENTS_PER_NODE)
VARIANTS = {"no_events": (False, "1"), "sglang_events": (True, "0"), "moep_events": (True, "1")}


async def _drive(url: str, prompts: list[list[int]], concurrency: int) -> float:
    """Seconds to prefill every prompt, `concurrency` in flight."""
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as session:
        async def one(ids: list[int]) -> None:
            async with sem:
                body = {"input_ids": ids, "sampling_params": {"max_new_tokens": 0}}
                async with session.post(url + "/generate", json=body) as r:
                    if r.status != 200:
                        raise RuntimeError(f"/generate answered {r.status}: {await r.text()}")
                    await r.read()

        t0 = time.perf_counter()
        await asyncio.gather(*(one(p) for p in prompts))
        return time.perf_counter() - t0


def _run_variant(name: str, model: Path, prompts: list[list[int]], a) -> dict:
    events, per_node = VARIANTS[name]
    worker = WorkerProcess(WorkerConfig(
        model, free_port(), LOGS / f"kv_events_{name}.log",
        kv_events_port=free_port_pair() if events else None, cpu_threads=1,
        extra_args=("--sleep-on-idle",), env={"MOEP_KV_EVENTS_PER_NODE": per_node}))
    worker.start()
    try:
        worker.wait_ready()
        time.sleep(2.0)  # SGLang's own warmup request
        asyncio.run(_drive(worker.config.url, prompts[:4], a.concurrency))  # warm the path
        seconds = asyncio.run(_drive(worker.config.url, prompts, a.concurrency))
    finally:
        worker.stop()
    tokens = sum(len(p) for p in prompts)
    return {"variant": name, "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny",
                   help="tiny: ~50K tok/s on this CPU, the order of a GPU worker (the event "
                        "cost is per token, so a slower model hides it)")
    p.add_argument("--requests", type=int, default=120)
    p.add_argument("--prompt-tokens", type=int, default=1900)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--variants", default=",".join(VARIANTS))
    a = p.parse_args()
    model = ensure_model(envs.model_cache_dir(), a.preset)
    rng = random.Random(0)
    prompts = [[rng.randrange(1, 1000) for _ in range(a.prompt_tokens)]
               for _ in range(a.requests)]
    names = a.variants.split(",")
    runs = []
    for rep in range(a.repeats):
        for name in names:
            runs.append({**_run_variant(name, model, prompts, a), "repeat": rep})
            print(f"{name} repeat {rep}: {runs[-1]['tokens_per_s']:,.0f} tok/s", flush=True)
    base = statistics.mean(r["tokens_per_s"] for r in runs if r["variant"] == names[0])
    rows = []
    for name in names:
        tps = [r["tokens_per_s"] for r in runs if r["variant"] == name]
        rows.append({"variant": name, "runs": len(tps), "tokens_per_s": statistics.mean(tps),
                     "min": min(tps), "max": max(tps),
                     "vs_first": statistics.mean(tps) / base})
    table = print_table(rows, [("variant", "variant", "s"), ("runs", "runs", "d"),
                               ("tokens_per_s", "tok/s mean", ",.0f"), ("min", "min", ",.0f"),
                               ("max", "max", ",.0f"), ("vs_first", f"vs {names[0]}", ".3f")])
    write_result("kv_events_worker_cpu", {
        "config": {"preset": a.preset, "requests": a.requests, "prompt_tokens": a.prompt_tokens,
                   "concurrency": a.concurrency, "repeats": a.repeats, "order": "interleaved",
                   "worker_flags": ["--sleep-on-idle"], "worker_cpu_threads": 1,
                   "subscriber": None},
        "summary": rows, "runs": runs, "table": table})


if __name__ == "__main__":
    main()
