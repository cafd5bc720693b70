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


def _get(server, path: str, headers=None):
    reply = asyncio.run(server.respond(Request("GET", path, "", headers or {}, b"")))
    return reply.status, orjson.loads(reply.body)


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
