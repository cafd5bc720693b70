"""Seeded prefill-only workloads built from the project's generated text."""

from __future__ import annotations

import random
from dataclasses import dataclass

from moep_sglang.models.corpus import paragraph, sentence

QUESTIONS = (
    "Question: Is the first statement true? Answer:",
    "Question: Was the reviewer satisfied? Answer:",
    "Question: Is the tone of the text positive? Answer:",
    "Question: Does the text mention a decision? Answer:",
    "Question: Is the story morally right? Answer:",
    "Question: Would the author recommend it? Answer:",
    "Question: Is the report honest? Answer:",
    "Question: Is anything described as risky? Answer:",
)


@dataclass(frozen=True)
class ScoreItem:
    doc_id: int  # which shared document (prefix) this request reads
    query: str  # the shared prefix: the document
    item: str  # the per-request suffix: a question
    labels: tuple[str, ...]  # label words, each a single token (" yes", " no")


def shared_prefix_classification(
    seed: int, num_docs: int, questions_per_doc: int, doc_sentences: int = 12
) -> list[ScoreItem]:
    """`num_docs` documents, each asked `questions_per_doc` yes/no questions; shuffled."""
    rng = random.Random(seed)
    docs = [paragraph(rng, doc_sentences) for _ in range(num_docs)]
    out = [
        ScoreItem(d, docs[d], " " + _question(rng, q), (" yes", " no"))
        for d in range(num_docs)
        for q in range(questions_per_doc)
    ]
    rng.shuffle(out)
    return out


def _question(rng: random.Random, index: int) -> str:
    base = QUESTIONS[index % len(QUESTIONS)]
    return base if index < len(QUESTIONS) else f"{sentence(rng)} {base}"
