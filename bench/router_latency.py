"""Latency a router adds and the request rate it sustains, with fake workers
(bench/fake_worker.py: they answer at once, so what remains is the router's own cost).

    python -m bench.router_latency [--rate 2000] [--seconds 5] [--processes 1,2]
        [--capacity-clients 2] [--fake-processes 1] [--latency-runs 1] [--endpoint chat]

Open loop: /generate requests (a ~100-token text prompt, label logprobs) at a fixed rate
(--endpoint chat: OpenAI /v1/chat/completions of the same text as the user's message, one
token with its 5 likeliest logprobs; the direct row and smg's workers then answer that path),
first straight to a fake worker, then through moep-router (true_flops, with each
--processes count) and SGLang's gateway (smg, cache_aware), all in front of the same 8 fake
workers; added latency = router p50/p99 minus the direct p50/p99 (with --latency-runs K, each
system's open loop runs K times and its row is the run of median p99, every run's p50/p99 kept,
so that one stall of the machine is told from a router's tail). Each run also records, to
place its tail: when its slow requests were sent; the host's TCP counters over it (a dropped
connection's retransmit); per CPU the seconds busy, idle and stolen by the hypervisor; how
late the sender's own 10 ms ticks woke (a stalled sender inflates what it times) and how many
connections it opened and how long each took (a burst of them marks requests piling up); and
for moep-router, from its /metrics, how many requests its own handler took over 10/50/100 ms
and what held its event loop (ticks of its lag probe later than 10/50/100 ms, its garbage
collections).

Capacity: a closed loop of 256 requests in flight from --capacity-clients client processes
for --seconds: requests/s completed, and the router's CPU time per completed request (user +
system, its processes) during that loop. Everything shares this machine's cores with the load
generator and the fake workers (--fake-processes processes): on a 2-core machine the figures
are what it sustains, not the routers' ceilings; a host with cores to spare
(bench/gpu/suite.sh routercpu) gives more clients and fake-worker processes than router
processes. With --router-cpus (e.g. 1, --out router_latency_pinned) the router under test runs
alone on those CPUs and everything else on the others: the added latency is then the router's
own, not a share of the load generator's core, and the capacity is what the load side on the
other CPUs can drive through it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import statistics
import time
from pathlib import Path

import aiohttp
import orjson

from bench.common import pin_process_tree, print_table, write_result
from bench.gateway import LOGS, SmgGateway, cpu_seconds, smg_version
from bench.fake_worker import fake_workers
from moep_router.loop_watch import sample_lag
from moep_router.messages import label_logprob_fields
from moep_sglang import envs
from moep_sglang.models.checkpoint import ensure_model
from moep_sglang.models.corpus import paragraph
from moep_sglang.server.router_process import RouterProcess
from moep_sglang.server.worker_process import free_port


SLOW_MS = 10.0  # a request this slow counts in a run's "slow" summary
# Linux TCP counters (/proc/net/netstat TcpExt, /proc/net/snmp Tcp) that show dropped or
# retransmitted connections and segments
TCP_COUNTERS = ("ListenOverflows", "ListenDrops", "TCPTimeouts", "TCPSynRetrans", "RetransSegs",
                "ActiveOpens", "PassiveOpens")


def parse_proc_net(text: str) -> dict[str, int]:
    """The TCP_COUNTERS of one /proc/net/{netstat,snmp} text: pairs of lines "Prefix: names..."
    and "Prefix: values..."."""
    lines = text.splitlines()
    out = {}
    for head, values in zip(lines[::2], lines[1::2]):
        for name, value in zip(head.split()[1:], values.split()[1:]):
            if name in TCP_COUNTERS:
                out[name] = int(value)
    return out


def tcp_counters() -> dict[str, int]:
    """The host's TCP_COUNTERS now ({} where /proc/net is not there)."""
    out: dict[str, int] = {}
    for path in ("/proc/net/netstat", "/proc/net/snmp"):
        try:
            out.update(parse_proc_net(Path(path).read_text()))
        except OSError:
            pass
    return out


def cpu_times(text: str, hz: int = os.sysconf("SC_CLK_TCK")) -> dict[str, dict[str, float]]:
    """/proc/stat's text -> {"cpuN": {"busy", "idle", "steal"} seconds} per CPU (the kernel
    counts in ticks of 1/hz s). steal: time the hypervisor ran something else while this
    virtual CPU had work."""
    out = {}
    for line in text.splitlines():
        name, *ticks = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        t = [int(x) / hz for x in ticks[:8]]  # user nice system idle iowait irq softirq steal
        out[name] = {"busy": t[0] + t[1] + t[2] + t[5] + t[6], "idle": t[3] + t[4],
                     "steal": t[7]}
    return out


