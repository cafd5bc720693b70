"""The worker hop: a lean HTTP/1.1 client for the router's POSTs to its workers.

aiohttp's client cost the router ~75-100 us of CPU per request on the 2-core machine; this one,
an asyncio protocol per keep-alive connection, ~20 us (the same fake worker, 64 in flight). It
does only what the hop needs: POST a JSON body, read a reply framed by Content-Length, chunked
encoding or the end of the connection, and reuse the connection unless either side closes it.

Connections to each worker are pooled (no limit, as aiohttp's `limit=0`), one request at a time
each, the most recently used first; one idle longer than `max_idle_s` (below uvicorn's 5 s
keep-alive) is closed instead of reused. A reused connection that the worker closed before
answering a byte (it timed out as the request left) is replaced by a fresh one, once: the
request never reached the worker's handler. Every failure is an OSError (ConnectionError,
TimeoutError), which the dispatcher treats as the worker failing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_HEAD_BYTES = 64 * 1024  # status line and headers of one reply
DEFAULT_MAX_IDLE_S = 4.0  # uvicorn (SGLang's server) closes idle connections after 5 s


class BadReply(ConnectionError):
    """The worker's reply is not HTTP/1.1 this client can read."""


class _Stale(ConnectionError):
    """A reused connection was closed by the worker before any byte of the reply."""


@dataclass(frozen=True)
class WorkerReply:
    status: int  # HTTP status
    body: bytes  # the whole reply body


@dataclass(frozen=True)
class _Target:
    host: str  # where to connect
    port: int
    ssl: bool  # https
    prefix: str  # path of the worker's base URL ("" for http://host:port)
    host_header: bytes  # b"host:port"


