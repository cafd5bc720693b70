"""Drive any prefill-only scoring endpoint with a workload; report tokens/s, cache and FLOPs.

    python -m bench.serve --url http://127.0.0.1:8000 --model .cache/models/small \
        --workload table2 --label mine

Works against moep-router, a bare SGLang worker, or SGLang's own router: it only uses
`/v1/score` and the `usage` each reply carries (prompt_tokens, cached_tokens). FLOPs are
computed here from those counts with the project's cost model, identically for every system.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from bench.workloads import WORKLOADS, BenchRequest, ideal_cached_tokens
from moep_router.cost import CostModel
from moep_router.messages import label_logprob_fields, label_logprob_rows
from moep_router.model_spec import ModelSpec
from moep_router.tokenize import RouterTokenizer


@dataclass(frozen=True)
class ServeConfig:
    url: str  # endpoint base URL
    model: Path  # model directory (tokenizer + config.json for label ids and FLOPs)
    workload: str  # key of WORKLOADS
    scale: float  # workload scale (table2 only)
    seed: int  # workload seed
    concurrency: int  # requests in flight
    label: str  # name of this system in the results
    api: str = "score"  # "score": /v1/score; "generate": the same work as one /generate
    length_scale: float = 0.25  # table2: context lengths x this (1.0: the paper's lengths)
    max_len: int = 3500  # table2: longest context in tokens
    rates: tuple[float, ...] | None = None  # shared_prefix: its stages' requests/s (None: its own)


def flush_caches(urls: list[str], timeout_s: float = 300) -> None:
    """Empty every worker's radix cache before a run (SGLang refuses with 400 while a request
    runs: retried until timeout_s)."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    for url in urls:
        while True:
            req = urllib.request.Request(f"{url}/flush_cache", data=b"{}", method="POST",
                                         headers={"Content-Type": "application/json"})
            try:
                urllib.request.urlopen(req, timeout=20).read()
                break
            except (urllib.error.HTTPError, urllib.error.URLError, TimeoutError) as exc:
                # 400: a request is still running; a timeout: seen once right after startup
                if getattr(exc, "code", 400) != 400 or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    time.sleep(0.5)


def run_serve(config: ServeConfig) -> dict:
    tok = RouterTokenizer(config.model)
    reqs = _workload(config)
    bodies = [_body(config.api, r, [tok.single_token(l) for l in r.labels]) for r in reqs]
    t0 = time.monotonic()
    lat = asyncio.run(_drive(config, bodies, [r.arrival_s for r in reqs]))
    makespan = time.monotonic() - t0
    return _summarise(config, reqs, lat, makespan, tok)


async def _drive(config: ServeConfig, bodies: list[dict],
                 arrivals: list[float | None]) -> list[tuple[float, object]]:
    """Closed loop (`concurrency` in flight) unless a request carries its send time: then it is
    sent at that time after the start (open loop; `concurrency` only caps what is in flight).
    Closed loop, latency counts from taking a slot; open loop, from the send time (a wait for a
    slot counts)."""
    from moep_sglang.client import AsyncClient

    async with AsyncClient(config.url, max_concurrency=config.concurrency) as client:
        sem = asyncio.Semaphore(config.concurrency)
        start = time.monotonic()

        async def one(body, arrival):
            if arrival is not None:
                await asyncio.sleep(max(0.0, start + arrival - time.monotonic()))
            t = time.monotonic()
            async with sem:
                if arrival is None:
                    t = time.monotonic()
                result = await client.request(config.api, body)
                return time.monotonic() - t, _usage(result)

        return await asyncio.gather(*(one(b, a) for b, a in zip(bodies, arrivals)))


def _body(api: str, r: BenchRequest, labels: list[int]) -> dict:
    if api == "score":
        return {"query": r.query, "items": [r.item], "apply_softmax": True,
                "label_token_ids": labels}
    # What SGLang's /v1/score does inside, as the /generate request any router can route.
    return {"text": r.query + r.item, "sampling_params": {"max_new_tokens": 0},
            **label_logprob_fields(labels)}


def _usage(result) -> tuple[int, int]:
    """(prompt tokens, cached tokens) of one reply."""
    if hasattr(result, "usage"):
        return result.usage.prompt_tokens, result.usage.cached_tokens
    meta = result.raw["meta_info"]
    label_logprob_rows(meta)  # raises if the worker dropped them
    return meta["prompt_tokens"], meta.get("cached_tokens", 0)


def _summarise(config: ServeConfig, reqs: list[BenchRequest], lat, makespan: float,
               tok: RouterTokenizer) -> dict:
    cost = CostModel.from_spec(ModelSpec.from_model_dir(config.model))
    prompt = sum(n for _, (n, _) in lat)
    cached = sum(c for _, (_, c) in lat)
    flops = sum(cost.flops(n, c) for _, (n, c) in lat)
    no_cache = sum(cost.flops(n) for _, (n, _) in lat)
    prefix = {i: len(tok.encode(r.query)) for i, r in enumerate(reqs)}
    ideal = ideal_cached_tokens(reqs, prefix)
    times = sorted(t for t, _ in lat)
    return {
        "system": config.label, "api": config.api, "workload": config.workload, "scale": config.scale,
        "seed": config.seed, "concurrency": config.concurrency, "requests": len(reqs),
        "makespan_s": makespan, "tokens_per_s": prompt / makespan,
        "requests_per_s": len(reqs) / makespan, "prompt_tokens": prompt,
        "cached_tokens": cached, "cached_ratio": cached / max(prompt, 1),
        "ideal_cached_tokens": ideal, "cached_vs_ideal": cached / max(ideal, 1),
        "flops_computed": flops, "flops_without_cache": no_cache,
        "p50_latency_s": statistics.median(times), "p99_latency_s": times[int(0.99 * len(times))],
    }


def _workload(config: ServeConfig) -> list[BenchRequest]:
    fn = WORKLOADS[config.workload]
    if config.workload == "table2":
        return fn(seed=config.seed, scale=config.scale, length_scale=config.length_scale,
                  max_len=config.max_len)
    if config.workload == "shared_prefix" and config.rates:
        return fn(seed=config.seed, rates=config.rates)
    return fn(seed=config.seed)


COLUMNS = [("system", "system", "s"), ("tokens_per_s", "tokens/s", ",.0f"),
           ("requests_per_s", "req/s", ".1f"), ("cached_ratio", "cached", ".1%"),
           ("cached_vs_ideal", "vs ideal", ".1%"), ("flops_computed", "FLOPs", ".3e"),
           ("p50_latency_s", "p50 s", ".3f"), ("p99_latency_s", "p99 s", ".3f"),
           ("router_cpu_s", "router CPU s", ".1f")]


def main() -> None:
    from bench.common import print_table, write_result

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--workload", default="table2", choices=sorted(WORKLOADS))
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--label", default="endpoint")
    p.add_argument("--api", default="score", choices=["score", "generate"],
                   help="/v1/score, or the same work as /generate (what any router routes)")
    p.add_argument("--out", default=None, help="result name under bench/results/")
    a = p.parse_args()
    row = run_serve(ServeConfig(a.url, a.model, a.workload, a.scale, a.seed, a.concurrency,
                                a.label, a.api))
    print_table([row], COLUMNS)
    if a.out:
        print(write_result(a.out, {"rows": [row]}))


if __name__ == "__main__":
    main()
