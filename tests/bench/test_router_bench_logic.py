"""Pure logic of the CPU router benchmarks: the llm-d-shaped workload and the summaries of
interleaved repeats."""

import random
import statistics

import orjson

from bench.compare_routers import log_sizes, prefill_batches, resummarise, summarise
from bench.workloads import poisson_arrivals, shared_prefix


def test_shared_prefix_groups_users_and_rising_poisson_arrivals():
    reqs = shared_prefix(seed=1, num_groups=4, users_per_group=30, rates=(5.0, 50.0))
    assert len(reqs) == 120
    by_group = {}
    for r in reqs:
        by_group.setdefault(r.group, set()).add(r.query)
    assert len(by_group) == 4 and all(len(q) == 1 for q in by_group.values())
    assert len({r.item for r in reqs}) == 120  # every user's question is their own
    times = [r.arrival_s for r in reqs]
    assert times == sorted(times) and times[0] > 0
    gaps = [b - a for a, b in zip([0.0, *times], times)]
    slow, fast = statistics.fmean(gaps[:60]), statistics.fmean(gaps[60:])
    assert 0.1 < slow < 0.35 and 0.01 < fast < 0.035  # 1/5 s and 1/50 s on average


def test_poisson_arrivals_split_into_equal_stages():
    times = poisson_arrivals(random.Random(0), 9, (1.0, 1e6, 1e6))
    assert times[3] - times[2] > 0 and times[8] - times[3] < 1e-3


def test_summary_of_interleaved_runs_gives_mean_and_spread_per_system():
    rows = [{"system": s, "tokens_per_s": t, "cached_vs_ideal": 1.0, "cached_ratio": 0.4,
             "p99_latency_s": 2.0, "p50_latency_s": 1.0, "router_cpu_s": None}
            for s, t in [("a", 100), ("b", 50), ("a", 300), ("b", 70)]]
    a, b = summarise(rows, ["a", "b"])
    assert (a["system"], a["runs"], a["tokens_per_s"]) == ("a", 2, 200)
    assert (a["tokens_per_s_min"], a["tokens_per_s_max"]) == (100, 300)
    assert b["tokens_per_s"] == 60 and b["router_cpu_s"] is None
    assert a["uncached_vs_ideal"] is None  # rows without token counts


def test_summary_bounds_what_a_perfect_cache_router_could_gain():
    # 1,000 prompt tokens of which the ideal caches 600: a system caching 500 left 500 tokens
    # to prefill against the ideal's 400 (1.25x); one caching 600 is at the ideal.
    rows = [{"system": s, "tokens_per_s": 1.0, "prompt_tokens": 1000, "cached_tokens": c,
             "ideal_cached_tokens": 600} for s, c in [("a", 500), ("b", 600), ("a", 300)]]
    a, b = summarise(rows, ["a", "b"])
    assert a["uncached_vs_ideal"] == (1.25 + 1.75) / 2 and b["uncached_vs_ideal"] == 1.0


def test_resummarise_rewrites_summary_and_table_from_the_rows_only(tmp_path):
    rows = [{"system": s, "tokens_per_s": t, "prompt_tokens": 10, "cached_tokens": 4,
             "ideal_cached_tokens": 6} for s, t in [("b", 1.0), ("a", 3.0), ("b", 2.0)]]
    path = tmp_path / "r.json"
    path.write_bytes(orjson.dumps({"git_sha": "abc", "rows": rows, "summary": [], "table": ""}))
    resummarise(path)
    doc = orjson.loads(path.read_bytes())
    assert doc["git_sha"] == "abc" and doc["rows"] == rows
    assert [(r["system"], r["tokens_per_s"]) for r in doc["summary"]] == [("b", 1.5), ("a", 3.0)]
    assert doc["summary"][0]["uncached_vs_ideal"] == 1.5 and "uncached vs ideal" in doc["table"]


def test_prefill_batches_counts_only_what_a_run_appended(tmp_path):
    line = b"[2026-12-06 12:04:58] Prefill batch, #new-seq: 1, #new-token: 2, #cached-token: 0\n"
    logs = [tmp_path / "worker0.log", tmp_path / "worker1.log", tmp_path / "missing.log"]
    logs[0].write_bytes(line * 3 + b"Decode batch\n")
    logs[1].write_bytes(b"")
    before = log_sizes(logs)
    assert before == [len(line) * 3 + 13, 0, 0]
    logs[2].write_bytes(line)  # a log that appears during the run counts from its start
    with open(logs[0], "ab") as f:
        f.write(line * 2)
    with open(logs[1], "ab") as f:
        f.write(b"other\n" + line)
    assert prefill_batches(logs, before) == [2, 1, 1]


def test_median_run_takes_the_run_of_median_p99_and_keeps_every_run():
    from bench.router_latency import median_run

    runs = [{"p50_ms": 0.5, "p99_ms": 190.0}, {"p50_ms": 0.4, "p99_ms": 0.8},
            {"p50_ms": 0.6, "p99_ms": None}, {"p50_ms": 0.45, "p99_ms": 0.9}]
    row = median_run(runs)
    assert row["p99_ms"] == 0.9 and row["p50_ms"] == 0.45  # None sorts as the worst
    assert row["runs"] == 4 and row["p99_ms_runs"] == [190.0, 0.8, None, 0.9]
    assert row["p99_ms_max"] == 190.0
    assert median_run([{"p50_ms": 1.0, "p99_ms": 2.0}])["p99_ms"] == 2.0
    assert row["tcp_runs"] == [None] * 4  # runs without counters keep their place


