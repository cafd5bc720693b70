"""Tokenize once, in the router, with the model's own tokenizer.json (HF `tokenizers`)."""

from __future__ import annotations

from pathlib import Path


class RouterTokenizer:
    def __init__(self, model_path: Path) -> None:
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(model_path / "tokenizer.json"))
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        # encode_batch, not encode: only the batch call releases the GIL (tokenizers' bindings),
        # which the router's tokenizer threads need to leave its event loop running.
        return self._tok.encode_batch([text], add_special_tokens=True)[0].ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=True)]

    def encode_continuation(self, texts: list[str]) -> list[list[int]]:
        """Items appended to a query: no special tokens of their own."""
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def single_token(self, text: str) -> int | None:
        ids = self._tok.encode_batch([text], add_special_tokens=False)[0].ids
        return ids[0] if len(ids) == 1 else None