class _Head:
    """A parsed status line and headers: how the body is framed."""

    __slots__ = ("status", "length", "chunked", "keep_alive", "body_start")

    def __init__(self, head: bytes, body_start: int) -> None:
        lines = head.split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        if not version.startswith(b"HTTP/1.") or not rest[:3].isdigit():
            raise BadReply(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        self.status, self.body_start = int(rest[:3]), body_start
        self.length: int | None = None
        self.chunked, connection = False, b""
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                self.length = int(value)
            elif name == b"transfer-encoding":
                self.chunked = b"chunked" in value.lower()
            elif name == b"connection":
                connection = value.strip().lower()
        self.keep_alive = (connection != b"close" if version == b"HTTP/1.1"
                           else connection == b"keep-alive")
        if self.status in (204, 304):
            self.length = 0
        if self.length is None and not self.chunked:
            self.keep_alive = False  # the body runs to the end of the connection


class _Connection(asyncio.Protocol):
    """One keep-alive connection to a worker: one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False  # lost, or closed by us: never reused
        self.idle_since = 0.0  # loop time it went back to the pool
        self._buf = bytearray()  # bytes of the reply in progress
        self._head: _Head | None = None
        self._waiter: asyncio.Future | None = None  # the reply of the request in flight

    # asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if self._waiter is None or self._waiter.done():
            return
        try:
            reply = self._parse()
        except (BadReply, ValueError) as exc:  # ValueError: a length that is not a number
            self._waiter.set_exception(exc if isinstance(exc, BadReply) else BadReply(str(exc)))
            return
        if reply is not None:
            self._waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        head = self._head
        if head is not None and head.length is None and not head.chunked:
            waiter.set_result(WorkerReply(head.status, bytes(self._buf[head.body_start:])))
        elif not self._buf:
            waiter.set_exception(_Stale("the worker closed the connection before replying"))
        else:
            waiter.set_exception(ConnectionResetError(
                f"the worker closed the connection mid-reply: {exc or 'end of stream'}"))

    # Requests -----------------------------------------------------------------------------
    async def exchange(self, request: bytes, deadline: float) -> tuple[WorkerReply, bool]:
        """Send one request; (its reply, whether the connection can serve another). Past the
        loop time `deadline`: TimeoutError (a timer, not asyncio.timeout: ~8 us less a request)."""
        if self.closed:
            raise _Stale("connection already closed")
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        self._buf.clear()
        self._head = None
        timer = loop.call_at(deadline, self._time_out, waiter)
        try:
            self.transport.write(request)
            reply = await waiter
        except BaseException:
            self.close()  # cancelled or failed mid-exchange: its state is unknown
            raise
        finally:
            timer.cancel()
            self._waiter = None
        reusable = self._head.keep_alive and not self.closed
        if not reusable:
            self.close()
        return reply, reusable

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    @staticmethod
    def _time_out(waiter: asyncio.Future) -> None:
        if not waiter.done():
            waiter.set_exception(TimeoutError("no complete reply from the worker in time"))

    # Parsing ------------------------------------------------------------------------------
    def _parse(self) -> WorkerReply | None:
        """The reply once it is complete in the buffer, else None."""
        if self._head is None:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > MAX_HEAD_BYTES:
                    raise BadReply(f"reply headers over {MAX_HEAD_BYTES} bytes")
                return None
            self._head = _Head(bytes(self._buf[:end]), end + 4)
            if 100 <= self._head.status < 200:  # an interim reply: the real one follows
                del self._buf[:end + 4]
                self._head = None
                return self._parse()
        head = self._head
        if head.chunked:
            body = _dechunk(self._buf, head.body_start)
        elif head.length is not None:
            end = head.body_start + head.length
            body = bytes(self._buf[head.body_start:end]) if len(self._buf) >= end else None
        else:
            return None  # to the end of the connection: connection_lost delivers it
        return None if body is None else WorkerReply(head.status, body)


def _dechunk(buf: bytearray, pos: int) -> bytes | None:
    """The body of a chunked reply starting at buf[pos], or None while incomplete."""
    parts = []
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
        if size == 0:
            # No trailers (what servers send): "0\r\n\r\n"; with trailers, up to a blank line.
            if buf[eol + 2:eol + 4] == b"\r\n" or buf.find(b"\r\n\r\n", eol) >= 0:
                return b"".join(parts)
            return None
        start, end = eol + 2, eol + 2 + size
        if len(buf) < end + 2:
            return None
        parts.append(bytes(buf[start:end]))
        pos = end + 2


class WorkerClient:
    """Public API: post / close."""

    def __init__(self, timeout_s: float, max_idle_s: float = DEFAULT_MAX_IDLE_S) -> None:
        self.timeout_s = timeout_s  # whole request: connecting, sending, the whole reply
        self.max_idle_s = max_idle_s
        self._idle: dict[str, list[_Connection]] = {}  # base URL -> idle connections, LIFO
        self._targets: dict[str, _Target] = {}

    async def post(self, base_url: str, path: str, body: bytes) -> WorkerReply:
        """POST a JSON body to base_url + path; any failure is an OSError."""
        target = self._target(base_url)
        request = b"".join((b"POST ", (target.prefix + path).encode(), b" HTTP/1.1\r\nHost: ",
                            target.host_header, b"\r\nContent-Type: application/json\r\n"
                            b"Content-Length: ", str(len(body)).encode(), b"\r\n\r\n", body))
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        conn = self._pop_idle(base_url)
        if conn is not None:
            try:
                return await self._send(base_url, conn, request, deadline)
            except _Stale:
                pass  # the worker closed it as we sent: the request never reached it
        conn = await self._connect(target, deadline)
        return await self._send(base_url, conn, request, deadline)

    def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()

    async def _send(self, base_url: str, conn: _Connection, request: bytes,
                    deadline: float) -> WorkerReply:
        reply, reusable = await conn.exchange(request, deadline)
        if reusable:
            conn.idle_since = asyncio.get_running_loop().time()
            self._idle.setdefault(base_url, []).append(conn)
        return reply

    def _pop_idle(self, base_url: str) -> _Connection | None:
        conns = self._idle.get(base_url)
        now = asyncio.get_running_loop().time()
        while conns:
            conn = conns.pop()
            if not conn.closed and now - conn.idle_since < self.max_idle_s:
                return conn
            conn.close()
        return None

    async def _connect(self, target: _Target, deadline: float) -> _Connection:
        loop = asyncio.get_running_loop()
        connecting = loop.create_connection(_Connection, target.host, target.port,
                                            ssl=target.ssl or None,
                                            server_hostname=target.host if target.ssl else None)
        _, conn = await asyncio.wait_for(connecting, max(deadline - loop.time(), 0))
        return conn

    def _target(self, base_url: str) -> _Target:
        target = self._targets.get(base_url)
        if target is None:
            u = urlsplit(base_url)
            port = u.port or (443 if u.scheme == "https" else 80)
            target = self._targets[base_url] = _Target(
                u.hostname, port, u.scheme == "https", u.path.rstrip("/"),
                u.netloc.rpartition("@")[2].encode())
        return target
