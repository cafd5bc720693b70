"""The router's HTTP/1.1 server: one asyncio protocol per connection over httptools (llhttp,
Node.js's parser), in place of aiohttp's server: 17-51 us less of the router's CPU per request,
of 181-219 us (`bench/results/router_latency_ab_*.json`, the 2-core machine).

It does what the router's front end needs and no more: requests framed by Content-Length or
chunked encoding; bodies up to `max_body_bytes` (beyond: 413 with a message, the connection
closed after it, the rest of the body read and dropped so that the client sees the answer);
`Expect: 100-continue`; keep-alive, with pipelined requests answered in order; HEAD wherever
GET is routed; 400 for what llhttp cannot parse, 404 and 405 (with Allow) as JSON; an idle
keep-alive connection closed after `idle_timeout_s`; a graceful stop that lets requests in
flight finish. A handler that raises gets a logged 500. A client that goes away mid-request
does not cancel its handler: the request still runs to the end (the router never drops an
accepted request on a worker half-way); only the answer is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from urllib.parse import parse_qsl

import httptools

from moep_router.messages import ErrorResponse, encode

logger = logging.getLogger("moep_router")

DEFAULT_IDLE_TIMEOUT_S = 75.0  # keep-alive connections idle this long are closed (aiohttp's)
LINGER_S = 2.0  # after a 413, how long the rest of an oversized body is read and dropped
SWEEP_EVERY_S = 5.0  # how often idle connections are looked for
MAX_HEAD_BYTES = 64 * 1024  # request line and headers of one request


@dataclass(frozen=True, slots=True)
class Request:
    method: str  # "GET", "POST", ...
    path: str  # without the query
    query: str  # the raw query string ("" for none)
    headers: dict[str, str]  # names lower-case
    body: bytes

    def query_param(self, name: str, default: str = "") -> str:
        return dict(parse_qsl(self.query)).get(name, default)


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()  # more headers, e.g. Retry-After


Handler = Callable[[Request], Awaitable[Reply]]


def error_reply(status: int, message: str, kind: str,
                headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    return Reply(status, encode(ErrorResponse(message=message, type=kind, code=status)),
                 headers=headers)


class _Date:
    """The Date header's value, formatted once a second."""

    def __init__(self) -> None:
        self._second, self._value = -1, b""

    def now(self) -> bytes:
        second = int(time.time())
        if second != self._second:
            self._second, self._value = second, formatdate(second, usegmt=True).encode()
        return self._value


_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


def reply_bytes(reply: Reply, keep_alive: bool, date: bytes, head_only: bool = False) -> bytes:
    """The whole HTTP/1.1 response: status line, headers, body (none for HEAD)."""
    parts = [b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nDate: %s\r\n"
             b"Server: moep-router\r\n" % (reply.status, _REASONS.get(reply.status, b""),
                                          reply.content_type.encode(), len(reply.body), date)]
    for name, value in reply.headers:
        parts.append(b"%s: %s\r\n" % (name.encode(), value.encode()))
    parts.append(b"Connection: keep-alive\r\n\r\n" if keep_alive else b"Connection: close\r\n\r\n")
    if not head_only:
        parts.append(reply.body)
    return b"".join(parts)


class _Pending:
    """One parsed request waiting for its answer, or an answer already decided (a 413)."""

    __slots__ = ("request", "reply", "keep_alive", "head_only")

    def __init__(self, request: Request | None, reply: Reply | None, keep_alive: bool,
                 head_only: bool) -> None:
        self.request, self.reply = request, reply
        self.keep_alive, self.head_only = keep_alive, head_only


