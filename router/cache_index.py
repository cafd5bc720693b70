"""An exact mirror of one worker's radix cache, built from that worker's KV events.

SGLang publishes `BlockStored(block_hashes, parent_block_hash, token_ids, block_size, ...)`,
`BlockRemoved(block_hashes)` and `AllBlocksCleared()`. We keep the block tree those events
describe: node = block hash, edge = the block's token ids. Matching a prompt walks the tree from
the root, one block per step, so the answer is the worker's own longest cached prefix.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ROOT = None  # parent of the first block of every sequence


@dataclass
class _Node:
    parent: int | None  # parent block hash (ROOT for a first block)
    tokens: tuple[int, ...]  # this block's token ids
    children: dict[tuple[int, ...], int] = field(default_factory=dict)  # tokens -> hash


class CacheIndex:
    """Public API: apply_stored / apply_removed / clear / match_len / num_blocks."""

    def __init__(self) -> None:
        self._nodes: dict[int, _Node] = {}
        self._roots: dict[tuple[int, ...], int] = {}  # first blocks: tokens -> hash
        self.block_size = 1  # tokens per block, learned from BlockStored

    @property
    def num_blocks(self) -> int:
        return len(self._nodes)

    def apply_stored(self, block_hashes: list[int], parent: int | None, token_ids: list[int],
                     block_size: int) -> None:
        self.block_size = block_size
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
        self._nodes.clear()
        self._roots.clear()

    def match_len(self, tokens: list[int] | tuple[int, ...]) -> int:
        """Number of leading tokens of `tokens` cached on the worker."""
        bs = self.block_size
        edges, matched = self._roots, 0
        while matched + bs <= len(tokens):
            h = edges.get(tuple(tokens[matched:matched + bs]))
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
        self._nodes[h] = _Node(parent, tokens)
        self._edges_of(parent)[tokens] = h

    def _unlink(self, h: int) -> None:
        node = self._nodes.pop(h, None)
        if node is None:
            return
        edges = self._edges_of(node.parent)
        if edges.get(node.tokens) == h:
            del edges[node.tokens]
        for child in list(node.children.values()):
            self._unlink(child)  # descendants of an evicted block can no longer match

    def _edges_of(self, parent: int | None) -> dict[tuple[int, ...], int]:
        if parent is ROOT:
            return self._roots
        node = self._nodes.get(parent)
        return node.children if node is not None else {}
