"""The piece tokenizer gives HF's ids exactly, or steps aside: the project's tokenizer as it is,
the same vocabulary rebuilt in the Qwen2/3 shape (NFC, a Split regex, a BOS template), shapes it
refuses, and its run-time check against HF."""

import concurrent.futures as cf
import json
import random

import pytest
from tokenizers import Tokenizer

from moep_router.bpe_pieces import PROBE_TEXTS, PieceTokenizer, Unsupported, read_rules
from moep_router.tokenize import RouterTokenizer
from moep_sglang.models.corpus import paragraph

# Qwen2/3's pre-tokenizer split (their tokenizer.json)
QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


# Texts as chat templates write them: added tokens at the ends, side by side, within words,
# after an accent that NFC composes, and broken ones that are not added tokens
CHAT_TEXTS = [
    "<|im_start|>system\nYou judge.<|im_end|>\n<|im_start|>user\nClean?<|im_end|>\n"
    "<|im_start|>assistant\n", "<|im_end|><|im_start|><|endoftext|>", "word<|im_end|>word",
    "  <|im_start|>  spaced  <|im_end|>  ", "Cafe\u0301<|im_end|>e\u0301", "<|im_start|",
    "<|im_start|im_end|>", "<<|im_end|>>", "\n\n<|endoftext|>\n\n"]


def _texts() -> list[str]:
    rng = random.Random(7)
    hard = [*PROBE_TEXTS, *CHAT_TEXTS, "Line one.\r\n\r\nLine two?!  ", "IT'S 2026, ÉTÉ",
            "x\u0301y\u0327", "tabs\t\tand  runs   of spaces", "digits 0123456789 9876",
            "’curly’ apostrophes’s"]
    return [*hard, *(paragraph(rng, rng.randint(1, 10)) for _ in range(300)),
            *("".join(rng.choice(hard) for _ in range(3)) for _ in range(200))]


def _hf(tok: Tokenizer):
    return lambda text, special: tok.encode(text, add_special_tokens=special).ids


def _variant(tiny_model, tmp_path, **changes) -> tuple[Tokenizer, dict]:
    spec = json.loads((tiny_model / "tokenizer.json").read_text())
    spec.update(changes)
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(spec))
    return Tokenizer.from_file(str(path)), spec


def _qwen_shape(tiny_model, tmp_path):
    bos = spec_id(tiny_model, "<|endoftext|>")
    return _variant(
        tiny_model, tmp_path, normalizer={"type": "NFC"},
        pre_tokenizer={"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN_PATTERN}, "behavior": "Isolated",
             "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
             "use_regex": False}]},
        post_processor={"type": "TemplateProcessing",
                        "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
                                   {"Sequence": {"id": "A", "type_id": 0}}],
                        "pair": [{"Sequence": {"id": "A", "type_id": 0}}],
                        "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [bos],
                                                             "tokens": ["<|endoftext|>"]}}})


def spec_id(tiny_model, content: str) -> int:
    spec = json.loads((tiny_model / "tokenizer.json").read_text())
    return next(t["id"] for t in spec["added_tokens"] if t["content"] == content)


def test_the_projects_tokenizer_is_taken_and_every_text_gets_hfs_ids(tiny_model):
    hf = Tokenizer.from_file(str(tiny_model / "tokenizer.json"))
    spec = json.loads((tiny_model / "tokenizer.json").read_text())
    pieces, why = PieceTokenizer.build(hf, spec, _hf(hf))
    assert pieces is not None, why
    for text in _texts():
        for special in (True, False):
            assert pieces.encode(text, special) == _hf(hf)(text, special), text
    assert pieces.texts > 1000 and pieces.checks == pieces.texts // 1000  # each 1,000th checked
    assert pieces.active and pieces.mismatches == 0


def test_the_qwen_shape_nfc_split_regex_and_bos_template_match_hf(tiny_model, tmp_path):
    hf, spec = _qwen_shape(tiny_model, tmp_path)
    rules = read_rules(spec)
    assert rules.nfc and rules.patterns == (QWEN_PATTERN,)
    assert rules.prefix == (spec_id(tiny_model, "<|endoftext|>"),) and rules.suffix == ()
    pieces, why = PieceTokenizer.build(hf, spec, _hf(hf))
    assert pieces is not None, why
    for text in _texts():
        for special in (True, False):
            assert pieces.encode(text, special) == _hf(hf)(text, special), text
    # The BOS only where HF adds it; a decomposed accent normalized as HF's NFC does
    assert pieces.encode("Cafe\u0301", True)[0] == rules.prefix[0]
    assert pieces.encode("Cafe\u0301", False) == pieces.encode("Caf\u00e9", False)


