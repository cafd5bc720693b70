"""Latency a router adds, with fake workers (bench/fake_worker.py) and an open-loop load.

    python -m bench.router_latency [--rate 2000] [--seconds 5]

Sends /generate requests (a ~100-token text prompt, label logprobs) at a fixed rate, first
straight to a fake worker, then through moep-router (true_flops) and SGLang's router (smg,
cache_aware), all in front of the same 8 fake workers. Added latency = router p50/p99 minus the
direct p50/p99. Everything shares this machine's cores with the load generator: the figures are
what this machine sustains, not the routers' ceilings.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import subprocess
import sys
import time

import aiohttp
import orjson

from bench.common import print_table, write_result
from bench.compare_routers import LOGS, _SglangRouter
from moep_sglang import envs
from moep_sglang.models.checkpoint import ensure_model
from moep_sglang.models.corpus import paragraph
from moep_sglang.server.router_process import RouterProcess
from moep_sglang.server.worker_process import free_port


async def _open_loop(url: str, rate: float, seconds: float, bodies: list[bytes]) -> dict:
    lat: list[float] = []
    errors = 0
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as session:
        async def one(body: bytes) -> None:
            nonlocal errors
            t = time.perf_counter()
            try:
                async with session.post(f"{url}/generate", data=body,
                                        headers={"Content-Type": "application/json"}) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
                        return
            except aiohttp.ClientError:
                errors += 1
                return
            lat.append(time.perf_counter() - t)

        tasks, start, n = [], time.perf_counter(), int(rate * seconds)
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(bodies[i % len(bodies)])))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    lat.sort()
    return {"sent": n, "ok": len(lat), "errors": errors, "achieved_rps": len(lat) / elapsed,
            "p50_ms": 1e3 * statistics.median(lat) if lat else None,
            "p99_ms": 1e3 * lat[int(0.99 * (len(lat) - 1))] if lat else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=2000)
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--num-workers", type=int, default=8)
    a = p.parse_args()
    model = ensure_model(envs.model_cache_dir(), "tiny")
    rng = random.Random(0)
    bodies = [orjson.dumps({"text": paragraph(rng, 8), "sampling_params": {"max_new_tokens": 0},
                            "return_logprob": True, "logprob_start_len": -1,
                            "token_ids_logprob": [661, 362]}) for _ in range(512)]
    ports = [free_port() for _ in range(a.num_workers)]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    LOGS.mkdir(parents=True, exist_ok=True)
    fake = subprocess.Popen([sys.executable, "-m", "bench.fake_worker", "--ports",
                             ",".join(map(str, ports))], stdout=subprocess.PIPE, text=True)
    rows = []
    try:
        fake.stdout.readline()
        run = lambda url: asyncio.run(_open_loop(url, a.rate, a.seconds, bodies))  # noqa: E731
        run(urls[0])  # warm up
        rows.append({"system": "direct (no router)", **run(urls[0])})
        with RouterProcess(model, urls, LOGS / "router-latency.log") as router:
            run(router.url)
            rows.append({"system": "moep-router true_flops", **run(router.url)})
        with _SglangRouter(urls) as smg:
            run(smg.url)
            rows.append({"system": "sglang-router cache_aware", **run(smg.url)})
    finally:
        fake.terminate()
        fake.wait()
    base = rows[0]
    for r in rows[1:]:
        r["added_p50_ms"] = r["p50_ms"] - base["p50_ms"]
        r["added_p99_ms"] = r["p99_ms"] - base["p99_ms"]
    cols = [("system", "system", "s"), ("achieved_rps", "req/s", ",.0f"),
            ("errors", "errors", "d"), ("p50_ms", "p50 ms", ".2f"), ("p99_ms", "p99 ms", ".2f"),
            ("added_p50_ms", "added p50", ".2f"), ("added_p99_ms", "added p99", ".2f")]
    table = print_table(rows, cols)
    print(write_result("router_latency", {"config": {"rate": a.rate, "seconds": a.seconds,
                                                     "num_workers": a.num_workers},
                                          "rows": rows, "table": table}))


if __name__ == "__main__":
    main()
