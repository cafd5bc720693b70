"""AsyncClient: score / classify / rerank / generate / complete / chat, one at a time or
thousands in a batch."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import deque
from collections.abc import AsyncIterator, Iterable

import orjson

from moep_sglang.client.transport import HttpTransport, RouterDisconnected, ZmqTransport
from moep_sglang.client.types import (
    ChatResult, ClassifyResult, CompletionResult, GenerateResult, MoepError, RerankResult,
    ScoreResult, error_message, parse_result,
)

RETRY_STATUSES = (429, 503)  # overload: retried with backoff (Retry-After honoured)


class AsyncClient:
    """`AsyncClient("http://127.0.0.1:8000", zmq_url="tcp://127.0.0.1:8001")`.

    Text or token ids everywhere; requests made of token ids go over the ZMQ fast path when
    `zmq_url` is given, everything else over HTTP. Errors raise MoepError(status, message).
    """

    def __init__(self, base_url: str = "http://127.0.0.1:8000", *, zmq_url: str | None = None,
                 api_key: str | None = None, max_concurrency: int = 64, max_retries: int = 5,
                 timeout_s: float = 600.0, backoff_s: float = 0.25) -> None:
        self._http = HttpTransport(base_url, api_key, timeout_s)
        self._zmq = ZmqTransport(zmq_url, timeout_s) if zmq_url else None
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.backoff_s = backoff_s

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.close()
        if self._zmq:
            await self._zmq.close()

    # One request ------------------------------------------------------------------------------
    async def score(self, query, items, label_token_ids: list[int], *,
                    apply_softmax: bool = False, item_first: bool = False) -> ScoreResult:
        body = {"query": query, "items": items, "label_token_ids": label_token_ids,
                "apply_softmax": apply_softmax, "item_first": item_first}
        return await self.request("score", body)

    async def classify(self, input, labels: list[str], *, multi_label: bool = False,
                       apply_softmax: bool = True) -> ClassifyResult:
        body = {"input": input, "labels": labels, "multi_label": multi_label,
                "apply_softmax": apply_softmax}
        return await self.request("classify", body)

    async def rerank(self, query: str, documents: list[str], *, top_n: int | None = None,
                     return_documents: bool = False,
                     max_tokens_per_doc: int | None = None) -> RerankResult:
        """Documents best first; max_tokens_per_doc cuts each to its first N tokens."""
        body = {"query": query, "documents": documents, "return_documents": return_documents}
        if top_n is not None:
            body["top_n"] = top_n
        if max_tokens_per_doc is not None:
            body["max_tokens_per_doc"] = max_tokens_per_doc
        return await self.request("rerank", body)

    async def generate(self, text=None, *, input_ids=None, sampling_params: dict | None = None,
                       **extra) -> GenerateResult:
        body = {"sampling_params": sampling_params or {"max_new_tokens": 0}, **extra}
        body.update({"text": text} if text is not None else {"input_ids": input_ids})
        return await self.request("generate", body)

    async def complete(self, prompt, **fields) -> CompletionResult:
        """/v1/completions (OpenAI's fields: max_tokens 0 or 1, logprobs, echo, ...)."""
        return await self.request("completions", {"prompt": prompt, **fields})

    async def chat(self, messages: list[dict], **fields) -> ChatResult:
        """/v1/chat/completions (OpenAI's fields: max_tokens 0 or 1, logprobs, ...)."""
        return await self.request("chat", {"messages": messages, **fields})

    async def request(self, kind: str, body: dict, *, decode: bool = True):
        """Send one request, retrying with exponential backoff on 429/503 and where the server
        could not be reached or dropped the connection (a router restarting: every endpoint is
        prefill-only, so sending again is safe; a timeout is not retried); decode the result
        (a reply that does not fit its endpoint's struct raises msgspec.ValidationError), or
        with decode=False return the reply's JSON as the server sent it (dicts and lists)."""
        transport = self._zmq if self._zmq and self._zmq.can_carry(kind, body) else self._http
        for attempt in range(self.max_retries + 1):
            try:
                answer = await transport.send(kind, body)
            except Exception as exc:
                if not _unreachable(exc) or attempt == self.max_retries:
                    raise
                await asyncio.sleep(self._delay(attempt, None))
                continue
            if answer.status == 200:
                return parse_result(kind, answer.raw) if decode else orjson.loads(answer.raw)
            if answer.status not in RETRY_STATUSES or attempt == self.max_retries:
                raise MoepError(answer.status, error_message(answer.raw), answer.request_id)
            await asyncio.sleep(self._delay(attempt, answer.retry_after))

    # Many requests ----------------------------------------------------------------------------
    async def batch(self, kind: str, bodies: Iterable[dict], *, progress: bool = True,
                    return_exceptions: bool = False, desc: str | None = None) -> list:
        """Run many requests of one endpoint with at most `max_concurrency` in flight, results
        in input order.

        With return_exceptions, a failed request yields its exception (MoepError, or the
        transport's: a refused connection) in place of a result; otherwise the first failure is
        raised once the others have finished.
        """
        return await self.batch_requests([(kind, b) for b in bodies], progress=progress,
                                         return_exceptions=return_exceptions, desc=desc or kind)

    async def batch_requests(self, requests: Iterable[tuple[str, dict]], *,
                             progress: bool = True, return_exceptions: bool = False,
                             desc: str = "requests", decode: bool = True) -> list:
        """As batch, for (kind, body) pairs of any endpoints (an OpenAI batch file's lines);
        decode as in request."""
        requests = list(requests)
        results = [r async for _, r in self.stream_requests(
            requests, progress=progress, total=len(requests), desc=desc, decode=decode)]
        if not return_exceptions:
            for r in results:
                if isinstance(r, BaseException):
                    raise r
        return results

    async def stream_requests(self, requests: Iterable[tuple[str, dict]], *,
                              progress: bool = True, total: int | None = None,
                              initial: int = 0, desc: str = "requests", decode: bool = True,
                              window: int | None = None) -> AsyncIterator[tuple[int, object]]:
        """Yield (i, result) for the i-th (kind, body) pair, in input order, as soon as it and
        every one before it are answered; a failed request yields its exception (MoepError, or
        the transport's) in its place. Reads `requests` lazily: at most max_concurrency requests
        are in flight and at most `window` (default 4 x max_concurrency) started but not yet
        yielded, so a job of any length holds a bounded number of bodies and results. The
        progress bar counts answers (`total` and `initial`: a resumed job's size and part done).
        Leaving early (break, an exception) cancels what is still pending: use
        contextlib.aclosing to leave at once."""
        from tqdm import tqdm

        window = window or 4 * self.max_concurrency
        sem = asyncio.Semaphore(self.max_concurrency)
        bar = tqdm(total=total, initial=initial, desc=desc, unit="req", disable=not progress)

        async def one(kind: str, body: dict):
            async with sem:
                try:
                    return await self.request(kind, body, decode=decode)
                except Exception as exc:  # noqa: BLE001 - the caller gets it in the request's place
                    return exc
                finally:
                    bar.update(1)

        started: deque[asyncio.Task] = deque()  # in input order
        source = iter(requests)
        try:
            for i in itertools.count():
                for kind, body in itertools.islice(source, window - len(started)):
                    started.append(asyncio.ensure_future(one(kind, body)))
                if not started:
                    return
                yield i, await started.popleft()
        finally:
            for task in started:
                task.cancel()
            bar.close()

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        base = self.backoff_s * (2 ** attempt)
        return max(retry_after or 0.0, base) * (0.5 + random.random())


def _unreachable(exc: BaseException) -> bool:
    """The server refused or dropped the connection, over HTTP or the fast path (not a timeout:
    a request that ran that long is not sent again)."""
    import aiohttp

    return (isinstance(exc, (aiohttp.ClientConnectionError, RouterDisconnected))
            and not isinstance(exc, asyncio.TimeoutError))
