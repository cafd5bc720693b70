"""The worker hop's HTTP client against real servers: aiohttp for well-formed replies, raw
asyncio servers for the framings and failures aiohttp will not produce."""

import asyncio

import orjson
import pytest
from aiohttp import web

from moep_router.worker_http import BadReply, WorkerClient


async def _aiohttp_worker(handler) -> tuple[web.AppRunner, str, list]:
    """An aiohttp server on a free port answering POST /generate; the list collects the peer
    (host, port) of every request, to tell connections apart."""
    peers = []

    async def generate(request: web.Request):
        peers.append(request.transport.get_extra_info("peername"))
        return await handler(request)

    app = web.Application()
    app.router.add_post("/generate", generate)
    app.router.add_post("/prefix/generate", generate)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}", peers


async def _raw_worker(reply: bytes, close_after: bool = True):
    """A server that reads one request and writes `reply` verbatim."""
    async def serve(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(reply)
        await writer.drain()
        if close_after:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def _echo(request: web.Request) -> web.Response:
    body = orjson.loads(await request.read())
    return web.Response(body=orjson.dumps({"got": body, "ct": request.content_type}))


def test_posts_json_and_reuses_the_connection():
    async def scenario():
        runner, url, peers = await _aiohttp_worker(_echo)
        client = WorkerClient(timeout_s=5)
        try:
            replies = [await client.post(url, "/generate", orjson.dumps({"i": i}))
                       for i in range(5)]
        finally:
            client.close()
            await runner.cleanup()
        return replies, peers

    replies, peers = asyncio.run(scenario())
    assert [r.status for r in replies] == [200] * 5
    assert [orjson.loads(r.body)["got"]["i"] for r in replies] == list(range(5))
    assert orjson.loads(replies[0].body)["ct"] == "application/json"
    assert len(set(peers)) == 1  # one keep-alive connection served all five


def test_concurrent_requests_open_connections_and_keep_a_path_prefix():
    async def scenario():
        runner, url, peers = await _aiohttp_worker(_echo)
        client = WorkerClient(timeout_s=5)
        try:
            replies = await asyncio.gather(*(client.post(url + "/prefix", "/generate",
                                                         orjson.dumps({"i": i}))
                                             for i in range(20)))
        finally:
            client.close()
            await runner.cleanup()
        return replies, peers

    replies, peers = asyncio.run(scenario())
    assert sorted(orjson.loads(r.body)["got"]["i"] for r in replies) == list(range(20))
    assert len(peers) == 20 and len(set(peers)) > 1


def test_error_statuses_and_chunked_replies_come_back_whole():
    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=503)
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for part in (b'{"error": ', b'"busy", "pad": "', b"x" * 70_000, b'"}'):
            await resp.write(part)
        await resp.write_eof()
        return resp

    async def scenario():
        runner, url, _ = await _aiohttp_worker(chunked)
        client = WorkerClient(timeout_s=5)
        try:
            return await client.post(url, "/generate", b"{}")
        finally:
            client.close()
            await runner.cleanup()

    reply = asyncio.run(scenario())
    assert reply.status == 503
    assert orjson.loads(reply.body)["error"] == "busy"
    assert len(orjson.loads(reply.body)["pad"]) == 70_000


def _post_to_raw_worker(reply: bytes, close_after: bool = True):
    """One POST through a fresh client to a worker that answers `reply` byte for byte."""
    async def scenario():
        server, url = await _raw_worker(reply, close_after=close_after)
        client = WorkerClient(timeout_s=5)
        try:
            return await client.post(url, "/generate", b"{}")
        finally:
            client.close()
            server.close()

    return asyncio.run(scenario())


def test_reply_without_length_runs_to_the_end_of_the_connection():
    reply = _post_to_raw_worker(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"a\": 1}")
    assert (reply.status, reply.body) == (200, b'{"a": 1}')


def test_malformed_reply_is_a_connection_error():
    with pytest.raises(BadReply):
        _post_to_raw_worker(b"SMTP ready\r\n\r\n", close_after=False)


def test_connection_closed_mid_reply_is_a_connection_error():
    with pytest.raises(ConnectionError):
        _post_to_raw_worker(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"a\"")


def test_unreachable_worker_and_timeout_are_os_errors():
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(body=b"{}")

    async def scenario():
        runner, url, _ = await _aiohttp_worker(slow)
        await runner.cleanup()  # nothing listens there now
        client = WorkerClient(timeout_s=0.3)
        errors = []
        try:
            await client.post(url, "/generate", b"{}")
        except OSError as exc:
            errors.append(exc)
        runner, url, _ = await _aiohttp_worker(slow)
        try:
            await client.post(url, "/generate", b"{}")
        except OSError as exc:
            errors.append(exc)
        finally:
            client.close()
            await runner.cleanup()
        return errors

    errors = asyncio.run(scenario())
    assert isinstance(errors[0], ConnectionError)
    assert isinstance(errors[1], TimeoutError)


def test_a_connection_the_worker_closed_while_idle_is_replaced():
    """The worker drops an idle keep-alive connection (uvicorn does after 5 s): the next
    request goes out on a fresh one and succeeds; one idle too long is not reused at all."""
    async def scenario():
        runner, url, peers = await _aiohttp_worker(_echo)
        client = WorkerClient(timeout_s=5, max_idle_s=0.2)
        try:
            await client.post(url, "/generate", b"{}")
            for conn in client._idle[url]:
                conn.transport.abort()  # as if the worker had closed it
            await asyncio.sleep(0.05)
            second = await client.post(url, "/generate", b"{}")
            await asyncio.sleep(0.3)  # past max_idle_s
            third = await client.post(url, "/generate", b"{}")
        finally:
            client.close()
            await runner.cleanup()
        return second, third, peers

    second, third, peers = asyncio.run(scenario())
    assert second.status == third.status == 200
    assert len(set(peers)) == 3


def test_a_stale_connection_found_only_on_send_is_retried_once():
    """The worker closes the connection as the request leaves: the request is sent again on a
    fresh connection (it never reached the handler)."""
    async def scenario():
        runner, url, peers = await _aiohttp_worker(_echo)
        client = WorkerClient(timeout_s=5)
        try:
            await client.post(url, "/generate", b"{}")
            conn = client._idle[url][-1]
            real_write = conn.transport.write

            def write_then_drop(data):  # the request goes out and the connection dies unanswered
                real_write(data)
                conn.transport.abort()

            conn.transport.write = write_then_drop
            return await client.post(url, "/generate", orjson.dumps({"i": 7})), peers
        finally:
            client.close()
            await runner.cleanup()

    reply, peers = asyncio.run(scenario())
    assert orjson.loads(reply.body)["got"] == {"i": 7}
    assert len(set(peers)) >= 2
