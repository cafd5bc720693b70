"""Prometheus metrics of the router (served on /metrics).

With `--processes N` every process writes its metrics into $PROMETHEUS_MULTIPROC_DIR (set by
the supervisor before the processes start: prometheus_client's multiprocess mode) and /metrics
from any of them renders the sum: counters and histograms add up, the queue depth is summed
over live processes, and the per-worker gauges (set from the shared load board and this
process's exact index, the same in every process) show the most recent value.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATEST = "livemostrecent"  # per-worker gauges: whoever rendered last saw every process's load


class RouterMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("moep_router_requests_total", "Requests answered",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("moep_router_request_seconds", "Request latency",
                                 ["endpoint"], registry=r,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.route_seconds = Histogram("moep_router_route_seconds", "Routing decision time",
                                       registry=r, buckets=(1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3))
        self.prompt_tokens = Counter("moep_router_prompt_tokens_total", "Prompt tokens",
                                     registry=r)
        self.cached_tokens = Counter("moep_router_cached_tokens_total",
                                     "Prompt tokens served from worker caches", registry=r)
        self.flops = Counter("moep_router_flops_total", "True FLOPs computed by workers",
                             registry=r)
        self.retries = Counter("moep_router_retries_total",
                               "Requests retried on another worker after a failure", registry=r)
        self.split_requests = Counter("moep_router_split_requests_total",
                                      "Requests split into siblings over several workers",
                                      registry=r)
        self.rejected = Counter("moep_router_rejected_total",
                                "Requests refused for overload", ["reason"], registry=r)
        self.queue_depth = Gauge("moep_router_queue_depth",
                                 "Requests waiting for an unsaturated worker", registry=r,
                                 multiprocess_mode="livesum")
        self.kv_gaps = Counter("moep_router_kv_event_gaps_total",
                               "KV-event sequence gaps detected", ["worker"], registry=r)
        self.worker_outstanding = Gauge("moep_router_worker_outstanding_flops",
                                        "Predicted FLOPs in flight", ["worker"], registry=r,
                                        multiprocess_mode=LATEST)
        self.worker_inflight = Gauge("moep_router_worker_inflight", "Requests in flight",
                                     ["worker"], registry=r, multiprocess_mode=LATEST)
        self.worker_blocks = Gauge("moep_router_worker_cached_blocks",
                                   "Blocks in the worker's cache index", ["worker"], registry=r,
                                   multiprocess_mode=LATEST)
        self.worker_healthy = Gauge("moep_router_worker_healthy", "1 if healthy",
                                    ["worker"], registry=r, multiprocess_mode=LATEST)
        self.worker_threshold = Gauge("moep_router_worker_threshold_flops",
                                      "Saturation threshold T", ["worker"], registry=r,
                                      multiprocess_mode=LATEST)
        self.tokenize_cache = Counter("moep_router_tokenize_cache_lookups_total",
                                      "Long texts looked up in the tokenization cache",
                                      ["result"], registry=r)
        self.piece_checks = Counter("moep_router_piece_tokenizer_checks_total",
                                    "Texts of the piece tokenizer compared with HF's ids",
                                    ["result"], registry=r)
        self.piece_active = Gauge("moep_router_piece_tokenizer_active",
                                  "1 while short texts are tokenized through the piece cache",
                                  registry=r, multiprocess_mode="livemin")
        # How long the loop could not run (loop_watch.py): a late tick, a collection
        self.loop_lag = Histogram("moep_router_event_loop_lag_seconds",
                                  "How late a 10 ms tick of the request loop woke up", registry=r,
                                  buckets=(1e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, .01, .025, .05, .1,
                                           .25, .5, 1))
        self.gc_pause = Histogram("moep_router_gc_pause_seconds",
                                  "Wall time of each garbage collection", ["generation"],
                                  registry=r, buckets=(1e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, .01, .025,
                                                       .05, .1, .25, .5, 1))
        # (counter, label) -> the running count already added to that child (_catch_up)
        self._counted: dict[tuple[Counter, str], int] = {}
        # (endpoint, status) -> (its requests counter, its latency histogram), made on first use
        self._request_children: dict[tuple[str, int], tuple] = {}

    def request_done(self, endpoint: str, status: int, seconds: float) -> None:
        """One answered request: its count and latency. The labelled children are looked up
        once per (endpoint, status), not per request (labels() takes a lock and builds keys)."""
        children = self._request_children.get((endpoint, status))
        if children is None:
            children = self._request_children[endpoint, status] = (
                self.requests.labels(endpoint, str(status)), self.latency.labels(endpoint))
        children[0].inc()
        children[1].observe(seconds)

    def count_token_cache(self, token_cache) -> None:
        """Bring the lookup counters up to a tokenize.TokenCache's own counts (it keeps plain
        ints on the request path). Called on every render and every health-check round, so
        with --processes N a process that renders no /metrics itself lags one round at most."""
        self._catch_up(self.tokenize_cache, {"hit": token_cache.hits,
                                             "miss": token_cache.misses})

    def count_pieces(self, pieces) -> None:
        """The same for a bpe_pieces.PieceTokenizer's run-time comparisons with HF."""
        self._catch_up(self.piece_checks, {"same": pieces.checks - pieces.mismatches,
                                           "different": pieces.mismatches})
        self.piece_active.set(1 if pieces.active else 0)

    def _catch_up(self, counter: Counter, counts: dict[str, int]) -> None:
        """Add to each labelled child of counter what its running count (label -> count, kept
        as plain ints elsewhere) gained since the last call."""
        for label, count in counts.items():
            counter.labels(label).inc(count - self._counted.get((counter, label), 0))
            self._counted[counter, label] = count

    def render(self, workers, token_cache=None, pieces=None) -> bytes:
        """The exposition text; workers' gauges, the tokenization cache's counts (a
        tokenize.TokenCache or None) and the piece tokenizer's (or None) are read now."""
        if token_cache is not None:
            self.count_token_cache(token_cache)
        if pieces is not None:
            self.count_pieces(pieces)
        for w in workers:
            inflight, flops = w.load()  # summed over the router's processes
            self.worker_outstanding.labels(w.worker_id).set(flops)
            self.worker_inflight.labels(w.worker_id).set(inflight)
            self.worker_blocks.labels(w.worker_id).set(w.index.num_blocks)
            self.worker_healthy.labels(w.worker_id).set(1 if w.healthy else 0)
            self.worker_threshold.labels(w.worker_id).set(w.threshold_flops)
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            every = CollectorRegistry()
            multiprocess.MultiProcessCollector(every)
            return generate_latest(every)
        return generate_latest(self.registry)
