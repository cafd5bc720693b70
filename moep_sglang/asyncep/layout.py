"""Which experts each worker of an AsyncEP group stores: contiguous 1/N shards by expert index."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ShardLayout:
    num_experts: int  # E: routed experts per MoE layer
    size: int  # N: workers in the group
    rank: int  # this worker

    def __post_init__(self):
        if self.num_experts % self.size:
            raise ValueError(
                f"AsyncEP needs the expert count ({self.num_experts}) divisible by the group size "
                f"({self.size}); choose --asyncep-size among the divisors of {self.num_experts}")

    @property
    def experts_per_rank(self) -> int:
        return self.num_experts // self.size

    def expert_range(self, rank: int) -> tuple[int, int]:
        """[start, end) of the experts `rank` stores."""
        start = rank * self.experts_per_rank
        return start, start + self.experts_per_rank

    @property
    def local_range(self) -> tuple[int, int]:
        return self.expert_range(self.rank)