def test_added_tokens_are_split_out_as_hf_does(tiny_model):
    plain = RouterTokenizer(tiny_model, pieces="off")
    tok = RouterTokenizer(tiny_model)
    text = "before <|im_start|>user middle<|im_end|> after"
    assert tok.pieces.encode(text, True) == plain.encode(text)  # not left to HF
    assert spec_id(tiny_model, "<|im_start|>") in tok.encode(text)


def test_added_tokens_with_matching_options_leave_their_texts_to_hf(tiny_model, tmp_path):
    spec = json.loads((tiny_model / "tokenizer.json").read_text())
    tokens = [{**t, "lstrip": t["content"] == "<|im_end|>"} for t in spec["added_tokens"]]
    hf, spec = _variant(tiny_model, tmp_path, added_tokens=tokens)
    assert not read_rules(spec).split_added
    pieces, why = PieceTokenizer.build(hf, spec, _hf(hf))
    assert pieces is not None, why
    text = "a  <|im_end|> b"  # lstrip: the spaces before it are the token's
    assert pieces.encode(text, True) is None and pieces.encode("a b", True) == _hf(hf)("a b", True)


@pytest.mark.parametrize("changes, reason", [
    ({"pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always"}},
     "does not end in ByteLevel"),
    ({"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                       "use_regex": True}},
     "add_prefix_space"),
    ({"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                       "use_regex": False}},
     "no regex split"),
    ({"normalizer": {"type": "Lowercase"}}, "normalizer 'Lowercase'"),
    ({"post_processor": {"type": "BertProcessing", "sep": ["</s>", 2], "cls": ["<s>", 0]}},
     "post-processor 'BertProcessing'"),
])
def test_other_shapes_are_refused_with_the_reason(tiny_model, tmp_path, changes, reason):
    hf, spec = _variant(tiny_model, tmp_path, **changes)
    with pytest.raises(Unsupported, match=reason):
        read_rules(spec)
    pieces, why = PieceTokenizer.build(hf, spec, _hf(hf))
    assert pieces is None and reason in why


def test_a_probe_difference_refuses_the_tokenizer(tiny_model):
    hf = Tokenizer.from_file(str(tiny_model / "tokenizer.json"))
    spec = json.loads((tiny_model / "tokenizer.json").read_text())
    pieces, why = PieceTokenizer.build(hf, spec, lambda text, special: [0])
    assert pieces is None and "differs from HF on the probe text" in why


def test_the_run_time_check_gives_hfs_ids_and_turns_the_piece_path_off(tiny_model):
    hf = Tokenizer.from_file(str(tiny_model / "tokenizer.json"))
    spec = json.loads((tiny_model / "tokenizer.json").read_text())
    pieces, _ = PieceTokenizer.build(hf, spec, _hf(hf), check_every=3)
    text = "the doctor noticed that the fast phone was cheap"
    right = _hf(hf)(text, True)
    assert pieces.encode(text, True) == right
    pieces._pieces[" doctor"] = (0, 0)  # a wrong entry: as if the split or BPE differed
    assert pieces.encode(text, True) != right  # unchecked text: the wrong ids go out
    assert pieces.encode(text, True) == right  # the third text is checked: HF's ids
    assert (pieces.checks, pieces.mismatches, pieces.active) == (1, 1, False)
    assert pieces.encode(text, True) is None  # off for good


def test_router_tokenizer_uses_pieces_on_the_main_thread_only(tiny_model):
    tok = RouterTokenizer(tiny_model)
    plain = RouterTokenizer(tiny_model, pieces="off")
    assert plain.pieces is None
    text = "a student wrote that the simple plan was safe"
    assert tok.encode(text) == plain.encode(text) and tok.pieces.texts == 1
    with cf.ThreadPoolExecutor(1) as pool:  # a tokenizer thread: HF, whose calls release the GIL
        assert pool.submit(tok.encode, text).result() == plain.encode(text)
        assert pool.submit(tok.encode_continuation, [text, text]).result() == \
            plain.encode_continuation([text, text])
    assert tok.pieces.texts == 1
    assert tok.encode_batch([text, "x"]) == plain.encode_batch([text, "x"])
    assert tok.single_token(" yes") == plain.single_token(" yes") is not None
    assert tok.pieces.texts == 4


def test_a_long_stretch_between_added_tokens_is_kept_and_reused_with_hfs_ids(tiny_model):
    hf = Tokenizer.from_file(str(tiny_model / "tokenizer.json"))
    spec = json.loads((tiny_model / "tokenizer.json").read_text())
    pieces, _ = PieceTokenizer.build(hf, spec, _hf(hf))
    system = "system\n" + paragraph(random.Random(3), 6)  # a system message, > 256 characters
    assert len(system) >= 256
    for question in ("Clean?", "Quiet?", "Was the staff kind to you?"):
        text = f"<|im_start|>{system}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n"
        assert pieces.encode(text, False) == _hf(hf)(text, False)
    assert system in pieces._stretches  # kept once, reused by the later prompts
    assert pieces._stretches[system] == tuple(_hf(hf)(system, False))
