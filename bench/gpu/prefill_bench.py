"""Prefill-only throughput on the GPU machine: AsyncEP vs SGLang's own strategies.

Starts each strategy (bench/gpu/common.py) on the same GPUs, warms it up, then sends the same
synthetic prompts (random token ids, no sharing), every prompt a prefill-only `/generate`
(max_new_tokens=0, SGLang's /v1/score path), all in flight at once, split evenly over the
strategy's servers. Reports tokens/s, MFU against the 989.4 TFLOP/s bf16 datasheet peak with the
FLOPs of ARCHITECTURE.md (moep_router.cost), request latency, AsyncEP's T, gather and stall
time, GPU memory, and which fused-MoE kernel configs the servers loaded.
Usage: python bench/gpu/prefill_bench.py --preset qwen3-30b-a3b --gpus 2 --prompts 192
       --prompt-len 4096 --strategies replicas,peer,tp,ep_dp --out $OUT --git-sha SHA
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.gpu.common import (  # noqa: E402
    ASYNCEP,
    SINGLE_SERVER,
    STRATEGIES,
    start_strategy,
    stop_all,
)
from moep_router.cost import CostModel  # noqa: E402
from moep_router.messages import label_logprob_fields, label_logprob_rows  # noqa: E402
from moep_router.model_spec import ModelSpec  # noqa: E402
from moep_sglang.models.checkpoint import ensure_model  # noqa: E402

PEAK_FLOPS = 989.4e12  # H100/H200 SXM bf16 dense, datasheet
KERNEL_LOG = re.compile(r"(Using MoE kernel config from \S+|Using default MoE kernel config"
                        r"|fused-MoE kernel configs from \S+|Fallback to triton version \S+)")

WEIGHT_LOG = re.compile(r"Load weight end\..*?mem usage=([\d.]+) GB")


def _weight_memory_gb(workers) -> list[float | None]:
    """GPU memory of the loaded weights, per worker, as SGLang logged it ("Load weight end")."""
    out = []
    for w in workers:
        found = WEIGHT_LOG.findall(w.config.log_path.read_text(errors="replace"))
        out.append(float(found[-1]) if found else None)
    return out


LABEL_IDS = [100, 200]  # --label-logprobs: two label tokens per prompt, as a yes/no score asks


async def _send_all(urls: list[str], prompts: list[list[int]],
                    labels: list[int] | None = None) -> list[tuple[float, int]]:
    """(latency s, cached tokens the server reported) per prompt. With `labels` every prompt also
    asks for those tokens' logprobs at its last position (the /generate that SGLang's /v1/score
    and every router's scoring request send), and a reply without them is an error."""
    timeout = aiohttp.ClientTimeout(total=1800)
    extra = label_logprob_fields(labels) if labels else {}
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async def one(url: str, ids: list[int]) -> tuple[float, int]:
            start = time.perf_counter()
            body = {"input_ids": ids, "sampling_params": {"max_new_tokens": 0}, **extra}
            async with session.post(f"{url}/generate", json=body) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"{url}: {resp.status} {await resp.text()}")
                reply = json.loads(await resp.read())
            meta = (reply[0] if isinstance(reply, list) else reply).get("meta_info") or {}
            if labels:
                label_logprob_rows(meta)  # raises if the server dropped them
            return time.perf_counter() - start, int(meta.get("cached_tokens") or 0)

        return await asyncio.gather(*(one(urls[i % len(urls)], p) for i, p in enumerate(prompts)))


