"""Factories and small clients shared by the tests."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from moep_sglang.models.checkpoint import MakeModelParams, make_model
from moep_sglang.models.presets import get_preset
from moep_sglang.server.worker_process import WorkerConfig, WorkerProcess, free_port


def ensure_model(root: Path, preset: str) -> Path:
    """Generate the preset under root once; later calls reuse it."""
    out = root / preset
    if not (out / "config.json").exists() or not any(out.glob("*.safetensors")):
        make_model(MakeModelParams(get_preset(preset), out))
    return out


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


class RouterProcess:
    """`moep-router` as a child process (real HTTP, real workers)."""

    def __init__(self, model: Path, workers: list[str], log_path: Path, *flags: str) -> None:
        import subprocess
        import sys

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "moep_router.cli", "--model-path", str(model),
               "--port", str(self.port), "--health-interval-s", "0.5", *flags]
        for w in workers:
            cmd += ["--worker", w]
        self.log_path = log_path
        self.proc = subprocess.Popen(cmd, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self, timeout_s: float = 30) -> None:
        import time

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"router exited: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # answering at all (503: no healthy worker yet) means it is up
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        raise RuntimeError("router not ready")

    def get(self, path: str) -> tuple[int, dict | str]:
        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as resp:
                raw = resp.read()
                return resp.status, _decode(raw) if path != "/metrics" else raw.decode()
        except urllib.error.HTTPError as err:
            return err.code, _decode(err.read())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except Exception:
            self.proc.kill()
            self.proc.wait()


def worker_spec(worker: WorkerProcess) -> str:
    kv = worker.config.kv_events_port
    return worker.config.url + (f",kv=tcp://127.0.0.1:{kv}" if kv else "")


def post_with_headers(url: str, body: dict, headers: dict, timeout: float = 60):
    """POST JSON; return (status, body, response headers)."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, _decode(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, _decode(err.read()), dict(err.headers)
