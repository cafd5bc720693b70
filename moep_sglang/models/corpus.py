"""Deterministic English-like text the project generates itself (no datasets are downloaded).

The same generator feeds the tokenizer trainer and the demo/bench workloads, so the words the
workloads use (labels such as " yes", " positive", " A") are single tokens of the tokenizer.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

SUBJECTS = (
    "the customer", "my friend", "the reviewer", "a student", "the doctor", "our team",
    "the manager", "a traveler", "the author", "the engineer", "my neighbor", "the child",
    "the teacher", "a farmer", "the pilot", "the chef", "the lawyer", "a scientist",
)
VERBS = (
    "said", "thought", "wrote", "found", "noticed", "believed", "argued", "explained",
    "reported", "claimed", "decided", "learned", "promised", "remembered", "suggested",
)
ADJECTIVES = (
    "good", "bad", "great", "terrible", "slow", "fast", "cheap", "expensive", "kind", "rude",
    "clean", "dirty", "quiet", "loud", "simple", "complex", "honest", "unfair", "safe", "risky",
)
NOUNS = (
    "movie", "book", "hotel", "service", "product", "meal", "phone", "car", "story", "plan",
    "answer", "question", "decision", "system", "report", "model", "market", "city", "river",
    "song", "game", "paper", "theory", "experiment", "garden", "house", "school", "market",
)
CONNECTIVES = ("because", "although", "while", "so", "and", "but", "since", "after", "before")
LABEL_WORDS = (
    "yes", "no", "positive", "negative", "neutral", "true", "false", "right", "wrong",
    "A", "B", "C", "D", "relevant", "irrelevant",
)
TASK_LINES = (
    "Question: Is the statement true? Answer:",
    "Review sentiment (positive or negative):",
    "Is this action morally right or wrong? Answer:",
    "Choose the correct option (A, B, C or D). Answer:",
    "Is the document relevant to the query? Answer:",
)


def sentence(rng: random.Random) -> str:
    """One sentence: subject verb that the adjective noun was adjective, connective ..."""
    parts = [
        rng.choice(SUBJECTS).capitalize(), rng.choice(VERBS), "that the",
        rng.choice(ADJECTIVES), rng.choice(NOUNS), "was", rng.choice(ADJECTIVES),
    ]
    if rng.random() < 0.5:
        parts += [rng.choice(CONNECTIVES), rng.choice(SUBJECTS), rng.choice(VERBS), "so"]
    return " ".join(parts) + "."


def paragraph(rng: random.Random, num_sentences: int) -> str:
    return " ".join(sentence(rng) for _ in range(num_sentences))


def labelled_example(rng: random.Random) -> str:
    """A paragraph, a task line and a label word: teaches the tokenizer ' yes', ' A', ..."""
    return f"{paragraph(rng, rng.randint(1, 4))} {rng.choice(TASK_LINES)} {rng.choice(LABEL_WORDS)}"


def corpus(seed: int, num_lines: int) -> Iterator[str]:
    """`num_lines` lines of training text, identical for the same seed."""
    rng = random.Random(seed)
    for _ in range(num_lines):
        yield labelled_example(rng)
