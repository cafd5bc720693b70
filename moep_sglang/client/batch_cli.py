"""`moep-sglang score --file requests.jsonl`: a batch job from a JSONL file, with progress.

Two file formats, told apart by their lines:
- one request body per line, of the endpoint `--endpoint` names (default /v1/score); results in
  input order as {"line": N, "result": {...}} or {"line": N, "error": {status, message,
  request_id}} (request_id: the router's, for its log; null where no answer came);
- OpenAI's batch input (every line {"custom_id", "method": "POST", "url", "body"}; `url` any
  endpoint of the router, e.g. /v1/chat/completions): results as OpenAI's batch output,
  {"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}, the body an
  error object {"error": {message, code}} where the router refused the request (request_id its
  id then), and `response` null with `error` {code, message} where no answer came (a refused
  connection).

A job of any length runs in bounded memory: the file is checked whole first (a bad line fails
the job before anything is sent), then read again as requests go out, and each result is written
as soon as it and the ones before it are in, so the output is always a prefix of the job's
results. An interrupted job (Ctrl-C, a crash, a lost machine) continues with `--resume`: the
results already in `--out` are checked against the input's first lines and kept, a line cut off
mid-write is dropped, and only the rest is sent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import signal
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import msgspec
import orjson

from moep_sglang.client.async_client import AsyncClient
from moep_sglang.client.transport import PATHS
from moep_sglang.client.types import MoepError

KIND_OF_URL = {path: kind for kind, path in PATHS.items()}
FLUSH_EVERY_S = 1.0  # results reach the output file at least this often


@dataclass(frozen=True)
class BatchLine:
    kind: str  # the endpoint (transport.PATHS)
    body: dict  # its request body
    custom_id: str | None = None  # an OpenAI batch line's id; None: a line of plain bodies


@dataclass
class Tally:
    """What a job's results add up to (the summary line and the exit code)."""
    ok: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    flops: int = 0

    def add(self, row: dict) -> None:
        """Count one output row (either format)."""
        if row.get("error") or (row.get("response") or {}).get("status_code", 200) != 200:
            self.failed += 1
            return
        self.ok += 1
        result = row.get("result") or (row.get("response") or {}).get("body") or {}
        usage = result.get("usage") if isinstance(result, dict) else None
        if usage:
            self.prompt_tokens += usage.get("prompt_tokens") or 0
            self.cached_tokens += usage.get("cached_tokens") or 0
            self.flops += usage.get("flops") or 0


def add_score_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--file", required=True, type=Path,
                   help="JSONL: one request body per line, or OpenAI's batch input format")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="router (or worker) URL")
    p.add_argument("--zmq-url", default=None, help="router's ZMQ fast path, e.g. tcp://127.0.0.1:8001")
    p.add_argument("--endpoint", default="score", choices=sorted(PATHS),
                   help="endpoint of a file of plain bodies (OpenAI batch lines name their own)")
    p.add_argument("--out", type=Path, default=None, help="results JSONL (default: stdout)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue an interrupted job: keep the results already in --out, "
                            "send only the requests after them")
    again.add_argument("--overwrite", action="store_true",
                       help="replace an --out file that already holds results")
    p.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    p.add_argument("--max-retries", type=int, default=8,
                   help="tries again after 429/503 or an unreachable router (a restart), with "
                        "exponential backoff from 0.25 s (8: about a minute in all)")
    p.add_argument("--api-key", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_score_file)


def iter_requests(path: Path, kind: str = "score") -> Iterator[BatchLine]:
    """The file's requests, one at a time; a line that is not a request stops it with
    SystemExit naming the line."""
    first_is_openai = None
    with open(path, "rb") as f:
        for n, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                obj = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise SystemExit(f"{path}:{n}: not valid JSON ({exc})") from exc
            if not isinstance(obj, dict):
                raise SystemExit(f"{path}:{n}: each line must be a JSON object")
            line = _openai_line(obj, f"{path}:{n}") if "custom_id" in obj else BatchLine(kind, obj)
            if first_is_openai is None:
                first_is_openai = line.custom_id is not None
            elif first_is_openai != (line.custom_id is not None):
                raise SystemExit(f"{path}:{n}: the file mixes OpenAI batch lines (with custom_id) "
                                 "and plain request bodies")
            yield line


@dataclass(frozen=True)
class RequestFile:
    """What the check of a whole request file found."""
    count: int  # requests
    openai: bool  # OpenAI batch lines (else plain bodies)
    kinds: frozenset[str]  # the endpoints its requests go to


