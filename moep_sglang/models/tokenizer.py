"""A byte-level BPE tokenizer trained locally on the project's generated corpus."""

from __future__ import annotations

import json
from pathlib import Path

from moep_sglang.models.corpus import LABEL_WORDS, corpus

EOS_TOKEN = "<|endoftext|>"
SPECIAL_TOKENS = (EOS_TOKEN, "<|im_start|>", "<|im_end|>")
CORPUS_SEED = 1234
CORPUS_LINES = 20_000
MAX_VOCAB_SIZE = 4096  # an upper bound: the generated corpus saturates well below it
# ChatML, the format of Qwen's chat models (whose special tokens the vocabulary has): what
# /v1/chat/completions renders messages with, in the router and in SGLang's own server.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def train_tokenizer(out_dir: Path, vocab_size: int = MAX_VOCAB_SIZE) -> int:
    """Train, check the label words are single tokens, write tokenizer files; return vocab size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(CORPUS_SEED, CORPUS_LINES), trainer=trainer)
    _check_label_words(tok)
    tok.save(str(out_dir / "tokenizer.json"))
    _write_tokenizer_config(out_dir)
    return tok.get_vocab_size()


def _check_label_words(tok) -> None:
    for word in LABEL_WORDS:
        ids = tok.encode(" " + word).ids
        if len(ids) != 1:
            raise RuntimeError(f"label word {word!r} is not a single token: {ids}")


def _write_tokenizer_config(out_dir: Path) -> None:
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,
        "bos_token": None,
        "unk_token": None,
        "model_max_length": 1_000_000,
        "add_bos_token": False,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    special = {"eos_token": EOS_TOKEN, "pad_token": EOS_TOKEN}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