def _cpu_now() -> dict[str, dict[str, float]]:
    try:
        return cpu_times(Path("/proc/stat").read_text())
    except OSError:
        return {}


def cpu_delta(before: dict, after: dict) -> dict[str, dict[str, float]]:
    """Per CPU, the seconds busy, idle and stolen between two cpu_times() readings."""
    return {cpu: {k: round(v - before[cpu][k], 2) for k, v in now.items()}
            for cpu, now in after.items() if cpu in before}


def _histogram(families: dict, name: str) -> dict[tuple, float]:
    """{(labels without le, le): cumulative count} of one histogram, and (labels, "count")."""
    out: dict[tuple, float] = {}
    for sample in families.get(name, ()):
        labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
        if sample.name.endswith("_bucket"):
            out[labels, sample.labels["le"]] = sample.value
        elif sample.name.endswith(("_count", "_sum")):
            out[labels, sample.name.rsplit("_", 1)[1]] = sample.value
    return out


def router_view(before: str, after: str) -> dict:
    """A moep-router's /metrics text before and after a run -> what the router saw of the run:
    requests its own handler took longer than 10, 50 and 100 ms over (from reading the body to
    the reply: a slow request the handler did not see waited before it, in the sockets or for
    the loop); what held its request loop: lag-probe ticks later than 10, 50 and 100 ms, and
    per GC generation the collections and their seconds (loop_watch.py's two histograms)."""
    from prometheus_client.parser import text_string_to_metric_families

    def parse(text):
        return {f.name: f.samples for f in text_string_to_metric_families(text)}

    b, a = parse(before), parse(after)
    lag0 = _histogram(b, "moep_router_event_loop_lag_seconds")
    lag1 = _histogram(a, "moep_router_event_loop_lag_seconds")
    d = lambda key, h0, h1: h1.get(key, 0.0) - h0.get(key, 0.0)  # noqa: E731
    ticks = d(((), "count"), lag0, lag1)
    req0 = _histogram(b, "moep_router_request_seconds")
    req1 = _histogram(a, "moep_router_request_seconds")
    keys = {k for k in req1 if k[1] == "count"}  # every endpoint
    served = sum(d(k, req0, req1) for k in keys)
    out = {"handled": int(served), "lag_ticks": int(ticks)}
    for ms, le in ((10, "0.01"), (50, "0.05"), (100, "0.1")):
        out[f"handled_over_{ms}ms"] = int(served - sum(d((k[0], le), req0, req1) for k in keys))
        out[f"lag_ticks_over_{ms}ms"] = int(ticks - d(((), le), lag0, lag1))
    gc0 = _histogram(b, "moep_router_gc_pause_seconds")
    gc1 = _histogram(a, "moep_router_gc_pause_seconds")
    for gen in ("0", "1", "2"):
        key = (("generation", gen),)
        out[f"gc{gen}_collections"] = int(d((key, "count"), gc0, gc1))
        out[f"gc{gen}_seconds"] = round(d((key, "sum"), gc0, gc1), 4)
    return out


def slow_summary(samples: list[tuple[float, float]], threshold_ms: float = SLOW_MS) -> dict:
    """(send time s since the run's start, latency s) per answered request -> how many took
    longer than threshold_ms, when the first and last of them were sent, the slowest."""
    slow = sorted((t, lat) for t, lat in samples if lat * 1e3 > threshold_ms)
    return {"slow_requests": len(slow), "slow_threshold_ms": threshold_ms,
            "slow_sent_first_s": round(slow[0][0], 3) if slow else None,
            "slow_sent_last_s": round(slow[-1][0], 3) if slow else None,
            "slow_max_ms": round(max(lat for _, lat in slow) * 1e3, 1) if slow else None}


def connection_opens(opens: list[tuple[float, float]], slow_ms: float = 2.0) -> dict:
    """(opened at s since the run's start, seconds it took) per connection the sender opened ->
    how many, the slowest, and when the ones over slow_ms were opened (at most 20): the sender
    opens a connection whenever all of its open ones are waiting, so a burst of them marks
    requests piling up."""
    slow = [(round(t, 3), round(d * 1e3, 2)) for t, d in opens if d * 1e3 > slow_ms]
    return {"opened": len(opens),
            "slowest_ms": round(max((d for _, d in opens), default=0.0) * 1e3, 2),
            f"over_{slow_ms:g}ms": len(slow), "over_at_s_ms": slow[:20]}