def scan_requests(path: Path, kind: str = "score") -> RequestFile:
    """Check every line of the file (the job fails here, before anything is sent)."""
    count, openai, kinds = 0, False, set()
    for line in iter_requests(path, kind):
        count += 1
        openai = line.custom_id is not None
        kinds.add(line.kind)
    if not count:
        raise SystemExit(f"{path}: no requests")
    return RequestFile(count, openai, frozenset(kinds))


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
    job = scan_requests(args.file, args.endpoint)
    tally = Tally()
    done = _prepare_output(args, job.count, tally)
    t0 = time.monotonic()
    out = open(args.out, "ab") if args.out else sys.stdout.buffer
    sent, interrupted = 0, False
    previous = signal.signal(signal.SIGTERM, _stop)  # a job killed (a pod, `timeout`) as Ctrl-C
    try:
        sent = asyncio.run(_run(args, job, done, out, tally))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        signal.signal(signal.SIGTERM, previous)
        out.flush()
        if args.out:
            out.close()
    elapsed = time.monotonic() - t0
    if interrupted:
        if args.out is None:
            raise SystemExit("interrupted: the results above are the job's first ones")
        raise SystemExit(f"interrupted: {_complete_rows(args.out)} of {job.count} results "
                         f"written; `--resume` continues the job from {args.out}")
    resumed = f" ({done} kept from an earlier run, {sent} sent now)" if done else ""
    print(f"{tally.ok} ok, {tally.failed} failed{resumed} in {elapsed:.2f} s "
          f"({sent / max(elapsed, 1e-9):.1f} req/s); {tally.prompt_tokens:,} prompt tokens, "
          f"{tally.cached_tokens / max(tally.prompt_tokens, 1):.1%} cached, "
          f"{tally.flops / 1e12:.3f} TFLOP computed", file=sys.stderr)
    if tally.failed:
        raise SystemExit(1)


def _stop(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _prepare_output(args: argparse.Namespace, total: int, tally: Tally) -> int:
    """How many results `--out` already holds for this job (0 for a new one). With --resume, in
    one pass over it: check that each row answers the input's request at its place, count it
    into the tally, and cut the file after the last whole row (a write the interruption cut
    short). Without: refuse to write over earlier results unless --overwrite."""
    if args.out is None:
        if args.resume:
            raise SystemExit("--resume needs --out: the results of the earlier run")
        return 0
    if not args.out.exists() or args.out.stat().st_size == 0 or args.overwrite:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_bytes(b"")
        return 0
    if not args.resume:
        raise SystemExit(f"{args.out} already holds results: `--resume` continues that job, "
                         "`--overwrite` starts again")
    requests = iter_requests(args.file, args.endpoint)
    done = kept = 0  # rows kept, and their bytes
    with open(args.out, "rb") as rows:
        for text in rows:
            row = _complete_row(text)
            if row is None:
                break
            line = next(requests, None)
            if line is None:
                raise SystemExit(f"{args.out} holds more than the {total} results of "
                                 f"{args.file}: not this file's results")
            done += 1
            want = {"custom_id": line.custom_id} if line.custom_id is not None else {"line": done}
            got = {k: row.get(k) for k in want}
            if got != want:
                raise SystemExit(f"{args.out}: result {done} is for {got}, but request {done} of "
                                 f"{args.file} is {want}: not this file's results")
            tally.add(row)
            kept += len(text)
    if kept != args.out.stat().st_size:
        with open(args.out, "r+b") as f:
            f.truncate(kept)
    return done


def _complete_row(text: bytes) -> dict | None:
    """A row of the output file, or None for one an interruption cut short (no newline yet, or
    not whole JSON)."""
    if not text.endswith(b"\n"):
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def _complete_rows(path: Path) -> int:
    """Rows of the output file before the first one an interruption cut short."""
    with open(path, "rb") as f:
        return sum(1 for _ in itertools.takewhile(lambda t: _complete_row(t) is not None, f))


def _row(n: int, r) -> dict:
    if isinstance(r, MoepError):
        return {"line": n, "error": {"status": r.status, "message": r.message,
                                     "request_id": r.request_id}}
    if isinstance(r, BaseException):
        return {"line": n, "error": {"status": 0, "message": f"{type(r).__name__}: {r}",
                                     "request_id": None}}
    return {"line": n, "result": msgspec.to_builtins(r)}


def _openai_row(n: int, line: BatchLine, r) -> dict:
    row = {"id": f"batch_req_{n}", "custom_id": line.custom_id, "response": None, "error": None}
    if isinstance(r, MoepError):
        row["response"] = {"status_code": r.status, "request_id": r.request_id or "",
                           "body": {"error": {"message": r.message, "code": r.status}}}
    elif isinstance(r, BaseException):
        row["error"] = {"code": "request_failed", "message": f"{type(r).__name__}: {r}"}
    else:
        row["response"] = {"status_code": 200, "request_id": "", "body": r}  # as sent
    return row


async def _run(args, job: RequestFile, done: int, out: BinaryIO, tally: Tally) -> int:
    """Send the file's requests after the first `done`, writing each result as its turn comes;
    returns how many were sent."""
    lines = iter_requests(args.file, args.endpoint)
    for _ in range(done):
        next(lines)
    pending: deque[BatchLine] = deque()  # the lines sent and not yet written, in order

    def requests():
        for line in lines:
            pending.append(line)
            yield line.kind, line.body

    sent = 0
    flushed = time.monotonic()
    async with AsyncClient(args.url, zmq_url=args.zmq_url, api_key=args.api_key,
                           max_concurrency=args.concurrency,
                           max_retries=args.max_retries) as client:
        stream = client.stream_requests(
            requests(), progress=not args.no_progress, total=job.count, initial=done,
            desc=next(iter(job.kinds)) if len(job.kinds) == 1 else "requests",
            decode=not job.openai)  # OpenAI's format: the bodies as the server sent them
        async with contextlib.aclosing(stream):
            async for i, r in stream:
                n = done + i + 1
                line = pending.popleft()
                row = _openai_row(n, line, r) if job.openai else _row(n, r)
                tally.add(row)
                out.write(orjson.dumps(row) + b"\n")
                sent += 1
                if time.monotonic() - flushed >= FLUSH_EVERY_S:
                    out.flush()
                    flushed = time.monotonic()
    return sent
