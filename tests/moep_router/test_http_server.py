"""http_server's route table (the routes themselves run in the e2e tests against real workers)."""

import asyncio
from types import SimpleNamespace

import orjson

from moep_router.http_protocol import Request
from moep_router.http_server import build_server


def _router(name: str, api_key=None):
    spec = SimpleNamespace(max_context_len=4096)
    ctx = SimpleNamespace(model_name=name, created=7, spec=spec)
    return SimpleNamespace(config=SimpleNamespace(api_key=api_key, max_body_bytes=1 << 20),
                           endpoint_context=ctx)


def _reply(server, path: str, headers=None):
    return asyncio.run(server.respond(Request("GET", path, "", headers or {}, b"")))


def _get(server, path: str, headers=None):
    reply = _reply(server, path, headers)
    return reply.status, orjson.loads(reply.body)


def _request_id(reply) -> str:
    [rid] = [v for k, v in reply.headers if k == "X-Request-Id"]
    return rid


def test_one_model_card_under_its_name_as_sent_and_as_quoted():
    server = build_server(_router("org/tiny-v2"))
    for path in ("/v1/models/org/tiny-v2", "/v1/models/org%2Ftiny-v2"):
        status, card = _get(server, path)
        assert status == 200 and card["id"] == "org/tiny-v2" and card["max_model_len"] == 4096
    status, body = _get(server, "/v1/models/other")
    assert status == 404 and "no such path '/v1/models/other'" in body["message"]


def test_the_model_card_is_behind_the_api_key():
    server = build_server(_router("tiny", api_key="k"))
    assert _get(server, "/v1/models/tiny")[0] == 401
    assert _get(server, "/v1/models/tiny", {"authorization": "Bearer k"})[0] == 200


def test_every_reply_carries_the_request_id_given_or_made():
    server = build_server(_router("tiny", api_key="k"))
    ok = _reply(server, "/v1/models", {"authorization": "Bearer k", "x-request-id": "job7.42"})
    assert ok.status == 200 and _request_id(ok) == "job7.42"
    refused = _reply(server, "/v1/models", {"x-request-id": "job7.43"})  # no key
    assert refused.status == 401 and _request_id(refused) == "job7.43"
    made = [_request_id(_reply(server, "/v1/models", {"authorization": "Bearer k"}))
            for _ in range(2)]
    assert made[0] != made[1]
    bad = _reply(server, "/v1/models", {"authorization": "Bearer k", "x-request-id": "a b"})
    assert bad.status == 400 and _request_id(bad) not in ("", "a b")
    assert "X-Request-Id must be 1 to 128 visible ASCII" in orjson.loads(bad.body)["message"]


def test_a_handler_that_raises_is_a_500_naming_the_request(caplog):
    router = _router("tiny")
    router.endpoint_context.spec = None  # the model card handler now fails
    reply = _reply(build_server(router), "/v1/models/tiny", {"x-request-id": "r-500"})
    assert reply.status == 500 and _request_id(reply) == "r-500"
    assert "under request r-500" in orjson.loads(reply.body)["message"]
    assert "request r-500: GET /v1/models/tiny failed" in caplog.text


def test_a_prefill_answer_that_fails_to_shape_is_counted_and_logged_as_the_500_it_was(
        monkeypatch, caplog):
    from moep_router import http_server

    seen = {}

    async def parse(fn, body):
        return "job"

    async def run(job, request_id):
        return SimpleNamespace(job=job)

    def broken(result, ctx):
        raise RuntimeError("shaping failed")

    router = _router("tiny")
    router.parse = parse
    router.dispatcher = SimpleNamespace(run=run)
    router.metrics = SimpleNamespace(request_done=lambda path, status, s: seen.update(metric=status))
    router.access_log = SimpleNamespace(
        record=lambda path, rid, status, s, result, error: seen.update(log=(rid, status)))
    monkeypatch.setitem(http_server.PREFILL_ROUTES, "/v1/score", (None, broken))
    server = build_server(router)
    reply = asyncio.run(server.respond(Request("POST", "/v1/score", "",
                                               {"x-request-id": "r-9"}, b"{}")))
    assert reply.status == 500 and _request_id(reply) == "r-9"
    assert seen == {"metric": 500, "log": ("r-9", 500)}
