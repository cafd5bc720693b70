"""RouterConfig: parsed once from the command line, frozen. `moep-router --help` lists it all."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlparse

from moep_router.pending import DEFAULT_SETTLE_S

DEFAULT_RERANK_TEMPLATE = (
    "Query: {query}\nDocument: {document}\nIs the document relevant to the query? Answer:"
)


@dataclass(frozen=True)
class WorkerSpec:
    url: str  # http://host:port of the SGLang server
    kv_endpoint: str | None = None  # tcp://host:port of its KV-event publisher (None: no index)
    replay_endpoint: str | None = None  # tcp://host:port of its replay socket (gap repair)
    threshold_flops: float | None = None  # saturation threshold T; None: the router default

    @classmethod
    def parse(cls, text: str) -> WorkerSpec:
        """`URL[,kv=tcp://H:P][,replay=tcp://H:P][,threshold=FLOPS]`.

        With kv= and no replay=, replay defaults to the kv port + 1 (what
        `moep-sglang launch_server --kv-events-port` publishes).
        """
        url, *opts = text.split(",")
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.port:
            raise ValueError(f"--worker {text!r}: expected http://HOST:PORT[,kv=tcp://HOST:PORT]")
        kv = dict(o.split("=", 1) for o in opts if "=" in o)
        unknown = set(kv) - {"kv", "replay", "threshold"} or [o for o in opts if "=" not in o]
        if unknown:
            raise ValueError(f"--worker {text!r}: unknown option(s) {sorted(unknown)}; "
                             "use kv=, replay=, threshold=")
        replay = kv.get("replay") or (_next_port(kv["kv"]) if "kv" in kv else None)
        threshold = float(kv["threshold"]) if "threshold" in kv else None
        return cls(url.rstrip("/"), kv.get("kv"), replay, threshold)

    def to_text(self) -> str:
        """The SPEC text that parse() reads back into this spec."""
        opts = [f"kv={self.kv_endpoint}"] if self.kv_endpoint else []
        if self.replay_endpoint:
            opts.append(f"replay={self.replay_endpoint}")
        if self.threshold_flops is not None:
            opts.append(f"threshold={self.threshold_flops!r}")
        return ",".join([self.url, *opts])


@dataclass(frozen=True)
class RouterConfig:
    model_path: Path = field(metadata={"help": "model directory: tokenizer.json and config.json"})
    workers: tuple[WorkerSpec, ...] = field(default=(), metadata={
        "help": "a worker: URL[,kv=tcp://H:P][,replay=tcp://H:P][,threshold=FLOPS]; repeat"})
    host: str = field(default="127.0.0.1", metadata={"help": "HTTP bind address"})
    port: int = field(default=8000, metadata={"help": "HTTP port"})
    zmq_port: int | None = field(default=None, metadata={
        "help": "ZMQ ROUTER port for the SDK fast path (default: off)"})
    policy: str = field(default="true_flops", metadata={
        "help": "true_flops | longest_prefix | cache_aware | least_load | round_robin"})
    threshold_flops: float = field(default=math.inf, metadata={
        "help": "saturation threshold T per worker when the worker reports none "
                "(outstanding FLOPs at which a worker stops taking requests)"})
    request_overhead_flops: float = field(default=0.0, metadata={
        "help": "fixed cost of one prompt, in FLOP-equivalents, added to the load the router "
                "predicts (not to reported FLOPs): short prompts cost more than their FLOPs"})
    max_inflight_per_worker: int = field(default=256, metadata={
        "help": "requests in flight per worker beyond which it takes no more (bounds memory)"})
    max_queue: int = field(default=4096, metadata={
        "help": "requests held centrally while every worker is saturated; beyond: 429"})
    max_items_per_request: int = field(default=4096, metadata={
        "help": "prompts one request may carry (/v1/score items, /v1/classify inputs or labels "
                "with multi_label, /v1/rerank documents, a /generate batch); beyond: 413"})
    split_min_items: int = field(default=32, metadata={
        "help": "a request of at least twice this many prompts whose shared prefix several "
                "healthy workers hold (cached or in flight; any worker when the prompts share "
                "nothing) is split into siblings of at least this many prompts, one per such "
                "worker, run in parallel and answered as one; 0: never split"})
    max_body_bytes: int = field(default=64 * 2**20, metadata={
        "help": "largest request body in bytes; beyond: 413"})
    processes: int = field(default=1, metadata={
        "help": "router processes sharing the port (SO_REUSEPORT), each with exact cache indexes "
                "of every worker and the in-flight load of all of them in shared memory"})
    tokenizer_threads: int = field(default=2, metadata={
        "help": "threads that parse and tokenize request bodies holding 2,048 or more characters "
                "of text, off the event loop (HF tokenizers releases the GIL); shorter ones are "
                "parsed on the loop; 0: all on the loop"})
    tokenize_cache_tokens: int = field(default=1_000_000, metadata={
        "help": "token ids kept of recently tokenized texts of 512 or more characters (a "
                "/v1/score query, a /v1/classify input, a text prompt), reused when the same "
                "text comes again, as a query scored against item after item does; about 40 "
                "bytes per token id; 0: off"})
    piece_tokenizer: str = field(default="auto", metadata={
        "help": "auto: short texts on the request loop are tokenized through a cache of "
                "pre-tokenized pieces, HF's own BPE for each new piece (about a third of the "
                "cost), where the tokenizer is byte-level BPE split by regexes (GPT-2, Qwen, "
                "Llama-3) and agrees with HF on a probe corpus at start; every 1,000th text is "
                "compared with HF, and a difference turns it off; off: HF for every text"})
    pending_settle_s: float = field(default=DEFAULT_SETTLE_S, metadata={
        "help": "seconds a finished request's prefix still counts as cached on its worker when "
                "the worker's KV events have not indexed it yet (they can arrive after the "
                "answer); 0: only while the request is in flight"})
    max_retries: int = field(default=2, metadata={
        "help": "other workers tried when a worker fails mid-request"})
    request_timeout_s: float = field(default=600.0, metadata={
        "help": "seconds a worker may take for one request before it is considered failed"})
    health_interval_s: float = field(default=2.0, metadata={"help": "seconds between health checks"})
    k8s_selector: str | None = field(default=None, metadata={
        "help": "discover workers from the Kubernetes API: pods matching this label selector "
                "(ports from their moep.io/* annotations); in a cluster, with its service account"})
    k8s_namespace: str | None = field(default=None, metadata={
        "help": "namespace of the worker pods (default: the router's own)"})
    k8s_api: str | None = field(default=None, metadata={
        "help": "Kubernetes API URL (default: the in-cluster service)"})
    api_key: str | None = field(default=None, metadata={
        "help": "require `Authorization: Bearer KEY` on every request (except /health, /metrics)"})
    rerank_template: str = field(default=DEFAULT_RERANK_TEMPLATE, metadata={
        "help": "prompt of /v1/rerank and /v2/rerank; {query} and {document} are filled in"})
    served_model_name: str | None = field(default=None, metadata={
        "help": "the `model` name clients may send (default: the model directory's name)"})
    access_log: str | None = field(default=None, metadata={
        "help": "write one JSON line per prefill request answered (time, request id, endpoint, "
                "status, latency, worker, prompts, tokens, cached tokens, FLOPs, error) to this "
                "file, - for stdout (default: off)"})
    chat_template: str | None = field(default=None, metadata={
        "help": "Jinja chat template file of /v1/chat/completions (default: the model's own, "
                "from tokenizer_config.json or chat_template.jinja)"})

    def __post_init__(self) -> None:
        from moep_router.policies import POLICY_NAMES

        if self.policy not in POLICY_NAMES:
            raise ValueError(f"--policy {self.policy!r}: choose one of {', '.join(POLICY_NAMES)}")
        if not (self.model_path / "tokenizer.json").exists():
            raise ValueError(f"--model-path {self.model_path}: no tokenizer.json there")
        if not (self.model_path / "config.json").exists():
            raise ValueError(f"--model-path {self.model_path}: no config.json there")
        if self.max_queue < 0 or self.max_retries < 0:
            raise ValueError("--max-queue and --max-retries must be >= 0")
        if self.max_inflight_per_worker < 1:
            raise ValueError("--max-inflight-per-worker must be >= 1")
        if self.max_items_per_request < 1:
            raise ValueError("--max-items-per-request must be >= 1")
        if self.split_min_items < 0:
            raise ValueError("--split-min-items must be >= 0 (0: never split)")
        if not 1 <= self.processes <= 64:
            raise ValueError("--processes must be between 1 and 64")
        if self.tokenize_cache_tokens < 0:
            raise ValueError("--tokenize-cache-tokens must be >= 0 (0: off)")
        if self.piece_tokenizer not in ("auto", "off"):
            raise ValueError(f"--piece-tokenizer {self.piece_tokenizer!r}: choose auto or off")
        if self.tokenizer_threads < 0:
            raise ValueError("--tokenizer-threads must be >= 0")
        if self.max_body_bytes < 1024:
            raise ValueError("--max-body-bytes must be >= 1024")
        if self.request_overhead_flops < 0:
            raise ValueError("--request-overhead-flops must be >= 0")
        if self.pending_settle_s < 0:
            raise ValueError("--pending-settle-s must be >= 0")
        if self.threshold_flops <= 0:
            raise ValueError("--threshold-flops must be > 0")
        if self.chat_template is not None and not Path(self.chat_template).is_file():
            raise ValueError(f"--chat-template {self.chat_template}: no such file")

    @property
    def model_name(self) -> str:
        return self.served_model_name or self.model_path.name


def parse_router_args(argv: list[str]) -> RouterConfig:
    parser = argparse.ArgumentParser(
        prog="moep-router",
        description="Prefix- and true-FLOPs-aware router for prefill-only requests to SGLang "
        "workers started with `moep-sglang launch_server`.")
    for f in fields(RouterConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "workers":
            parser.add_argument("--worker", dest="workers", action="append", default=[],
                                metavar="SPEC", type=_worker_arg, help=f.metadata["help"])
            parser.add_argument("--workers-file", type=Path, default=None, metavar="PATH",
                                help="more workers: one SPEC per line (# comments allowed)")
        elif f.name == "model_path":
            parser.add_argument(flag, required=True, type=Path, help=f.metadata["help"])
        else:
            kind = {"int": int, "float": float}.get(str(f.type).split(" ")[0], str)
            parser.add_argument(flag, type=kind, default=f.default, help=f.metadata["help"]
                                + (f" (default: {f.default})" if f.default is not None else ""))
    args = vars(parser.parse_args(argv))
    try:
        args["workers"] = tuple(args["workers"]) + _workers_file(args.pop("workers_file"))
        return RouterConfig(**args)
    except ValueError as exc:
        parser.error(str(exc))


def _worker_arg(text: str) -> WorkerSpec:
    try:
        return WorkerSpec.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _workers_file(path: Path | None) -> tuple[WorkerSpec, ...]:
    if path is None:
        return ()
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ValueError(f"--workers-file {path}: {exc.strerror}") from exc
    specs = []
    for n, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if line:
            try:
                specs.append(WorkerSpec.parse(line))
            except ValueError as exc:
                raise ValueError(f"--workers-file {path}:{n}: {exc}") from exc
    return tuple(specs)


def _next_port(endpoint: str) -> str:
    base, port = endpoint.rsplit(":", 1)
    return f"{base}:{int(port) + 1}"
