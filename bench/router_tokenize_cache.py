"""What the router's tokenization cache saves on scoring traffic, with fake workers
(bench/fake_worker.py: they answer at once, so what remains is the router's own cost).

    python -m bench.router_tokenize_cache [--seconds 5] [--repeats 3]

Recommendation-shaped /v1/score requests: 40 users, each with a ~1,500-token profile as the
query, scored against one ~40-token candidate per request (the profile comes back with every
candidate, as in bench.workloads.recommendation). A closed loop of 256 requests in flight from 2
client processes for --seconds through moep-router with --tokenize-cache-tokens 0 (every query
tokenized each time) and at its default, interleaved --repeats times: requests/s completed and
the router's CPU time per request. Everything shares this machine's cores with the load
generator and the fake workers.
"""

from __future__ import annotations

import argparse
import random
import statistics

import orjson

from bench.common import print_table, write_result
from bench.gateway import LOGS
from bench.fake_worker import fake_workers
from bench.router_latency import capacity_with_cpu
from moep_router.tokenize import RouterTokenizer
from moep_sglang import envs
from moep_sglang.models.checkpoint import ensure_model
from moep_sglang.models.corpus import paragraph
from moep_sglang.server.router_process import RouterProcess
from moep_sglang.server.worker_process import free_port

SYSTEMS = {"cache off (--tokenize-cache-tokens 0)": ("--tokenize-cache-tokens", "0"),
           "cache on (default)": ()}


def bodies(seed: int = 0, users: int = 40, items_per_user: int = 20) -> list[bytes]:
    rng = random.Random(seed)
    profiles = [f"User profile {u}: {paragraph(rng, 125)}" for u in range(users)]
    out = [orjson.dumps({"query": profile, "items": [f" Candidate: {paragraph(rng, 3)} Will the "
                                                     "user like it? Answer:"],
                         "label_token_ids": [661, 362]})
           for _ in range(items_per_user) for profile in profiles]
    rng.shuffle(out)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--num-workers", type=int, default=8)
    a = p.parse_args()
    model = ensure_model(envs.model_cache_dir(), "tiny")
    reqs = bodies()
    tok = RouterTokenizer(model)
    query_tokens = statistics.fmean(len(tok.encode(orjson.loads(b)["query"])) for b in reqs[:50])
    ports = [free_port() for _ in range(a.num_workers)]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    LOGS.mkdir(parents=True, exist_ok=True)
    rows = []
    with fake_workers(ports):
        for rep in range(a.repeats):
            for system, flags in SYSTEMS.items():
                with RouterProcess(model, urls, LOGS / "router-tokenize-cache.log",
                                   *flags) as router:
                    capacity_with_cpu(router.url, router.proc.pid, 1.0, reqs, path="/v1/score")
                    rows.append({"system": system, "repeat": rep,
                                 **capacity_with_cpu(router.url, router.proc.pid, a.seconds,
                                                     reqs, path="/v1/score")})
                print_table(rows[-1:], COLUMNS)
    summary = []
    for system in SYSTEMS:
        runs = [r for r in rows if r["system"] == system]
        cap = [r["capacity_rps"] for r in runs]
        cpu = [r["router_cpu_us_per_request"] for r in runs]
        summary.append({"system": system, "runs": len(runs),
                        "capacity_rps": statistics.fmean(cap), "capacity_min": min(cap),
                        "capacity_max": max(cap), "router_cpu_us_per_request":
                        statistics.fmean(cpu), "cpu_min": min(cpu), "cpu_max": max(cpu)})
    print()
    table = print_table(summary, SUMMARY_COLUMNS)
    print(write_result("router_tokenize_cache", {
        "config": {"seconds": a.seconds, "repeats": a.repeats, "num_workers": a.num_workers,
                   "users": 40, "items_per_user": 20, "query_tokens_mean": query_tokens,
                   "capacity_clients": 2, "capacity_in_flight": 256, "order": "interleaved"},
        "summary": summary, "rows": rows, "table": table}))


COLUMNS = [("system", "system", "s"), ("repeat", "run", "d"),
           ("capacity_rps", "req/s", ",.0f"), ("router_cpu_us_per_request", "router CPU us/req",
                                                ",.0f")]
SUMMARY_COLUMNS = [("system", "system", "s"), ("runs", "runs", "d"),
                   ("capacity_rps", "req/s (mean)", ",.0f"), ("capacity_min", "min", ",.0f"),
                   ("capacity_max", "max", ",.0f"),
                   ("router_cpu_us_per_request", "router CPU us/req (mean)", ",.0f"),
                   ("cpu_min", "min", ",.0f"), ("cpu_max", "max", ",.0f")]


if __name__ == "__main__":
    main()
