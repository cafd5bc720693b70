"""A fake SGLang worker for router-only benchmarks: answers /generate at once, no model.

    python -m bench.fake_worker --ports 9001,9002,...

One process serves every port; `fake_workers(ports, processes)` starts them from a benchmark.
Replies look like SGLang's prefill-only replies (prompt_tokens, cached_tokens 0, label logprobs
when asked), so any router can be measured without GPU or CPU model time: what remains is the
router's own latency.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from contextlib import contextmanager

import orjson
from aiohttp import web


def _reply(body: dict) -> dict:
    ids = body.get("input_ids")
    n = len(ids) if isinstance(ids, list) else len(str(body.get("text", "")).split())
    meta = {"prompt_tokens": n, "cached_tokens": 0, "completion_tokens": 0,
            "finish_reason": {"type": "length", "length": 0}}
    labels = body.get("token_ids_logprob")
    if labels:
        meta["output_token_ids_logprobs"] = [[[-0.7, t, None] for t in labels]]
    return {"text": "", "output_ids": [], "meta_info": meta}


async def generate(request: web.Request) -> web.Response:
    body = orjson.loads(await request.read())
    ids = body.get("input_ids")
    if isinstance(ids, list) and ids and isinstance(ids[0], list):
        out = [_reply({**body, "input_ids": i}) for i in ids]
    else:
        out = _reply(body)
    return web.Response(body=orjson.dumps(out), content_type="application/json")


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def serve(ports: list[int]) -> None:
    app = web.Application()
    app.router.add_post("/generate", generate)
    app.router.add_get("/health", health)
    app.router.add_get("/health_generate", health)
    app.router.add_get("/get_server_info", lambda r: web.json_response({}))
    app.router.add_get("/get_model_info", lambda r: web.json_response({"model_path": "fake"}))
    app.router.add_get("/model_info", lambda r: web.json_response({"model_path": "fake"}))
    app.router.add_get("/v1/models", lambda r: web.json_response({"data": [{"id": "fake"}]}))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    for port in ports:
        # A deep accept queue, as the routers have: bursts of new connections are not dropped.
        await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
    print("fake workers ready", flush=True)
    await asyncio.Event().wait()


@contextmanager
def fake_workers(ports: list[int], processes: int = 1):
    """Fake workers on `ports`, served by up to `processes` processes (the ports split between
    them round-robin), ready when the block starts and stopped when it ends."""
    procs = [subprocess.Popen([sys.executable, "-m", "bench.fake_worker", "--ports",
                               ",".join(map(str, ports[k::processes]))],
                              stdout=subprocess.PIPE, text=True)
             for k in range(min(processes, len(ports)))]
    try:
        for proc in procs:
            if not proc.stdout.readline():
                raise RuntimeError(f"fake worker exited with {proc.wait()}")
        yield
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--ports", required=True)
    a = p.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve([int(x) for x in a.ports.split(",")]))


if __name__ == "__main__":
    main()
