"""Byte-level BPE through a cache of pre-tokenized pieces: the model tokenizer's own ids for a
short text at about a third of what one HF `tokenizers` call costs from Python.

HF's pipeline for a text: normalize -> split out added tokens -> pre-tokenize (regex splits,
then each piece's UTF-8 bytes mapped to the byte-level alphabet) -> BPE of each piece ->
post-process (BOS/EOS). For the byte-level BPE tokenizers of GPT-2, Qwen2/3 and Llama-3 the ids
of a piece depend on that piece alone, so this module splits the text with the same regexes
(the `regex` module), looks each piece up in a dict, and asks HF's own BPE model
(`Tokenizer.model.tokenize`) only for pieces it has not seen: the BPE is HF's by construction.
Added tokens (`<|im_start|>` and the like, which chat templates write) are split out of the raw
text first, leftmost-longest as HF's added vocabulary does, and the stretches between them are
normalized and split on their own; where an added token has options that change its matching
(lstrip, rstrip, single_word, normalized under a normalizer), a text holding one goes to HF
whole. A tokenizer of any other shape is not taken (`PieceTokenizer.build` says why).

What is not HF's own code here, the regex engine (Python's `regex` for Oniguruma) and the NFC
normalization (`unicodedata`), is checked twice: against HF on a probe corpus when the
tokenizer loads (a difference: not taken), and at run time on every `check_every`-th text (a
difference: that text gets HF's ids, the piece path turns itself off for good, logged and
counted in `mismatches`).

Measured on the 2-core machine, the tiny model's tokenizer, ~530-character prompts of ~100
tokens: 29-36 us against 89 us for `encode_batch_fast([text])`; per router request 29-56 us of
CPU less (`bench/results/router_latency_ab_*.json`).
"""

from __future__ import annotations

import logging
import random
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

import regex

logger = logging.getLogger("moep_router")

# tokenizers' ByteLevel pre-tokenizer with use_regex: GPT-2's pattern, its contractions
# ('s|'t|'re|'ve|'m|'ll|'d, distinct after the apostrophe) as one group, which the `regex`
# module matches faster (21 against 28 us for a 530-character text)
GPT2_PATTERN = r"'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
MAX_PIECES = 1 << 18  # cached pieces (~100 bytes each); when full the cache starts over
# Stretches (text between added tokens) at least this long keep their ids too: a chat prompt's
# system message, repeated request after request, is then one dict lookup instead of a regex
# split and a lookup per piece (~20 us per 500 characters on the 2-core machine)
STRETCH_MIN_CHARS = 256
MAX_STRETCHES = 4096  # cached stretches (at most 2,048 characters each); when full, start over
CHECK_EVERY = 1000  # texts between two run-time comparisons with HF


class Unsupported(ValueError):
    """The tokenizer's shape is not one whose pieces this module reproduces."""


@dataclass(frozen=True)
class PieceRules:
    """What a tokenizer.json says about the steps around its BPE."""
    patterns: tuple[str, ...]  # Isolated regex splits, applied in order
    nfc: bool  # the normalizer is NFC (else there is none)
    prefix: tuple[int, ...]  # ids the post-processor puts before a text (add_special_tokens)
    suffix: tuple[int, ...]  # ... and after it
    added: tuple[tuple[str, int], ...]  # added tokens: (content, id)
    split_added: bool  # added tokens are matched as plain strings: split here (else HF's)


def read_rules(spec: dict) -> PieceRules:
    """The rules of a tokenizer.json (parsed), or Unsupported saying what differs."""
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        raise Unsupported(f"model {model.get('type')!r} is not BPE")
    if model.get("dropout") or model.get("byte_fallback"):
        raise Unsupported("BPE with dropout or byte fallback")
    if spec.get("truncation") or spec.get("padding"):
        raise Unsupported("truncation or padding set in tokenizer.json")
    normalizer = spec.get("normalizer")
    if normalizer is not None and normalizer.get("type") != "NFC":
        raise Unsupported(f"normalizer {normalizer.get('type')!r}")
    prefix, suffix = _post_ids(spec.get("post_processor"), spec)
    tokens = spec.get("added_tokens") or ()
    added = tuple(sorted({(t["content"], t["id"]) for t in tokens}))
    if any(not a for a, _ in added):
        raise Unsupported("an empty added token")
    plain = all(not t.get(k) for t in tokens for k in ("lstrip", "rstrip", "single_word")) and (
        normalizer is None or not any(t.get("normalized") for t in tokens))
    return PieceRules(_patterns(spec.get("pre_tokenizer")), normalizer is not None, prefix,
                      suffix, added, plain)


