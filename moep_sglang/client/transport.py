"""Two transports behind one interface: `await send(kind, body) -> Answer`, its raw body the
response as JSON bytes (types.parse_result decodes it).

HTTP (aiohttp) works with the router and with a bare SGLang worker; the ZMQ fast path talks to
the router's ROUTER socket with binary framing (moep_router/messages.py): token ids as raw int32
frames, never pickle. Requests the fast path cannot carry (text) go over HTTP.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import NamedTuple

import msgspec
import orjson

from moep_router.messages import KIND_GENERATE, KIND_SCORE, decode_reply, int32_frame

logger = logging.getLogger("moep_sglang.client")

PATHS = {"score": "/v1/score", "classify": "/v1/classify", "rerank": "/v1/rerank",
         "generate": "/generate", "completions": "/v1/completions",
         "chat": "/v1/chat/completions"}


class Answer(NamedTuple):
    status: int  # HTTP status (the fast path's too)
    raw: bytes  # the response body, JSON
    retry_after: float | None  # seconds, for 429/503
    request_id: str | None = None  # the router's id of the request (HTTP's X-Request-Id)


class HttpTransport:
    def __init__(self, base_url: str, api_key: str | None, timeout_s: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.timeout_s = timeout_s
        self._session = None

    async def send(self, kind: str, body: dict) -> Answer:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                connector=aiohttp.TCPConnector(limit=0))
        async with self._session.post(self.base_url + PATHS[kind], data=orjson.dumps(body),
                                      headers=self.headers) as resp:
            raw = await resp.read()
            retry = resp.headers.get("Retry-After")
            return Answer(resp.status, raw, float(retry) if retry else None,
                          resp.headers.get("X-Request-Id"))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class RouterDisconnected(ConnectionError):
    """The fast path's connection to the router dropped while this request awaited its reply
    (the router stopped or restarted): the reply will never come, so the request is sent
    again (AsyncClient.request retries it) instead of waiting out its timeout."""


class ZmqTransport:
    """One DEALER socket; replies matched to requests by request_id. ZMQ reconnects by itself;
    a monitor of the socket fails the requests awaiting replies when the connection drops."""

    def __init__(self, zmq_url: str, timeout_s: float) -> None:
        import zmq
        import zmq.asyncio

        self._ctx = zmq.asyncio.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._monitor = self._sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self._sock.connect(zmq_url)
        self.timeout_s = timeout_s
        self._ids = itertools.count()
        self._waiting: dict[int, asyncio.Future] = {}
        self._reader: asyncio.Task | None = None
        self._watcher: asyncio.Task | None = None

    @staticmethod
    def can_carry(kind: str, body: dict) -> bool:
        if kind == "score":
            return _ids(body.get("query")) and isinstance(body.get("items"), list) and all(
                _ids(i) for i in body["items"]) and bool(body["items"])
        if kind == "generate":
            ids = body.get("input_ids")
            return "text" not in body and ids is not None and (
                _ids(ids) or (isinstance(ids, list) and all(_ids(i) for i in ids)))
        return False

    async def send(self, kind: str, body: dict) -> Answer:
        if self._reader is None:
            self._reader = asyncio.get_running_loop().create_task(self._read())
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        request_id = next(self._ids)
        if kind == "score":
            header = {k: v for k, v in body.items() if k not in ("query", "items")}
            frames = [body["query"], *body["items"]]
            kind_byte = KIND_SCORE
        else:
            header = {k: v for k, v in body.items() if k != "input_ids"}
            ids = body["input_ids"]
            frames = ids if ids and isinstance(ids[0], list) else [ids]
            kind_byte = KIND_GENERATE
        header["request_id"] = request_id
        future = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        await self._sock.send_multipart(
            [kind_byte, orjson.dumps(header), *(int32_frame(f) for f in frames)])
        try:
            reply = await asyncio.wait_for(future, self.timeout_s)
        finally:
            self._waiting.pop(request_id, None)
        return Answer(reply.status, bytes(reply.body), 1.0 if reply.status in (429, 503) else None)

    async def _read(self) -> None:
        while True:
            _, frame = await self._sock.recv_multipart()
            try:
                reply = decode_reply(frame)
            except msgspec.DecodeError as exc:  # its request times out; the others go on
                logger.warning("malformed fast-path reply skipped: %s", exc)
                continue
            future = self._waiting.get(reply.request_id)
            if future is not None and not future.done():
                future.set_result(reply)

    async def _watch(self) -> None:
        """Every disconnect event fails the requests then awaiting replies."""
        from zmq.utils.monitor import parse_monitor_message

        while True:
            event = parse_monitor_message(await self._monitor.recv_multipart())
            waiting = [f for f in self._waiting.values() if not f.done()]
            logger.warning("fast path: connection to %s dropped; %d request(s) awaiting "
                           "replies are sent again", event["endpoint"].decode(), len(waiting))
            for future in waiting:
                future.set_exception(RouterDisconnected("the router's connection dropped"))

    async def close(self) -> None:
        tasks = [t for t in (self._reader, self._watcher) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._sock.disable_monitor()
        self._monitor.close(linger=0)
        self._sock.close(linger=0)
        self._ctx.term()


def _ids(value) -> bool:
    return isinstance(value, list) and all(isinstance(t, int) for t in value)