def _opens_trace(opens: list[tuple[float, float]], start: list[float]) -> aiohttp.TraceConfig:
    """An aiohttp trace appending (opened at, seconds it took) of each new connection; start[0]
    is the run's start (perf_counter)."""
    trace = aiohttp.TraceConfig()

    async def began(session, ctx, params) -> None:
        ctx.t0 = time.perf_counter()

    async def ended(session, ctx, params) -> None:
        opens.append((ctx.t0 - start[0], time.perf_counter() - ctx.t0))

    trace.on_connection_create_start.append(began)
    trace.on_connection_create_end.append(ended)
    return trace


def late_ticks(lags: list[float]) -> dict:
    """{ticks, ticks_over_10ms, ticks_over_50ms, ticks_over_100ms} of a list of lags (s)."""
    return {"ticks": len(lags),
            **{f"ticks_over_{ms}ms": sum(lag > ms / 1e3 for lag in lags) for ms in (10, 50, 100)}}


async def _metrics_text(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(f"{url}/metrics") as r:
        return await r.text()


async def _open_loop(url: str, rate: float, seconds: float, bodies: list[bytes],
                     watch_loop: bool = False, path: str = "/generate") -> dict:
    """watch_loop: the URL is a moep-router's; what it saw of the run (router_view) goes in
    "router"."""
    lat: list[float] = []
    samples: list[tuple[float, float]] = []  # (sent at, latency) s
    errors = 0
    tcp_before, cpu_before = tcp_counters(), _cpu_now()
    conn = aiohttp.TCPConnector(limit=0)
    opens: list[tuple[float, float]] = []  # the sender's new connections: (at, took) s
    run_start = [time.perf_counter()]
    async with aiohttp.ClientSession(connector=conn,
                                     trace_configs=[_opens_trace(opens, run_start)]) as session:
        metrics_before = await _metrics_text(session, url) if watch_loop else None

        async def one(body: bytes) -> None:
            nonlocal errors
            t = time.perf_counter()
            try:
                async with session.post(f"{url}{path}", data=body,
                                        headers={"Content-Type": "application/json"}) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
                        return
            except aiohttp.ClientError:
                errors += 1
                return
            lat.append(time.perf_counter() - t)
            samples.append((t - start, lat[-1]))

        lags: list[float] = []
        # the sender's own loop lag: a stalled sender inflates every latency it is timing
        probe = asyncio.create_task(sample_lag(lags.append))
        # No collection in the sender during the run (one before, one after): its 10,000 tasks
        # and replies are one growing heap, and with its GC on, its loop woke over 50 ms late
        # up to twice a run on the 2-core machine (none with it off), inflating every request
        # in flight then, direct ones too (bench/results/router_latency_sender_gc_on.json).
        gc.collect()
        gc.disable()
        try:
            tasks, start, n = [], time.perf_counter(), int(rate * seconds)
            run_start[0] = start
            opens.clear()  # the /metrics fetch before the run opened one
            for i in range(n):
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(bodies[i % len(bodies)])))
            await asyncio.gather(*tasks)
            elapsed = time.perf_counter() - start
            opened = connection_opens(opens)
        finally:
            gc.enable()
            probe.cancel()
        seen = (router_view(metrics_before, await _metrics_text(session, url))
                if watch_loop else None)
    tcp_after, cpu_after = tcp_counters(), _cpu_now()
    lat.sort()
    return {"sent": n, "ok": len(lat), "errors": errors, "achieved_rps": len(lat) / elapsed,
            "p50_ms": 1e3 * statistics.median(lat) if lat else None,
            "p99_ms": 1e3 * lat[int(0.99 * (len(lat) - 1))] if lat else None,
            **slow_summary(samples),
            "tcp": {k: v - tcp_before.get(k, 0) for k, v in tcp_after.items()},
            "cpus": cpu_delta(cpu_before, cpu_after),
            "sender": late_ticks(lags), "sender_connections": opened,
            **({"router": seen} if seen else {})}


async def _closed_loop(url: str, concurrency: int, seconds: float, bodies: list[bytes],
                       path: str = "/generate") -> int:
    """Requests completed with `concurrency` in flight for `seconds`."""
    done = 0
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as session:
        stop_at = time.perf_counter() + seconds

        async def loop(k: int) -> None:
            nonlocal done
            i = k
            while time.perf_counter() < stop_at:
                async with session.post(f"{url}{path}", data=bodies[i % len(bodies)],
                                        headers={"Content-Type": "application/json"}) as r:
                    await r.read()
                    done += r.status == 200
                i += concurrency

        await asyncio.gather(*(loop(k) for k in range(concurrency)))
    return done