def _prompts(n: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    """Random ids, a different stream for every (seed, length): no prompt of one length may be
    the prefix of another's (the 32K prompts once began with the 4K ones, and a server with its
    radix cache on served 14% of the 32K run from cache)."""
    rng = random.Random(seed * 1_000_003 + length)
    return [[rng.randrange(100, vocab - 100) for _ in range(length)] for _ in range(n)]


def _server_moep(url: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(f"{url}/server_info", timeout=60) as resp:
        states = json.loads(resp.read()).get("internal_states") or [{}]
    return states[0].get("moep") or {}


def _gpu_memory_mib() -> list[int]:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True).stdout
    except FileNotFoundError:  # a CPU smoke run of the driver
        return []
    return [int(x) for x in out.split()]


def _kernel_configs(workers) -> list[str]:
    """The fused-MoE config lines the servers logged (which file, or SGLang's default)."""
    seen: list[str] = []
    for w in workers:
        text = w.config.log_path.read_text(errors="replace")
        for line in KERNEL_LOG.findall(text):
            if line not in seen:
                seen.append(line)
    return seen


def _lengths(args) -> list[tuple[int, int]]:
    """(prompt length, prompt count) per workload: the first length gets --prompts, every other
    the same total tokens (at least one prompt)."""
    lens = [int(x) for x in str(args.prompt_len).split(",")]
    return [(n, max(1, args.prompts * lens[0] // n)) for n in lens]


def _timed(urls: list[str], prompts: list[list[int]],
           labels: list[int] | None = None) -> tuple[float, list[float], int]:
    """Wall seconds, sorted latencies, cached tokens in all."""
    t0 = time.perf_counter()
    replies = asyncio.run(_send_all(urls, prompts, labels))
    return time.perf_counter() - t0, sorted(r[0] for r in replies), sum(r[1] for r in replies)


def parse_variants(specs: list[str]) -> dict[str, tuple[str, ...]]:
    """`--variant b64k=--max-prefill-tokens=65536,--chunked-prefill-size=65536` -> {label: flags}:
    a strategy entry `replicas/b64k` runs `replicas` with those flags added (after the common
    ones, so they win)."""
    variants = {}
    for spec in specs:
        label, sep, flags = spec.partition("=")
        if not sep or not label or not flags:
            raise ValueError(f"--variant {spec!r}: expected LABEL=--flag[=value][,--flag...]")
        variants[label] = tuple(f for f in flags.split(",") if f)
    return variants


def split_entry(entry: str, variants: dict[str, tuple[str, ...]]) -> tuple[str, str, tuple[str, ...]]:
    """`replicas/b64k` -> ("replicas", "b64k", its flags); `replicas` -> ("replicas", "", ())."""
    name, _, label = entry.partition("/")
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
    if label and label not in variants:
        raise ValueError(f"strategy {entry!r}: no --variant {label}=... given")
    return name, label, variants.get(label, ())


def warmup_count(max_prefill_tokens: int | None, length: int, gpus: int) -> int:
    """Prompts of the cold run: one full prefill batch per server (at least 2 prompts), so that the
    timed run meets no shape whose kernels still compile (a 2-prompt warm-up left the first full
    32K-token batch compiling inside the timed run: 42K instead of 65K tok/s, 2026-12-03)."""
    per_server = max(2, (max_prefill_tokens or 0) // length)
    return gpus * per_server


def run_strategy(entry: str, model: Path, args, cost: CostModel, log_dir: Path,
                 rows: list[dict], save=lambda: None) -> None:
    """One server start, then each prompt length: a cold run of one full batch per server (the
    first requests of that shape: kernel compilation and autotuning included), then the timed
    warm run. Each length's row goes into `rows` (and `save()` writes them) as soon as it is
    measured, so a later length that fails or a call that runs out of time keeps the earlier."""
    name, variant, extra = split_entry(entry, args.variants)
    extra, variant_env = split_env(extra)
    started = time.monotonic()
    workers = start_strategy(name, model, log_dir, args.gpus, *args.worker_flag, *extra,
                             gpu_offset=args.gpu_offset, env={**dict(args.env), **variant_env},
                             tag=variant)
    startup_s = time.monotonic() - started  # until wait_ready returned (SGLang warmed up)
    urls = [w.config.url for w in workers]
    labels = LABEL_IDS if args.label_logprobs else None
    try:
        vocab = cost.spec.vocab_size
        server_args = _server_args(urls[0])
        for length, count in _lengths(args):
            warm_n = warmup_count(server_args.get("max_prefill_tokens"), length, args.gpus)
            cold_wall, _, _ = _timed(urls, _prompts(warm_n, length, vocab, 1), labels)
            repeats = []  # fresh prompts each time: a radix cache cannot serve a repeat
            for rep in range(args.repeats):
                prompts = _prompts(count, length, vocab, 2 + rep)
                rep_wall, rep_latencies, rep_cached = _timed(urls, prompts, labels)
                repeats.append((rep_wall, rep_latencies, rep_cached))
            tokens = sum(len(p) for p in prompts)  # per repeat
            flops = sum(cost.flops(len(p)) for p in prompts)
            wall = statistics.median(r[0] for r in repeats)
            latencies = sorted(t for r in repeats for t in r[1])
            cached = sum(r[2] for r in repeats)
            states = [_server_moep(u) for u in urls] if name in ASYNCEP else []
            rows.append({
                "strategy": name, "variant": variant, "variant_flags": list(extra),
                "variant_env": variant_env, "gpus": args.gpus, "startup_s": round(startup_s, 1),
                "prompts": len(prompts), "prompt_len": length, "tokens": tokens,
                "cold_first_run": {"prompts": warm_n, "wall_s": round(cold_wall, 2),
                                   "tokens_per_s": warm_n * length / cold_wall},
                "cached_tokens": cached,  # must be 0: prompts share nothing
                "wall_s": wall, "tokens_per_s": tokens / wall,  # the median repeat
                "repeats_tokens_per_s": [round(tokens / r[0]) for r in repeats],
                "mfu": flops / wall / (PEAK_FLOPS * args.gpus),
                "latency_p50_s": latencies[len(latencies) // 2],
                "latency_p99_s": latencies[max(0, int(len(latencies) * 0.99) - 1)],
                "gpu_memory_mib": _gpu_memory_mib(),
                "weight_memory_gb": _weight_memory_gb(workers),
                "moe_kernel_configs": _kernel_configs(workers),
                "server_args": server_args,
                "workers": [{k: (s.get("asyncep") or {}).get(k) for k in (
                    "threshold_flops", "startup_threshold_flops", "t_gather_s",
                    "online_t_gather_s", "dense_flops_per_s", "steps", "gather_only_steps",
                    "stall_seconds", "stalled_layers", "gather_seconds", "gathers",
                    "shard_bytes", "ring_bytes")}
                    | {"memory": s.get("memory"),
                       "batches": (s.get("batching") or {}).get("recent_batches", [])[-8:]}
                    for s in states],
            })
            r = rows[-1]
            save()
            print(f"{args.label or name:>14} {entry:>14} {length:>6}: "
                  f"{r['tokens_per_s']:,.0f} tok/s, MFU {r['mfu']:.1%}, wall {wall:.1f} s, "
                  f"cold {r['cold_first_run']['tokens_per_s']:,.0f} tok/s, "
                  f"startup {startup_s:.0f} s", flush=True)
    finally:
        stop_all(workers)


def _server_args(url: str) -> dict:
    """What the server ran with (attention backend, graphs, chunk): the row says, not the flags."""
    import urllib.request

    keys = ("attention_backend", "prefill_attention_backend", "chunked_prefill_size",
            "max_prefill_tokens", "disable_cuda_graph", "cuda_graph_backend_prefill",
            "cuda_graph_backend_decode", "disable_radix_cache", "mem_fraction_static", "dtype")
    try:
        with urllib.request.urlopen(f"{url}/server_info", timeout=60) as resp:
            info = json.loads(resp.read())
    except OSError:
        return {}
    return {k: info.get(k) for k in keys if k in info}


def split_env(flags: tuple[str, ...]) -> tuple[tuple[str, ...], dict[str, str]]:
    """A variant's `ENV:KEY=VALUE` entries are its servers' environment, the rest its flags:
    `--variant sgcfg=ENV:MOEP_TUNED_MOE_CONFIGS=0` runs ours on SGLang's own MoE configs."""
    env = dict(f[4:].split("=", 1) for f in flags if f.startswith("ENV:"))
    return tuple(f for f in flags if not f.startswith("ENV:")), env


@dataclass(frozen=True)
class MixRouter:
    """What stands in front of a multi-server strategy in the mix: moep-router (KV events from
    every server) or SGLang's gateway smg (none needed), with its policy."""
    kind: str  # "moep" | "smg"
    policy: str

    @property
    def label(self) -> str:
        return f"moep-router {self.policy}" if self.kind == "moep" else f"smg {self.policy}"


DEFAULT_ROUTERS = {"moep": "true_flops", "smg": "cache_aware"}


def split_router(flags: tuple[str, ...]) -> tuple[tuple[str, ...], MixRouter]:
    """A variant's `ROUTER:smg[:POLICY]` (or `ROUTER:moep[:POLICY]`) entry names the router of the
    mix, the rest stay flags: `--variant smg=ROUTER:smg` puts smg cache_aware in front of
    `replicas/smg`. Without one: moep-router true_flops."""
    routers = [f[len("ROUTER:"):] for f in flags if f.startswith("ROUTER:")]
    if len(routers) > 1:
        raise ValueError(f"one ROUTER: per variant, got {routers}")
    kind, _, policy = (routers[0] if routers else "moep").partition(":")
    if kind not in DEFAULT_ROUTERS:
        raise ValueError(f"ROUTER:{kind}: choose from {', '.join(DEFAULT_ROUTERS)}")
    return (tuple(f for f in flags if not f.startswith("ROUTER:")),
            MixRouter(kind, policy or DEFAULT_ROUTERS[kind]))


def run_mix(entry: str, model: Path, args, cost: CostModel, log_dir: Path) -> dict:
    """The Table-2-shaped mix (shared prefixes) through a router in front of a strategy's
    servers (moep-router true_flops, or what the variant's ROUTER: names, e.g. smg); a one-server
    strategy gets it directly, and then publishes no KV events (no router reads them: SGLang as
    its users run one server), nor do servers behind smg. --repeats runs the identical
    requests again on the same servers, each repeat from emptied radix caches; a repeat that
    failed (plain SGLang 0.5.17 crashes on this mix, patches/README.md) is recorded with its
    error and the servers are started again for the next. The row is the median repeat's."""
    from bench.gateway import SmgGateway, smg_version
    from bench.serve import ServeConfig, flush_caches, run_serve
    from moep_sglang.server.router_process import RouterProcess, worker_spec

    name, variant, extra = split_entry(entry, args.variants)
    extra, variant_env = split_env(extra)
    extra, mix_router = split_router(extra)
    routed = args.gpus > 1 and name not in SINGLE_SERVER
    by_moep = routed and mix_router.kind == "moep"

    def start() -> tuple[list, float]:
        t0 = time.monotonic()
        ws = start_strategy(name, model, log_dir, args.gpus, *args.worker_flag, *extra,
                            gpu_offset=args.gpu_offset, env={**dict(args.env), **variant_env},
                            radix_cache=True, kv_events=by_moep, tag=variant)
        return ws, time.monotonic() - t0

    def start_router(workers) -> RouterProcess | SmgGateway:
        urls = [w.config.url for w in workers]
        if mix_router.kind == "smg":
            return SmgGateway(urls, mix_router.policy,
                              log_path=log_dir / f"smg-{entry.replace('/', '.')}.log").start()
        specs = [worker_spec(w.config.url, w.config.kv_events_port) for w in workers]
        return RouterProcess(model, specs, log_dir / f"router-{entry.replace('/', '.')}.log",
                             "--policy", mix_router.policy).start(wait_healthy=True)

    workers, startup_s = start()
    router, runs, errors, restart = None, [], [], False
    try:
        urls = [w.config.url for w in workers]
        asyncio.run(_send_all(urls, _prompts(len(urls) * 2, 1024, cost.spec.vocab_size, 1)))
        server_args, configs = _server_args(urls[0]), _kernel_configs(workers)
        for rep in range(args.repeats):
            if restart or not all(w.alive() for w in workers):
                restart = False
                stop_all(workers)
                for w in workers:  # the restarted server writes the same file: keep this one's
                    if w.config.log_path.exists():
                        w.config.log_path.rename(
                            w.config.log_path.with_suffix(f".before-r{rep}.log"))
                workers, _ = start()
                urls = [w.config.url for w in workers]
                if router is not None:
                    router.stop()
                    router = None
            if router is None and routed:
                router = start_router(workers)
            try:
                flush_caches(urls)
                runs.append(run_serve(ServeConfig(
                    router.url if router else urls[0], model, "table2", args.mix_scale, 0,
                    args.concurrency, entry, args.mix_api, length_scale=1.0,
                    max_len=args.mix_max_len)))
            except Exception as exc:  # noqa: BLE001 - recorded; the next repeat restarts
                errors.append({"repeat": rep, "error": str(exc)[-1500:],
                               "servers_alive": [w.alive() for w in workers]})
                restart = True  # a scheduler that died can leave its process up
                print(f"{entry:>10}: repeat {rep} FAILED {str(exc)[-300:]}", flush=True)
        if not runs:
            raise RuntimeError(f"every repeat failed: {errors}")
        row = dict(sorted(runs, key=lambda r: r["tokens_per_s"])[len(runs) // 2])
        row.update({
            "strategy": name, "variant": variant, "variant_flags": list(extra),
            "variant_env": variant_env, "gpus": args.gpus, "startup_s": round(startup_s, 1),
            "router": mix_router.label if routed else None,
            "smg_version": smg_version() if routed and mix_router.kind == "smg" else None,
            "kv_events": by_moep, "server_args": server_args,
            "mfu": row["flops_computed"] / row["makespan_s"] / (PEAK_FLOPS * args.gpus),
            "repeats_tokens_per_s": [round(r["tokens_per_s"]) for r in runs],
            "repeats_cached_vs_ideal": [round(r["cached_vs_ideal"], 4) for r in runs],
            "repeats_p99_latency_s": [round(r["p99_latency_s"], 3) for r in runs],
            "failed_repeats": errors,
            "gpu_memory_mib": _gpu_memory_mib(), "moe_kernel_configs": configs})
    finally:
        if router is not None:
            router.stop()
        stop_all(workers)
    print(f"{args.label or name:>14} {entry:>10}: mix {row['tokens_per_s']:,.0f} tok/s "
          f"(median of {row['repeats_tokens_per_s']}, {len(errors)} failed) "
          f"({row['cached_ratio']:.1%} cached), MFU {row['mfu']:.1%} of computed FLOPs, "
          f"p99 {row['p99_latency_s']:.2f} s, startup {startup_s:.0f} s", flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="qwen3-30b-a3b")
    p.add_argument("--num-layers", type=int, default=None,
                   help="override the preset's depth (e.g. 12 or 24 for the 235B shape)")
    p.add_argument("--gpus", type=int, default=4)
    p.add_argument("--gpu-offset", type=int, default=0, help="first GPU to use")
    p.add_argument("--prompts", type=int, default=384)
    p.add_argument("--repeats", type=int, default=1,
                   help="timed runs per prompt length (fresh prompts each; table2: the same "
                        "requests from emptied radix caches); the row reports the median and "
                        "lists each")
    p.add_argument("--prompt-len", default="4096",
                   help="prompt length, or several (4096,32768): one server start runs each, "
                        "with the total tokens of --prompts at the first length")
    p.add_argument("--strategies", default="replicas,peer,collective",
                   help=f"comma-separated, from: {', '.join(STRATEGIES)}")
    p.add_argument("--worker-flag", action="append", default=[],
                   help="extra SGLang/launcher flag for every server (repeat; use = for values)")
    p.add_argument("--variant", action="append", default=[],
                   help="LABEL=--flag=v,--flag2=v[,ENV:KEY=VALUE]: strategy entries STRATEGY/LABEL "
                        "add these flags (and environment) to their servers")
    p.add_argument("--env", action="append", default=[], type=lambda s: tuple(s.split("=", 1)),
                   help="KEY=VALUE for every server's environment (repeat)")
    p.add_argument("--workload", default="synthetic", choices=["synthetic", "table2"],
                   help="synthetic: --prompts x --prompt-len random ids, no sharing; table2: the "
                        "Table-2-shaped mix at the paper's lengths through moep-router")
    p.add_argument("--mix-scale", type=float, default=1.0, help="table2: request count scale")
    p.add_argument("--mix-max-len", type=int, default=32768, help="table2: longest context")
    p.add_argument("--mix-api", default="score", choices=["score", "generate"],
                   help="table2: /v1/score, or the same work as /generate (plain SGLang's "
                        "/generate reports cached tokens; its /v1/score reply does not carry ours)")
    p.add_argument("--concurrency", type=int, default=256, help="table2: requests in flight")
    p.add_argument("--label-logprobs", action="store_true",
                   help="synthetic prompts also ask for two label tokens' logprobs (scoring)")
    p.add_argument("--label", default="", help="what this run varies (kept in the JSON)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--git-sha", default="unknown")
    p.add_argument("--name", default=None)
    args = p.parse_args()
    args.variants = parse_variants(args.variant)
    for entry in args.strategies.split(","):  # a typo fails now, not after an hour of GPU time
        _, _, flags = split_entry(entry, args.variants)
        if split_router(flags)[0] != flags and args.workload != "table2":
            p.error(f"{entry}: ROUTER: is for --workload table2 (the other workloads send to the "
                    "servers directly)")
    args.out.mkdir(parents=True, exist_ok=True)
    model = ensure_model(Path("/tmp/moep-models"), args.preset, args.num_layers)
    cost = CostModel.from_spec(ModelSpec.from_model_dir(model))
    import torch

    results = []
    mix = args.workload == "table2"
    workload = "table2" if mix else args.prompt_len.replace(",", "_")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU smoke run)"
    doc = {"benchmark": args.name or f"prefill_{model.name}_{workload}",
           "git_sha": args.git_sha, "label": args.label, "workload": args.workload,
           "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "hardware": {"gpu": gpu, "num_gpus": torch.cuda.device_count(),
                        "gpus_used": list(range(args.gpu_offset, args.gpu_offset + args.gpus))},
           "model": args.preset, "num_layers": cost.spec.num_layers, "peak_flops": PEAK_FLOPS,
           "worker_flags": args.worker_flag, "variants": {k: list(v) for k, v in
                                                          args.variants.items()},
           "env": dict(args.env), "label_logprobs": LABEL_IDS if args.label_logprobs else None,
           "results": results}
    path = args.out / f"{doc['benchmark']}.json"
    for entry in args.strategies.split(","):
        try:
            if mix:
                results.append(run_mix(entry, model, args, cost, args.out))
            else:
                run_strategy(entry, model, args, cost, args.out, results,
                             lambda: path.write_text(json.dumps(doc, indent=2)))
        except Exception as exc:  # record the failure, go on with the next strategy
            print(f"{entry:>10}: FAILED {str(exc)[-1500:]}", flush=True)
            name, _, variant = entry.partition("/")
            results.append({"strategy": name, "variant": variant, "error": str(exc)[-3000:]})
        path.write_text(json.dumps(doc, indent=2))  # after each: a timed-out call keeps the rest
    print(f"wrote {path}")
    for r in results:  # the short table
        if "error" in r:
            print(f"{r['strategy']:>20}: FAILED")
        elif "prompt_len" in r:
            entry = r["strategy"] + (f"/{r['variant']}" if r.get("variant") else "")
            print(f"{entry:>20} {r['prompt_len']:>6}: {r['tokens_per_s']:>9,.0f} tok/s "
                  f"MFU {r['mfu']:6.1%}  startup {r['startup_s']:>5.0f} s  "
                  f"cold {r['cold_first_run']['tokens_per_s']:>9,.0f} tok/s")


if __name__ == "__main__":
    main()
