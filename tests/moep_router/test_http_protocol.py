"""The router's HTTP/1.1 server over real sockets: framing, keep-alive and pipelining, body
limits, errors, and stopping with requests in flight."""

import asyncio
import contextlib

import aiohttp
import orjson
import pytest

from moep_router import http_protocol
from moep_router.http_protocol import HttpServer, Reply
from moep_sglang.server.worker_process import free_port


class Fixture:
    def __init__(self) -> None:
        self.finished: list[bytes] = []  # bodies whose handler ran to the end

    async def echo(self, request):
        delay = float(request.query_param("delay", "0"))
        await asyncio.sleep(delay)
        self.finished.append(request.body)
        return Reply(200, orjson.dumps({"path": request.path, "n": len(request.body),
                                        "body": request.body.decode()[:40],
                                        "auth": request.headers.get("authorization")}))

    async def boom(self, request):
        raise RuntimeError("kaput")


@contextlib.asynccontextmanager
async def _serving(**kw):
    """(the handlers' record, the server, its port); stopped on the way out."""
    fx = Fixture()
    server = HttpServer({("POST", "/echo"): fx.echo, ("GET", "/echo"): fx.echo,
                         ("POST", "/boom"): fx.boom}, max_body_bytes=1024, **kw)
    port = free_port()
    await server.start("127.0.0.1", port)
    try:
        yield fx, server, port
    finally:
        await server.stop()


def _connect(port: int):
    return asyncio.open_connection("127.0.0.1", port)


async def _read_reply(reader) -> tuple[int, dict, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v for k, _, v in (l.partition(": ") for l in lines[1:] if l)}
    body = await reader.readexactly(int(headers.get("content-length", 0)))
    return status, headers, body


def _post(path: str, body: bytes, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
            .encode() + body)


def run(coro):
    return asyncio.run(coro)


def test_keep_alive_and_pipelined_requests_are_answered_in_order():
    async def main():
        async with _serving() as (fx, server, port):
            reader, writer = await _connect(port)
            writer.write(_post("/echo?delay=0.2", b"first") + _post("/echo", b"second"))
            got = [await _read_reply(reader) for _ in range(2)]
            assert [orjson.loads(b)["body"] for _, _, b in got] == ["first", "second"]
            assert all(s == 200 and h["connection"] == "keep-alive" and "date" in h
                       for s, h, _ in got)
            writer.write(_post("/echo", b"third"))  # the same connection, later
            assert orjson.loads((await _read_reply(reader))[2])["body"] == "third"
            writer.close()
    run(main())


def test_chunked_bodies_and_expect_100_continue():
    async def main():
        async with _serving() as (fx, server, port):
            reader, writer = await _connect(port)
            writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
            status, _, body = await _read_reply(reader)
            assert status == 200 and orjson.loads(body)["body"] == "hello world"
            writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                         b"Expect: 100-continue\r\n\r\n")
            assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(b"abc")
            status, _, body = await _read_reply(reader)
            assert status == 200 and orjson.loads(body)["n"] == 3
            writer.close()
    run(main())


@pytest.mark.parametrize("framing", ["content-length", "expect", "chunked"])
def test_a_body_over_the_limit_gets_413_with_a_message_then_the_connection_ends(framing):
    async def main():
        async with _serving() as (fx, server, port):
            reader, writer = await _connect(port)
            big = b"x" * 5000
            if framing == "chunked":
                writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                             + b"".join(b"%x\r\n%s\r\n" % (500, b"y" * 500) for _ in range(10))
                             + b"0\r\n\r\n")
            else:
                writer.write(_post("/echo", b"" if framing == "expect" else big,
                                   "Expect: 100-continue\r\n" if framing == "expect" else "")
                             .replace(b"Content-Length: 0", b"Content-Length: 5000"))
            status, headers, body = await _read_reply(reader)
            message = orjson.loads(body)["message"]
            assert status == 413 and headers["connection"] == "close"
            assert "--max-body-bytes" in message and "1024" in message
            assert ("5000 bytes" in message) == (framing != "chunked")
            assert await reader.read() == b""  # closed after the answer
            assert fx.finished == []
            # the server goes on serving
            reader, writer = await _connect(port)
            writer.write(_post("/echo", b"ok"))
            assert (await _read_reply(reader))[0] == 200
            writer.close()
    run(main())


