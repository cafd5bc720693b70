"""Seeded benchmark workloads, built from the project's generated text.

Every request is one prefill-only scoring call: a shared part (`query`, the prefix other requests
may share) and a unique part (`item`), scored on single-token labels.

- `table2`: a scaled-down mix shaped like Table 2 of the MoE-Prefill paper: six task families
  with their context-length ranges (scaled by `length_scale`) and prefix-sharing levels.
- `recommendation`: a long user-profile prefix and many candidate items per user.
- `synthetic`: the paper's no-sharing sweep, fixed prompt length, all prompts distinct.
- `shared_prefix`: shaped like llm-d's shared-prefix benchmark: groups sharing a long system
  prompt, several users per group each with a long question of their own, Poisson arrivals at
  rising rates (the only open-loop workload: each request carries its send time).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from moep_sglang.models.corpus import LABEL_WORDS, SUBJECTS, paragraph, sentence

WORDS_PER_SENTENCE = 13  # the corpus's sentences average ~13 tokens with this tokenizer


@dataclass(frozen=True)
class BenchRequest:
    family: str  # task family
    group: int  # requests of one group share `query` (the reusable prefix)
    query: str  # shared prefix text
    item: str  # unique suffix text
    labels: tuple[str, ...]  # label words (single tokens)
    arrival_s: float | None = None  # open-loop send time from the run's start; None: closed loop


@dataclass(frozen=True)
class Family:
    name: str  # the paper's task family
    context: tuple[int, int]  # prompt tokens (min, max) in the paper
    num_requests: int  # requests at scale 1.0 (the paper's count / 40)
    per_group: int  # requests sharing one prefix (1: no sharing)
    labels: tuple[str, ...]  # answer labels


TABLE2 = (
    Family("moral_reasoning", (100, 200), 600, 12, (" right", " wrong")),
    Family("multiple_choice", (50, 500), 600, 1, (" A", " B", " C", " D")),
    Family("binary_qa", (200, 600), 300, 2, (" yes", " no")),
    Family("sentiment", (300, 2000), 300, 1, (" positive", " negative")),
    Family("long_document_qa", (4000, 12000), 30, 10, (" A", " B", " C", " D")),
    Family("document_classification", (6000, 128000), 15, 3, (" yes", " no")),
)


def table2(seed: int = 0, scale: float = 1.0, length_scale: float = 0.25,
           max_len: int = 3500) -> list[BenchRequest]:
    """~1.8K requests at scale 1; lengths x length_scale, capped at max_len tokens."""
    rng = random.Random(seed)
    out: list[BenchRequest] = []
    for fam in TABLE2:
        n = max(fam.per_group, round(fam.num_requests * scale))
        lo, hi = (max(16, min(max_len, int(x * length_scale))) for x in fam.context)
        for g in range(n // fam.per_group):
            total = rng.randint(lo, hi)
            shared = total - 24 if fam.per_group > 1 else 16  # unique part ~24 tokens
            query = _text(rng, shared, header=f"Task: {fam.name.replace('_', ' ')}.")
            for _ in range(fam.per_group):
                item = _text(rng, 24 if fam.per_group > 1 else total - 16)
                out.append(BenchRequest(fam.name, len(out), query, item + " Answer:",
                                        fam.labels))
    return _shuffled_groups(rng, out)


def recommendation(seed: int = 0, num_users: int = 40, items_per_user: int = 20,
                   profile_tokens: int = 1500) -> list[BenchRequest]:
    rng = random.Random(seed)
    out = []
    for u in range(num_users):
        profile = _text(rng, profile_tokens, header=f"User profile {u}:")
        for _ in range(items_per_user):
            item = f" Candidate: {_text(rng, 30)} Will the user like it? Answer:"
            out.append(BenchRequest("recommendation", u, profile, item, (" yes", " no")))
    return _shuffled_groups(rng, out)


def synthetic(seed: int = 0, prompt_tokens: int = 1024, num_requests: int = 200
              ) -> list[BenchRequest]:
    rng = random.Random(seed)
    return [BenchRequest("synthetic", i, _text(rng, prompt_tokens - 8, header=f"#{i}"),
                         " Answer:", (" yes", " no")) for i in range(num_requests)]


def shared_prefix(seed: int = 0, num_groups: int = 8, users_per_group: int = 24,
                  prefix_tokens: int = 1200, suffix_tokens: int = 400,
                  rates: tuple[float, ...] = (4.0, 8.0, 16.0)) -> list[BenchRequest]:
    """Shaped like llm-d's shared-prefix benchmark (inference-perf `shared_prefix` data, its
    stages of rising request rates), scaled to the CPU workers' context: `num_groups` long
    system prompts, each shared by `users_per_group` users who each send their own long
    question, Poisson arrivals in len(rates) equal stages of rising rate (requests/s)."""
    rng = random.Random(seed)
    out = []
    for g in range(num_groups):
        prefix = _text(rng, prefix_tokens, header=f"System prompt {g}:")
        for _ in range(users_per_group):
            out.append(BenchRequest("shared_prefix", g, prefix,
                                    f" User: {_text(rng, suffix_tokens)} Relevant? Answer:",
                                    (" yes", " no")))
    out = _shuffled_groups(rng, out)
    return [replace(r, arrival_s=t) for r, t in zip(out, poisson_arrivals(rng, len(out), rates))]


def poisson_arrivals(rng: random.Random, n: int, rates: tuple[float, ...]) -> list[float]:
    """n send times: len(rates) consecutive stages of n / len(rates) requests each, stage k a
    Poisson process of rates[k] requests per second (exponential gaps)."""
    times, t = [], 0.0
    per_stage = -(-n // len(rates))
    for i in range(n):
        t += rng.expovariate(rates[min(i // per_stage, len(rates) - 1)])
        times.append(t)
    return times


WORKLOADS = {"table2": table2, "recommendation": recommendation, "synthetic": synthetic,
             "shared_prefix": shared_prefix}


def ideal_cached_tokens(requests: list[BenchRequest], prefix_tokens: dict[int, int]) -> int:
    """Every shared prefix prefilled exactly once: its other uses are all cache hits.

    `prefix_tokens` maps a request index to its shared-prefix length in tokens.
    """
    seen: set[str] = set()
    total = 0
    for i, r in enumerate(requests):
        if r.query in seen:
            total += prefix_tokens[i]
        seen.add(r.query)
    return total


def _text(rng: random.Random, tokens: int, header: str = "") -> str:
    num_sentences = max(1, tokens // WORDS_PER_SENTENCE)
    body = paragraph(rng, num_sentences)
    return f"{header} {body}" if header else f" {body}"


def _shuffled_groups(rng: random.Random, reqs: list[BenchRequest]) -> list[BenchRequest]:
    """Arrival order: shuffled, so requests of a group are spread over the run."""
    reqs = list(reqs)
    rng.shuffle(reqs)
    return reqs


__all__ = ["BenchRequest", "WORKLOADS", "table2", "recommendation", "synthetic", "shared_prefix",
           "poisson_arrivals", "ideal_cached_tokens", "LABEL_WORDS", "SUBJECTS", "sentence"]
