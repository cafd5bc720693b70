"""Typed results of the SDK, and its one exception."""

from __future__ import annotations

from dataclasses import dataclass


class MoepError(Exception):
    """The server refused or failed a request; `status` is its HTTP status, `message` its words."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int  # tokens prefilled
    cached_tokens: int  # of those, served from the worker's prefix cache
    flops: int  # true FLOPs computed (0 when the server does not report them)

    @classmethod
    def from_json(cls, u: dict | None) -> Usage:
        u = u or {}
        return cls(int(u.get("prompt_tokens", 0)), int(u.get("cached_tokens", 0)),
                   int(u.get("flops", 0)))


@dataclass(frozen=True)
class ScoreResult:
    scores: list[list[float]]  # [num_items][num_labels], label order as requested
    usage: Usage


@dataclass(frozen=True)
class Classification:
    index: int  # position in the request's input list
    label: str | None  # argmax label (single-label); None for multi-label
    labels: list[str]  # labels with P >= 0.5 (multi-label); [label] otherwise
    probs: list[float]  # per label


@dataclass(frozen=True)
class ClassifyResult:
    data: list[Classification]
    usage: Usage


@dataclass(frozen=True)
class RerankHit:
    index: int  # position in the request's documents
    relevance_score: float  # P(relevant)
    document: str | None  # the text, when return_documents was set


@dataclass(frozen=True)
class RerankResult:
    results: list[RerankHit]  # best first, at most top_n
    usage: Usage


@dataclass(frozen=True)
class GenerateResult:
    raw: dict | list  # SGLang's /generate reply (meta_info carries prompt/cached tokens, flops)


def parse_result(kind: str, body) -> object:
    return _PARSERS[kind](body)


def _score(b: dict) -> ScoreResult:
    return ScoreResult(b["scores"], Usage.from_json(b.get("usage")))


def _classify(b: dict) -> ClassifyResult:
    data = [Classification(d["index"], d.get("label"), d.get("labels") or [d.get("label")],
                           d["probs"]) for d in b["data"]]
    return ClassifyResult(data, Usage.from_json(b.get("usage")))


def _rerank(b: dict) -> RerankResult:
    hits = [RerankHit(r["index"], r["relevance_score"], (r.get("document") or {}).get("text"))
            for r in b["results"]]
    return RerankResult(hits, Usage.from_json(b.get("usage")))


_PARSERS = {"score": _score, "classify": _classify, "rerank": _rerank,
            "generate": GenerateResult}
