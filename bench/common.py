"""What every benchmark result file carries: git sha, hardware, time; the table printer; and
putting a process tree on chosen CPUs."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

import orjson

from moep_sglang import envs

RESULTS = Path(__file__).resolve().parent / "results"


def git_sha() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True, cwd=RESULTS.parent).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, cwd=RESULTS.parent).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return envs.bench_git_sha() or "unknown"


def hardware() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_gib, 1),
            "gpu": None, "python": platform.python_version(), "machine": platform.machine()}


def write_result(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": name, "git_sha": git_sha(), "hardware": hardware(),
           "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **payload}
    path = RESULTS / f"{name}.json"
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    return path


def pin_process_tree(pid: int, cpus: set[int]) -> int:
    """Every thread of pid and of its descendants onto `cpus` (threads they start later inherit
    it). Returns how many threads were pinned."""
    import psutil

    proc = psutil.Process(pid)
    pinned = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            tids = [t.id for t in p.threads()]
        except psutil.NoSuchProcess:
            continue  # exited meanwhile
        for tid in tids:
            try:
                os.sched_setaffinity(tid, cpus)
                pinned += 1
            except ProcessLookupError:
                pass
    return pinned


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """columns: (key, header, format spec). Returns and prints the table."""
    head = " | ".join(h for _, h, _ in columns)
    lines = [head, " | ".join("-" * len(h) for _, h, _ in columns)]
    for r in rows:
        lines.append(" | ".join(format(r[k], f) if r.get(k) is not None else "-"
                                for k, _, f in columns))
    text = "\n".join(lines)
    print(text)
    return text
