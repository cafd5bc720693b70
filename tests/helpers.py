"""Factories and small clients shared by the tests."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

from moep_sglang.models.checkpoint import ensure_model  # noqa: F401 (re-exported for tests)
from moep_sglang.server.router_process import RouterProcess as _RouterProcess
from moep_sglang.server.router_process import worker_spec as _worker_spec
from moep_sglang.server.worker_process import WorkerConfig, WorkerProcess, free_port, stop_all


def start_worker(model: Path, log_dir: Path, **kw) -> WorkerProcess:
    config = WorkerConfig(model, free_port(), log_dir / f"{model.name}-{free_port()}.log", **kw)
    return WorkerProcess(config).start().wait_ready()


def post(url: str, body: dict | bytes, timeout: float = 60) -> tuple[int, dict]:
    """POST JSON; return (status, decoded body) for 2xx and 4xx/5xx alike."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, _decode(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, _decode(err.read())


def _decode(raw: bytes) -> dict:
    try:
        return json.loads(raw or b"{}")
    except json.JSONDecodeError:
        return {"text": raw.decode(errors="replace")}


def hf_last_logits(model: Path, sequences: list[list[int]]):
    """Transformers forward of the same checkpoint: logits at each sequence's last position."""
    import torch
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    rows = []
    with torch.no_grad():
        for seq in sequences:
            out = hf(torch.tensor([seq]))
            rows.append(out.logits[0, -1].float())  # [vocab]
    return torch.stack(rows)  # [num_sequences, vocab]


class RouterProcess(_RouterProcess):
    """The product's RouterProcess, started, with a GET helper for the tests."""

    def __init__(self, model: Path, workers: list[str], log_path: Path, *flags: str,
                 port: int | None = None) -> None:
        super().__init__(model, workers, log_path, "--health-interval-s", "0.5", *flags,
                         port=port)
        self.start()

    def wait_healthy(self, timeout_s: float = 60) -> RouterProcess:
        """Until /health answers 200: a worker healthy and every cache index replayed (the
        replay is asynchronous; on a loaded 2-core machine it can trail the first requests)."""
        deadline = time.monotonic() + timeout_s
        while self.get("/health")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        return self

    def get(self, path: str) -> tuple[int, dict | str]:
        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as resp:
                raw = resp.read()
                return resp.status, _decode(raw) if path != "/metrics" else raw.decode()
        except urllib.error.HTTPError as err:
            return err.code, _decode(err.read())


def worker_spec(worker: WorkerProcess) -> str:
    return _worker_spec(worker.config.url, worker.config.kv_events_port)


def post_with_headers(url: str, body: dict, headers: dict, timeout: float = 60):
    """POST JSON; return (status, body, response headers)."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, _decode(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, _decode(err.read()), dict(err.headers)


def start_group(model: Path, log_dir: Path, size: int, backend: str, *flags: str,
                cpu_threads: int = 1) -> list[WorkerProcess]:
    """N real CPU workers forming one AsyncEP group; all are started before any is awaited
    (a collective group only serves once every rank runs)."""
    store = f"127.0.0.1:{free_port()}"
    workers = []
    for rank in range(size):
        args = ("--asyncep-size", str(size), "--asyncep-rank", str(rank), "--asyncep-store",
                store, "--asyncep-backend", backend, *flags)
        config = WorkerConfig(model, free_port(),
                              log_dir / f"{model.name}-{backend}-n{size}-r{rank}-{free_port()}.log",
                              cpu_threads=cpu_threads, extra_args=args)
        workers.append(WorkerProcess(config).start())
    try:
        for w in workers:
            w.wait_ready()
    except Exception:
        stop_all(workers)
        raise
    return workers


def score(url: str, query: list[int], items: list[list[int]], labels: list[int]) -> list[list[float]]:
    status, body = post(f"{url}/v1/score", {"query": query, "items": items,
                                            "label_token_ids": labels, "apply_softmax": True})
    assert status == 200, body
    return body["scores"]
