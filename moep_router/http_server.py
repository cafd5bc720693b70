"""The HTTP front end's routes: parse -> Job -> dispatcher -> JSON, errors as 4xx/5xx JSON
(the structs of messages.py), served by http_protocol.HttpServer."""

from __future__ import annotations

import logging
import time
from urllib.parse import quote

import orjson

from moep_router.config import WorkerSpec
from moep_router.dispatcher import Overloaded
from moep_router.endpoints import (
    parse_classify,
    parse_generate,
    parse_rerank,
    parse_rerank_v2,
    parse_score,
    shape_response,
)
from moep_router.http_protocol import Handler, HttpServer, Reply, Request, error_reply
from moep_router.jobs import BadRequest
from moep_router.messages import RouterHealth, WorkersReply, WorkerStatus, encode
from moep_router.openai_api import model_list, parse_chat, parse_completion, respond_chat, \
    respond_completion
from moep_router.request_ids import MAX_LEN as MAX_ID_LEN
from moep_router.request_ids import RequestIds

logger = logging.getLogger("moep_router")


def _json_response(result, ctx) -> tuple[bytes, str]:
    return encode(shape_response(result)), "application/json"


# path -> (parse: (body, EndpointContext) -> Job,
#          respond: (DispatchResult, EndpointContext) -> (response body, content type))
PREFILL_ROUTES = {
    "/v1/score": (parse_score, _json_response),
    "/v1/classify": (parse_classify, _json_response),
    "/v1/rerank": (parse_rerank, _json_response),
    "/v2/rerank": (parse_rerank_v2, _json_response),
    "/generate": (parse_generate, _json_response),
    "/v1/completions": (parse_completion, respond_completion),
    "/v1/chat/completions": (parse_chat, respond_chat),
}


def build_server(router) -> HttpServer:
    """Every route's handler wrapped in _guarded (request id, auth, errors as JSON)."""
    key, ids = router.config.api_key, RequestIds()
    routes: dict[tuple[str, str], Handler] = {
        ("POST", path): _guarded(_prefill_handler(router, path), key, ids)
        for path in PREFILL_ROUTES}
    routes["GET", "/v1/models"] = _guarded(lambda r, rid: _models(router), key, ids)
    name = router.endpoint_context.model_name  # OpenAI's GET /v1/models/{model}, as sent or quoted
    for path in {f"/v1/models/{name}", f"/v1/models/{quote(name, safe='')}"}:
        routes["GET", path] = _guarded(lambda r, rid: _model(router), key, ids)
    routes["GET", "/health"] = _guarded(lambda r, rid: _health(router), None, ids)
    routes["GET", "/metrics"] = _guarded(lambda r, rid: _metrics(router), None, ids)
    routes["GET", "/workers"] = _guarded(lambda r, rid: _workers_reply(router), key, ids)
    routes["POST", "/workers"] = _guarded(lambda r, rid: _add_worker(router, r), key, ids)
    routes["DELETE", "/workers"] = _guarded(lambda r, rid: _remove_worker(router, r), key, ids)
    return HttpServer(routes, router.config.max_body_bytes)


def _guarded(handler, api_key: str | None, ids: RequestIds) -> Handler:
    """handler(request, request_id) behind the API key (None: open), its BadRequest and
    Overloaded as JSON errors, anything else it raises a logged 500 naming the request; every
    reply carries the request's id (X-Request-Id)."""
    expected = f"Bearer {api_key}" if api_key else None

    async def guarded(request: Request) -> Reply:
        rid = ids.of(request.headers)
        if rid is None:
            rid = ids.new()
            reply = error_reply(400, f"X-Request-Id must be 1 to {MAX_ID_LEN} visible ASCII "
                                     "characters, no spaces", "invalid_request_error")
        elif expected is not None and request.headers.get("authorization", "") != expected:
            reply = error_reply(401, "missing or wrong API key: send `Authorization: Bearer KEY`",
                                "authentication_error")
        else:
            try:
                reply = await handler(request, rid)
            except BadRequest as exc:
                reply = error_reply(exc.status, str(exc), "invalid_request_error")
            except Overloaded as exc:
                reply = error_reply(exc.status, str(exc), "overloaded",
                                    (("Retry-After", str(exc.retry_after_s)),))
            except Exception:  # a bug: logged with the request's id, the client told it
                logger.exception("request %s: %s %s failed", rid, request.method, request.path)
                reply = error_reply(500, f"internal error: the router's log has it under "
                                         f"request {rid}", "internal_error")
        return Reply(reply.status, reply.body, reply.content_type,
                     (*reply.headers, ("X-Request-Id", rid)))

    return guarded


