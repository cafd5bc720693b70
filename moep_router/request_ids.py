"""Request ids: every HTTP request the router answers carries one (`X-Request-Id`), the
client's own when it sends one, else one the router makes; the worker's SGLang request id
(`rid`, in its logs with `--log-requests` and in /generate's `meta_info.id`) starts with it, so
one request can be followed from the client through the router's log to the worker's.

A worker rid is the request id, a dash and 8 random hex digits, fresh for every attempt: SGLang
refuses a rid it is still serving, and a client may reuse its ids, or a retry or a split of the
request may reach the same worker."""

from __future__ import annotations

import itertools
import os
import re

HEADER = "x-request-id"  # as http_protocol keeps header names: lower-case
MAX_LEN = 128
_VALID = re.compile(r"[\x21-\x7e]{1,%d}" % MAX_LEN)  # visible ASCII, no spaces


class RequestIds:
    """Ids for the requests of one router process: a random prefix for the process, then a
    counter (unique across the router's processes and restarts without a lookup)."""

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex()
        self._count = itertools.count()

    def new(self) -> str:
        return f"{self._prefix}{next(self._count):06x}"

    def of(self, headers: dict[str, str]) -> str | None:
        """The client's id from the request's headers, a new one when it sent none; None for a
        value that cannot be one (the caller answers 400)."""
        given = headers.get(HEADER)
        if given is None:
            return self.new()
        return given if _VALID.fullmatch(given) else None


def worker_rid(request_id: str) -> str:
    """SGLang's rid for one attempt of the request on a worker."""
    return f"{request_id}-{os.urandom(4).hex()}"
