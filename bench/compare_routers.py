"""The same four real CPU workers behind moep-router's policies and SGLang's gateway (`smg
launch`, PyPI smg 1.13.0), runs of every system interleaved (ABCABC...) so that drift of the
shared 2-core machine hits every system alike.

    python -m bench.compare_routers [--workload table2|recommendation|shared_prefix] [--repeats 3]

Each run gets cold workers (caches flushed), the same seeded workload and the same client
concurrency. Workers run with `--sleep-on-idle` (an idle SGLang CPU scheduler otherwise spins a
full core and slows the busy ones). smg does not route /v1/score, so every system gets the
identical requests as `/generate` with label logprobs (what /v1/score does inside); `--api
score` drives moep-router through /v1/score instead. Writes
bench/results/compare_routers_<workload>.json (every run, and mean/min/max per system) and
prints a table.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import time
from pathlib import Path

import orjson

from bench.common import print_table, write_result
from bench.gateway import LOGS, SmgGateway, cpu_seconds, smg_version
from bench.serve import COLUMNS, ServeConfig, flush_caches, run_serve
from moep_sglang import envs
from moep_sglang.models.checkpoint import ensure_model
from moep_sglang.server.router_process import RouterProcess, worker_spec
from moep_sglang.server.worker_process import (
    WorkerConfig, WorkerProcess, free_port, free_port_pair,
)

POLICIES = ("true_flops", "cache_aware", "least_load", "round_robin", "longest_prefix")
DEFAULT_SYSTEMS = "true_flops,smg:cache_aware,smg:prefix_hash"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small")
    p.add_argument("--num-workers", type=int, default=4)
    p.add_argument("--workload", default="table2")
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--threshold-flops", type=float, default=None,
                   help="moep-router saturation threshold T per worker (default: none)")
    p.add_argument("--request-overhead-flops", type=float, default=None,
                   help="moep-router's per-prompt overhead in FLOP-equivalents (default: 0)")
    p.add_argument("--systems", default=DEFAULT_SYSTEMS,
                   help=f"comma-separated: moep-router policies ({', '.join(POLICIES)}) and "
                        "smg:POLICY (SGLang's gateway with that policy), "
                        "sglang_router:POLICY (its last release as sglang-router, 0.3.2)")
    p.add_argument("--repeats", type=int, default=3,
                   help="runs per system, interleaved (ABCABC...)")
    p.add_argument("--rates", default=None,
                   help="shared_prefix: comma-separated requests/s of its arrival stages "
                        "(default: the workload's 4,8,16)")
    p.add_argument("--out", default=None, help="result name (default compare_routers_WORKLOAD)")
    p.add_argument("--api", default="generate", choices=["generate", "score"],
                   help="API for moep-router's policies (SGLang's router: always generate)")
    p.add_argument("--resummarise", metavar="FILE", default=None,
                   help="run nothing: recompute FILE's summary and table from its rows (after "
                        "the summary gained a column) and rewrite it in place")
    a = p.parse_args()
    if a.resummarise:
        resummarise(Path(a.resummarise))
        return
    a.rates = tuple(float(r) for r in a.rates.split(",")) if a.rates else None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop workers on SIGTERM too
    model = ensure_model(envs.model_cache_dir(), a.preset)
    workers = [WorkerProcess(WorkerConfig(model, free_port(), LOGS / f"worker{i}.log",
                                          kv_events_port=free_port_pair(), cpu_threads=1,
                                          extra_args=("--sleep-on-idle",)))
               for i in range(a.num_workers)]
    systems = a.systems.split(",")
    rows = []
    try:
        for w in workers:
            w.start()
        for w in workers:
            w.wait_ready()
        time.sleep(3.0)  # let SGLang's own warmup requests finish
        logs = [w.config.log_path for w in workers]
        for rep in range(a.repeats):
            for system in systems:
                flush_caches([w.config.url for w in workers])
                before = log_sizes(logs)
                row = _run_system(system, a, model, workers)
                batches = prefill_batches(logs, before)
                rows.append({**row, "prefill_batches": sum(batches),
                             "prefill_batches_per_worker": batches, "repeat": rep})
                print_table(rows[-1:], COLUMNS)
    finally:
        for w in workers:
            w.stop()
    print()
    summary = summarise(rows, systems)
    table = print_table(summary, SUMMARY_COLUMNS)
    path = write_result(a.out or f"compare_routers_{a.workload}", {
        "config": {"api": a.api, "preset": a.preset, "num_workers": a.num_workers,
                   "workload": a.workload, "scale": a.scale, "rates": a.rates,
                   "concurrency": a.concurrency,
                   "threshold_flops": a.threshold_flops,
                   "request_overhead_flops": a.request_overhead_flops, "worker_cpu_threads": 1,
                   "worker_flags": ["--sleep-on-idle"], "repeats": a.repeats,
                   # the workers inherit this environment: MOEP_PREFIX_DEDUP=0 and the like
                   "worker_env": {k: v for k, v in sorted(os.environ.items())
                                  if k.startswith("MOEP_")},
                   "order": "interleaved", "smg_version": smg_version()},
        "summary": summary, "rows": rows, "table": table})
    print(path)


SUMMARY_COLUMNS = [("system", "system", "s"), ("runs", "runs", "d"),
                   ("tokens_per_s", "tokens/s (mean)", ",.0f"),
                   ("tokens_per_s_min", "min", ",.0f"), ("tokens_per_s_max", "max", ",.0f"),
                   ("cached_vs_ideal", "cached vs ideal", ".1%"),
                   ("uncached_vs_ideal", "uncached vs ideal", ".2f"),
                   ("p99_latency_s", "p99 s (mean)", ".2f"),
                   ("router_cpu_s", "router CPU s", ".1f"),
                   ("prefill_batches", "prefill batches", ",.0f")]


def summarise(rows: list[dict], systems: list[str]) -> list[dict]:
    """Per system: mean tokens/s with the min and max of its runs, mean cache and p99.

    uncached_vs_ideal = mean over runs of (P - C) / (P - I): prompt tokens P, cached C, and I
    the ideal's cached tokens (every shared query prefix prefilled once, workloads.py). It is
    the prefill a system left to compute against that ideal router's, so at saturation it
    bounds what better routing could still gain over it (a bound in tokens; in FLOPs it is
    lower, since attention still reads the cached prefix). Below 1: sharing beyond the
    queries (common headers) was cached too.
    """
    out = []
    for system in dict.fromkeys(systems):
        runs = [r for r in rows if r["system"] == system]
        if not runs:
            continue
        def mean(key: str) -> float | None:
            values = [r[key] for r in runs if r.get(key) is not None]
            return statistics.fmean(values) if values else None

        tps = [r["tokens_per_s"] for r in runs]
        out.append({"system": system, "runs": len(runs), "tokens_per_s": statistics.fmean(tps),
                    "tokens_per_s_min": min(tps), "tokens_per_s_max": max(tps),
                    "tokens_per_s_stdev": statistics.stdev(tps) if len(tps) > 1 else 0.0,
                    "cached_vs_ideal": mean("cached_vs_ideal"),
                    "uncached_vs_ideal": _mean_uncached_vs_ideal(runs),
                    "cached_ratio": mean("cached_ratio"), "p99_latency_s": mean("p99_latency_s"),
                    "p50_latency_s": mean("p50_latency_s"), "router_cpu_s": mean("router_cpu_s"),
                    "prefill_batches": mean("prefill_batches")})
    return out


def resummarise(path: Path) -> None:
    """The summary is a function of the rows alone: recompute it (and its table) in place; the
    rows, sha, machine and time stay those of the run."""
    doc = orjson.loads(path.read_bytes())
    systems = [r["system"] for r in doc["rows"]]
    doc["summary"] = summarise(doc["rows"], systems)
    doc["table"] = print_table(doc["summary"], SUMMARY_COLUMNS)
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))


def _mean_uncached_vs_ideal(runs: list[dict]) -> float | None:
    ratios = [(r["prompt_tokens"] - r["cached_tokens"])
              / max(r["prompt_tokens"] - r["ideal_cached_tokens"], 1)
              for r in runs if "ideal_cached_tokens" in r]
    return statistics.fmean(ratios) if ratios else None


def _run_system(system: str, a, model: Path, workers: list[WorkerProcess]) -> dict:
    smg = system.startswith(("smg", "sglang_router"))
    cfg = lambda url: ServeConfig(url, model, a.workload, a.scale, 0, a.concurrency, system,  # noqa: E731
                                  "generate" if smg else a.api, rates=a.rates)
    if smg:
        policy = system.split(":", 1)[1] if ":" in system else "cache_aware"
        legacy = system.startswith("sglang_router")
        with SmgGateway([w.config.url for w in workers], policy, legacy) as smg:
            row = run_serve(cfg(smg.url))
            return {**row, "router_cpu_s": smg.cpu_seconds()}
    flags = ["--policy", system]
    if a.threshold_flops:
        flags += ["--threshold-flops", str(a.threshold_flops)]
    if a.request_overhead_flops:
        flags += ["--request-overhead-flops", str(a.request_overhead_flops)]
    specs = [worker_spec(w.config.url, w.config.kv_events_port) for w in workers]
    with RouterProcess(model, specs, LOGS / f"router-{system}.log", *flags) as router:
        row = run_serve(cfg(router.url))
        return {**row, "router_cpu_s": cpu_seconds(router.proc.pid)}


PREFILL_BATCH = b"Prefill batch"  # SGLang's log line for each prefill batch it runs


def log_sizes(paths: list[Path]) -> list[int]:
    return [path.stat().st_size if path.exists() else 0 for path in paths]


def prefill_batches(paths: list[Path], since: list[int]) -> list[int]:
    """Prefill batches each worker logged after the byte offsets `since` (log_sizes before a
    run): how finely a router's placement split the same requests into batches, each of which
    costs a CPU worker a fixed overhead."""
    counts = []
    for path, offset in zip(paths, since):
        with open(path, "rb") as f:
            f.seek(offset)
            counts.append(f.read().count(PREFILL_BATCH))
    return counts


if __name__ == "__main__":
    main()