NETSTAT = """TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPTimeouts TCPSynRetrans
TcpExt: 0 3 5 7 11
IpExt: InNoRoutes InOctets
IpExt: 0 12345
"""
SNMP = """Tcp: RtoAlgorithm ActiveOpens PassiveOpens RetransSegs
Tcp: 1 40 41 9
"""


def test_tcp_counters_are_read_from_the_proc_net_tables():
    from bench.router_latency import parse_proc_net

    assert parse_proc_net(NETSTAT) == {"ListenOverflows": 3, "ListenDrops": 5, "TCPTimeouts": 7,
                                       "TCPSynRetrans": 11}
    assert parse_proc_net(SNMP) == {"ActiveOpens": 40, "PassiveOpens": 41, "RetransSegs": 9}
    assert parse_proc_net("") == {}


def test_slow_summary_says_when_the_slow_requests_were_sent():
    from bench.router_latency import slow_summary

    samples = [(0.0, 0.0005), (1.20, 0.150), (1.25, 0.120), (3.0, 0.0008), (1.21, 0.2)]
    got = slow_summary(samples, threshold_ms=10.0)
    assert got == {"slow_requests": 3, "slow_threshold_ms": 10.0, "slow_sent_first_s": 1.2,
                   "slow_sent_last_s": 1.25, "slow_max_ms": 200.0}
    assert slow_summary([(0.1, 0.001)])["slow_requests"] == 0
    assert slow_summary([])["slow_sent_first_s"] is None


def test_router_view_counts_only_what_happened_between_two_scrapes():
    from bench.router_latency import router_view
    from moep_router.metrics import RouterMetrics

    m = RouterMetrics()
    m.loop_lag.observe(0.2)  # before the run: not counted
    m.gc_pause.labels("2").observe(0.3)
    m.request_done("/generate", 200, 0.5)
    before = m.render([]).decode()
    for lag in (0.0001, 0.02, 0.06, 0.07, 0.15):
        m.loop_lag.observe(lag)
    m.gc_pause.labels("0").observe(0.001)
    m.gc_pause.labels("1").observe(0.04)
    m.gc_pause.labels("1").observe(0.06)
    for endpoint, seconds in (("/generate", 0.002), ("/generate", 0.03), ("/v1/score", 0.2)):
        m.request_done(endpoint, 200, seconds)
    m.request_done("/generate", 400, 0.07)
    got = router_view(before, m.render([]).decode())
    assert got["handled"] == 4
    assert (got["handled_over_10ms"], got["handled_over_50ms"],
            got["handled_over_100ms"]) == (3, 2, 1)
    assert got["lag_ticks"] == 5
    assert (got["lag_ticks_over_10ms"], got["lag_ticks_over_50ms"],
            got["lag_ticks_over_100ms"]) == (4, 3, 1)
    assert (got["gc0_collections"], got["gc1_collections"], got["gc2_collections"]) == (1, 2, 0)
    assert got["gc1_seconds"] == 0.1 and got["gc2_seconds"] == 0.0


def test_late_ticks_counts_each_threshold():
    from bench.router_latency import late_ticks

    assert late_ticks([0.0, 0.02, 0.06, 0.2]) == {
        "ticks": 4, "ticks_over_10ms": 3, "ticks_over_50ms": 2, "ticks_over_100ms": 1}
    assert late_ticks([])["ticks"] == 0


def test_cpus_reads_lists_and_ranges():
    from bench.router_latency import _cpus

    assert _cpus("1") == {1}
    assert _cpus("0,2-4") == {0, 2, 3, 4}


def test_pinning_refuses_every_cpu():
    import os

    import pytest

    from bench.router_latency import _pinning

    every = ",".join(map(str, sorted(os.sched_getaffinity(0))))
    with pytest.raises(SystemExit, match="proper subset"):
        _pinning(every)


def test_cpu_times_reads_busy_idle_and_steal_per_cpu():
    from bench.router_latency import cpu_delta, cpu_times

    before = cpu_times("cpu  30 0 10 100 0 0 0 5 0 0\n"
                       "cpu0 10 0 5 50 0 0 0 2 0 0\ncpu1 20 0 5 50 0 0 0 3 0 0\nintr 1 2\n", hz=100)
    after = cpu_times("cpu  90 0 20 160 0 0 0 25 0 0\n"
                      "cpu0 40 0 10 70 2 1 1 2 0 0\ncpu1 50 0 10 90 0 0 0 23 0 0\nintr 1 2\n",
                      hz=100)
    assert set(before) == {"cpu0", "cpu1"}  # the total line and the rest are left out
    assert cpu_delta(before, after) == {"cpu0": {"busy": 0.37, "idle": 0.22, "steal": 0.0},
                                        "cpu1": {"busy": 0.35, "idle": 0.4, "steal": 0.2}}


def test_connection_opens_counts_the_slow_ones_and_when():
    from bench.router_latency import connection_opens

    row = connection_opens([(0.0, 0.0004), (2.8821, 0.0048), (2.8833, 0.0039), (3.5, 0.0011)])
    assert row == {"opened": 4, "slowest_ms": 4.8, "over_2ms": 2,
                   "over_at_s_ms": [(2.882, 4.8), (2.883, 3.9)]}
    assert connection_opens([]) == {"opened": 0, "slowest_ms": 0.0, "over_2ms": 0,
                                    "over_at_s_ms": []}
