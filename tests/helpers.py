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
