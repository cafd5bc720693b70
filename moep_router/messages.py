"""Every message that crosses a socket of the router, in one place.

KV events (SGLang worker -> router, ZMQ PUB/SUB): multipart (topic, seq: 8-byte big-endian,
payload: msgpack EventBatch [ts, [event, ...], dp_rank]); each event is an array whose first
element is its tag: ["BlockStored", block_hashes, parent_block_hash, token_ids, block_size,
lora_id, medium], ["BlockRemoved", block_hashes, medium], ["AllBlocksCleared"].
Replay (router -> worker ZMQ ROUTER at the replay endpoint): request (b"", start_seq: 8 bytes);
replies (b"", seq, payload) ... then (b"", END_SEQ, b"").

SDK fast path (client DEALER -> router ROUTER): request frames
    [kind: 1 byte] [header: orjson object] [token ids: raw little-endian int32, one frame each]
and the reply: [kind] [header: orjson object with the JSON response]. Never pickle.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

END_SEQ = (-1).to_bytes(8, "big", signed=True)  # SGLang's end-of-replay marker


@dataclass(frozen=True)
class KVEvent:
    kind: str  # "BlockStored" | "BlockRemoved" | "AllBlocksCleared" (SGLang's tag)
    block_hashes: tuple[int, ...] = ()  # stored/removed blocks, parent first
    parent_block_hash: int | None = None  # BlockStored: parent of the first block
    token_ids: tuple[int, ...] = ()  # BlockStored: tokens of all blocks, concatenated
    block_size: int = 1  # BlockStored: tokens per block


_decoder = msgspec.msgpack.Decoder()


def decode_event_batch(payload: bytes) -> list[KVEvent]:
    batch = _decoder.decode(payload)  # [ts, events, dp_rank]
    return [e for e in (_event(raw) for raw in batch[1]) if e is not None]


def _event(raw: list) -> KVEvent | None:
    tag = raw[0]
    if tag == "BlockStored":
        return KVEvent(tag, tuple(raw[1]), raw[2], tuple(raw[3]), raw[4])
    if tag == "BlockRemoved":
        return KVEvent(tag, tuple(raw[1]))
    if tag == "AllBlocksCleared":
        return KVEvent(tag)
    return None  # future event kinds are ignored, not fatal


# SDK fast path ----------------------------------------------------------------------------
KIND_SCORE = b"\x01"  # header: /v1/score body without the token ids; frames: query, items...
KIND_GENERATE = b"\x02"  # header: /generate body without input_ids; frames: one prompt each
KIND_REPLY = b"\x10"  # header: {"status": int, "body": JSON response}
FAST_PATH_KINDS = {KIND_SCORE: "score", KIND_GENERATE: "generate"}


def int32_frame(tokens: list[int]) -> bytes:
    import array

    a = array.array("i", tokens)
    if a.itemsize != 4:
        raise RuntimeError("int32 arrays are not 4 bytes on this platform")
    return a.tobytes() if _LITTLE else _swapped(a)


def frame_to_tokens(frame: bytes) -> list[int]:
    import array

    if len(frame) % 4:
        raise ValueError("token frame length is not a multiple of 4 bytes")
    a = array.array("i")
    a.frombytes(frame)
    if not _LITTLE:
        a.byteswap()
    return a.tolist()


def _swapped(a) -> bytes:
    b = a.__copy__()
    b.byteswap()
    return b.tobytes()


import sys as _sys  # noqa: E402

_LITTLE = _sys.byteorder == "little"
