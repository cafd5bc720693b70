"""`make demo`: two real SGLang workers on CPU score a shared-prefix classification workload.

Requests for the same document go to the same worker (client-side prefix affinity), so its radix
cache serves the document after the first question. Everything started is stopped on exit,
Ctrl-C included.
"""

from __future__ import annotations

import argparse
import asyncio
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
    seed: int  # workload seed
    log_dir: Path  # worker logs


@dataclass(frozen=True)
class ScoredItem:
    request: ScoreItem
    probs: tuple[float, ...]  # softmax over the label tokens, in label order
    prompt_tokens: int  # tokens the worker prefilled for this request
    cached_tokens: int  # of those, served from its radix cache


def add_demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="small", help="model preset (default: small)")
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--num-docs", type=int, default=24)
    p.add_argument("--questions-per-doc", type=int, default=8)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-dir", type=Path, default=Path(".cache/demo"))
    p.set_defaults(func=lambda a: run_demo(DemoConfig(
        a.preset, a.num_workers, a.num_docs, a.questions_per_doc, a.concurrency, a.seed,
        a.log_dir)))


def run_demo(config: DemoConfig) -> None:
    from moep_sglang.server.worker_process import WorkerConfig, WorkerProcess, free_port

    model = ensure_model(config.preset)
    workers = [
        WorkerProcess(WorkerConfig(model, free_port(), config.log_dir / f"worker{i}.log",
                                   cpu_threads=1))
        for i in range(config.num_workers)
    ]
    try:
        print(f"starting {len(workers)} SGLang workers on CPU (logs in {config.log_dir}) ...")
        t0 = time.monotonic()
        for w in workers:
            w.start()
        for w in workers:
            w.wait_ready()
        print(f"workers ready in {time.monotonic() - t0:.1f} s")
        _run_workload(config, model, [w.config.url for w in workers])
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the workers")
        raise SystemExit(130)
    finally:
        for w in workers:
            w.stop()
        print("workers stopped")


def ensure_model(preset: str) -> Path:
    from moep_sglang.models.checkpoint import MakeModelParams, make_model
    from moep_sglang.models.presets import get_preset

    out = envs.model_cache_dir() / preset
    if not (out / "config.json").exists() or not any(out.glob("*.safetensors")):
        print(f"generating the {preset} model in {out} ...")
        make_model(MakeModelParams(get_preset(preset), out))
    return out


def _run_workload(config: DemoConfig, model: Path, urls: list[str]) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    items = shared_prefix_classification(config.seed, config.num_docs, config.questions_per_doc)
    label_ids = [tok.encode(label, add_special_tokens=False)[0] for label in items[0].labels]
    t0 = time.monotonic()
    scored = asyncio.run(_score_all(items, label_ids, urls, config.concurrency))
    elapsed = time.monotonic() - t0
    _print_report(scored, elapsed, len(urls))


async def _score_all(items, label_ids, urls, concurrency) -> list[ScoredItem]:
    import aiohttp
    from tqdm import tqdm

    sem = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(items), desc="scoring", unit="req")

    async def one(session, item: ScoreItem) -> ScoredItem:
        async with sem:
            url = urls[item.doc_id % len(urls)]  # same document, same worker
            body = {"query": item.query, "items": [item.item], "label_token_ids": label_ids,
                    "apply_softmax": True}
            async with session.post(f"{url}/v1/score", json=body) as resp:
                data = await resp.json()
                if resp.status != 200:
                    raise RuntimeError(f"{url}/v1/score answered {resp.status}: {data}")
        bar.update(1)
        usage = data["usage"]
        return ScoredItem(item, tuple(data["scores"][0]), usage["prompt_tokens"],
                          usage.get("cached_tokens", 0))

    try:
        async with aiohttp.ClientSession() as session:
            return await asyncio.gather(*(one(session, it) for it in items))
    finally:
        bar.close()


def _print_report(scored: list[ScoredItem], elapsed: float, num_workers: int) -> None:
    prompt = sum(s.prompt_tokens for s in scored)
    cached = sum(s.cached_tokens for s in scored)
    print("\nexamples:")
    for s in scored[:4]:
        labels = "  ".join(f"P({l.strip()})={p:.3f}" for l, p in zip(s.request.labels, s.probs))
        print(f"  doc {s.request.doc_id:2d} ...{s.request.query[-48:]!r}")
        print(f"         {s.request.item.strip()!r} -> {labels}")
    print(f"\n{len(scored)} requests on {num_workers} workers in {elapsed:.2f} s: "
          f"{len(scored) / elapsed:.1f} req/s, {prompt / elapsed:,.0f} prompt tokens/s")
    print(f"cache hits: {cached:,} of {prompt:,} prompt tokens served from the radix cache "
          f"({cached / max(prompt, 1):.1%}); prefilled {prompt - cached:,} tokens")
