"""An exact mirror of one worker's radix cache, built from that worker's KV events.

SGLang publishes `BlockStored(block_hashes, parent_block_hash, token_ids, block_size, ...)`,
`BlockRemoved(block_hashes)` and `AllBlocksCleared()`. We keep the block tree those events
describe: node = block hash, edge = the block's token ids. Every node at a chunk boundary also
records its chained chunk key (prefix_keys.py), so matching a prompt is a binary search over the
prompt's chunk keys followed by a walk of less than one chunk: O(log n), not O(n), per worker.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from moep_router.prefix_keys import CHUNK, PromptKeys, longest_held

ROOT = None  # parent of the first block of every sequence


@dataclass(slots=True)
class _Node:
    parent: int | None  # parent block hash (ROOT for a first block)
    tokens: tuple[int, ...]  # this block's token ids
    depth: int  # tokens from the root through this block
    key: int | None = None  # chunk key of the prefix ending here (at chunk boundaries only)
    children: dict[tuple[int, ...], int] | None = None  # tokens -> hash; None until a child

    def edges(self) -> dict[tuple[int, ...], int]:
        if self.children is None:
            self.children = {}
        return self.children


class CacheIndex:
    """Public API: apply_stored / apply_removed / clear / match_len / num_blocks."""

    def __init__(self) -> None:
        self._nodes: dict[int, _Node] = {}
        self._roots: dict[tuple[int, ...], int] = {}  # first blocks: tokens -> hash
        self._by_key: dict[int, int] = {}  # chunk key -> hash of the node ending that chunk
        self.block_size = 1  # tokens per block, learned from BlockStored
        self.chunk = CHUNK  # tokens per chunk key: lcm(CHUNK, block_size)

    @property
    def num_blocks(self) -> int:
        return len(self._nodes)

    def apply_stored(self, block_hashes: Sequence[int], parent: int | None,
                     token_ids: Sequence[int], block_size: int) -> None:
        if block_size < self.block_size and len(block_hashes) == 1:
            return  # a node's partial last page (SGLang sends it as a shorter block): unmatched
        if block_size != self.block_size:
            self.clear()
            self.block_size, self.chunk = block_size, math.lcm(CHUNK, block_size)
        if block_size == 1 and len(block_hashes) == 1 and token_ids:  # SGLang's page-1 event
            self._link(block_hashes[0], parent, (token_ids[0],))
            return
        for i, h in enumerate(block_hashes):
            tokens = tuple(token_ids[i * block_size:(i + 1) * block_size])
            if len(tokens) < block_size:
                break  # partial blocks are never matched by SGLang either
            self._link(h, parent, tokens)
            parent = h

    def apply_removed(self, block_hashes: list[int]) -> None:
        for h in block_hashes:
            self._unlink(h)

    def clear(self) -> None:
        """Empty; the block size is learned again from the next BlockStored (a worker that
        restarts may come back with another page size)."""
        self._nodes.clear()
        self._roots.clear()
        self._by_key.clear()
        self.block_size, self.chunk = 1, CHUNK

    def match_len(self, prompt: PromptKeys | list[int] | tuple[int, ...]) -> int:
        """Number of leading tokens of the prompt cached on the worker."""
        if not isinstance(prompt, PromptKeys):
            prompt = PromptKeys(prompt)
        keys = prompt.keys(self.chunk)
        whole = longest_held(keys, self._by_key)
        matched = whole * self.chunk
        edges = self._nodes[self._by_key[keys[whole - 1]]].children if whole else self._roots
        tokens, bs = prompt.tokens, self.block_size
        while edges and matched + bs <= len(tokens):
            h = edges.get(tokens[matched:matched + bs])
            if h is None:
                break
            matched += bs
            edges = self._nodes[h].children
        return matched

    # Internals ----------------------------------------------------------------------------
    def _link(self, h: int, parent: int | None, tokens: tuple[int, ...]) -> None:
        if h in self._nodes:
            return
        if parent is not ROOT and parent not in self._nodes:
            return  # orphan: its ancestors were evicted or never seen; unreachable anyway
        if parent is ROOT:
            depth, edges = len(tokens), self._roots
        else:
            up = self._nodes[parent]
            depth, edges = up.depth + len(tokens), up.edges()
        node = self._nodes[h] = _Node(parent, tokens, depth)
        edges[tokens] = h
        if depth % self.chunk == 0:
            node.key = self._chunk_key(node)
            self._by_key[node.key] = h

    def _chunk_key(self, node: _Node) -> int:
        """hash((key of the previous boundary, the chunk's tokens)), as chunk_keys computes."""
        parts, cur = [], node
        for _ in range(self.chunk // self.block_size):
            parts.append(cur.tokens)
            cur = self._nodes[cur.parent] if cur.parent is not ROOT else None
        prev = cur.key if cur is not None else 0
        chunk = tuple(t for block in reversed(parts) for t in block)
        return hash((prev, chunk))

    def _unlink(self, h: int) -> None:
        """Drop a block and its descendants (they can no longer match); iterative, since a
        sequence can be thousands of blocks deep."""
        node = self._nodes.get(h)
        if node is None:
            return
        edges = self._edges_of(node.parent)
        if edges and edges.get(node.tokens) == h:
            del edges[node.tokens]
        stack = [h]
        while stack:
            node = self._nodes.pop(stack.pop(), None)
            if node is None:
                continue
            if node.key is not None and self._by_key.get(node.key) is not None:
                self._by_key.pop(node.key, None)
            if node.children:
                stack.extend(node.children.values())

    def _edges_of(self, parent: int | None) -> dict[tuple[int, ...], int] | None:
        if parent is ROOT:
            return self._roots
        node = self._nodes.get(parent)
        return node.children if node is not None else None
