"""`make demo`: real SGLang workers on CPU behind moep-router score a shared-prefix workload.

The router sends questions about the same document to the worker whose radix cache holds it
(known exactly from that worker's KV events), so each document is prefilled about once. The SDK
submits the whole batch with bounded concurrency and a progress bar. Everything started is
stopped on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from moep_sglang import envs
from moep_sglang.workloads import ScoreItem, shared_prefix_classification


@dataclass(frozen=True)
class DemoConfig:
    preset: str  # model preset to generate/serve
    num_workers: int  # SGLang servers to start
    num_docs: int  # shared documents (prefixes)
    questions_per_doc: int  # requests per document
    concurrency: int  # requests in flight
    policy: str  # router policy
    seed: int  # workload seed
    log_dir: Path  # worker and router logs


def add_demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="small", help="model preset (default: small)")
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--num-docs", type=int, default=24)
    p.add_argument("--questions-per-doc", type=int, default=8)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--policy", default="true_flops", help="router policy (default: true_flops)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-dir", type=Path, default=Path(".cache/demo"))
    p.set_defaults(func=lambda a: run_demo(DemoConfig(
        a.preset, a.num_workers, a.num_docs, a.questions_per_doc, a.concurrency, a.policy,
        a.seed, a.log_dir)))


def run_demo(config: DemoConfig) -> None:
    from moep_sglang.models.checkpoint import ensure_model
    from moep_sglang.server.node import Node, NodeConfig, free_base_port
    from moep_sglang.server.worker_process import free_port

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop workers on SIGTERM too
    print(f"model: {config.preset} (generated into {envs.model_cache_dir()} on first use)")
    model = ensure_model(envs.model_cache_dir(), config.preset)
    # The node `moep-sglang serve` starts, on CPU, with ports of its own.
    node_config = NodeConfig(model, config.num_workers, "replicas", "peer", on_gpu=False,
                             router_port=free_port(), router_host="127.0.0.1",
                             worker_base_port=free_base_port(config.num_workers), workers_only=False,
                             log_dir=config.log_dir, ready_timeout_s=600,
                             router_args=("--policy", config.policy), cpu_threads=1)
    node = Node(node_config, log=lambda m: print(f"  {m}"))
    try:
        t0 = time.monotonic()
        node.start()
        url = f"http://127.0.0.1:{node_config.router_port}"
        print(f"ready in {time.monotonic() - t0:.1f} s; router on {url}")
        _run_workload(config, model, url)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the workers")
        raise SystemExit(130)
    finally:
        node.stop()
        print("workers stopped")


def _run_workload(config: DemoConfig, model: Path, url: str) -> None:
    from moep_router.cost import CostModel
    from moep_router.model_spec import ModelSpec
    from moep_router.tokenize import RouterTokenizer

    tok = RouterTokenizer(model)
    items = shared_prefix_classification(config.seed, config.num_docs, config.questions_per_doc)
    labels = [tok.single_token(label) for label in items[0].labels]
    bodies = [{"query": it.query, "items": [it.item], "label_token_ids": labels,
               "apply_softmax": True} for it in items]
    t0 = time.monotonic()
    results = asyncio.run(_score_all(url, bodies, config.concurrency))
    elapsed = time.monotonic() - t0
    cost = CostModel.from_spec(ModelSpec.from_model_dir(model))
    uncached = sum(cost.flops(len(tok.encode(it.query)) + len(tok.encode_continuation(
        [it.item])[0])) for it in items)
    _print_report(items, results, elapsed, config.num_workers, uncached)


async def _score_all(url: str, bodies: list[dict], concurrency: int) -> list:
    from moep_sglang.client import AsyncClient

    async with AsyncClient(url, max_concurrency=concurrency) as client:
        return await client.batch("score", bodies, desc="scoring")


def _print_report(items: list[ScoreItem], results, elapsed: float, num_workers: int,
                  uncached_flops: int) -> None:
    prompt = sum(r.usage.prompt_tokens for r in results)
    cached = sum(r.usage.cached_tokens for r in results)
    flops = sum(r.usage.flops for r in results)
    print("\nexamples:")
    for it, r in list(zip(items, results))[:4]:
        probs = "  ".join(f"P({l.strip()})={p:.3f}" for l, p in zip(it.labels, r.scores[0]))
        print(f"  doc {it.doc_id:2d} ...{it.query[-48:]!r}")
        print(f"         {it.item.strip()!r} -> {probs}")
    print(f"\n{len(results)} requests on {num_workers} workers in {elapsed:.2f} s: "
          f"{len(results) / elapsed:.1f} req/s, {prompt / elapsed:,.0f} prompt tokens/s")
    print(f"cache hits: {cached:,} of {prompt:,} prompt tokens served from the workers' radix "
          f"caches ({cached / max(prompt, 1):.1%})")
    print(f"FLOPs: {flops / 1e9:,.2f} GFLOP computed vs {uncached_flops / 1e9:,.2f} GFLOP "
          f"without caching ({1 - flops / max(uncached_flops, 1):.1%} saved)")
