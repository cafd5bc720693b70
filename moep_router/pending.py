"""Prefixes promised to a worker by requests routed there and not yet seen in its KV events.

The paper's "pending" table: a request routed to worker w will leave its prompt in w's cache, so
a request with the same prefix that arrives before the first finishes should see it as cached
there. The promise outlives the request by `settle_s` seconds: the worker records the prompt in
its cache before it answers, but its KV events travel on another socket and can reach the router
after the answer does, and a client that sends its next request as soon as the answer arrives
(a sequential scoring loop) must still find the prefix on w. Once the events have landed the
exact index holds the prefix anyway (match = max of both). Counted per chunk key
(prefix_keys.py, CHUNK tokens): matching is a binary search.

Invariant: _counts[k] = the number of prompts in flight or settling whose chunk keys include k.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from typing import Callable

from moep_router.prefix_keys import CHUNK, PromptKeys, longest_held

DEFAULT_SETTLE_S = 1.0


class PendingPrefixes:
    """Public API: add / finish / forget_settling / match_len / num_prompts / num_settling."""

    def __init__(self, settle_s: float = DEFAULT_SETTLE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._counts: Counter[int] = Counter()  # chunk key -> prompts in flight or settling
        self._settling: deque[tuple[float, PromptKeys]] = deque()  # (expiry, prompt), in order
        self.settle_s, self._clock = settle_s, clock
        self.num_prompts = 0  # in flight

    def add(self, prompt: PromptKeys) -> None:
        self._counts.update(prompt.keys(CHUNK))
        self.num_prompts += 1

    def finish(self, prompt: PromptKeys) -> None:
        """The request was answered: its prefix stays promised for settle_s more seconds."""
        self.num_prompts -= 1
        if self.settle_s > 0:
            self._settling.append((self._clock() + self.settle_s, prompt))
        else:
            self._drop(prompt)

    def forget_settling(self) -> None:
        """The worker's cache is gone (it was lost, or restarted): only requests still in
        flight will leave anything in it."""
        while self._settling:
            self._drop(self._settling.popleft()[1])

    @property
    def num_settling(self) -> int:
        self._expire()
        return len(self._settling)

    def match_len(self, prompt: PromptKeys) -> int:
        self._expire()
        return longest_held(prompt.keys(CHUNK), self._counts) * CHUNK

    def _expire(self) -> None:
        now = self._clock()
        while self._settling and self._settling[0][0] <= now:
            self._drop(self._settling.popleft()[1])

    def _drop(self, prompt: PromptKeys) -> None:
        for key in prompt.keys(CHUNK):
            left = self._counts[key] - 1
            if left > 0:
                self._counts[key] = left
            else:
                del self._counts[key]
