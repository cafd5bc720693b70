"""The access log (--access-log PATH, "-" for stdout): one JSON line (messages.AccessEntry) per
prefill request the router answered, errors included, for audits and for following a request
by its id. Each line is one write() to a file opened for appending, so the lines of the
router's processes (--processes N, one file) never interleave. Off by default: then nothing
is built or written."""

from __future__ import annotations

import os
import time

from moep_router.messages import AccessEntry, encode


class AccessLog:
    def __init__(self, target: str) -> None:
        self._own = target != "-"
        self._fd = (os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if self._own
                    else 1)

    def record(self, endpoint: str, request_id: str, status: int, latency_s: float,
               result=None, error: str = "") -> None:
        """One answered request; result: its dispatcher.DispatchResult when it was served."""
        served = {}
        if result is not None:
            usage = result.usage
            served = {"worker": result.worker_id, "prompts": len(result.job.prompts),
                      "prompt_tokens": usage.prompt_tokens, "cached_tokens": usage.cached_tokens,
                      "flops": usage.flops}
        entry = AccessEntry(time=round(time.time(), 6), request_id=request_id, endpoint=endpoint,
                            status=status, latency_ms=round(latency_s * 1e3, 3), error=error,
                            **served)
        os.write(self._fd, encode(entry) + b"\n")

    def close(self) -> None:
        if self._own:
            os.close(self._fd)
