"""Every message that crosses a socket of the router, in one place.

KV events (SGLang worker -> router, ZMQ PUB/SUB): multipart (topic, seq: 8-byte big-endian,
payload: msgpack EventBatch [ts, [event, ...], dp_rank]); each event is an array whose first
element is its tag: ["BlockStored", block_hashes, parent_block_hash, token_ids, block_size,
lora_id, medium], ["BlockRemoved", block_hashes, medium], ["AllBlocksCleared"].
Replay (router -> worker ZMQ ROUTER at the replay endpoint): request (b"", start_seq: 8 bytes);
replies (b"", seq, payload) ... then (b"", END_SEQ, b"").

Responses (router -> client, HTTP and the fast path; the SDK decodes the same structs):
ScoreResponse, ClassifyResponse, RerankResponse (also Cohere's `id` and `meta`), each with a Usage;
ErrorResponse for 4xx/5xx.
/generate answers SGLang's own reply (a dict, or a list of them) untyped, plus meta_info.flops.
The OpenAI-shaped endpoints (openai_api.py) answer CompletionResponse, ChatCompletionResponse
(or ChatCompletionChunk events), ModelList, with a CompletionUsage.

SDK fast path (client DEALER -> router ROUTER): request frames
    [kind: 1 byte] [header: JSON object] [token ids: raw little-endian int32, one frame each]
and the reply: [KIND_REPLY] [Reply as JSON]. Never pickle.

Worker status (worker -> router, HTTP GET /server_info): internal_states[*].moep, a WorkerReport.

Readers tolerate unknown fields (forbid_unknown_fields stays off): the SDK also reads bare SGLang
workers' replies, which carry more (completion_tokens, pooled_hidden_states), and a newer router
or worker may add fields. Structs are encoded with `encode`, decoded with the decode_* helpers.
"""

from __future__ import annotations

import sys
from typing import Any

import msgspec

END_SEQ = (-1).to_bytes(8, "big", signed=True)  # SGLang's end-of-replay marker


class BlockStored(msgspec.Struct, array_like=True, tag=True, frozen=True):
    """Blocks cached on the worker, parent first (SGLang 0.5.17 sends one block per event; a
    worker with the moep plugin one event per radix node, all its pages)."""
    block_hashes: list[int]  # the stored blocks, each the child of the one before
    parent_block_hash: int | None  # parent of the first block (None: a first block)
    token_ids: list[int]  # tokens of all blocks, concatenated
    block_size: int  # tokens per block (the worker's page size)
    lora_id: int | None = None
    medium: str | None = None  # "GPU" (SGLang's StorageMedium)

    kind = "BlockStored"


class BlockRemoved(msgspec.Struct, array_like=True, tag=True, frozen=True):
    """Blocks evicted on the worker."""
    block_hashes: list[int]
    medium: str | None = None

    kind = "BlockRemoved"


class AllBlocksCleared(msgspec.Struct, array_like=True, tag=True, frozen=True):
    """The worker's cache was flushed."""

    kind = "AllBlocksCleared"


KVEvent = BlockStored | BlockRemoved | AllBlocksCleared


class _EventBatch(msgspec.Struct, array_like=True, frozen=True):
    ts: float
    events: list[KVEvent]
    dp_rank: int | None = None


_typed_batch = msgspec.msgpack.Decoder(_EventBatch)  # tagged arrays straight into structs
_any_batch = msgspec.msgpack.Decoder()


class _RawEventBatch(msgspec.Struct, array_like=True, frozen=True):
    ts: float
    events: list[msgspec.Raw]  # each event's bytes, decoded one by one (decode_event)
    dp_rank: int | None = None


_raw_batch = msgspec.msgpack.Decoder(_RawEventBatch)
_one_event = msgspec.msgpack.Decoder(KVEvent)


def split_event_batch(payload: bytes) -> list[msgspec.Raw]:
    """The events of one batch as undecoded pieces (~0.1 us per event): a large batch can then be
    decoded and applied a slice at a time (kv_listener)."""
    return _raw_batch.decode(payload).events


