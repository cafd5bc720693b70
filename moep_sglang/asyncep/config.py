"""AsyncEP and prefill-batching configuration: parsed once by the launcher, frozen, handed to
SGLang's scheduler process as JSON in one environment variable each (see `moep_sglang.envs`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

BACKENDS = ("collective", "peer")


class AsyncEPConfigError(ValueError):
    pass


@dataclass(frozen=True)
class AsyncEPConfig:
    rank: int  # this worker's rank in the group, 0 <= rank < size (--asyncep-rank)
    size: int  # N: workers that share one copy of the experts (--asyncep-size)
    store: str  # HOST:PORT of the group's rendezvous store; rank 0 binds it (--asyncep-store)
    backend: str = "collective"  # "collective" (all-gather) | "peer" (one-sided reads)
    ring_slots: int = 5  # S: full-layer expert buffers in the ring (--asyncep-ring-slots)
    lookahead: int = 3  # K: layers gathered ahead of the one computing (--asyncep-lookahead)
    gamma: float = 1.2  # safety factor of T = t_gather * F * gamma (--asyncep-gamma)
    offload: bool = False  # hybrid offload: expert shards in (pinned) host memory
    timeout_s: float = 300.0  # rendezvous and collective timeout (--asyncep-timeout)
    shm_dir: str = "/dev/shm"  # where the peer backend's shared shards live (CPU)
    calibration_iters: int = 5  # gathers/GEMMs timed at startup for T

    def __post_init__(self):
        if self.size < 1:
            raise AsyncEPConfigError("--asyncep-size must be >= 1")
        if not 0 <= self.rank < self.size:
            raise AsyncEPConfigError(
                f"--asyncep-rank must be in [0, {self.size}); got {self.rank}")
        if self.backend not in BACKENDS:
            raise AsyncEPConfigError(
                f"--asyncep-backend must be one of {', '.join(BACKENDS)}; got {self.backend!r}")
        if not 1 <= self.lookahead < self.ring_slots:
            raise AsyncEPConfigError(
                "--asyncep-lookahead must be >= 1 and < --asyncep-ring-slots (a slot is "
                f"computing while K are gathering); got K={self.lookahead}, S={self.ring_slots}")
        if self.gamma <= 0:
            raise AsyncEPConfigError("--asyncep-gamma must be > 0")
        host, sep, port = self.store.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise AsyncEPConfigError(f"--asyncep-store must be HOST:PORT; got {self.store!r}")

    @property
    def store_host(self) -> str:
        return self.store.rpartition(":")[0]

    @property
    def store_port(self) -> int:
        return int(self.store.rpartition(":")[2])

    @property
    def group_name(self) -> str:
        """Names the group's store keys and shared-memory files."""
        return f"moep-asyncep-{self.store_host}-{self.store_port}"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> AsyncEPConfig:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class BatchingConfig:
    """Prefill-only batching: hold the queue until a batch carries >= T FLOPs per layer."""

    min_batch_flops: float | None = None  # forced T per layer (--min-batch-flops); None: AsyncEP's
    max_wait_ms: float = 50.0  # longest extra wait for a batch to reach T (--max-batch-wait-ms)

    def __post_init__(self):
        if self.min_batch_flops is not None and self.min_batch_flops < 0:
            raise AsyncEPConfigError("--min-batch-flops must be >= 0")
        if self.max_wait_ms < 0:
            raise AsyncEPConfigError("--max-batch-wait-ms must be >= 0")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> BatchingConfig:
        return cls(**json.loads(text))
