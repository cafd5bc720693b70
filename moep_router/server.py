"""The router process: one asyncio loop owning the registry, KV listeners, health checks and the
HTTP and ZMQ front ends. Entry: run_router_process(config)."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
import msgspec
import zmq.asyncio

from moep_router.access_log import AccessLog
from moep_router.chat_template import ChatTemplate
from moep_router.config import RouterConfig, WorkerSpec
from moep_router.cost import CostModel
from moep_router.discovery import Change
from moep_router.dispatcher import Dispatcher
from moep_router.endpoints import EndpointContext, text_chars
from moep_router.jobs import Job
from moep_router.http_server import build_server
from moep_router.kv_listener import KVListener
from moep_router.loop_watch import LoopWatch
from moep_router.messages import decode_worker_reports
from moep_router.metrics import RouterMetrics
from moep_router.model_spec import ModelSpec
from moep_router.policies import make_policy
from moep_router.tokenize import RouterTokenizer
from moep_router.workers import WorkerRegistry
from moep_router.zmq_server import ZmqFrontEnd

logger = logging.getLogger("moep_router")

MAX_HEALTH_FAILURES = 3  # consecutive slow/failed checks before a reachable worker is taken out


# Bodies with at least this much text are tokenized on a tokenizer thread (~500 tokens: HF
# tokenization took ~230 us on average and 3.2 ms for prompts over 2K tokens on the 2-core
# machine; a thread hop costs tens of microseconds and contends for the GIL).
OFFLOAD_TEXT_CHARS = 2048

# Connections the kernel may hold for accept() (capped by net.core.somaxconn). aiohttp's 128
# (the router's server before http_protocol) overflowed in bursts of new client connections
# (10,129 ListenDrops in two 2,000 req/s open loops of router_latency on the 2-core machine),
# and a dropped SYN stalls its request for a 1, 3, 7 ... s retransmit: p99s of seconds.
LISTEN_BACKLOG = 4096

REPORT_EVERY_CHECKS = 10  # re-read a worker's reported T every this many health checks


class Router:
    """One router process. With `shared` (--processes N, moep_router/processes.py) it is one of
    N: in-flight load on the shared board, run-time worker changes told to the others."""

    def __init__(self, config: RouterConfig, shared=None) -> None:
        self.config = config
        self.shared = shared
        self.board = shared.attach_board() if shared else None
        self.peers = None
        if shared:
            from moep_router.processes import PeerLink

            self.peers = PeerLink(shared.conn)
        self.spec = ModelSpec.from_model_dir(config.model_path)
        self.cost = CostModel.from_spec(self.spec)
        chat, chat_origin = ChatTemplate.load(
            config.model_path, config.chat_template and Path(config.chat_template))
        logger.info("/v1/chat/completions: %s", f"chat template of {chat_origin}" if chat
                    else f"off: {chat_origin}")
        self.endpoint_context = EndpointContext(
            RouterTokenizer(config.model_path, config.tokenize_cache_tokens,
                            config.piece_tokenizer), self.spec,
            config.model_name, config.rerank_template, config.max_items_per_request,
            chat=chat, chat_missing=chat_origin, created=int(time.time()))
        self.metrics = RouterMetrics()
        self.access_log = AccessLog(config.access_log) if config.access_log else None
        self.loop_watch = LoopWatch(self.metrics)
        self.registry = WorkerRegistry(config.threshold_flops, self.board,
                                       shared.index if shared else 0, config.pending_settle_s)
        self.dispatcher = Dispatcher(config, self.registry, make_policy(config.policy),
                                     self.cost, self.metrics)
        self.zmq_ctx = zmq.asyncio.Context()
        self._tokenize_pool = (ThreadPoolExecutor(config.tokenizer_threads,
                                                  thread_name_prefix="moep-tokenize")
                               if config.tokenizer_threads else None)
        self._listeners: dict[str, KVListener] = {}
        self._health_task: asyncio.Task | None = None
        self._admissions: set[asyncio.Task] = set()  # first health checks of added workers
        self._discovery_task: asyncio.Task | None = None
        self._zmq: ZmqFrontEnd | None = None
        self._http: aiohttp.ClientSession | None = None

    # Lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.dispatcher.start()
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        for spec in self.config.workers:
            await self.add_worker(spec)
        self._health_task = asyncio.get_running_loop().create_task(self._health_loop())
        self.loop_watch.start()
        if self.config.k8s_selector:
            from moep_router.discovery import KubeConfig, KubeWatcher

            kube = KubeConfig.in_cluster(self.config.k8s_selector, self.config.k8s_namespace,
                                         self.config.k8s_api)
            self._discovery_task = asyncio.get_running_loop().create_task(
                self._discover(KubeWatcher(kube)))
        if self.config.zmq_port and (self.shared is None or self.shared.index == 0):
            self._zmq = ZmqFrontEnd(self, self.zmq_ctx, self.config.zmq_port)
            self._zmq.start()
        if self.peers:
            loop = asyncio.get_running_loop()
            self.peers.listen(lambda change: loop.call_soon_threadsafe(
                lambda: loop.create_task(self._apply_change(change))))

    async def stop(self) -> None:
        await self.loop_watch.stop()
        for task in (self._health_task, self._discovery_task, *self._admissions):
            if task:
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
        for listener in self._listeners.values():
            await listener.stop()
        if self._zmq:
            await self._zmq.stop()
        await self.dispatcher.close()
        if self._http:
            await self._http.close()
        if self._tokenize_pool:
            self._tokenize_pool.shutdown(wait=False, cancel_futures=True)
        self.zmq_ctx.term()
        if self.board:
            self.board.close()
        if self.access_log:
            self.access_log.close()

    async def parse(self, parse_fn, body) -> Job:
        """parse_fn(body, context) -> Job; where that tokenizes much text, on a tokenizer thread,
        so a long prompt never holds up the loop (and the other requests on it). Short texts
        are tokenized on the loop: the hop to a thread and back costs more than they do."""
        if self._tokenize_pool is None or text_chars(body) < OFFLOAD_TEXT_CHARS:
            return parse_fn(body, self.endpoint_context)
        return await asyncio.get_running_loop().run_in_executor(
            self._tokenize_pool, parse_fn, body, self.endpoint_context)

    # Workers --------------------------------------------------------------------------------
    async def add_worker(self, spec: WorkerSpec, announce: bool = False) -> None:
        """Register a worker; announce: tell the router's other processes (a run-time change
        through POST /workers, not one they make themselves from config or discovery)."""
        state = self.registry.add(spec)
        state.await_admission()
        check = asyncio.get_running_loop().create_task(self._check(state))
        self._admissions.add(check)  # a reference until it is done (the loop keeps weak ones)
        check.add_done_callback(self._admissions.discard)
        if announce and self.peers:
            self.peers.announce(Change(added=(spec.to_text(),), removed=()))
        if spec.kv_endpoint:
            listener = KVListener(self.zmq_ctx, state,
                                  on_gap=lambda s: self.metrics.kv_gaps.labels(s.worker_id).inc())
            listener.start()
            self._listeners[spec.url] = listener
        logger.info("worker %s added (kv events: %s)", spec.url, spec.kv_endpoint or "none")
        await self.dispatcher.wake()

    def kv_synced(self) -> bool:
        """True once every KV listener has applied its worker's replayed history."""
        return all(listener.synced.is_set() for listener in self._listeners.values())

    async def remove_worker(self, url: str, announce: bool = False) -> None:
        self.registry.remove(url)
        if announce and self.peers:
            self.peers.announce(Change(added=(), removed=(url,)))
        listener = self._listeners.pop(url, None)
        if listener:
            await listener.stop()
        logger.info("worker %s removed", url)

    async def _discover(self, watcher) -> None:
        """Apply every change of the discovered worker set (moep_router/discovery.py); an
        unexpected error is logged and the watch starts over (listing again), never silent."""
        while True:
            try:
                await self._apply_discovered(watcher)
                return  # the watcher ended (a real one never does)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("worker discovery failed; starting over in 2 s")
                watcher.resource_version = None
                await asyncio.sleep(2)

    async def _apply_discovered(self, watcher) -> None:
        async for change in watcher.changes():
            await self._apply_change(change)

    async def _apply_change(self, change: Change) -> None:
        """A change of the worker set (discovered, or made by another of this router's
        processes): workers already gone or already present, and SPECs that do not parse
        (logged), are skipped."""
        for text in change.removed:
            spec = _spec_or_none(text)
            if spec is not None and self.registry.get(spec.url) is not None:
                await self.remove_worker(spec.url)
        for text in change.added:
            spec = _spec_or_none(text)
            if spec is not None and self.registry.get(spec.url) is None:
                await self.add_worker(spec)

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.health_interval_s)
            await asyncio.gather(*(self._check(w) for w in self.registry.all()))
            tok = self.endpoint_context.tok
            if tok.cache is not None:
                self.metrics.count_token_cache(tok.cache)
            if tok.pieces is not None:
                self.metrics.count_pieces(tok.pieces)

    async def _check(self, worker) -> None:
        """Unreachable: out at once, its index reset when it returns (it restarted empty).
        Slow (timeouts, errors): out after MAX_HEALTH_FAILURES checks in a row, index kept.

        A worker out of routing (new, or out) is admitted on SGLang's /health, which answers
        503 until the server's own warm-up request has finished (load that arrives during that
        warm-up crashed plain SGLang 0.5.17, README); a serving one is checked on /model_info,
        answered by SGLang's HTTP process alone: /health also runs a one-token generation
        unless SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION=0 (our launcher's default), and that
        queues behind real work."""
        unreachable = False
        path = "/model_info" if worker.healthy else "/health"
        try:
            async with self._http.get(f"{worker.spec.url}{path}") as resp:
                ok = resp.status == 200
        except aiohttp.ClientConnectorError:
            ok, unreachable = False, True
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            ok = False
        if ok:
            if worker.spec.threshold_flops is None and (
                    worker.num_checks % REPORT_EVERY_CHECKS == 0 or not worker.healthy):
                await self._read_reported_threshold(worker)
            first = worker.num_checks == 0  # never admitted before
            if worker.check_passed():
                logger.info("worker %s %s", worker.worker_id,
                            "admitted" if first else "is healthy again")
                await self.dispatcher.wake()
            return
        if worker.check_failed(unreachable, MAX_HEALTH_FAILURES):
            logger.warning("worker %s failed its health check (%s)", worker.worker_id,
                           "unreachable" if unreachable else f"{worker.health_failures} in a row")

    async def _read_reported_threshold(self, worker) -> None:
        """T as the worker measured it (AsyncEP, or its forced --min-batch-flops), from
        /server_info. Workers report FLOPs per layer; the router prices whole requests, so it
        keeps T x num_layers. A worker that reports none keeps the router's default."""
        try:
            async with self._http.get(f"{worker.spec.url}/server_info") as resp:
                if resp.status != 200:
                    return
                raw = await resp.read()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            return
        try:
            reports = decode_worker_reports(raw)
        except msgspec.DecodeError as exc:
            logger.warning("worker %s: unreadable moep report in /server_info: %s",
                           worker.worker_id, exc)
            return
        reported = [r.threshold_flops for r in reports if (r.threshold_flops or 0) > 0]
        if not reported:
            return
        t = min(reported) * self.spec.num_layers
        if worker.threshold_reported(t):
            logger.info("worker %s reports T = %.3g FLOPs per layer (%.3g per request)",
                        worker.worker_id, min(reported), t)


