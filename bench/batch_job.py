"""What `moep-sglang score` costs the machine it runs on as a job grows: peak memory and wall
time of the CLI for N requests, against fake workers that answer at once (bench/fake_worker.py),
so what is measured is the client alone.

    python -m bench.batch_job [--sizes 20000,100000,200000] [--base REV]

With --base, the CLI of that commit (a git worktree) runs the same files in the same run, one
after the other per size. Each request is a prefill-only `/generate` of a ~40-word text straight
to a fake worker (`--endpoint generate`); the CLI writes every result to a file. Peak memory is
the process's VmHWM (/proc, read every 0.1 s until it exits). Writes
bench/results/batch_job_memory.json and prints a table.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from bench.common import print_table, write_result
from bench.fake_worker import fake_workers
from moep_sglang.server.worker_process import free_port

ROOT = Path(__file__).resolve().parents[1]
TEXT = ("The guest wrote that the room was clean, the staff were kind and the breakfast was "
        "late but good; would they come back to the hotel next year? Answer yes or no: ")


def write_requests(path: Path, n: int) -> None:
    with open(path, "wb") as f:
        for i in range(n):
            f.write(orjson.dumps({"text": f"{i} {TEXT}", "sampling_params": {"max_new_tokens": 0}})
                    + b"\n")


def _peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_cli(code: Path, src: Path, out: Path, url: str, concurrency: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code)}
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "moep_sglang.cli", "score", "--file", str(src),
                             "--endpoint", "generate", "--url", url, "--out", str(out),
                             "--concurrency", str(concurrency), "--no-progress"],
                            cwd=code, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, _peak_rss_mib(proc.pid) or 0.0)
        time.sleep(0.1)
    wall = time.monotonic() - t0
    err = proc.stderr.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"the CLI at {code} failed ({proc.returncode}): {err[-2000:]}")
    rows = sum(1 for _ in open(out, "rb"))
    return {"wall_s": round(wall, 2), "peak_rss_mib": round(peak, 1), "rows": rows,
            "summary": err.strip().splitlines()[-1]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="20000,100000,200000")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--base", default=None, help="also run the CLI of this commit")
    p.add_argument("--out", default="batch_job_memory")
    a = p.parse_args()
    versions = {"now": ROOT}
    tmp = Path(tempfile.mkdtemp(prefix="batch-job-"))
    if a.base:
        subprocess.run(["git", "worktree", "add", "--detach", str(tmp / "base"), a.base],
                       cwd=ROOT, check=True, capture_output=True)
        versions = {f"base {a.base}": tmp / "base", **versions}
    port = free_port()
    rows = []
    try:
        with fake_workers([port]):
            for n in (int(x) for x in a.sizes.split(",")):
                src = tmp / f"requests_{n}.jsonl"
                write_requests(src, n)
                for name, code in versions.items():
                    r = run_cli(code, src, tmp / "out.jsonl", f"http://127.0.0.1:{port}",
                                a.concurrency)
                    (tmp / "out.jsonl").unlink()
                    rows.append({"cli": name, "requests": n, **r,
                                 "req_per_s": round(n / r["wall_s"], 1)})
                    print(f"{name:>16} {n:>8}: {r['peak_rss_mib']:8.1f} MiB peak, "
                          f"{r['wall_s']:7.1f} s", flush=True)
                src.unlink()
    finally:
        if a.base:
            subprocess.run(["git", "worktree", "remove", "--force", str(tmp / "base")], cwd=ROOT,
                           capture_output=True)
    table = print_table(rows, [("cli", "CLI", ""), ("requests", "requests", ","),
                               ("peak_rss_mib", "peak MiB", ",.1f"),
                               ("wall_s", "wall s", ".1f"), ("req_per_s", "req/s", ",.0f")])
    path = write_result(a.out, {"concurrency": a.concurrency, "endpoint": "generate",
                                "worker": "bench/fake_worker.py (answers at once)",
                                "rows": rows, "table": table})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
