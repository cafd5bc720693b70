"""Client: the synchronous SDK, an AsyncClient driven on a private event loop thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

from moep_sglang.client.async_client import AsyncClient


class Client:
    """Same methods as AsyncClient, blocking: `Client(url).score(query, items, labels)`."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", **kwargs) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="moep-client")
        self._thread.start()
        self._async = self._call(_make(base_url, kwargs))

    def score(self, *args, **kwargs):
        return self._call(self._async.score(*args, **kwargs))

    def classify(self, *args, **kwargs):
        return self._call(self._async.classify(*args, **kwargs))

    def rerank(self, *args, **kwargs):
        return self._call(self._async.rerank(*args, **kwargs))

    def generate(self, *args, **kwargs):
        return self._call(self._async.generate(*args, **kwargs))

    def complete(self, *args, **kwargs):
        return self._call(self._async.complete(*args, **kwargs))

    def chat(self, *args, **kwargs):
        return self._call(self._async.chat(*args, **kwargs))

    def batch(self, kind: str, bodies, **kwargs) -> list:
        return self._call(self._async.batch(kind, bodies, **kwargs))

    def batch_requests(self, requests, **kwargs) -> list:
        return self._call(self._async.batch_requests(requests, **kwargs))

    def stream_requests(self, requests, **kwargs) -> Iterator[tuple[int, object]]:
        """AsyncClient.stream_requests as a generator: (i, result) in input order, memory
        bounded; closing it (or leaving a `for` over it) cancels what is still pending."""
        stream = self._async.stream_requests(requests, **kwargs)
        try:
            while True:
                try:
                    yield self._call(_next(stream))
                except StopAsyncIteration:
                    return
        finally:
            if self._loop.is_running():
                self._call(stream.aclose())

    def close(self) -> None:
        if self._loop.is_running():
            self._call(self._async.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()


async def _next(stream):
    return await stream.__anext__()


async def _make(base_url: str, kwargs: dict) -> AsyncClient:
    return AsyncClient(base_url, **kwargs)  # created on the loop that will use it
