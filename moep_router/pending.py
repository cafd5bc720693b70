"""Prefixes promised to a worker by requests routed there but not finished yet.

The paper's "pending" table: a request routed to worker w will leave its prompt in w's cache, so
a request with the same prefix that arrives before the first finishes should see it as cached
there. Counted per chunk key (prefix_keys.py, CHUNK tokens): matching is a binary search.
"""

from __future__ import annotations

from collections import Counter

from moep_router.prefix_keys import CHUNK, PromptKeys, longest_held


class PendingPrefixes:
    """Public API: add / remove / match_len / num_prompts."""

    def __init__(self) -> None:
        self._counts: Counter[int] = Counter()  # chunk key -> prompts in flight holding it
        self.num_prompts = 0

    def add(self, prompt: PromptKeys) -> None:
        self._counts.update(prompt.keys(CHUNK))
        self.num_prompts += 1

    def remove(self, prompt: PromptKeys) -> None:
        for key in prompt.keys(CHUNK):
            left = self._counts[key] - 1
            if left > 0:
                self._counts[key] = left
            else:
                del self._counts[key]
        self.num_prompts -= 1

    def match_len(self, prompt: PromptKeys) -> int:
        return longest_held(prompt.keys(CHUNK), self._counts) * CHUNK
