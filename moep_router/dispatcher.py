"""Admit -> route -> forward -> relay, for every request of every front end.

A request is answered exactly once: a worker that fails (connection lost, 5xx, timeout) is marked
unhealthy and the request is retried on another worker (prefill is idempotent), up to
`max_retries`; a worker's own 4xx goes back to the client. While every worker is saturated the
request waits in a bounded central queue (beyond it: 429 with Retry-After). A request of many
prompts whose shared prefix several workers hold is split into siblings (split_job), each routed,
retried and answered on its own, then merged in prompt order into one answer; if any sibling
fails for good, the request fails.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass

import orjson

from moep_router.config import RouterConfig
from moep_router.cost import CostModel
from moep_router.jobs import BadRequest, Job
from moep_router.messages import PromptTokensDetails, Usage
from moep_router.metrics import RouterMetrics
from moep_router.policies.base import Policy, RouteParams
from moep_router.request_ids import worker_rid
from moep_router.worker_http import WorkerClient
from moep_router.workers import WorkerRegistry, WorkerState

logger = logging.getLogger("moep_router")


class Overloaded(Exception):
    def __init__(self, message: str, status: int, retry_after_s: int) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


class WorkerFailure(Exception):
    pass


@dataclass(frozen=True)
class DispatchResult:
    """What the worker answered, with the usage the router counted; each front end shapes it
    into its endpoint's response (endpoints.shape_response)."""
    job: Job
    raw: list[dict]  # the worker's reply per prompt (SGLang's /generate objects)
    usage: Usage  # what the router counted (the `usage` of every response)
    worker_id: str  # who answered

    @property
    def metas(self) -> list[dict]:
        return [r.get("meta_info", {}) for r in self.raw]


