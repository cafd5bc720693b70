"""Where a real CPU worker's time goes under the table2 mix: CPU seconds of each of its processes
(HTTP server + tokenizer manager, scheduler, detokenizer) over one run, and py-spy samples of the
scheduler split into the model's forward and everything around it.

One `small` worker (1 torch thread, --sleep-on-idle, the router comparison's worker), the
table2 mix as `/generate` requests with label logprobs (what every router in compare_routers
sends), `--concurrency` in flight. py-spy samples without pausing the process (--nonblocking)
and only threads on a CPU (idle waits are not samples).

    pip install py-spy && python -m bench.worker_profile [--scale 0.5]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from bench.common import print_table, write_result
from bench.router_profile import shares
from bench.serve import ServeConfig, flush_caches, run_serve
from moep_sglang import envs
from moep_sglang.models.checkpoint import ensure_model
from moep_sglang.server.worker_process import WorkerConfig, WorkerProcess, free_port

LOGS = Path(".cache/bench")
PARTS = {  # label -> function (file) on the scheduler's stack (py-spy's class-qualified names)
    "model forward (ModelRunner.forward)": "ModelRunner.forward model_runner.py",
    "  attention (SGLang's torch_native backend)": "AttentionBackend.forward base_attn_backend.py",
    "  MoE experts (FusedMoE, torch on CPU)": "FusedMoE.forward layer.py",
    "  QKV projection, q/k norm, rotary": "Qwen3MoeAttention.forward_prepare qwen3_moe.py",
    "form the next batch (get_next_batch_to_run)":
        "Scheduler.get_next_batch_to_run scheduler.py",
    "process a batch's results (process_batch_result)":
        "Scheduler.process_batch_result scheduler.py",
    "receive requests (recv_requests)": "Scheduler.recv_requests scheduler.py",
}


def _processes(worker: WorkerProcess) -> dict[str, psutil.Process]:
    """The worker's processes by role: its main process (HTTP server and tokenizer manager)
    and SGLang's children, named by their process titles."""
    main = psutil.Process(worker.pid)
    out = {"http_tokenizer_manager": main}
    for child in main.children(recursive=True):
        title = " ".join(child.cmdline()) or child.name()
        for role in ("scheduler", "detokenizer"):
            if f"sglang::{role}" in title:
                out[role] = child
    return out


def _cpu_s(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small")
    p.add_argument("--scale", type=float, default=0.5)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--out", default="worker_profile_cpu", help="result name under bench/results/")
    a = p.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    model = ensure_model(envs.model_cache_dir(), a.preset)
    worker = WorkerProcess(WorkerConfig(model, free_port(), LOGS / "worker_profile.log",
                                        cpu_threads=1, extra_args=("--sleep-on-idle",)))
    worker.start()
    out = Path(tempfile.mkdtemp()) / "scheduler.txt"
    try:
        worker.wait_ready()
        config = ServeConfig(worker.config.url, model, "table2", a.scale, 0, a.concurrency,
                             "worker", "generate")
        run_serve(config)  # warm up: every path once
        flush_caches([worker.config.url])
        procs = _processes(worker)
        before = {k: _cpu_s(v) for k, v in procs.items()}
        rec = subprocess.Popen([spy, "record", "--nonblocking", "-r", "100", "-f", "raw",
                                "-o", str(out), "-p", str(procs["scheduler"].pid)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # py-spy attaches
        t0 = time.monotonic()
        row = run_serve(config)
        wall = time.monotonic() - t0
        cpu = {k: _cpu_s(v) - before[k] for k, v in procs.items()}
        rec.send_signal(2)  # SIGINT: py-spy writes what it sampled and exits
        threading.Thread(target=rec.wait, daemon=True).start()
        for _ in range(100):
            if rec.poll() is not None:
                break
            time.sleep(0.1)
    finally:
        worker.stop()
    total, incl = shares(out.read_text())
    proc_rows = [{"process": k, "cpu_s": v, "cpu_per_request_ms": v / row["requests"] * 1e3,
                  "share_of_wall": v / wall} for k, v in cpu.items()]
    sched_rows = [{"part": label, "function": fn, "share": incl[fn] / max(total, 1)}
                  for label, fn in PARTS.items()]
    t1 = print_table(proc_rows, [("process", "process", "s"), ("cpu_s", "CPU s", ".1f"),
                                 ("cpu_per_request_ms", "CPU ms/request", ".2f"),
                                 ("share_of_wall", "of the run's wall", ".0%")])
    t2 = print_table(sched_rows, [("part", "scheduler part", "s"),
                                  ("share", "share of its samples", ".1%")])
    print(f"{row['tokens_per_s']:,.0f} tok/s, {row['requests']} requests in {wall:.1f} s, "
          f"{row['cached_vs_ideal']:.1%} of the ideal cached")
    write_result(a.out, {
        "config": {"preset": a.preset, "workload": "table2", "scale": a.scale,
                   "concurrency": a.concurrency, "api": "generate", "worker_cpu_threads": 1,
                   "worker_flags": ["--sleep-on-idle"], "py_spy": "record --nonblocking -r 100"},
        "run": {k: row[k] for k in ("requests", "makespan_s", "tokens_per_s", "prompt_tokens",
                                    "cached_tokens", "cached_vs_ideal", "p99_latency_s")},
        "wall_s": wall, "processes": proc_rows, "scheduler_samples": total,
        "scheduler": sched_rows,
        "scheduler_top": [{"function": k, "share": v / max(total, 1)}
                          for k, v in incl.most_common(40)],
        "table": t1 + "\n\n" + t2})


if __name__ == "__main__":
    main()
