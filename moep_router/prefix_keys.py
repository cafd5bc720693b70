"""Chained chunk hashes of a prompt: O(log n) prefix matching against many indexes.

keys[k] = hash((keys[k-1], tokens[k*C:(k+1)*C])) identifies the prefix tokens[:(k+1)*C]. An index
that records the key of every chunk boundary it holds answers "how many whole chunks of this
prompt do I hold" by binary search, because its prefixes are closed (a held prefix implies all
shorter ones). Keys are computed once per request and shared by every worker's index.
(Python's tuple/int hash is deterministic; a 64-bit collision would mis-route, never mis-answer.)
"""

from __future__ import annotations

CHUNK = 16  # tokens per chunk for block size 1; lcm(CHUNK, block_size) otherwise


class PromptKeys:
    """A prompt's tokens and its chunk keys, computed lazily per chunk size."""

    __slots__ = ("tokens", "_keys")

    def __init__(self, tokens: tuple[int, ...] | list[int]) -> None:
        self.tokens = tuple(tokens)
        self._keys: dict[int, list[int]] = {}

    def keys(self, chunk: int) -> list[int]:
        keys = self._keys.get(chunk)
        if keys is None:
            keys = self._keys[chunk] = chunk_keys(self.tokens, chunk)
        return keys


def chunk_keys(tokens: tuple[int, ...], chunk: int) -> list[int]:
    keys, h = [], 0
    for end in range(chunk, len(tokens) + 1, chunk):
        h = hash((h, tokens[end - chunk:end]))
        keys.append(h)
    return keys


def longest_held(keys: list[int], held) -> int:
    """How many leading keys are in `held` (binary search; `held` is prefix-closed)."""
    lo, hi = 0, len(keys)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if keys[mid - 1] in held:
            lo = mid
        else:
            hi = mid - 1
    return lo