def _capacity_client(url, concurrency, seconds, bodies, path, out) -> None:
    out.put(asyncio.run(_closed_loop(url, concurrency, seconds, bodies, path)))


def capacity(url: str, seconds: float, bodies: list[bytes], clients: int = 2,
             concurrency: int = 256, path: str = "/generate") -> dict:
    """Requests/s completed by `clients` client processes sharing `concurrency` in flight."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_capacity_client,
                         args=(url, concurrency // clients, seconds, bodies, path, out))
             for _ in range(clients)]
    for p in procs:
        p.start()
    total = sum(out.get(timeout=seconds + 120) for _ in procs)
    for p in procs:
        p.join()
    return {"capacity_rps": total / seconds, "capacity_requests": total}


def capacity_with_cpu(url: str, pid: int, seconds: float, bodies: list[bytes],
                      path: str = "/generate", clients: int = 2) -> dict:
    """capacity(), plus the router's own CPU per completed request (its process and children:
    user + system time during the closed loop)."""
    before = cpu_seconds(pid)
    row = capacity(url, seconds, bodies, clients=clients, path=path)
    cpu = cpu_seconds(pid) - before
    return {**row, "router_cpu_s": cpu,
            "router_cpu_us_per_request": 1e6 * cpu / max(row["capacity_requests"], 1)}


def request_bodies(endpoint: str, model_name: str, rng: random.Random,
                   n: int = 512) -> tuple[str, list[bytes]]:
    """(path, n request bodies): /generate scoring of a ~100-token text, or ("chat") the same
    text as an OpenAI chat's user message, one token with its 5 likeliest logprobs."""
    texts = [paragraph(rng, 8) for _ in range(n)]
    if endpoint == "chat":
        return "/v1/chat/completions", [orjson.dumps({
            "model": model_name, "max_tokens": 1, "logprobs": True, "top_logprobs": 5,
            "messages": [{"role": "user", "content": t}]}) for t in texts]
    return "/generate", [orjson.dumps({"text": t, "sampling_params": {"max_new_tokens": 0},
                                       **label_logprob_fields([661, 362])}) for t in texts]