def _spec_or_none(text: str) -> WorkerSpec | None:
    try:
        return WorkerSpec.parse(text)
    except ValueError as exc:  # a pod's odd annotations must not stop discovery
        logger.warning("discovered worker %r skipped: %s", text, exc)
        return None


async def _serve(config: RouterConfig, shared=None) -> None:
    router = Router(config, shared)
    await router.start()
    http = build_server(router)
    # One of N processes: every one listens on the same port and the kernel spreads the
    # connections over them.
    await http.start(config.host, config.port, reuse_port=shared is not None,
                     backlog=LISTEN_BACKLOG)
    # A long-lived server: what startup allocated (tokenizer, model spec, modules) never dies, so
    # keep it out of every later collection, and collect the young generation less often (one
    # full pass over a busy router's heap took 329 ms, all of it on the request loop).
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    logger.info("moep-router%s on http://%s:%d (policy %s, %d workers)",
                f" process {shared.index}" if shared else "", config.host, config.port,
                config.policy, len(config.workers))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if shared:
        shared.ready.set()  # the supervisor prints the ready line once all N listen
    else:
        print(f"moep-router ready on http://{config.host}:{config.port}", flush=True)
    await stop.wait()
    await http.stop()
    await router.stop()


def run_router_process(config: RouterConfig, shared=None) -> None:
    """The router's loop in this process; shared: one of --processes N (processes.py)."""
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(name)s: %(message)s")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_serve(config, shared))