class _Connection(asyncio.Protocol):
    """One client connection: llhttp's callbacks build requests; they are answered one at a
    time, in order (HTTP/1.1 pipelining), by one task at a time."""

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self._queue: deque[_Pending] = deque()
        self._task: asyncio.Task | None = None  # answering the head of the queue
        self._discarding = False  # a 413 was decided: the rest of the input is dropped
        self._closing = False  # close once the queue is answered (stop, or Connection: close)
        self.last_active = 0.0  # loop time of the last input or answer
        # The request being parsed
        self._url = b""
        self._headers: dict[str, str] = {}
        self._head_bytes = 0
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._rejected = False  # this request was answered 413 at its headers

    # asyncio.Protocol -----------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.last_active = self._server.loop.time()
        self._server.connections.add(self)

    def connection_lost(self, exc) -> None:
        self._server.connections.discard(self)
        self._queue.clear()  # a handler running now finishes; its answer goes nowhere

    def data_received(self, data: bytes) -> None:
        self.last_active = self._server.loop.time()
        if self._discarding:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._fail(400, f"request line and headers over {MAX_HEAD_BYTES} bytes"
                       if self._head_bytes > MAX_HEAD_BYTES else f"malformed HTTP request: {exc}")

    # llhttp's callbacks -----------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url, self._headers, self._head_bytes = b"", {}, 0
        self._body, self._body_bytes, self._rejected = [], 0, False

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        self._count_head(len(name) + len(value))

    def on_headers_complete(self) -> None:
        length = self._headers.get("content-length")
        limit = self._server.max_body_bytes
        if length is not None and length.isdigit() and int(length) > limit:
            self._reject_too_large(int(length))
        elif self._headers.get("expect", "").lower() == "100-continue" and not self._queue:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, chunk: bytes) -> None:
        if self._rejected:
            return
        self._body_bytes += len(chunk)
        if self._body_bytes > self._server.max_body_bytes:
            self._reject_too_large(None)
            return
        self._body.append(chunk)

    def on_message_complete(self) -> None:
        if self._rejected:
            return
        url = httptools.parse_url(self._url)
        method = self._parser.get_method().decode()
        request = Request(method, url.path.decode("latin-1"),
                          (url.query or b"").decode("latin-1"), self._headers,
                          b"".join(self._body))
        self._enqueue(_Pending(request, None, self._parser.should_keep_alive(),
                               method == "HEAD"))

    # Answering ----------------------------------------------------------------------------
    def _enqueue(self, pending: _Pending) -> None:
        self._queue.append(pending)
        if self._task is None:
            self._task = self._server.loop.create_task(self._answer())

    async def _answer(self) -> None:
        try:
            while self._queue:
                pending = self._queue[0]
                reply = pending.reply or await self._server.respond(pending.request)
                if not self._queue or self._queue[0] is not pending:
                    return  # the connection was lost meanwhile
                self._queue.popleft()
                keep_alive = pending.keep_alive and not self._closing
                self.transport.write(reply_bytes(reply, keep_alive, self._server.date.now(),
                                                 pending.head_only))
                self.last_active = self._server.loop.time()
                if not keep_alive:
                    self._end()
                    return
        finally:
            self._task = None

    def _end(self) -> None:
        """No more answers on this connection: close it, or (after a 413 whose body the
        client may still be sending) half-close and drop its input for LINGER_S first, so
        that closing with unread input does not reset the connection before the client has
        read the answer."""
        self._queue.clear()
        if self._discarding and self.transport.can_write_eof():
            self.transport.write_eof()
            self._server.loop.call_later(LINGER_S, self.transport.close)
        else:
            self.transport.close()

    def _reject_too_large(self, length: int | None) -> None:
        limit = self._server.max_body_bytes
        size = f"{length} bytes" if length is not None else f"over {limit} bytes"
        reply = error_reply(413, f"request body of {size}; this router takes at most {limit} "
                                 "(--max-body-bytes): split it into several requests",
                            "invalid_request_error")
        self._rejected = self._discarding = True
        self._enqueue(_Pending(None, reply, False, False))

    def _count_head(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > MAX_HEAD_BYTES:
            raise ValueError("head too large")  # llhttp stops: data_received answers 400

    def _fail(self, status: int, message: str) -> None:
        """Input llhttp cannot parse: answer it (after what was parsed before) and close."""
        self._discarding = True
        self._enqueue(_Pending(None, error_reply(status, message, "invalid_request_error"),
                               False, False))

    # The server's controls ------------------------------------------------------------------
    @property
    def idle(self) -> bool:
        return self._task is None and not self._queue

    def close_when_answered(self) -> None:
        self._closing = True
        if self.idle:
            self.transport.close()


class HttpServer:
    """Public API: start / stop. `routes` maps (method, path) to a handler; GET routes answer
    HEAD too."""

    def __init__(self, routes: dict[tuple[str, str], Handler], max_body_bytes: int,
                 idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S) -> None:
        self.routes = dict(routes)
        for (method, path), handler in routes.items():
            if method == "GET":
                self.routes.setdefault(("HEAD", path), handler)
        self._methods: dict[str, list[str]] = {}
        for method, path in self.routes:
            self._methods.setdefault(path, []).append(method)
        self.max_body_bytes = max_body_bytes
        self.idle_timeout_s = idle_timeout_s
        self.connections: set[_Connection] = set()
        self.date = _Date()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._sweeper: asyncio.Task | None = None

    async def start(self, host: str, port: int, reuse_port: bool = False,
                    backlog: int = 100) -> None:
        self.loop = asyncio.get_running_loop()
        self._server = await self.loop.create_server(
            lambda: _Connection(self), host, port, reuse_port=reuse_port or None,
            backlog=backlog)
        self._sweeper = self.loop.create_task(self._sweep())

    async def stop(self, grace_s: float = 30.0) -> None:
        """Stop accepting; close idle connections now, the others once their requests are
        answered, and whatever remains after grace_s."""
        self._server.close()
        self._sweeper.cancel()
        for conn in list(self.connections):
            conn.close_when_answered()
        deadline = self.loop.time() + grace_s
        while self.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.transport.close()
        await self._server.wait_closed()

    async def respond(self, request: Request) -> Reply:
        """The route's reply; 404 or 405 where there is none; a logged 500 where it raised."""
        handler = self.routes.get((request.method, request.path))
        if handler is None:
            allowed = self._methods.get(request.path)
            if allowed is None:
                return error_reply(404, f"no such path {request.path!r}; the router serves "
                                        f"{', '.join(sorted(self._methods))}", "not_found")
            return error_reply(405, f"{request.method} {request.path} is not served; use "
                                    f"{', '.join(sorted(allowed))}", "invalid_request_error",
                               (("Allow", ", ".join(sorted(allowed))),))
        try:
            return await handler(request)
        except Exception as exc:  # a bug: logged, the client told, the connection kept
            logger.exception("%s %s failed", request.method, request.path)
            return error_reply(500, f"internal error: {type(exc).__name__}: {exc}",
                               "internal_error")

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY_S)
            cutoff = self.loop.time() - self.idle_timeout_s
            for conn in list(self.connections):
                if conn.idle and conn.last_active < cutoff:
                    conn.transport.close()