def median_run(runs: list[dict]) -> dict:
    """The run of median p99 (a run without answers counts as the worst), with every run's p50
    and p99 beside it."""
    ordered = sorted(runs, key=lambda r: (r["p99_ms"] is None, r["p99_ms"] or 0.0))
    return {**ordered[(len(ordered) - 1) // 2], "runs": len(runs),
            "p50_ms_runs": [r["p50_ms"] for r in runs], "p99_ms_runs": [r["p99_ms"] for r in runs],
            "slow_runs": [{k: r.get(k) for k in ("slow_requests", "slow_sent_first_s",
                                                 "slow_sent_last_s", "slow_max_ms")}
                          for r in runs],
            "tcp_runs": [r.get("tcp") for r in runs],
            "cpu_runs": [r.get("cpus") for r in runs],
            "sender_runs": [r.get("sender") for r in runs],
            "sender_connection_runs": [r.get("sender_connections") for r in runs],
            "router_runs": [r.get("router") for r in runs],
            "p99_ms_max": max((r["p99_ms"] for r in runs if r["p99_ms"] is not None),
                              default=None)}


def _cpus(spec: str) -> set[int]:
    """"1" or "2,3" or "4-7" -> a set of CPU numbers."""
    out: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def _pinning(spec: str | None):
    """With --router-cpus: move this process (and so the fake workers and clients it starts
    later) off those CPUs, and return pin(pid), which puts a router's every thread on them."""
    if spec is None:
        return lambda pid: None
    router, everything = _cpus(spec), os.sched_getaffinity(0)
    if not router < everything:
        raise SystemExit(f"--router-cpus {spec}: must be a proper subset of the CPUs this "
                         f"process may use, {sorted(everything)}")
    os.sched_setaffinity(0, everything - router)
    return lambda pid: pin_process_tree(pid, router)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=2000)
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--num-workers", type=int, default=8)
    p.add_argument("--processes", default="1,2", help="moep-router --processes counts to run")
    p.add_argument("--piece-tokenizer", default="auto",
                   help="moep-router --piece-tokenizer settings to run with each count, e.g. "
                        "auto,off")
    p.add_argument("--skip-smg", action="store_true", help="no smg row")
    p.add_argument("--capacity-clients", type=int, default=2,
                   help="client processes of the closed loop (256 in flight between them)")
    p.add_argument("--fake-processes", type=int, default=1,
                   help="processes serving the fake workers (their ports split between them)")
    p.add_argument("--latency-runs", type=int, default=1,
                   help="open-loop runs per system (the row: the run of median p99)")
    p.add_argument("--router-cpus", default=None,
                   help="CPUs the router under test runs on, e.g. 1 (every thread of it and of "
                        "its processes); the load generator, its clients and the fake workers "
                        "then run on the other CPUs. Default: everything shares every CPU")
    p.add_argument("--endpoint", default="generate", choices=["generate", "chat"],
                   help="the requests: /generate scoring, or OpenAI /v1/chat/completions")
    p.add_argument("--out", default="router_latency", help="result name under bench/results/")
    a = p.parse_args()
    pin = _pinning(a.router_cpus)
    model = ensure_model(envs.model_cache_dir(), "tiny")
    rng = random.Random(0)
    path, bodies = request_bodies(a.endpoint, model.name, rng)
    ports = [free_port() for _ in range(a.num_workers)]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    LOGS.mkdir(parents=True, exist_ok=True)
    clients, fake_processes = a.capacity_clients, min(a.fake_processes, len(ports))
    rows = []
    with fake_workers(ports, a.fake_processes, model.name):
        once = lambda url, watch=False: asyncio.run(  # noqa: E731
            _open_loop(url, a.rate, a.seconds, bodies, watch, path))
        run = lambda url, watch=False: median_run(  # noqa: E731
            [once(url, watch) for _ in range(a.latency_runs)])
        once(urls[0])  # warm up
        rows.append({"system": "direct (no router)", **run(urls[0]),
                     **capacity(urls[0], a.seconds, bodies, clients=clients, path=path)})
        for n, pieces in ((int(x), t) for x in a.processes.split(",")
                          for t in a.piece_tokenizer.split(",")):
            with RouterProcess(model, urls, LOGS / f"router-latency-p{n}-{pieces}.log",
                               "--processes", str(n), "--piece-tokenizer", pieces) as router:
                pin(router.proc.pid)
                once(router.url)
                pin(router.proc.pid)  # and a process its supervisor started late, if any
                rows.append({"system": f"moep-router true_flops, {n} process"
                                       f"{'es' if n > 1 else ''}"
                                       f"{', piece tokenizer off' if pieces == 'off' else ''}",
                             "processes": n, "piece_tokenizer": pieces,
                             **run(router.url, watch=True),
                             **capacity_with_cpu(router.url, router.proc.pid, a.seconds, bodies,
                                                 path=path, clients=clients)})
        if not a.skip_smg:
            with SmgGateway(urls) as smg:
                pin(smg.proc.pid)
                once(smg.url)
                rows.append({"system": "smg cache_aware", **run(smg.url),
                             **capacity_with_cpu(smg.url, smg.proc.pid, a.seconds, bodies,
                                                 path=path, clients=clients)})
    base = rows[0]
    for r in rows[1:]:
        if r["p50_ms"] is None:  # nothing answered: the table shows its errors
            continue
        r["added_p50_ms"] = r["p50_ms"] - base["p50_ms"]
        r["added_p99_ms"] = r["p99_ms"] - base["p99_ms"]
    cols = [("system", "system", "s"), ("achieved_rps", "req/s", ",.0f"),
            ("errors", "errors", "d"), ("p50_ms", "p50 ms", ".2f"), ("p99_ms", "p99 ms", ".2f"),
            ("p99_ms_max", "worst run's p99", ".2f"),
            ("added_p50_ms", "added p50", ".2f"), ("added_p99_ms", "added p99", ".2f"),
            ("capacity_rps", "capacity req/s", ",.0f"),
            ("router_cpu_us_per_request", "router CPU us/req", ",.0f")]
    table = print_table(rows, cols)
    config = {"endpoint": path, "rate": a.rate, "seconds": a.seconds,
              "num_workers": a.num_workers,
              "capacity_clients": clients, "fake_processes": fake_processes,
              "capacity_in_flight": 256, "latency_runs": a.latency_runs,
              "piece_tokenizer": a.piece_tokenizer,
              "router_cpus": sorted(_cpus(a.router_cpus)) if a.router_cpus else None,
              "load_cpus": sorted(os.sched_getaffinity(0)), "smg_version": smg_version()}
    print(write_result(a.out, {"config": config, "rows": rows, "table": table}))


if __name__ == "__main__":
    main()
