"""Typed results of the SDK, decoded from the router's wire structs (moep_router/messages.py),
and its one exception."""

from __future__ import annotations

import msgspec

from moep_router import messages
from moep_router.messages import ChatCompletionResponse, CompletionResponse, ScoreResponse, Usage

ScoreResult = ScoreResponse  # .scores [num_items][num_labels], label order as requested; .usage
CompletionResult = CompletionResponse  # OpenAI's text_completion: .choices, .usage
ChatResult = ChatCompletionResponse  # OpenAI's chat.completion: .choices[0].message, .usage


class MoepError(Exception):
    """The server refused or failed a request; `status` is its HTTP status, `message` its words,
    `request_id` the router's id of the request (its X-Request-Id: the router's log and the
    worker's rid name it), None where the answer carried none."""

    def __init__(self, status: int, message: str, request_id: str | None = None) -> None:
        super().__init__(f"{status}: {message}" + (f" (request {request_id})" if request_id
                                                    else ""))
        self.status = status
        self.message = message
        self.request_id = request_id


class Classification(msgspec.Struct, frozen=True):
    index: int  # position in the request's input list
    label: str | None  # argmax label (single-label); None for multi-label
    labels: list[str]  # labels with P >= 0.5 (multi-label); [label] otherwise
    probs: list[float]  # per label

    @classmethod
    def from_wire(cls, c: messages.Classification) -> Classification:
        labels = c.labels if c.labels is not None else [c.label]
        return cls(c.index, c.label, labels, c.probs)


class ClassifyResult(msgspec.Struct, frozen=True):
    data: list[Classification]
    usage: Usage


class RerankHit(msgspec.Struct, frozen=True):
    index: int  # position in the request's documents
    relevance_score: float  # P(relevant)
    document: str | None  # the text, when return_documents was set

    @classmethod
    def from_wire(cls, h: messages.RerankHit) -> RerankHit:
        return cls(h.index, h.relevance_score, h.document.text if h.document else None)


class RerankResult(msgspec.Struct, frozen=True):
    results: list[RerankHit]  # best first, at most top_n
    usage: Usage


class GenerateResult(msgspec.Struct, frozen=True):
    raw: dict | list  # SGLang's /generate reply (meta_info carries prompt/cached tokens, flops)


def parse_result(kind: str, raw: bytes):
    """The result of a 200 reply's body; raises msgspec.ValidationError if it does not fit."""
    return _FROM_WIRE[kind](messages.decode_response(kind, raw))


def error_message(raw: bytes) -> str:
    """The words of an error body: the router's ErrorResponse, SGLang's, FastAPI's {detail},
    or whatever text came back."""
    try:
        return messages.decode_error(raw).message
    except msgspec.DecodeError:
        pass
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return raw.decode(errors="replace") or "(empty body)"
    return str(body.get("detail") or body) if isinstance(body, dict) else str(body)


def _classify(r: messages.ClassifyResponse) -> ClassifyResult:
    return ClassifyResult([Classification.from_wire(c) for c in r.data], r.usage)


def _rerank(r: messages.RerankResponse) -> RerankResult:
    return RerankResult([RerankHit.from_wire(h) for h in r.results], r.usage)


_FROM_WIRE = {"score": lambda r: r, "classify": _classify, "rerank": _rerank,
              "generate": GenerateResult, "completions": lambda r: r, "chat": lambda r: r}
