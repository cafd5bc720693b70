"""`moep-sglang score --file requests.jsonl`: a batch job from a JSONL file, with progress.

Each line is one request body of the chosen endpoint (default /v1/score). Results are written
as JSONL in input order: {"line": N, "result": {...}} or {"line": N, "error": {status, message}}.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import msgspec
import orjson

from moep_sglang.client.async_client import AsyncClient
from moep_sglang.client.types import MoepError


def add_score_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--file", required=True, type=Path, help="JSONL, one request body per line")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="router (or worker) URL")
    p.add_argument("--zmq-url", default=None, help="router's ZMQ fast path, e.g. tcp://127.0.0.1:8001")
    p.add_argument("--endpoint", default="score", choices=["score", "classify", "rerank",
                                                            "generate"])
    p.add_argument("--out", type=Path, default=None, help="results JSONL (default: stdout)")
    p.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    p.add_argument("--api-key", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_score_file)


def read_requests(path: Path) -> list[dict]:
    bodies = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            body = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise SystemExit(f"{path}:{n}: not valid JSON ({exc})") from exc
        if not isinstance(body, dict):
            raise SystemExit(f"{path}:{n}: each line must be a JSON object")
        bodies.append(body)
    if not bodies:
        raise SystemExit(f"{path}: no requests")
    return bodies


def run_score_file(args: argparse.Namespace) -> None:
    bodies = read_requests(args.file)
    t0 = time.monotonic()
    results = asyncio.run(_run(args, bodies))
    elapsed = time.monotonic() - t0
    out = open(args.out, "wb") if args.out else sys.stdout.buffer
    ok = failed = prompt = cached = flops = 0
    for n, r in enumerate(results, 1):
        if isinstance(r, MoepError):
            failed += 1
            line = {"line": n, "error": {"status": r.status, "message": r.message}}
        else:
            ok += 1
            usage = getattr(r, "usage", None)
            if usage:
                prompt, cached, flops = (prompt + usage.prompt_tokens, cached + usage.cached_tokens,
                                         flops + usage.flops)
            line = {"line": n, "result": msgspec.to_builtins(r)}
        out.write(orjson.dumps(line) + b"\n")
    if args.out:
        out.close()
    print(f"{ok} ok, {failed} failed in {elapsed:.2f} s ({len(results) / elapsed:.1f} req/s); "
          f"{prompt:,} prompt tokens, {cached / max(prompt, 1):.1%} cached, "
          f"{flops / 1e12:.3f} TFLOP computed", file=sys.stderr)
    if failed:
        raise SystemExit(1)


async def _run(args, bodies: list[dict]) -> list:
    async with AsyncClient(args.url, zmq_url=args.zmq_url, api_key=args.api_key,
                           max_concurrency=args.concurrency) as client:
        return await client.batch(args.endpoint, bodies, progress=not args.no_progress,
                                  return_exceptions=True)
