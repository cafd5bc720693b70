"""Where moep-router's CPU goes per request: py-spy samples of one router process under
router_latency's closed loop (8 fake workers, ~100-token text prompts, 256 in flight).

    pip install py-spy && python -m bench.router_profile [--seconds 6] [--endpoint chat]

Writes router_profile.json (router_profile_chat.json): the share of samples (on-CPU, the
router's threads) in which each function is on the stack, for the functions named in PARTS
(and CHAT_PARTS) and the 30 largest overall.
"""

from __future__ import annotations

import argparse
import collections
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import print_table, write_result
from bench.gateway import LOGS
from bench.router_latency import capacity, request_bodies
from moep_sglang import envs
from moep_sglang.models.checkpoint import ensure_model
from moep_sglang.server.router_process import RouterProcess
from moep_sglang.server.worker_process import free_port

PARTS = {  # label -> function (file) on the stack
    "tokenize the text": "RouterTokenizer.encode tokenize.py",
    "route (price every worker, pick one)": "Dispatcher._route dispatcher.py",
    "forward to the worker (worker_http client)": "Dispatcher._forward dispatcher.py",
    "parse the body into a Job": "Router.parse server.py",
    "whole request handler (route handler, reply written)": "_Connection._answer http_protocol.py",
    "HTTP input (llhttp's callbacks, requests built)": "_Connection.data_received http_protocol.py",
}
CHAT_PARTS = {  # --endpoint chat: the OpenAI path's own steps
    "render the chat template": "ChatTemplate.render chat_template.py",
    "tokenize the rendered prompt": "RouterTokenizer.encode_continuation tokenize.py",
    "shape the chat response (logprobs, usage, JSON)": "respond_chat openai_api.py",
}


def shares(raw: str) -> tuple[int, collections.Counter]:
    """(samples, function -> samples with it on the stack) from py-spy's raw format."""
    total, incl = 0, collections.Counter()
    for line in raw.splitlines():
        stack, _, n = line.rstrip().rpartition(" ")
        if not n.isdigit():
            continue
        total += int(n)
        seen = set()
        for frame in stack.split(";"):
            m = re.match(r"(.*?) \((.*?):\d+\)", frame)
            key = f"{m.group(1)} {Path(m.group(2)).name}" if m else frame
            if key not in seen:
                incl[key] += int(n)
                seen.add(key)
    return total, incl


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=6)
    p.add_argument("--endpoint", default="generate", choices=["generate", "chat"])
    a = p.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    model = ensure_model(envs.model_cache_dir(), "tiny")
    path, bodies = request_bodies(a.endpoint, model.name, random.Random(0))
    ports = [free_port() for _ in range(8)]
    LOGS.mkdir(parents=True, exist_ok=True)
    fake = subprocess.Popen([sys.executable, "-m", "bench.fake_worker", "--ports",
                             ",".join(map(str, ports)), "--model-id", model.name],
                            stdout=subprocess.PIPE, text=True)
    out = Path(tempfile.mkdtemp()) / "router.txt"
    try:
        fake.stdout.readline()
        with RouterProcess(model, [f"http://127.0.0.1:{q}" for q in ports],
                           LOGS / "router-profile.log") as router:
            capacity(router.url, 2, bodies, path=path)  # warm up
            rec = subprocess.Popen([spy, "record", "-d", str(int(a.seconds)), "-r", "200", "-f",
                                    "raw", "-o", str(out), "-p", str(router.proc.pid)])
            load = capacity(router.url, a.seconds + 2, bodies, path=path)
            rec.wait()
    finally:
        fake.terminate()
        fake.wait()
    total, incl = shares(out.read_text())
    parts = {**PARTS, **CHAT_PARTS} if a.endpoint == "chat" else PARTS
    rows = [{"part": label, "function": fn, "share": incl[fn] / total}
            for label, fn in parts.items()]
    table = print_table(rows, [("part", "part", "s"), ("share", "share of samples", ".1%")])
    name = "router_profile_chat" if a.endpoint == "chat" else "router_profile"
    write_result(name, {"endpoint": path, "samples": total, "load": load, "rows": rows,
                                    "top": [{"function": k, "share": v / total}
                                            for k, v in incl.most_common(30)],
                                    "table": table})


if __name__ == "__main__":
    main()
