"""Router-only microbenchmark with fake workers: routing decisions per second on one core.

8 workers, each with 100K blocks in its cache index (page size 1: 100 cached sequences of 1,000
tokens), and 500-token requests, half of them extending a cached sequence of some worker. One
decision = price the request on every worker (exact prefix match against each index and its
pending table) and pick one: the router's whole per-request routing work.

    python -m bench.router_micro
"""

from __future__ import annotations

import argparse
import math
import random
import time

from moep_router.config import RouterConfig, WorkerSpec
from moep_router.cost import CostModel
from moep_router.dispatcher import Dispatcher
from moep_router.jobs import Job
from moep_router.metrics import RouterMetrics
from moep_router.model_spec import ModelSpec
from moep_router.policies import make_policy
from moep_router.workers import WorkerRegistry


def build(num_workers: int, blocks_per_worker: int, seq_len: int, seed: int):
    rng = random.Random(seed)
    registry = WorkerRegistry(math.inf)
    sequences = []
    next_hash = 1
    for w in range(num_workers):
        state = registry.add(WorkerSpec(f"http://fake-{w}:1"))
        for _ in range(blocks_per_worker // seq_len):
            seq = [rng.randrange(50_000) for _ in range(seq_len)]
            hashes = list(range(next_hash, next_hash + seq_len))
            next_hash += seq_len
            state.index.apply_stored(hashes, None, seq, 1)
            sequences.append(seq)
    return registry, sequences


def requests(sequences, num: int, prompt_len: int, seed: int) -> list[tuple[int, ...]]:
    rng = random.Random(seed + 1)
    out = []
    for i in range(num):
        if i % 2 == 0:
            base = rng.choice(sequences)
            cut = rng.randrange(prompt_len // 2, prompt_len)
            out.append(tuple(base[:cut] + [rng.randrange(50_000)
                                           for _ in range(prompt_len - cut)]))
        else:
            out.append(tuple(rng.randrange(50_000) for _ in range(prompt_len)))
    return out


def run(policy: str, num_workers=8, blocks=100_000, prompt_len=500, num=4000, seed=0) -> dict:
    from moep_sglang.models.checkpoint import hf_config
    from moep_sglang.models.presets import get_preset

    registry, seqs = build(num_workers, blocks, 1000, seed)
    spec = ModelSpec.from_config(hf_config(get_preset("qwen3-30b-a3b"), 0))
    config = RouterConfig.__new__(RouterConfig)  # only the fields _route reads
    object.__setattr__(config, "max_inflight_per_worker", 10**9)
    d = Dispatcher(config, registry, make_policy(policy), CostModel.from_spec(spec),
                   RouterMetrics())
    jobs = [Job("score", (p,), len(p), (1,), True, {}, {}) for p in requests(seqs, num,
                                                                               prompt_len, seed)]
    t0 = time.perf_counter()
    for job in jobs:
        d._route(job, set())
    elapsed = time.perf_counter() - t0
    return {"policy": policy, "workers": num_workers, "blocks_per_worker": blocks,
            "prompt_tokens": prompt_len, "decisions": num,
            "decisions_per_s": num / elapsed, "us_per_decision": elapsed / num * 1e6}


def main() -> None:
    from bench.common import print_table, write_result

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policies", default="true_flops,cache_aware,round_robin")
    a = p.parse_args()
    rows = [run(pol) for pol in a.policies.split(",")]
    cols = [("policy", "policy", "s"), ("workers", "workers", "d"),
            ("blocks_per_worker", "blocks/worker", ",d"), ("prompt_tokens", "prompt", "d"),
            ("decisions_per_s", "decisions/s", ",.0f"), ("us_per_decision", "us each", ".1f")]
    table = print_table(rows, cols)
    print(write_result("router_micro_decisions", {"rows": rows, "table": table}))


if __name__ == "__main__":
    main()
