"""Where one prefill-only forward spends its time on the GPU (issue 11, "profile, then speed up").

Starts a strategy's server (bench/gpu/common.py; default: ours, one replica), warms it up, then has
SGLang's own profiler (`POST /start_profile`, torch profiler with CUDA activity) record `--steps`
forward steps of full batches (`--batch-tokens` of prompts of `--prompt-len` each, all in flight).
The kernel timeline is bucketed by kernel name:

  attention        FlashAttention-3 / FlashInfer / Triton attention kernels
  moe_gemm         the fused-MoE grouped GEMMs (SGLang's Triton fused_moe_kernel, both GEMMs)
  moe_routing      top-k gating, align/sort/count of tokens per expert, the weighted sum
  dense_gemm       cuBLAS / CUTLASS GEMMs: QKV and output projections, router gate, LM head
  norm_rope_act    RMSNorm, rotary embedding, SiLU-and-mul
  kv_write         writes of K/V into the paged cache and request-to-token bookkeeping
  memcpy           device copies and memsets
  other            everything else (elementwise, index, reductions)
  gpu_idle         wall span of the recorded steps not covered by any kernel: the CPU gaps
                   (scheduling, batch preparation, Python between kernels)

Times are per forward step (recorded span / steps). The profiler's own overhead lengthens the CPU
side, so gpu_idle is an upper bound of the unprofiled gaps. With --cpu (host activity and Python
stacks recorded) the result also says how far ahead of the GPU the host launched its kernels and
what the launching thread ran while the GPU sat idle (`host_view`).
Usage: python bench/gpu/profile_forward.py --preset qwen3-30b-a3b --prompt-len 4096 --out $OUT
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import gzip
import json
import re
import sys
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.gpu.common import STRATEGIES, start_strategy, stop_all  # noqa: E402
from bench.gpu.gpumon import quantile  # noqa: E402
from bench.gpu.prefill_bench import LABEL_IDS, _prompts, _send_all  # noqa: E402
from moep_router.cost import CostModel  # noqa: E402
from moep_router.model_spec import ModelSpec  # noqa: E402
from moep_sglang.models.checkpoint import ensure_model  # noqa: E402

# First match wins: attention kernels are CUTLASS kernels too, and MoE kernels contain "moe".
CATEGORIES: tuple[tuple[str, re.Pattern], ...] = tuple((name, re.compile(rx, re.IGNORECASE)) for
                                                      name, rx in (
    # SGLang's Triton MoE GEMM; the plugin's gate-up GEMM with SiLU-and-mul in its epilogue
    # (kernels/gate_up_silu.py: "silu" must not make it an activation)
    ("moe_gemm", r"fused_moe_kernel|_gate_up_silu"),
    ("other", r"sampling"),  # the next-token sampler (top-k/top-p), not MoE routing
    # flash:: (FA3), not "flash": FlashInfer's RMSNorm kernels are flashinfer::norm::...
    ("attention", r"flash::|FlashAttn|fmha|attn|attention|BatchPrefill|decode_kernel|"
                  r"extend_kernel"),
    ("moe_routing", r"topk|moe_align|moe_sum|count_and_sort|sort|gating|moe"),
    ("kv_write", r"store_kv|set_kv|kv_buffer|copy_kv|kvcache|req_to_token|write_req"),
    ("norm_rope_act", r"norm|rotary|rope|silu|act_and_mul|gelu|swiglu"),
    ("dense_gemm", r"nvjet|gemm|cutlass|xmma|cublas|sm90_|splitK"),
))
GAP_US = 200.0  # idle stretches shorter than this are launch latency, not a wait
ORDER = ("attention", "moe_gemm", "moe_routing", "dense_gemm", "norm_rope_act", "kv_write",
         "memcpy", "other", "gpu_idle")


def categorize(name: str, cat: str) -> str:
    if cat in ("gpu_memcpy", "gpu_memset"):
        return "memcpy"
    for label, rx in CATEGORIES:
        if rx.search(name):
            return label
    return "other"


def gpu_work(events: list[dict]) -> list[dict]:
    """The trace's GPU events (kernels, copies, memsets), in start order."""
    return sorted((e for e in events if e.get("ph") == "X" and
                   e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")), key=lambda e: e["ts"])


def idle_gaps(gpu: list[dict]) -> list[tuple[float, float, str, dict]]:
    """Every stretch of more than GAP_US with no GPU work: (start us, end us, name of the work
    that ended last before it, the event after it). gpu: gpu_work's list."""
    gaps, last_name = [], ""
    cover_end = gpu[0]["ts"] if gpu else 0.0
    for e in gpu:
        if e["ts"] - cover_end > GAP_US:
            gaps.append((cover_end, e["ts"], last_name, e))
        if e["ts"] + e["dur"] >= cover_end:
            last_name = e["name"]
        cover_end = max(cover_end, e["ts"] + e["dur"])
    return gaps


def breakdown(events: list[dict], steps: int) -> dict:
    """Per-step milliseconds by category from a Chrome trace's GPU events (ts/dur in us)."""
    gpu = gpu_work(events)
    if not gpu:
        raise ValueError("the trace holds no GPU kernels")
    by_cat: dict[str, float] = defaultdict(float)
    by_kernel: dict[str, float] = defaultdict(float)
    busy, cover_end = 0.0, gpu[0]["ts"]
    for e in gpu:
        start, end = e["ts"], e["ts"] + e["dur"]
        by_cat[categorize(e["name"], e["cat"])] += e["dur"]
        by_kernel[e["name"][:120]] += e["dur"]
        busy += max(0.0, end - max(start, cover_end))  # union of intervals, in time order
        cover_end = max(cover_end, end)
    # (idle us, kernel before, kernel after)
    gaps = [(hi - lo, before, after["name"]) for lo, hi, before, after in idle_gaps(gpu)]
    span = cover_end - gpu[0]["ts"]
    by_cat["gpu_idle"] = span - busy
    ms = {k: round(by_cat.get(k, 0.0) / 1e3 / steps, 3) for k in ORDER}
    by_pair: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for us, before, after in gaps:
        pair = by_pair[f"{before[:50]} -> {after[:50]}"]
        pair[0] += us
        pair[1] += 1
    return {"steps": steps, "span_ms_per_step": round(span / 1e3 / steps, 3), "ms_per_step": ms,
            "share": {k: round(by_cat.get(k, 0.0) / span, 4) for k in ORDER},
            "top_kernels_ms_per_step": {k: round(v / 1e3 / steps, 3) for k, v in sorted(
                by_kernel.items(), key=lambda kv: -kv[1])[:15]},
            # where the GPU waits: idle stretches over GAP_US, summed by the kernels around them
            "idle_gaps_over_us": GAP_US,
            "idle_gaps_ms_per_step": round(sum(g[0] for g in gaps) / 1e3 / steps, 3),
            "largest_idle_gaps_ms": [round(g[0] / 1e3, 2) for g in sorted(gaps, reverse=True)[:12]],
            "idle_by_kernel_pair": [
                {"between": k, "ms_per_step": round(v[0] / 1e3 / steps, 3), "count": v[1]}
                for k, v in sorted(by_pair.items(), key=lambda kv: -kv[1][0])[:10]],
            "host_calls_ms_per_step": host_calls(events, steps)}


def host_calls(events: list[dict], steps: int) -> dict[str, float]:
    """With CPU activity recorded: the CUDA runtime/driver calls the host spent longest in
    (synchronizations and blocking copies show here), per step."""
    total: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("ph") == "X" and e.get("cat") in ("cuda_runtime", "cuda_driver"):
            total[e["name"]] += e.get("dur", 0.0)
    return {k: round(v / 1e3 / steps, 3) for k, v in sorted(total.items(),
                                                            key=lambda kv: -kv[1])[:10]}


HOST_CATS = ("python_function", "cpu_op", "cuda_runtime", "cuda_driver", "user_annotation")
FRAME_MAX_US = 50_000.0  # host frames longer than this (the scheduler's loop, a whole forward)
#                          enclose every gap; they are left out of the attribution


def _attribute(frames: list[dict], lo: float, hi: float, incl: dict, self_t: dict) -> None:
    """Add what one host thread ran over [lo, hi) to incl (per name: the union of its frames'
    overlap, so a name nested in itself counts once) and self_t (per innermost frame: its overlap
    less its children's; "(no frame)" where none ran). frames: that thread's frames overlapping
    the window, sorted by start; frames of one thread nest (a stack sweep, O(n log n))."""
    clip = lambda e: min(hi, e["ts"] + e["dur"]) - max(lo, e["ts"])  # noqa: E731
    stack: list[list] = []  # [end, name, self us] of the open frames, outermost first
    covered = 0.0  # overlap of the outermost frames
    for e in sorted(frames, key=lambda e: (e["ts"], -e["dur"])):
        while stack and stack[-1][0] <= e["ts"]:
            _, name, own = stack.pop()
            self_t[name] += own
        name, over = e["name"][:110], clip(e)
        if stack:
            stack[-1][2] -= over
        else:
            covered += over
        if all(f[1] != name for f in stack):
            incl[name] += over
        stack.append([e["ts"] + e["dur"], name, over])
    for _, name, own in stack:
        self_t[name] += own
    if hi - lo - covered > 0:
        self_t["(no frame)"] += hi - lo - covered


def host_view(events: list[dict], steps: int) -> dict:
    """With CPU activity recorded: is the host ahead of the GPU, and what does it run while the
    GPU waits.

    lead_us: per kernel, GPU start minus the start of the host call that launched it (matched by
    correlation id): near 0 means the GPU ran each kernel as soon as the host issued it (the
    host is the bottleneck), large means kernels were queued ahead.
    gaps: for every idle stretch of GAP_US or more (no kernel, copy or memset on the GPU) that
    ends with launched GPU work, the host thread that launched it and what that thread ran during
    the stretch: per frame name (Python function, aten op, CUDA call) its overlap with the
    stretch (inclusive of what it calls), and per innermost frame (self time), ms per step, the 25
    largest."""
    launch = {e["args"]["correlation"]: e for e in events if e.get("ph") == "X" and
              e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {})}
    gpu = gpu_work(events)
    lead = [k["ts"] - launch[c]["ts"] for k in gpu if k.get("cat") == "kernel"
            and (c := k.get("args", {}).get("correlation")) in launch]
    by_tid: dict[tuple, list[dict]] = defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and e.get("cat") in HOST_CATS and e.get("dur", 0) <= FRAME_MAX_US:
            by_tid[(e.get("pid"), e.get("tid"))].append(e)
    starts = {}
    for tid, evs in by_tid.items():
        evs.sort(key=lambda e: e["ts"])
        starts[tid] = [e["ts"] for e in evs]
    incl: dict[str, float] = defaultdict(float)
    self_t: dict[str, float] = defaultdict(float)
    gap_us = 0.0
    for lo, hi, _, after in idle_gaps(gpu):
        if (c := after.get("args", {}).get("correlation")) not in launch:
            continue
        gap_us += hi - lo
        tid = (launch[c].get("pid"), launch[c].get("tid"))
        evs, ts = by_tid.get(tid, []), starts.get(tid, [])
        i = bisect.bisect_left(ts, lo - FRAME_MAX_US)
        j = bisect.bisect_left(ts, hi)
        _attribute([e for e in evs[i:j] if e["ts"] + e["dur"] > lo], lo, hi, incl, self_t)
    top = lambda d: {n: round(v / 1e3 / steps, 3) for n, v in  # noqa: E731
                     sorted(d.items(), key=lambda kv: -kv[1])[:25]}
    return {"lead_us": {f"p{int(q * 100)}": round(quantile(lead, q), 1) for q in (.1, .5, .9)}
            if lead else None,
            "kernels_launched_under_50us_ahead": round(sum(x < 50 for x in lead) / len(lead), 3)
            if lead else None,
            "gap_ms_per_step": round(gap_us / 1e3 / steps, 3),
            "host_in_gaps_inclusive_ms_per_step": top(incl),
            "host_in_gaps_self_ms_per_step": top(self_t)}


def _post(url: str, body: dict) -> str:
    req = urllib.request.Request(url, json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        return resp.read().decode()


def profile(url: str, vocab: int, length: int, batch_tokens: int, steps: int,
            out: Path, tag: str, in_flight: int = 0, cpu: bool = False,
            labels: list[int] | None = None) -> dict:
    """Records `steps` forward steps while max(steps full batches, in_flight) prompts are sent at
    once (in_flight: the benchmark's load, a queue of waiting requests behind every batch); with
    `labels`, every prompt asks for those tokens' logprobs (scoring)."""
    per_step = max(1, batch_tokens // length)
    asyncio.run(_send_all([url], _prompts(per_step, length, vocab, 1), labels))  # warm this shape
    trace_dir = out / f"trace-{tag}"
    trace_dir.mkdir(parents=True, exist_ok=True)
    _post(f"{url}/start_profile", {"output_dir": str(trace_dir), "num_steps": steps,
                                   "activities": ["CPU", "GPU"] if cpu else ["GPU"],
                                   "profile_id": tag})
    sent = max(per_step * steps, in_flight)
    t0 = time.perf_counter()
    asyncio.run(_send_all([url], _prompts(sent, length, vocab, 3), labels))
    wall = time.perf_counter() - t0
    deadline = time.monotonic() + 180
    while not list(trace_dir.glob("*.trace.json.gz")) and time.monotonic() < deadline:
        time.sleep(1)
    [trace] = list(trace_dir.glob("*.trace.json.gz"))
    time.sleep(2)  # the exporter may still be writing
    with gzip.open(trace) as f:
        events = json.load(f)["traceEvents"]
    result = breakdown(events, steps)
    if cpu:
        result["host"] = host_view(events, steps)
    result.update({"prompt_len": length, "prompts_per_step": per_step,
                   "tokens_per_step": per_step * length, "prompts_in_flight": sent,
                   "cpu_activity": cpu, "label_logprobs": labels,
                   "wall_s_all_prompts": round(wall, 2),
                   "tokens_per_s_all_prompts": round(sent * length / wall, 1),
                   "tokens_per_s_of_span": round(per_step * length * 1e3 /
                                                 result["span_ms_per_step"], 1)})
    for t in trace_dir.glob("*.trace.json.gz"):  # too large to keep; the table is the result
        t.unlink()
    return result


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="qwen3-30b-a3b")
    p.add_argument("--num-layers", type=int, default=None)
    p.add_argument("--strategy", default="replicas", choices=STRATEGIES)
    p.add_argument("--prompt-len", default="4096", help="one or several, comma-separated")
    p.add_argument("--batch-tokens", type=int, default=32768, help="tokens per forward step")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--in-flight-tokens", type=int, default=0,
                   help="tokens of prompts sent at once (the benchmark: 262144); default: "
                        "--steps full batches")
    p.add_argument("--cpu", action="store_true", help="also record CPU activity (host calls)")
    p.add_argument("--cpu-both", action="store_true",
                   help="each length twice: GPU activity only (the gaps without the host "
                        "profiler's overhead), then with CPU activity too")
    p.add_argument("--label-logprobs", action="store_true",
                   help="every prompt asks for two label tokens' logprobs (scoring requests)")
    p.add_argument("--worker-flag", action="append", default=[])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--git-sha", default="unknown")
    p.add_argument("--name", default=None)
    p.add_argument("--tag", default="", help="label of this configuration (log names, JSON)")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model = ensure_model(Path("/tmp/moep-models"), args.preset, args.num_layers)
    cost = CostModel.from_spec(ModelSpec.from_model_dir(model))
    import torch

    doc = {"benchmark": args.name or f"profile_{model.name}", "git_sha": args.git_sha,
           "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "hardware": {"gpu": torch.cuda.get_device_name(0)}, "model": args.preset,
           "num_layers": cost.spec.num_layers, "strategy": args.strategy,
           "worker_flags": args.worker_flag, "tag": args.tag, "results": []}
    [worker] = start_strategy(args.strategy, model, args.out, 1, *args.worker_flag,
                              tag=args.tag)
    try:
        cpu_modes = (False, True) if args.cpu_both else (args.cpu,)
        for length, cpu in ((int(x), c) for x in args.prompt_len.split(",") for c in cpu_modes):
            tag = (f"{model.name}-{length}" + (f"-{args.tag}" if args.tag else "")
                   + ("-cpu" if cpu and args.cpu_both else ""))
            r = profile(worker.config.url, cost.spec.vocab_size, length, args.batch_tokens,
                        args.steps, args.out, tag, args.in_flight_tokens // length, cpu,
                        LABEL_IDS if args.label_logprobs else None)
            doc["results"].append(r)
            (args.out / f"{doc['benchmark']}.json").write_text(json.dumps(doc, indent=2))
            print(f"{tag}: {r['span_ms_per_step']:.1f} ms per step of {r['tokens_per_step']} "
                  "tokens: " + ", ".join(f"{k} {r['ms_per_step'][k]:.1f} "
                                         f"({r['share'][k]:.0%})" for k in ORDER), flush=True)
            print(f"  span {r['tokens_per_s_of_span']:,.0f} tok/s, all prompts "
                  f"{r['tokens_per_s_all_prompts']:,.0f} tok/s; idle gaps "
                  f"{r['idle_gaps_ms_per_step']} ms/step, largest {r['largest_idle_gaps_ms'][:6]}; "
                  f"top pairs {[(p['between'][:70], p['ms_per_step']) for p in r['idle_by_kernel_pair'][:3]]}; "
                  f"host {list(r['host_calls_ms_per_step'].items())[:4]}", flush=True)
            if "host" in r:
                h = r["host"]
                print(f"  host lead us {h['lead_us']}, launched < 50 us ahead "
                      f"{h['kernels_launched_under_50us_ahead']}; in gaps (self) "
                      f"{list(h['host_in_gaps_self_ms_per_step'].items())[:8]}", flush=True)
    finally:
        stop_all([worker])


if __name__ == "__main__":
    main()