def _prefill_handler(router, path: str) -> Handler:
    parse, respond = PREFILL_ROUTES[path]

    async def handler(request: Request, request_id: str) -> Reply:
        t0 = time.perf_counter()
        status, result, error = 500, None, ""
        try:
            job = await router.parse(parse, _body(request))
            result = await router.dispatcher.run(job, request_id)
            reply = Reply(200, *respond(result, router.endpoint_context))
            status = 200  # only once shaped: a response that failed to shape was a 500
            return reply
        except (BadRequest, Overloaded) as exc:
            status, error = exc.status, str(exc)
            raise
        finally:
            latency = time.perf_counter() - t0
            router.metrics.request_done(path, status, latency)
            if router.access_log is not None:
                router.access_log.record(path, request_id, status, latency, result, error)

    return handler


def _body(request: Request) -> dict:
    """The JSON object of the body (http_protocol has already refused one over
    --max-body-bytes with 413)."""
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON body: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest("the JSON body must be an object")
    return body


async def _health(router) -> Reply:
    """200 once a worker is healthy and every cache index has replayed its history."""
    healthy = len(router.registry.healthy())
    synced = router.kv_synced()
    status = ("ok" if healthy and synced else "syncing" if healthy
              else "admitting workers" if router.registry.any_starting() else "no healthy worker")
    body = RouterHealth(status, healthy, len(router.registry.all()), synced,
                        router.shared.index if router.shared else 0)
    return _json(body, status=200 if status == "ok" else 503)


async def _models(router) -> Reply:
    return _json(model_list(router.endpoint_context))


async def _model(router) -> Reply:
    [card] = model_list(router.endpoint_context).data
    return _json(card)


async def _metrics(router) -> Reply:
    tok = router.endpoint_context.tok
    body = router.metrics.render(router.registry.all(), tok.cache, tok.pieces)
    return Reply(200, body, "text/plain; version=0.0.4; charset=utf-8")


async def _workers_reply(router) -> Reply:
    return _json(_workers(router))


def _workers(router) -> WorkersReply:
    """Every worker as this process knows it; load summed over the router's processes
    (--processes N), the counters (failures, requests) this process's own."""
    return WorkersReply([WorkerStatus(
        w.worker_id, w.spec.kv_endpoint, w.healthy, w.starting, w.threshold_flops,
        w.threshold_source, flops, inflight, w.index.num_blocks, w.num_gaps, w.num_failures,
        w.num_requests) for w in router.registry.all() for inflight, flops in [w.load()]])


async def _add_worker(router, request: Request) -> Reply:
    body = _body(request)
    url = body.get("url")
    if not isinstance(url, str):
        raise BadRequest("`url` is required: http://HOST:PORT of the worker")
    opts = [f"{k}={body[k]}" for k in ("kv", "replay", "threshold") if body.get(k) is not None]
    try:
        spec = WorkerSpec.parse(",".join([url, *opts]))
        await router.add_worker(spec, announce=True)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    return _json(_workers(router), status=201)


async def _remove_worker(router, request: Request) -> Reply:
    url = request.query_param("url").rstrip("/")
    try:
        await router.remove_worker(url, announce=True)
    except KeyError as exc:
        raise BadRequest(f"no worker {url!r} is registered", status=404) from exc
    return _json(_workers(router))


def _json(body, status: int = 200) -> Reply:
    """A struct of messages.py."""
    return Reply(status, encode(body))
