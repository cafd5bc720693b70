"""A token trie with reference counts (cache_aware's approximate per-worker tree).

Prompts are added when routed and removed when evicted; match_len walks one token per step.
"""

from __future__ import annotations


class TokenTrie:
    """Public API: add / remove / match_len / num_prompts."""

    def __init__(self) -> None:
        self._root: dict = {}  # token -> [count, children]
        self.num_prompts = 0

    def add(self, tokens: list[int]) -> None:
        edges = self._root
        for t in tokens:
            entry = edges.get(t)
            if entry is None:
                entry = edges[t] = [0, {}]
            entry[0] += 1
            edges = entry[1]
        self.num_prompts += 1

    def remove(self, tokens: list[int]) -> None:
        edges = self._root
        for t in tokens:
            entry = edges.get(t)
            if entry is None:
                return
            entry[0] -= 1
            if entry[0] == 0:
                del edges[t]
                break
            edges = entry[1]
        self.num_prompts -= 1

    def match_len(self, tokens: list[int]) -> int:
        edges, n = self._root, 0
        for t in tokens:
            entry = edges.get(t)
            if entry is None:
                break
            n += 1
            edges = entry[1]
        return n
