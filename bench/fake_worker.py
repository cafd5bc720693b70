"""A fake SGLang worker for router-only benchmarks: answers /generate at once, no model.

    python -m bench.fake_worker --ports 9001,9002,...

One process serves every port; `fake_workers(ports, processes)` starts them from a benchmark.
Replies look like SGLang's prefill-only replies (prompt_tokens, cached_tokens 0, label logprobs
when asked; with max_new_tokens 1, one token and its `top_logprobs_num` likeliest), so any router
can be measured without GPU or CPU model time: what remains is the router's own latency.
/v1/chat/completions answers as SGLang's OpenAI server does (one token, its top logprobs), for
routers that pass OpenAI requests through (smg).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from contextlib import contextmanager

import orjson
from aiohttp import web


TOKEN, TOKEN_TEXT = 661, " yes"  # the one token a max_new_tokens=1 request gets


def _reply(body: dict) -> dict:
    ids = body.get("input_ids")
    n = len(ids) if isinstance(ids, list) else len(str(body.get("text", "")).split())
    new = min(int((body.get("sampling_params") or {}).get("max_new_tokens") or 0), 1)
    meta = {"prompt_tokens": n, "cached_tokens": 0, "completion_tokens": new,
            "finish_reason": {"type": "length", "length": new}}
    labels = body.get("token_ids_logprob")
    if labels:
        meta["output_token_ids_logprobs"] = [[[-0.7, t, None] for t in labels]]
    if new and body.get("return_logprob"):
        meta["output_token_logprobs"] = [[-0.7, TOKEN, TOKEN_TEXT]]
        meta["output_top_logprobs"] = [_top(int(body.get("top_logprobs_num") or 0))]
    return {"text": TOKEN_TEXT if new else "", "output_ids": [TOKEN] * new, "meta_info": meta}


def _top(k: int) -> list:
    return [[-0.7 - 0.1 * j, TOKEN + j, f" t{j}"] for j in range(k)]


def _chat_reply(body: dict) -> dict:
    logprobs = None
    if body.get("logprobs"):
        top = [{"token": t, "logprob": lp, "bytes": list(t.encode())}
               for lp, _, t in _top(int(body.get("top_logprobs") or 0))]
        logprobs = {"content": [{"token": TOKEN_TEXT, "logprob": -0.7,
                                 "bytes": list(TOKEN_TEXT.encode()), "top_logprobs": top}]}
    n = sum(len(str(m.get("content", "")).split()) for m in body.get("messages") or ())
    return {"id": "fake", "object": "chat.completion", "created": 0, "model": "fake",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": TOKEN_TEXT},
                         "logprobs": logprobs, "finish_reason": "length"}],
            "usage": {"prompt_tokens": n, "completion_tokens": 1, "total_tokens": n + 1}}


async def chat(request: web.Request) -> web.Response:
    body = orjson.loads(await request.read())
    return web.Response(body=orjson.dumps(_chat_reply(body)), content_type="application/json")


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


async def serve(ports: list[int], model_id: str = "fake") -> None:
    app = web.Application()
    app.router.add_post("/generate", generate)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/health", health)
    app.router.add_get("/health_generate", health)
    app.router.add_get("/get_server_info", lambda r: web.json_response({}))
    app.router.add_get("/get_model_info", lambda r: web.json_response({"model_path": "fake"}))
    app.router.add_get("/model_info", lambda r: web.json_response({"model_path": "fake"}))
    # the model a gateway registers them under, and routes OpenAI requests naming it to
    app.router.add_get("/v1/models", lambda r: web.json_response({"data": [{"id": model_id}]}))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    for port in ports:
        # A deep accept queue, as the routers have: bursts of new connections are not dropped.
        await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
    print("fake workers ready", flush=True)
    await asyncio.Event().wait()


@contextmanager
def fake_workers(ports: list[int], processes: int = 1, model_id: str = "fake"):
    """Fake workers on `ports`, served by up to `processes` processes (the ports split between
    them round-robin), ready when the block starts and stopped when it ends."""
    procs = [subprocess.Popen([sys.executable, "-m", "bench.fake_worker", "--ports",
                               ",".join(map(str, ports[k::processes])), "--model-id", model_id],
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
    p.add_argument("--model-id", default="fake", help="the id /v1/models gives")
    a = p.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve([int(x) for x in a.ports.split(",")], a.model_id))


if __name__ == "__main__":
    main()