def test_errors_are_json_404_405_400_and_500_and_head_works():
    async def main():
        async with _serving() as (fx, server, port):
            async with aiohttp.ClientSession() as s:
                base = f"http://127.0.0.1:{port}"
                async with s.post(f"{base}/nope", data=b"{}") as r:
                    assert r.status == 404 and "/echo" in (await r.json())["message"]
                async with s.delete(f"{base}/echo") as r:
                    assert r.status == 405 and r.headers["Allow"] == "GET, HEAD, POST"
                async with s.post(f"{base}/boom", data=b"{}") as r:
                    body = await r.json()
                    assert r.status == 500 and "RuntimeError: kaput" in body["message"]
                async with s.head(f"{base}/echo") as r:  # GET's route, headers only
                    assert r.status == 200 and int(r.headers["Content-Length"]) > 0
                    assert await r.read() == b""
                async with s.post(f"{base}/echo", data=b"after", headers={"Authorization": "k"}) as r:
                    assert (await r.json())["auth"] == "k"  # the connection still serves
            reader, writer = await _connect(port)
            writer.write(b"NOT HTTP AT ALL\r\n\r\n")
            status, headers, body = await _read_reply(reader)
            assert status == 400 and "malformed HTTP request" in orjson.loads(body)["message"]
            assert headers["connection"] == "close"
    run(main())


def test_http_1_0_closes_after_its_answer():
    async def main():
        async with _serving() as (fx, server, port):
            reader, writer = await _connect(port)
            writer.write(b"GET /echo HTTP/1.0\r\n\r\n")
            status, headers, _ = await _read_reply(reader)
            assert status == 200 and headers["connection"] == "close"
            assert await reader.read() == b""
    run(main())


def test_a_client_that_leaves_does_not_cancel_its_request():
    async def main():
        async with _serving() as (fx, server, port):
            reader, writer = await _connect(port)
            writer.write(_post("/echo?delay=0.3", b"left"))
            await asyncio.sleep(0.05)
            writer.close()
            await asyncio.sleep(0.5)
            assert fx.finished == [b"left"]  # ran to the end; only its answer went nowhere
    run(main())


def test_stop_answers_requests_in_flight_then_refuses_new_connections():
    async def main():
        async with _serving() as (fx, server, port):
            idle_reader, _ = await _connect(port)
            reader, writer = await _connect(port)
            writer.write(_post("/echo?delay=0.3", b"in flight"))
            await asyncio.sleep(0.05)
            stopping = asyncio.create_task(server.stop())
            status, headers, body = await _read_reply(reader)
            assert status == 200 and headers["connection"] == "close"
            assert await idle_reader.read() == b""  # the idle one closed at once
            await stopping
            with pytest.raises(OSError):
                await _connect(port)
    run(main())


def test_idle_keep_alive_connections_are_closed(monkeypatch):
    monkeypatch.setattr(http_protocol, "SWEEP_EVERY_S", 0.05)

    async def main():
        async with _serving(idle_timeout_s=0.2) as (fx, server, port):
            reader, writer = await _connect(port)
            writer.write(_post("/echo", b"x"))
            assert (await _read_reply(reader))[0] == 200
            assert await asyncio.wait_for(reader.read(), 2) == b""
    run(main())


def test_oversized_headers_get_400():
    async def main():
        async with _serving() as (fx, server, port):
            reader, writer = await _connect(port)
            writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
            status, _, body = await _read_reply(reader)
            assert status == 400 and "over 65536 bytes" in orjson.loads(body)["message"]
    run(main())
