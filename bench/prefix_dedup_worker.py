"""What in-batch prefix deduplication (moep_sglang/plugin/prefix_dedup.py) does for one real
worker: tokens/s, cached tokens against the ideal, latency, with the rule on and off.

One CPU worker (`small` preset by default, 1 torch thread, --sleep-on-idle) per variant and
repeat, variants interleaved (on, off, on, off, ...), radix cache flushed before each workload.
Workloads, both `/v1/score` (bench/workloads.py):
- `table2`: the Table-2-shaped mix, one item per request, 64 in flight (closed loop; the
  prompts of a group arrive spread over the run, as through a router);
- `recommendation_batched`: each user's profile with all its candidate items in ONE `/v1/score`
  (how a recommender calls a scoring API), 8 users in flight.

    python -m bench.prefix_dedup_worker [--preset small] [--repeats 3] \
        [--worker-flag=--chunked-prefill-size=8192 --worker-flag=--max-prefill-tokens=8192]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections import defaultdict
from pathlib import Path

import aiohttp

from bench.common import print_table, write_result
from bench.serve import ServeConfig, flush_caches, run_serve
from bench.workloads import ideal_cached_tokens, recommendation
from moep_router.cost import CostModel
from moep_router.model_spec import ModelSpec
from moep_router.tokenize import RouterTokenizer
from moep_sglang import envs
from moep_sglang.models.checkpoint import ensure_model
from moep_sglang.server.worker_process import WorkerConfig, WorkerProcess, free_port

LOGS = Path(".cache/bench")
VARIANTS = {"dedup_on": "1", "dedup_off": "0"}  # name -> MOEP_PREFIX_DEDUP


async def _score_grouped(url: str, bodies: list[dict], concurrency: int
                         ) -> list[tuple[float, int, int]]:
    """(latency s, prompt tokens, cached tokens) of each /v1/score, `concurrency` in flight."""
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as session:
        async def one(body: dict) -> tuple[float, int, int]:
            async with sem:
                t = time.monotonic()
                async with session.post(url + "/v1/score", json=body) as r:
                    if r.status != 200:
                        raise RuntimeError(f"/v1/score answered {r.status}: {await r.text()}")
                    usage = (await r.json())["usage"]
                return time.monotonic() - t, usage["prompt_tokens"], usage["cached_tokens"]

        return await asyncio.gather(*(one(b) for b in bodies))


def _recommendation_batched(url: str, model: Path, a) -> dict:
    tok = RouterTokenizer(model)
    reqs = recommendation(seed=0, num_users=a.users)
    by_user: dict[str, list] = defaultdict(list)
    for r in reqs:
        by_user[r.query].append(r)
    labels = [tok.single_token(x) for x in reqs[0].labels]
    bodies = [{"query": q, "items": [r.item for r in rs], "label_token_ids": labels,
               "apply_softmax": True} for q, rs in by_user.items()]
    t0 = time.monotonic()
    out = asyncio.run(_score_grouped(url, bodies, a.users_in_flight))
    makespan = time.monotonic() - t0
    cost = CostModel.from_spec(ModelSpec.from_model_dir(model))
    prompt, cached = sum(p for _, p, _ in out), sum(c for _, _, c in out)
    ideal = ideal_cached_tokens(reqs, {i: len(tok.encode(r.query)) for i, r in enumerate(reqs)})
    items = sum(len(b["items"]) for b in bodies)
    flops = sum(cost.flops(p, c) for _, p, c in out)  # a request's items summed: an estimate
    times = sorted(t for t, _, _ in out)
    return {"workload": "recommendation_batched", "requests": len(bodies), "items": items,
            "makespan_s": makespan, "tokens_per_s": prompt / makespan,
            "items_per_s": items / makespan, "prompt_tokens": prompt, "cached_tokens": cached,
            "cached_ratio": cached / prompt, "ideal_cached_tokens": ideal,
            "cached_vs_ideal": cached / max(ideal, 1), "flops_computed": flops,
            "p50_latency_s": statistics.median(times), "p99_latency_s": times[-1]}


def _table2(url: str, model: Path, a) -> dict:
    row = run_serve(ServeConfig(url, model, "table2", a.scale, 0, a.concurrency, "worker"))
    return {"workload": "table2", **{k: row[k] for k in (
        "requests", "makespan_s", "tokens_per_s", "prompt_tokens", "cached_tokens",
        "cached_ratio", "ideal_cached_tokens", "cached_vs_ideal", "flops_computed",
        "p50_latency_s", "p99_latency_s")}}


WORKLOADS = {"table2": _table2, "recommendation_batched": _recommendation_batched}


def _run_variant(name: str, model: Path, workloads: list[str], a) -> list[dict]:
    worker = WorkerProcess(WorkerConfig(
        model, free_port(), LOGS / f"prefix_dedup_{name}.log", cpu_threads=1,
        extra_args=("--sleep-on-idle", *a.worker_flag),
        env={"MOEP_PREFIX_DEDUP": VARIANTS[name]}))
    worker.start()
    rows = []
    try:
        worker.wait_ready()
        for w in workloads:
            flush_caches([worker.config.url])
            rows.append({"variant": name, **WORKLOADS[w](worker.config.url, model, a)})
    finally:
        worker.stop()
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--scale", type=float, default=0.5, help="table2 scale")
    p.add_argument("--concurrency", type=int, default=64, help="table2 requests in flight")
    p.add_argument("--users", type=int, default=20, help="recommendation_batched: users")
    p.add_argument("--users-in-flight", type=int, default=8)
    p.add_argument("--worker-flag", action="append", default=[],
                   help="an SGLang flag for the worker, e.g. --worker-flag=--chunked-prefill-size"
                        "=8192 (batches several prompts long, as on a GPU)")
    a = p.parse_args()
    model = ensure_model(envs.model_cache_dir(), a.preset)
    workloads = a.workloads.split(",")
    runs = []
    for rep in range(a.repeats):
        for name in VARIANTS:
            for row in _run_variant(name, model, workloads, a):
                runs.append({**row, "repeat": rep})
                print(f"{name} {row['workload']} repeat {rep}: {row['tokens_per_s']:,.0f} tok/s, "
                      f"{row['cached_vs_ideal']:.1%} of ideal cached, p99 "
                      f"{row['p99_latency_s']:.2f} s", flush=True)
    rows = []
    for w in workloads:
        base = None
        for name in VARIANTS:
            sel = [r for r in runs if r["variant"] == name and r["workload"] == w]
            tps = [r["tokens_per_s"] for r in sel]
            row = {"workload": w, "variant": name, "runs": len(tps),
                   "tokens_per_s": statistics.mean(tps), "min": min(tps), "max": max(tps),
                   "cached_vs_ideal": statistics.mean(r["cached_vs_ideal"] for r in sel),
                   "p99_latency_s": statistics.mean(r["p99_latency_s"] for r in sel)}
            base = base or row["tokens_per_s"]
            row["vs_on"] = row["tokens_per_s"] / base
            rows.append(row)
    table = print_table(rows, [
        ("workload", "workload", "s"), ("variant", "variant", "s"), ("runs", "runs", "d"),
        ("tokens_per_s", "tok/s mean", ",.0f"), ("min", "min", ",.0f"), ("max", "max", ",.0f"),
        ("cached_vs_ideal", "cached/ideal", ".1%"), ("p99_latency_s", "p99 s", ".2f"),
        ("vs_on", "vs dedup_on", ".3f")])
    write_result("prefix_dedup_worker_cpu", {
        "config": {"preset": a.preset, "repeats": a.repeats, "order": "interleaved",
                   "worker_flags": ["--sleep-on-idle", *a.worker_flag], "worker_cpu_threads": 1,
                   "table2_scale": a.scale, "table2_concurrency": a.concurrency,
                   "recommendation_users": a.users, "users_in_flight": a.users_in_flight},
        "summary": rows, "runs": runs, "table": table})


if __name__ == "__main__":
    main()