def decode_event(raw: msgspec.Raw) -> KVEvent | None:
    """One piece of split_event_batch; None for an event kind this router does not know."""
    try:
        return _one_event.decode(raw)
    except msgspec.ValidationError:
        return _event(_any_batch.decode(raw))


def decode_event_batch(payload: bytes) -> list[KVEvent]:
    """The events of one batch. Decoded straight into the structs (no intermediate lists: the
    router decodes every token a worker caches, kv_apply.py); a batch holding an event kind this
    router does not know is decoded event by event, and the unknown events are skipped."""
    try:
        return _typed_batch.decode(payload).events
    except msgspec.ValidationError:
        batch = _any_batch.decode(payload)  # [ts, events, dp_rank]
        return [e for e in (_event(raw) for raw in batch[1]) if e is not None]


_EVENT_TYPES = {"BlockStored": BlockStored, "BlockRemoved": BlockRemoved,
                "AllBlocksCleared": AllBlocksCleared}


def _event(raw: list) -> KVEvent | None:
    cls = _EVENT_TYPES.get(raw[0]) if isinstance(raw, list) and raw else None
    if cls is None:
        return None  # future event kinds are ignored, not fatal
    return msgspec.convert(raw, cls)


# Responses (router -> client) ------------------------------------------------------------
class PromptTokensDetails(msgspec.Struct, frozen=True):
    cached_tokens: int = 0  # = Usage.cached_tokens, where OpenAI-style clients look for it


class Usage(msgspec.Struct, frozen=True):
    """Filled by the router's dispatcher (or a bare worker's /v1/score with the moep plugin).
    The defaults are what a bare SGLang reply leaves out."""
    prompt_tokens: int = 0  # tokens of every prompt prefilled
    total_tokens: int = 0  # = prompt_tokens (prefill only: nothing is generated)
    cached_tokens: int = 0  # of those, served from the worker's prefix cache
    prompt_tokens_details: PromptTokensDetails | None = None  # None from plain SGLang
    flops: int = 0  # true FLOPs computed, cache-discounted (cost.py); 0 from a bare worker


class ScoreResponse(msgspec.Struct, frozen=True):
    """/v1/score (SGLang's shape)."""
    scores: list[list[float]]  # [num_items][num_labels] probabilities, labels as requested
    model: str  # the served model's name (--model-name)
    usage: Usage = msgspec.field(default_factory=Usage)
    object: str = "scoring"