def _patterns(pre: dict | None) -> tuple[str, ...]:
    steps = (pre or {}).get("pretokenizers") if (pre or {}).get("type") == "Sequence" else [pre]
    if not steps or steps[-1] is None or steps[-1].get("type") != "ByteLevel":
        raise Unsupported("the pre-tokenizer does not end in ByteLevel")
    *splits, byte_level = steps
    if byte_level.get("add_prefix_space"):
        raise Unsupported("ByteLevel with add_prefix_space")
    patterns = []
    for s in splits:
        pattern = (s.get("pattern") or {}).get("Regex")
        if s.get("type") != "Split" or pattern is None or s.get("behavior") != "Isolated" \
                or s.get("invert"):
            raise Unsupported(f"pre-tokenizer step {s.get('type')!r} is not an Isolated regex Split")
        patterns.append(pattern)
    if byte_level.get("use_regex", True):
        patterns.append(GPT2_PATTERN)  # ByteLevel's own split, also Isolated
    if not patterns:
        raise Unsupported("no regex split: a whole text would be one piece")
    return tuple(patterns)


def _post_ids(post: dict | None, spec: dict) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(prefix, suffix) ids a post-processor adds around one text."""
    if post is None or post.get("type") == "ByteLevel":
        return (), ()
    if post.get("type") == "Sequence":
        found = [_post_ids(p, spec) for p in post.get("processors") or ()]
        added = [f for f in found if f != ((), ())]
        if len(added) > 1:
            raise Unsupported("several post-processors add tokens")
        return added[0] if added else ((), ())
    if post.get("type") != "TemplateProcessing":
        raise Unsupported(f"post-processor {post.get('type')!r}")
    specials = post.get("special_tokens") or {}
    before, after, seen = [], [], False
    for item in post.get("single") or ():
        if "Sequence" in item:
            seen = True
        elif "SpecialToken" in item:
            ids = (specials.get(item["SpecialToken"]["id"]) or {}).get("ids")
            if not ids:
                raise Unsupported(f"template token {item['SpecialToken']['id']!r} has no ids")
            (after if seen else before).extend(ids)
        else:
            raise Unsupported(f"template item {sorted(item)}")
    return tuple(before), tuple(after)


def _byte_table() -> list[str]:
    """GPT-2's byte -> printable character map (tokenizers' ByteLevel alphabet)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


BYTE_CHARS = _byte_table()
BYTE_OF_CHAR = {c: b for b, c in enumerate(BYTE_CHARS)}  # the inverse: a vocab entry's bytes


class PieceTokenizer:
    """encode(text, special) -> HF's ids, or None where HF must tokenize the text itself.

    Invariant: every cached piece maps to the ids HF's BPE model gives that piece (filled only
    from `model.tokenize`), and every cached stretch to the concatenated ids of its pieces
    (filled only by _extend); `len(_pieces) <= MAX_PIECES`, `len(_stretches) <= MAX_STRETCHES`.
    `active` turns False, for good, at the first text whose ids differ from HF's. Plain ints
    count checks and mismatches (the metrics read them). Thread-safe under the GIL: dict reads
    and writes are atomic, and a piece or stretch written twice gets the same ids.
    """

    def __init__(self, hf, rules: PieceRules,
                 reference: Callable[[str, bool], list[int]],
                 check_every: int = CHECK_EVERY) -> None:
        self._bpe = hf.model  # HF's BPE: ids of one byte-level piece
        self._rules = rules
        self._reference = reference  # (text, special) -> HF's ids of the whole text
        self._splits = tuple(regex.compile(p) for p in rules.patterns)
        # longest first: at a position the longest added token matches, as HF's leftmost-longest
        by_length = sorted((a for a, _ in rules.added), key=len, reverse=True)
        self._added = regex.compile("|".join(map(regex.escape, by_length))) if by_length else None
        self._added_first = frozenset(a[0] for a, _ in rules.added)
        self._added_ids = dict(rules.added)
        self._pieces: dict[str, tuple[int, ...]] = {}
        self._stretches: dict[str, tuple[int, ...]] = {}
        self.check_every = check_every
        self.active = True
        self.texts = self.checks = self.mismatches = 0

    @classmethod
    def build(cls, hf, spec: dict, reference: Callable[[str, bool], list[int]],
              check_every: int = CHECK_EVERY) -> tuple[PieceTokenizer | None, str]:
        """(a tokenizer that agreed with HF on the probe corpus, "") or (None, why not)."""
        try:
            tok = cls(hf, read_rules(spec), reference, check_every)
        except (Unsupported, regex.error) as exc:
            return None, str(exc)
        # Without and with special tokens differ only by a template's ids around the text:
        # without a template one reading of each probe text checks both.
        rules = tok._rules
        specials = (True, False) if rules.prefix or rules.suffix else (True,)
        added = tuple(a for a, _ in rules.added) if rules.split_added else ()
        for text in probe_texts(hf, added=added):
            for special in specials:
                mine = tok._encode(text, special)
                if mine is not None and mine != reference(text, special):
                    return None, f"differs from HF on the probe text {text[:60]!r}"
        return tok, ""

    def encode(self, text: str, special: bool) -> list[int] | None:
        if not self.active:
            return None
        ids = self._encode(text, special)
        if ids is None:
            return None
        self.texts += 1
        if self.texts % self.check_every == 0:
            self.checks += 1
            expected = self._reference(text, special)
            if ids != expected:
                self.mismatches += 1
                self.active = False
                logger.warning("the router's piece tokenizer gave other ids than HF for a text "
                               "of %d characters; tokenizing with HF from now on", len(text))
                return expected
        return ids

    def _encode(self, text: str, special: bool) -> list[int] | None:
        rules = self._rules
        out = list(rules.prefix) if special and rules.prefix else []
        if not self._holds_added(text):
            if not self._extend(out, text):
                return None
        elif not rules.split_added:
            return None
        else:  # HF splits the added tokens out of the raw text, then each stretch on its own
            end = 0
            for m in self._added.finditer(text):
                if m.start() > end and not self._extend(out, text[end:m.start()]):
                    return None
                out.append(self._added_ids[m.group()])
                end = m.end()
            if end < len(text) and not self._extend(out, text[end:]):
                return None
        if special and rules.suffix:
            out += rules.suffix
        return out

    def _extend(self, out: list[int], text: str) -> bool:
        """out += the ids of a stretch without added tokens; False: HF must take the text (its
        normalization made an added token)."""
        long = len(text) >= STRETCH_MIN_CHARS
        if long:
            ids = self._stretches.get(text)
            if ids is not None:
                out += ids
                return True
        raw = text
        if self._rules.nfc and not text.isascii():  # ASCII is NFC already
            normalized = unicodedata.normalize("NFC", text)
            if normalized != text and self._holds_added(normalized):
                return False
            text = normalized
        start, pieces = len(out), self._pieces
        for piece in self._split(text):
            ids = pieces.get(piece)
            if ids is None:
                ids = self._piece_ids(piece)
            out += ids
        if long:
            if len(self._stretches) >= MAX_STRETCHES:
                self._stretches.clear()
            self._stretches[raw] = tuple(out[start:])
        return True

    def _holds_added(self, text: str) -> bool:
        for c in self._added_first:  # most texts hold none of the first characters: no search
            if c in text:
                return self._added.search(text) is not None
        return False

    def _split(self, text: str) -> list[str]:
        first, *rest = self._splits
        parts = _isolated(first, text)
        for rx in rest:
            parts = [p for part in parts for p in _isolated(rx, part)]
        return parts

    def _piece_ids(self, piece: str) -> tuple[int, ...]:
        mapped = "".join(BYTE_CHARS[b] for b in piece.encode("utf-8"))
        ids = tuple(t.id for t in self._bpe.tokenize(mapped))
        if len(self._pieces) >= MAX_PIECES:
            self._pieces.clear()
        self._pieces[piece] = ids
        return ids


