"""Tokenize once, in the router, with the model's own tokenizer.json (HF `tokenizers`, and for
short texts on the request loop its byte-level BPE through a cache of pieces: bpe_pieces.py)."""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from pathlib import Path

from moep_router.bpe_pieces import BYTE_OF_CHAR, PieceTokenizer

CACHE_MIN_CHARS = 512  # shorter texts tokenize in tens of microseconds: not worth a cache slot
# Texts up to this long, on the router's loop (the main thread), go through the piece cache;
# longer ones, and every text on a tokenizer thread, through HF, whose calls release the GIL
# (the piece path is Python, and on a thread would hold the loop up). server.OFFLOAD_TEXT_CHARS
# sends bodies of this much text to those threads.
PIECES_MAX_CHARS = 2048

logger = logging.getLogger("moep_router")


class TokenCache:
    """Token ids of recently tokenized long texts, least recently used out first.

    Invariant: tokens == sum(len(ids) for ids in entries) <= capacity (in token ids). Thread-safe
    (the router's tokenizer threads share it). Scoring traffic sends the same long query with
    many items, request after request: a hit skips ~1 us per token of HF tokenization.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.tokens = 0
        self.hits = self.misses = 0
        self._entries: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, text: str) -> tuple[int, ...] | None:
        with self._lock:
            ids = self._entries.get(text)
            if ids is None:
                self.misses += 1
                return None
            self._entries.move_to_end(text)
            self.hits += 1
            return ids

    def put(self, text: str, ids: tuple[int, ...]) -> None:
        if len(ids) > self.capacity:
            return
        with self._lock:
            old = self._entries.pop(text, None)
            if old is not None:
                self.tokens -= len(old)
            self._entries[text] = ids
            self.tokens += len(ids)
            while self.tokens > self.capacity:
                _, out = self._entries.popitem(last=False)
                self.tokens -= len(out)

    def __len__(self) -> int:
        return len(self._entries)


class RouterTokenizer:
    """pieces: "auto" (the piece cache where bpe_pieces takes the tokenizer) or "off"."""

    def __init__(self, model_path: Path, cache_tokens: int = 0, pieces: str = "auto") -> None:
        from tokenizers import Tokenizer

        text = (model_path / "tokenizer.json").read_text()  # read once: HF's and ours
        self._tok = Tokenizer.from_str(text)
        spec = json.loads(text)
        self._byte_level = _is_byte_level(spec.get("decoder"))
        self._added = {t["id"]: t["content"] for t in spec.get("added_tokens") or ()}
        self._bytes_of: dict[int, bytes | None] = {}  # token_bytes, per id once looked up
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        # The batch calls release the GIL (tokenizers' bindings), which the router's tokenizer
        # threads need to leave its event loop running; the `_fast` one (tokenizers >= 0.20)
        # skips the character offsets the router never reads: 97 against 120 us for a
        # 100-token prompt on the 2-core machine.
        self._batch = getattr(self._tok, "encode_batch_fast", self._tok.encode_batch)
        # Texts of CACHE_MIN_CHARS or more tokenized with special tokens (queries, inputs,
        # prompts); None: every text tokenized each time.
        self.cache = TokenCache(cache_tokens) if cache_tokens > 0 else None
        # HF's ids for short texts on the loop at about a third of the cost; None: HF always
        self.pieces: PieceTokenizer | None = None
        if pieces == "auto":
            self.pieces, why = PieceTokenizer.build(self._tok, spec, self._hf_ids)
            if self.pieces is None:
                logger.info("tokenizing with HF tokenizers alone: %s", why)
            else:
                logger.info("short texts tokenized through the piece cache (HF's BPE per piece; "
                            "agreed with HF on the probe corpus)")

    def encode(self, text: str) -> list[int]:
        if self.cache is None or len(text) < CACHE_MIN_CHARS:
            return self._ids(text, True)
        ids = self.cache.get(text)
        if ids is None:
            ids = tuple(self._ids(text, True))
            self.cache.put(text, ids)
        return list(ids)  # the caller's own list: prompts are built by concatenation

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        if self._on_loop(texts):
            return [self._ids(t, True) for t in texts]
        return [e.ids for e in self._batch(texts, add_special_tokens=True)]

    def encode_continuation(self, texts: list[str]) -> list[list[int]]:
        """Items appended to a query: no special tokens of their own."""
        if self._on_loop(texts):
            return [self._ids(t, False) for t in texts]
        return [e.ids for e in self._batch(texts, add_special_tokens=False)]

    def truncate(self, texts: list[str], max_tokens: int) -> list[str]:
        """Each text cut where its token `max_tokens` starts (tokenized as a continuation, as
        documents are), so it keeps at most max_tokens tokens: fewer where a token ends inside
        a character (byte-level BPE), which the cut leaves out whole. A text of fewer UTF-8
        bytes than max_tokens is kept untokenized: a token spans at least one byte (one more for
        a tokenizer that prepends a space marker)."""
        long = [i for i, t in enumerate(texts) if len(t) >= max_tokens // 4
                and len(t.encode()) >= max_tokens]
        if not long:
            return texts
        out = list(texts)
        for i, enc in zip(long, self._tok.encode_batch([texts[i] for i in long],
                                                       add_special_tokens=False)):
            if len(enc.ids) > max_tokens:
                out[i] = texts[i][: enc.offsets[max_tokens][0]]
        return out

    def decode(self, ids: list[int]) -> str:
        """The text of token ids, special tokens included (an echoed prompt)."""
        return self._tok.decode(ids, skip_special_tokens=False)

    def token_label(self, tid: int, text: str) -> str:
        """A token as OpenAI's logprobs name it: its text where its bytes are whole UTF-8, else
        `bytes:\\xNN...` (a piece of a character, which `text`, the worker's decoding of the
        token alone, shows as U+FFFD: two such tokens would collide as keys of top_logprobs).
        Byte-level BPE tokenizers only; others keep `text`."""
        raw = self.token_bytes(tid)
        if raw is None:
            return text
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)

    def token_bytes(self, tid: int) -> bytes | None:
        """A token's exact bytes (byte-level BPE: its vocabulary entry through GPT-2's byte
        map; an added token: its content); None where the tokenizer is not byte-level."""
        try:
            return self._bytes_of[tid]
        except KeyError:
            raw = self._bytes_of[tid] = self._token_bytes(tid)  # at most one entry per id
            return raw

    def _token_bytes(self, tid: int) -> bytes | None:
        if tid in self._added:
            return self._added[tid].encode()
        if not self._byte_level:
            return None
        piece = self._tok.id_to_token(tid)
        if piece is None:
            return None
        try:
            return bytes(BYTE_OF_CHAR[c] for c in piece)
        except KeyError:
            return piece.encode()

    def single_token(self, text: str) -> int | None:
        ids = self._ids(text, False)
        return ids[0] if len(ids) == 1 else None

    def _ids(self, text: str, special: bool) -> list[int]:
        if len(text) <= PIECES_MAX_CHARS and self._pieces_here():
            ids = self.pieces.encode(text, special)
            if ids is not None:
                return ids
        return self._hf_ids(text, special)

    def _hf_ids(self, text: str, special: bool) -> list[int]:
        return self._batch([text], add_special_tokens=special)[0].ids

    def _on_loop(self, texts: list[str]) -> bool:
        """Few short texts on the loop: one piece-path call each beats one HF batch call."""
        return (len(texts) <= 8 and sum(map(len, texts)) <= PIECES_MAX_CHARS
                and self._pieces_here())

    def _pieces_here(self) -> bool:
        """The piece path is on and this is the router's loop (the main thread): on a
        tokenizer thread HF's calls, which release the GIL, are the ones to make."""
        return self.pieces is not None and threading.current_thread() is threading.main_thread()


def _is_byte_level(decoder: dict | None) -> bool:
    """tokenizer.json's decoder is ByteLevel (alone or in a Sequence)."""
    if not decoder:
        return False
    if decoder.get("type") == "Sequence":
        return any(_is_byte_level(d) for d in decoder.get("decoders") or ())
    return decoder.get("type") == "ByteLevel"
