"""`moep-sglang score --file requests.jsonl`: a batch job from a JSONL file, with progress.

Two file formats, told apart by their lines:
- one request body per line, of the endpoint `--endpoint` names (default /v1/score); results in
  input order as {"line": N, "result": {...}} or {"line": N, "error": {status, message}};
- OpenAI's batch input (every line {"custom_id", "method": "POST", "url", "body"}; `url` any
  endpoint of the router, e.g. /v1/chat/completions): results as OpenAI's batch output,
  {"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}, the body an
  error object {"error": {message, code}} where the router refused the request, and `response`
  null with `error` {code, message} where no answer came (a refused connection).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec
import orjson

from moep_sglang.client.async_client import AsyncClient
from moep_sglang.client.transport import PATHS
from moep_sglang.client.types import MoepError

KIND_OF_URL = {path: kind for kind, path in PATHS.items()}


@dataclass(frozen=True)
class BatchLine:
    kind: str  # the endpoint (transport.PATHS)
    body: dict  # its request body
    custom_id: str | None = None  # an OpenAI batch line's id; None: a line of plain bodies


def add_score_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--file", required=True, type=Path,
                   help="JSONL: one request body per line, or OpenAI's batch input format")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="router (or worker) URL")
    p.add_argument("--zmq-url", default=None, help="router's ZMQ fast path, e.g. tcp://127.0.0.1:8001")
    p.add_argument("--endpoint", default="score", choices=sorted(PATHS),
                   help="endpoint of a file of plain bodies (OpenAI batch lines name their own)")
    p.add_argument("--out", type=Path, default=None, help="results JSONL (default: stdout)")
    p.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    p.add_argument("--api-key", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_score_file)


def read_requests(path: Path, kind: str = "score") -> list[BatchLine]:
    lines = []
    for n, text in enumerate(path.read_text().splitlines(), 1):
        if not text.strip():
            continue
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise SystemExit(f"{path}:{n}: not valid JSON ({exc})") from exc
        if not isinstance(obj, dict):
            raise SystemExit(f"{path}:{n}: each line must be a JSON object")
        line = _openai_line(obj, f"{path}:{n}") if "custom_id" in obj else BatchLine(kind, obj)
        if lines and (line.custom_id is None) != (lines[0].custom_id is None):
            raise SystemExit(f"{path}:{n}: the file mixes OpenAI batch lines (with custom_id) "
                             "and plain request bodies")
        lines.append(line)
    if not lines:
        raise SystemExit(f"{path}: no requests")
    return lines


def _openai_line(obj: dict, where: str) -> BatchLine:
    unknown = sorted(set(obj) - {"custom_id", "method", "url", "body"})
    if unknown:
        raise SystemExit(f"{where}: unknown field(s) {unknown} in an OpenAI batch line")
    if obj.get("method", "POST") != "POST":
        raise SystemExit(f"{where}: `method` must be POST")
    kind = KIND_OF_URL.get(obj.get("url"))
    if kind is None:
        raise SystemExit(f"{where}: `url` {obj.get('url')!r} is not an endpoint of the router; "
                         f"one of {sorted(KIND_OF_URL)}")
    if not isinstance(obj.get("body"), dict):
        raise SystemExit(f"{where}: `body` must be a JSON object")
    return BatchLine(kind, obj["body"], str(obj["custom_id"]))


def run_score_file(args: argparse.Namespace) -> None:
    lines = read_requests(args.file, args.endpoint)
    t0 = time.monotonic()
    results = asyncio.run(_run(args, lines))
    elapsed = time.monotonic() - t0
    out = open(args.out, "wb") if args.out else sys.stdout.buffer
    ok = failed = prompt = cached = flops = 0
    for n, (line, r) in enumerate(zip(lines, results), 1):
        if isinstance(r, BaseException):
            failed += 1
        else:
            ok += 1
            p, c, f = _usage(r)
            prompt, cached, flops = prompt + p, cached + c, flops + f
        row = _openai_row(n, line, r) if line.custom_id is not None else _row(n, r)
        out.write(orjson.dumps(row) + b"\n")
    if args.out:
        out.close()
    print(f"{ok} ok, {failed} failed in {elapsed:.2f} s ({len(results) / elapsed:.1f} req/s); "
          f"{prompt:,} prompt tokens, {cached / max(prompt, 1):.1%} cached, "
          f"{flops / 1e12:.3f} TFLOP computed", file=sys.stderr)
    if failed:
        raise SystemExit(1)


def _usage(r) -> tuple[int, int, int]:
    """(prompt, cached tokens, FLOPs) of a result: an SDK struct, or a reply's JSON."""
    usage = r.get("usage") if isinstance(r, dict) else getattr(r, "usage", None)
    if not usage:
        return 0, 0, 0
    if isinstance(usage, dict):
        return (usage.get("prompt_tokens") or 0, usage.get("cached_tokens") or 0,
                usage.get("flops") or 0)
    return usage.prompt_tokens, usage.cached_tokens, usage.flops


def _row(n: int, r) -> dict:
    if isinstance(r, MoepError):
        return {"line": n, "error": {"status": r.status, "message": r.message}}
    if isinstance(r, BaseException):
        return {"line": n, "error": {"status": 0, "message": f"{type(r).__name__}: {r}"}}
    return {"line": n, "result": msgspec.to_builtins(r)}


def _openai_row(n: int, line: BatchLine, r) -> dict:
    row = {"id": f"batch_req_{n}", "custom_id": line.custom_id, "response": None, "error": None}
    if isinstance(r, MoepError):
        row["response"] = {"status_code": r.status, "request_id": "",
                           "body": {"error": {"message": r.message, "code": r.status}}}
    elif isinstance(r, BaseException):
        row["error"] = {"code": "request_failed", "message": f"{type(r).__name__}: {r}"}
    else:
        row["response"] = {"status_code": 200, "request_id": "", "body": r}  # as sent
    return row


async def _run(args, lines: list[BatchLine]) -> list:
    async with AsyncClient(args.url, zmq_url=args.zmq_url, api_key=args.api_key,
                           max_concurrency=args.concurrency) as client:
        kinds = {line.kind for line in lines}
        return await client.batch_requests(
            [(line.kind, line.body) for line in lines], progress=not args.no_progress,
            return_exceptions=True, desc=kinds.pop() if len(kinds) == 1 else "requests",
            decode=lines[0].custom_id is None)  # OpenAI's format: the bodies as the server sent