def split_job(job: Job, holders: int, min_items: int) -> list[Job]:
    """The siblings of a job whose shared prefix `holders` workers hold.

    With n prompts and m = min_items: k = min(holders, floor(n / m)) siblings when k >= 2 (else
    the job itself), each a contiguous run of floor(n / k) or ceil(n / k) prompts in order. Each
    sibling still shares the job's prefix, so a worker that already holds it prefills only the
    items, and one that does not prefills it once for its whole sibling."""
    n = len(job.prompts)
    k = min(holders, n // min_items) if min_items > 0 else 1
    if k < 2:
        return [job]
    bounds = [n * i // k for i in range(k + 1)]
    return [dataclasses.replace(job, prompts=job.prompts[a:b])
            for a, b in zip(bounds, bounds[1:])]


class Dispatcher:
    def __init__(self, config: RouterConfig, registry: WorkerRegistry, policy: Policy,
                 cost: CostModel, metrics: RouterMetrics) -> None:
        self.config = config
        self.registry = registry
        self.policy = policy
        self.cost = cost
        self.metrics = metrics
        self._freed = asyncio.Condition()
        self._num_waiting = 0
        self._client: WorkerClient | None = None

    async def start(self) -> None:
        self._client = WorkerClient(self.config.request_timeout_s)

    async def close(self) -> None:
        if self._client:
            self._client.close()

    # Public API ---------------------------------------------------------------------------
    async def run(self, job: Job, request_id: str = "") -> DispatchResult:
        """Route the job (split among the workers holding its prefix, where worth it) and
        return its replies. request_id (request_ids.py) names it in the log and starts the
        rid of each worker request; "" leaves the rids to SGLang."""
        siblings = split_job(job, self._holders(job), self.config.split_min_items)
        if len(siblings) == 1:
            return await self._run_one(job, request_id)
        self.metrics.split_requests.inc()
        parts = await asyncio.gather(*(self._run_one(s, request_id) for s in siblings))
        raw = [r for part in parts for r in part.raw]
        usage = _sum_usage([p.usage for p in parts])
        return DispatchResult(job, raw, usage, ",".join(p.worker_id for p in parts))

    def _holders(self, job: Job) -> int:
        """Healthy workers holding the job's shared prefix (cached, or routed and in flight)."""
        m = self.config.split_min_items
        if not m or len(job.prompts) < 2 * m:
            return 1  # splitting off, or too few prompts to split: skip the lookups
        key = job.routing_key
        return sum(1 for w in self.registry.healthy() if w.match_len(key) >= job.prefix_len)

    async def _run_one(self, job: Job, request_id: str) -> DispatchResult:
        tried: set[str] = set()
        while True:
            worker = await self._admit(job, tried)
            predicted = self._predict_flops(worker, job)
            self._reserve(worker, job, predicted)
            try:
                raw = await self._forward(worker, job, request_id)
            except WorkerFailure as exc:
                self._fail(worker, exc)
                tried.add(worker.worker_id)
                again = len(tried) <= self.config.max_retries
                logger.warning("request %s: %s; %s", request_id or "(fast path)", exc,
                               "trying another worker" if again else "giving up")
                if not again:
                    raise Overloaded(f"request failed on {len(tried)} workers; last: {exc}",
                                     503, 5) from exc
                self.metrics.retries.inc()
                continue
            finally:
                await self._release(worker, job, predicted)
            worker.request_answered()
            return DispatchResult(job, raw, self._usage(job, raw), worker.worker_id)

    @property
    def num_waiting(self) -> int:
        return self._num_waiting

    async def wake(self) -> None:
        async with self._freed:
            self._freed.notify_all()

    # Admission ------------------------------------------------------------------------------
    async def _admit(self, job: Job, tried: set[str]) -> WorkerState:
        worker = self._route(job, tried)
        if worker is not None:
            return worker
        if self._num_waiting >= self.config.max_queue:
            self.metrics.rejected.labels("queue_full").inc()
            raise Overloaded(f"all workers saturated and {self._num_waiting} requests queued "
                             f"(--max-queue {self.config.max_queue}); retry later", 429, 1)
        self._num_waiting += 1
        self.metrics.queue_depth.set(self._num_waiting)
        try:
            async with self._freed:
                while (worker := self._route(job, tried)) is None:
                    await self._wait_freed()
            return worker
        finally:
            self._num_waiting -= 1
            self.metrics.queue_depth.set(self._num_waiting)

    async def _wait_freed(self) -> None:
        # Also re-check health; with --processes N, the other processes' releases wake no one
        # here, so look again soon.
        timeout = 1.0 if self.registry.board is None else 0.05
        try:
            await asyncio.wait_for(self._freed.wait(), timeout=timeout)
        except asyncio.TimeoutError:
            pass

    def _route(self, job: Job, tried: set[str]) -> WorkerState | None:
        candidates = [w for w in self.registry.healthy() if w.worker_id not in tried]
        if not candidates:
            if not self.registry.healthy():
                if self.registry.any_starting():
                    return None  # queue until its first health check admits it (or fails)
                raise Overloaded("no healthy worker", 503, 2)
            raise Overloaded(f"request failed on every worker ({len(tried)})", 503, 2)
        t0 = time.perf_counter()
        key = job.routing_key
        price = self._pricer(job)
        views = (w.view(key, price) for w in candidates)  # load read once per worker
        open_ = tuple(v for v in views if v.num_inflight < self.config.max_inflight_per_worker)
        result = self.policy.route(RouteParams(key.tokens, open_))
        self.metrics.route_seconds.observe(time.perf_counter() - t0)
        return self.registry.get(result.worker_id) if result.worker_id else None

    # Bookkeeping ----------------------------------------------------------------------------
    def _pricer(self, job: Job):
        """_job_flops(job, m) as a function of m, computed once per distinct m (most workers
        of a request share the same match, often 0)."""
        prices: dict[int, float] = {}

        def price(match: int) -> float:
            flops = prices.get(match)
            if flops is None:
                flops = prices[match] = self._job_flops(job, match)
            return flops

        return price

    def _job_flops(self, job: Job, match: int, later_cached=None) -> float:
        """Predicted load of the job on a worker caching `match` tokens of its routing key.

        The prompts after the first find the shared prefix cached by the first; later_cached(p)
        says how many tokens of such a prompt are cached (default: the shared prefix)."""
        first = self.cost.flops(len(job.prompts[0]), match)
        overhead = self.config.request_overhead_flops * len(job.prompts)
        if len(job.prompts) == 1:
            return float(first + overhead)
        if later_cached is None:
            shared = max(match, job.prefix_len)
            later_cached = lambda p: shared  # noqa: E731
        rest = sum(self.cost.flops(len(p), later_cached(p)) for p in job.prompts[1:])
        return float(first + rest + overhead)

    def _predict_flops(self, worker: WorkerState, job: Job) -> float:
        """As _job_flops, with the worker's own index consulted for every later prompt."""
        return self._job_flops(job, worker.match_len(job.routing_key),
                               lambda p: max(worker.index.match_len(p), job.prefix_len))

    def _reserve(self, worker: WorkerState, job: Job, predicted: float) -> None:
        worker.reserve(job.routing_key, predicted)
        self.policy.on_routed(worker.worker_id, job.routing_key.tokens)

    async def _release(self, worker: WorkerState, job: Job, predicted: float) -> None:
        worker.release(job.routing_key, predicted)
        if self._num_waiting:  # only queued requests wait on _freed: none, nothing to wake
            await self.wake()

    def _fail(self, worker: WorkerState, exc: Exception) -> None:
        worker.request_failed()

    # Forwarding -----------------------------------------------------------------------------
    async def _forward(self, worker: WorkerState, job: Job, request_id: str) -> list[dict]:
        body = job.generate_body()
        if request_id:
            body.setdefault("rid", worker_rid(request_id))  # a /generate's own rid goes as sent
        try:
            reply = await self._client.post(worker.spec.url, "/generate", orjson.dumps(body))
        except OSError as exc:  # connection refused or lost, bad reply, timeout
            raise WorkerFailure(f"{worker.worker_id}: {type(exc).__name__}: {exc}") from exc
        raw, status = reply.body, reply.status
        if status >= 500:
            raise WorkerFailure(f"{worker.worker_id} answered {status}: {raw[:200]!r}")
        body = orjson.loads(raw) if raw else {}
        if status >= 400:
            raise BadRequest(worker_message(body), status=status)
        return body if isinstance(body, list) else [body]

    def _usage(self, job: Job, raw: list[dict]) -> Usage:
        """Tokens, cached tokens and FLOPs as computed (cache-discounted), counted in metrics;
        each prompt's own FLOPs go into its reply's meta_info.flops."""
        prompt = cached = flops = 0
        for p, r in zip(job.prompts, raw):
            meta = r.setdefault("meta_info", {})
            c = int(meta.get("cached_tokens", 0) or 0)
            f = self.cost.flops(len(p), c)
            meta["flops"] = f
            prompt, cached, flops = prompt + len(p), cached + c, flops + f
        self.metrics.prompt_tokens.inc(prompt)
        self.metrics.cached_tokens.inc(cached)
        self.metrics.flops.inc(flops)
        return _usage_of(prompt, cached, flops)


def _usage_of(prompt: int, cached: int, flops: int) -> Usage:
    return Usage(prompt_tokens=prompt, total_tokens=prompt, cached_tokens=cached,
                 prompt_tokens_details=PromptTokensDetails(cached), flops=flops)


def _sum_usage(parts: list[Usage]) -> Usage:
    return _usage_of(sum(u.prompt_tokens for u in parts), sum(u.cached_tokens for u in parts),
                     sum(u.flops for u in parts))


def worker_message(body) -> str:
    """The words of a worker's 4xx body: SGLang's {"error": {"message": ...}}, {"message"},
    FastAPI's {"detail"} (a string, or a list of {"msg"}), else the body as it came."""
    if isinstance(body, dict):
        inner = body.get("message") or body.get("error") or body.get("detail")
        if isinstance(inner, (dict, list)):
            return worker_message(inner)
        return str(inner or body)
    if isinstance(body, list) and body and all(isinstance(x, dict) for x in body):
        return "; ".join(str(x.get("msg") or x.get("message") or x) for x in body)
    return str(body)
