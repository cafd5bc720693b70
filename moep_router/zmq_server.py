"""The SDK fast path: a ZMQ ROUTER socket; framing in messages.py. Same jobs, same dispatcher."""

from __future__ import annotations

import asyncio
import logging

import msgspec
import orjson
import zmq
import zmq.asyncio

from moep_router.dispatcher import Overloaded
from moep_router.endpoints import parse_generate, parse_score, shape_response
from moep_router.jobs import BadRequest
from moep_router.messages import (
    FAST_PATH_KINDS, KIND_GENERATE, KIND_REPLY, KIND_SCORE, ErrorResponse, Reply, encode,
    frame_to_tokens,
)

logger = logging.getLogger("moep_router.zmq")


def body_from_frames(kind: bytes, header: dict, frames: list[bytes]) -> dict:
    tokens = [frame_to_tokens(f) for f in frames]
    if kind == KIND_SCORE:
        if len(tokens) < 2:
            raise BadRequest("score frames: the query, then one frame per item")
        return {**header, "query": tokens[0], "items": tokens[1:]}
    if kind == KIND_GENERATE:
        if not tokens:
            raise BadRequest("generate frames: one frame of token ids per prompt")
        return {**header, "input_ids": tokens if len(tokens) > 1 else tokens[0]}
    raise BadRequest(f"unknown message kind {kind!r}; known: {sorted(FAST_PATH_KINDS.values())}")


class ZmqFrontEnd:
    def __init__(self, router, ctx: zmq.asyncio.Context, port: int) -> None:
        self.router = router
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.bind(f"tcp://127.0.0.1:{port}" if router.config.host in ("127.0.0.1", "localhost")
                       else f"tcp://*:{port}")
        self._tasks: set[asyncio.Task] = set()
        self._loop_task: asyncio.Task | None = None

    def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._serve())

    async def stop(self) -> None:
        if self._loop_task:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        self.sock.close(linger=0)

    async def _serve(self) -> None:
        while True:
            identity, *msg = await self.sock.recv_multipart()
            task = asyncio.get_running_loop().create_task(self._handle(identity, msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handle(self, identity: bytes, msg: list[bytes]) -> None:
        request_id = None
        try:
            if len(msg) < 2:
                raise BadRequest("expected frames: kind, header, token frames...")
            header = orjson.loads(msg[1])
            request_id = header.pop("request_id", None)
            body = body_from_frames(msg[0], header, msg[2:])
            parse = parse_score if msg[0] == KIND_SCORE else parse_generate
            result = await self.router.dispatcher.run(await self.router.parse(parse, body))
            status, response = 200, shape_response(result)
        except BadRequest as exc:
            status, response = exc.status, _error(exc.status, str(exc), "invalid_request_error")
        except Overloaded as exc:
            status, response = exc.status, _error(exc.status, str(exc), "overloaded")
        except (orjson.JSONDecodeError, ValueError) as exc:
            status, response = 400, _error(400, f"bad frames: {exc}", "invalid_request_error")
        reply = Reply(status, msgspec.Raw(encode(response)), request_id)
        await self.sock.send_multipart([identity, KIND_REPLY, encode(reply)])


def _error(status: int, message: str, kind: str) -> ErrorResponse:
    return ErrorResponse(message=message, type=kind, code=status)