class Classification(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One entry of /v1/classify: `label` (single-label) or `labels` (multi_label), never both."""
    index: int  # position in the request's `input` list (0 with multi_label)
    label: str | None = None  # single-label: the argmax label
    labels: list[str] | None = None  # multi_label: every label with P(yes) >= 0.5
    probs: list[float]  # per label, in request order (multi_label: P(yes) of each)
    num_classes: int  # labels in the request


class ClassifyResponse(msgspec.Struct, frozen=True, kw_only=True):
    object: str = "list"
    model: str  # the served model's name
    data: list[Classification]  # one per input (one in all with multi_label)
    usage: Usage = msgspec.field(default_factory=Usage)


class RerankDocument(msgspec.Struct, frozen=True):
    text: str  # the document as the request gave it


class RerankHit(msgspec.Struct, frozen=True, omit_defaults=True):
    index: int  # position in the request's `documents`
    relevance_score: float  # P(yes) of the rerank prompt, renormalised over yes/no
    document: RerankDocument | None = None  # with return_documents only


class ApiVersion(msgspec.Struct, frozen=True):
    version: str  # "1" for /v1/rerank, "2" for /v2/rerank


class MetaTokens(msgspec.Struct, frozen=True):
    input_tokens: int = 0  # = Usage.prompt_tokens
    output_tokens: int = 0  # nothing is generated


class RerankMeta(msgspec.Struct, frozen=True):
    """Cohere's `meta`, where Cohere's clients look for the request's tokens."""
    api_version: ApiVersion = ApiVersion("1")
    tokens: MetaTokens = MetaTokens()
    cached_tokens: int = 0  # = Usage.cached_tokens


class RerankResponse(msgspec.Struct, frozen=True, kw_only=True):
    """/v1/rerank (Cohere v1 and Jina shaped) and /v2/rerank (Cohere v2: no `document`)."""
    id: str = ""  # a fresh UUID per request, as Cohere's
    model: str  # the served model's name
    results: list[RerankHit]  # best first, at most top_n
    usage: Usage = msgspec.field(default_factory=Usage)
    meta: RerankMeta = RerankMeta()


# OpenAI-shaped responses (/v1/completions, /v1/chat/completions, /v1/models) --------------
class CompletionUsage(msgspec.Struct, frozen=True):
    """OpenAI's usage, plus the router's cached_tokens and flops as in Usage."""
    prompt_tokens: int  # tokens of every prompt prefilled
    completion_tokens: int  # tokens generated: 0 or 1 per prompt
    total_tokens: int  # prompt_tokens + completion_tokens
    prompt_tokens_details: PromptTokensDetails | None = None  # cached_tokens, for OpenAI clients
    cached_tokens: int = 0  # of prompt_tokens, served from the worker's prefix cache
    flops: int = 0  # true FLOPs computed, cache-discounted


class CompletionLogprobs(msgspec.Struct, frozen=True):
    """The legacy completions' logprobs: one entry per token of the choice's text (the prompt's
    tokens first with echo; the first prompt token has no logprob)."""
    tokens: list[str]  # each token's text
    token_logprobs: list[float | None]  # log P(token | the tokens before it)
    top_logprobs: list[dict[str, float] | None]  # the `logprobs` likeliest, and the token itself
    text_offset: list[int]  # where each token starts in the choice's `text`


class CompletionChoice(msgspec.Struct, frozen=True):
    index: int  # position of the prompt in the request
    text: str  # the generated token's text (the prompt before it with echo)
    logprobs: CompletionLogprobs | None
    finish_reason: str | None  # "length", or "stop" when the token is an end of sequence


class CompletionResponse(msgspec.Struct, frozen=True, kw_only=True):
    """/v1/completions, and each event of its stream (usage only on the last, or none)."""
    id: str
    object: str = "text_completion"
    created: int  # unix seconds
    model: str
    choices: list[CompletionChoice]
    usage: CompletionUsage | None = None


class TopLogprob(msgspec.Struct, frozen=True):
    token: str  # the token's text, or `bytes:\\xNN...` for a piece of a character
    bytes: list[int] | None  # the token's exact bytes (None: a server that gives none)
    logprob: float


class ChatTokenLogprob(msgspec.Struct, frozen=True):
    token: str
    bytes: list[int] | None
    logprob: float
    top_logprobs: list[TopLogprob]  # the request's `top_logprobs` likeliest


class ChatLogprobs(msgspec.Struct, frozen=True):
    content: list[ChatTokenLogprob]  # one per generated token


class ChatMessage(msgspec.Struct, frozen=True):
    """A chat choice's `message`, or a stream event's `delta`."""
    content: str | None  # the generated token's text (the router's: never None)
    role: str = "assistant"


class ChatChoice(msgspec.Struct, frozen=True):
    index: int
    message: ChatMessage
    logprobs: ChatLogprobs | None
    finish_reason: str | None


class ChatChunkChoice(msgspec.Struct, frozen=True):
    """A choice of a stream event: ChatChoice with the message named `delta`."""
    index: int
    delta: ChatMessage  # the whole answer: one event carries the one token
    logprobs: ChatLogprobs | None
    finish_reason: str | None


class ChatCompletionResponse(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: CompletionUsage


class ChatCompletionChunk(msgspec.Struct, frozen=True, kw_only=True):
    """One event of a streamed /v1/chat/completions (usage only on the last, or none)."""
    id: str
    object: str = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: CompletionUsage | None = None


class ModelCard(msgspec.Struct, frozen=True, kw_only=True):
    id: str  # the name clients send as `model`
    object: str = "model"
    created: int  # when the router started, unix seconds
    owned_by: str = "moep-sglang"
    max_model_len: int | None = None  # the model's context, in tokens


class ModelList(msgspec.Struct, frozen=True):
    """GET /v1/models."""
    data: list[ModelCard]
    object: str = "list"


class AccessEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One line of the access log (--access-log): a prefill request the router answered."""
    time: float  # unix seconds, when the answer was ready
    request_id: str  # its X-Request-Id (request_ids.py)
    endpoint: str  # the path, e.g. /v1/score
    status: int  # HTTP status of the answer
    latency_ms: float  # from the body's arrival to the answer
    worker: str = ""  # the worker(s) that answered, comma-separated; "" when none did
    prompts: int = 0  # prompts prefilled
    prompt_tokens: int = 0
    cached_tokens: int = 0  # of those, served from the worker's prefix cache
    flops: int = 0  # true FLOPs computed (cost.py)
    error: str = ""  # what a 4xx/5xx said


class ErrorResponse(msgspec.Struct, frozen=True, kw_only=True):
    """Every 4xx/5xx of the router's front ends (and the shape of SGLang's own errors)."""
    object: str = "error"
    message: str  # what was wrong and how to fix it
    type: str = ""  # "invalid_request_error" | "overloaded" | "authentication_error"
    code: int = 0  # the HTTP status


Response = ScoreResponse | ClassifyResponse | RerankResponse


# Router status (GET /health, GET/POST/DELETE /workers) --------------------------------------
class RouterHealth(msgspec.Struct, frozen=True):
    """GET /health: 200 with status "ok", else 503 with the reason."""
    status: str  # "ok" | "syncing" | "admitting workers" | "no healthy worker"
    healthy_workers: int  # workers that routing may use
    workers: int  # workers registered
    kv_synced: bool  # every cache index has replayed its worker's events
    process: int  # which of the router's processes answered (--processes N)


class WorkerStatus(msgspec.Struct, frozen=True):
    """One worker as the answering router process knows it."""
    url: str
    kv_endpoint: str | None  # its KV-event publisher (None: no events)
    healthy: bool
    starting: bool  # added, awaiting its first health check
    threshold_flops: float  # saturation threshold T
    threshold_source: str  # "spec" | "worker" | "default"
    outstanding_flops: float  # predicted FLOPs in flight, every router process
    inflight: int  # requests in flight, every router process
    cached_blocks: int  # blocks in its cache index
    kv_event_gaps: int  # sequence gaps repaired
    failures: int  # requests that failed on it (this process)
    requests: int  # requests it answered (this process)


class WorkersReply(msgspec.Struct, frozen=True):
    """GET /workers, and POST/DELETE /workers after the change."""
    workers: list[WorkerStatus]


# SDK fast path ----------------------------------------------------------------------------
KIND_SCORE = b"\x01"  # header: /v1/score body without the token ids; frames: query, items...
KIND_GENERATE = b"\x02"  # header: /generate body without input_ids; frames: one prompt each
KIND_REPLY = b"\x10"  # then one frame: a Reply
FAST_PATH_KINDS = {KIND_SCORE: "score", KIND_GENERATE: "generate"}
_LITTLE = sys.byteorder == "little"


class Reply(msgspec.Struct, frozen=True):
    """The router's answer to one fast-path request."""
    status: int  # HTTP status the same request would have got
    body: msgspec.Raw  # the endpoint's response (or an ErrorResponse), already JSON
    request_id: int | str | None = None  # echoed from the request header (the SDK's counter)


def label_logprob_fields(label_token_ids) -> dict:
    """The /generate fields that make a prefill-only request a scoring one (what SGLang's
    /v1/score sends inside): the logprobs of `label_token_ids` at the prompt's last position,
    returned in meta_info.output_token_ids_logprobs."""
    return {"return_logprob": True, "logprob_start_len": -1,
            "token_ids_logprob": list(label_token_ids)}


def label_logprob_rows(meta_info: dict) -> list:
    """The label logprobs of a scoring /generate reply's meta_info (label_logprob_fields):
    one row per logprob position, [[logprob, token id, text], ...]. A reply without them (a
    worker that dropped the fields) raises RuntimeError instead of scoring nothing."""
    rows = meta_info.get("output_token_ids_logprobs")
    if not rows:
        raise RuntimeError("the worker's reply carries no label logprobs")
    return rows


def int32_frame(tokens: list[int]) -> bytes:
    import array

    a = array.array("i", tokens)
    if a.itemsize != 4:
        raise RuntimeError("int32 arrays are not 4 bytes on this platform")
    return a.tobytes() if _LITTLE else _swapped(a)


def frame_to_tokens(frame: bytes) -> list[int]:
    import array

    if len(frame) % 4:
        raise ValueError("token frame length is not a multiple of 4 bytes")
    a = array.array("i")
    a.frombytes(frame)
    if not _LITTLE:
        a.byteswap()
    return a.tolist()


def _swapped(a) -> bytes:
    b = a.__copy__()
    b.byteswap()
    return b.tobytes()


# Worker status (worker -> router) -----------------------------------------------------------
class WorkerReport(msgspec.Struct, frozen=True):
    """internal_states[*].moep of a worker's /server_info, written by the moep plugin
    (moep_sglang/plugin/asyncep_hooks.report_state), one per scheduler."""
    # The router reads only T; the rest stays untyped, so a figure the worker adds or changes
    # never costs the router its T.
    threshold_flops: float | None = None  # T, FLOPs per layer (AsyncEP's or --min-batch-flops)
    asyncep: dict[str, Any] | None = None  # GatherEngine.report(); None without AsyncEP
    batching: dict[str, Any] | None = None  # BatchPolicy.report(): batches held, recent batches
    memory: dict[str, Any] | None = None  # *_bytes of weights, expert shards, gather ring


class _SchedulerState(msgspec.Struct, frozen=True):
    moep: WorkerReport | None = None  # SGLang's other fields are skipped


class _ServerInfo(msgspec.Struct, frozen=True):
    internal_states: list[_SchedulerState] = msgspec.field(default_factory=list)


# Encoding and decoding ----------------------------------------------------------------------
_json_encoder = msgspec.json.Encoder()
_response_decoders = {
    "score": msgspec.json.Decoder(ScoreResponse),
    "classify": msgspec.json.Decoder(ClassifyResponse),
    "rerank": msgspec.json.Decoder(RerankResponse),
    "generate": msgspec.json.Decoder(),  # SGLang's reply, untyped
    "completions": msgspec.json.Decoder(CompletionResponse),
    "chat": msgspec.json.Decoder(ChatCompletionResponse),
}
_reply_decoder = msgspec.json.Decoder(Reply)
_error_decoder = msgspec.json.Decoder(ErrorResponse)
_server_info_decoder = msgspec.json.Decoder(_ServerInfo)


def encode(message) -> bytes:
    """JSON of any struct above (or of plain dicts and lists: /generate replies)."""
    return _json_encoder.encode(message)


def decode_response(kind: str, raw: bytes) -> Response | dict | list:
    """The 200 response of endpoint `kind` ("score", "classify", "rerank", "generate",
    "completions", "chat");
    raises msgspec.ValidationError naming the field that does not fit."""
    return _response_decoders[kind].decode(raw)


def decode_reply(raw: bytes) -> Reply:
    return _reply_decoder.decode(raw)


def decode_error(raw: bytes) -> ErrorResponse:
    return _error_decoder.decode(raw)


def decode_worker_reports(raw: bytes) -> list[WorkerReport]:
    """The moep report of each scheduler in a /server_info body (those without one left out)."""
    info = _server_info_decoder.decode(raw)
    return [s.moep for s in info.internal_states if s.moep is not None]