def _isolated(rx, text: str) -> list[str]:
    """tokenizers' Split with behavior Isolated: every match a piece, and every stretch
    between matches a piece too (none for the patterns above, which match every character)."""
    if not rx.groups:
        parts = rx.findall(text)
        if sum(map(len, parts)) == len(text):
            return parts  # an empty match is harmless: a piece of no ids
    parts, end = [], 0
    for m in rx.finditer(text):
        if m.start() > end:
            parts.append(text[end:m.start()])
        if m.end() > m.start():
            parts.append(m.group())
        end = m.end()
    if end < len(text):
        parts.append(text[end:])
    return parts


PROBE_TEXTS = (
    "Hello world", " leading space", "trailing space ", "  two  spaces  ", "tab\there",
    "new\nline", "\n\nblank lines\n\n", "\r\nwindows\r\n", "I'm sure they'll say we've won",
    "DON'T SHOUT I'LL", "numbers 12345 and 3.14159, 1,000,000", "x=1+2*3-4/5 (a) [b] {c}",
    "e-mail: someone@example.com", "https://example.com/a?b=c&d=e#f", "naïve café résumé",
    "Cafe\u0301 combining", "Ångström ﬁ ligature", "中文文本测试", "日本語のテキスト",
    "한국어 텍스트", "Привет, мир", "مرحبا بالعالم", "emoji 🙂👍🏽 flags 🇫🇷", "zero\u200bwidth",
    "nbsp\u00a0here", "…ellipsis — dashes – “quotes”", "ALLCAPS lowercase MiXeD", "a" * 300,
    "the the the the", "   ", "\t\t", "!!!???...", "<|not a token|>", "<html><body></body>",
)


def probe_texts(hf, num_vocab: int = 2000, num_mixed: int = 500,
                added: tuple[str, ...] = ()) -> list[str]:
    """The load-time check's corpus: fixed hard cases, decoded vocabulary tokens (up to
    num_vocab, evenly spread), and num_mixed joins of them with the fixed cases and the `added`
    tokens (seeded)."""
    size = hf.get_vocab_size(with_added_tokens=False)
    step = max(1, size // num_vocab)
    vocab = [hf.decode([i]) for i in range(0, size, step)]
    rng = random.Random(0)
    pool = [*PROBE_TEXTS, *vocab, *added, *(a + "\n" for a in added)]
    mixed = ["".join(rng.choice(pool) + rng.choice(("", " ", "\n", ""))
                     for _ in range(rng.randint(2, 6))) for _ in range(num_mixed)]
    return [*PROBE_TEXTS, *vocab, *mixed]
