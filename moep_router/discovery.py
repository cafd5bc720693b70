"""Workers discovered from the Kubernetes API: pods matching a label selector, their ports from
pod annotations (what `moep-sglang serve --workers-only` wires).

A pod contributes workers only while it is Running and Ready and has an IP. Its annotations:

    moep.io/workers             workers in the pod (default 1)
    moep.io/worker-base-port    B (default 30000): worker i on B+i, KV events on B+1000+2i

Invariant of PodSet: `specs()` is exactly the union of the worker SPECs of the pods it has seen
whose latest state is ready; every change of that set is returned once, as (added, removed).
The watcher lists the pods, then watches from the list's resourceVersion; a dropped stream is
resumed from the last resourceVersion seen, and a 410 Gone (history expired) re-lists, diffing
against what it had, so a reconnect never loses or duplicates a worker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

logger = logging.getLogger("moep_router.discovery")

WORKERS_ANNOTATION = "moep.io/workers"
BASE_PORT_ANNOTATION = "moep.io/worker-base-port"
DEFAULT_BASE_PORT = 30000
KV_PORT_OFFSET = 1000  # as moep_sglang.server.node (the router imports nothing of the workers)
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class KubeConfig:
    label_selector: str  # e.g. app=moep-worker
    namespace: str
    api_url: str  # https://KUBERNETES_SERVICE_HOST:PORT in a cluster
    token_file: Path | None = None  # the service account's token, re-read on every request
    ca_file: Path | None = None          # (projected tokens rotate)

    def headers(self) -> dict[str, str]:
        if self.token_file is None or not self.token_file.exists():
            return {}
        return {"Authorization": f"Bearer {self.token_file.read_text().strip()}"}

    @classmethod
    def in_cluster(cls, label_selector: str, namespace: str | None = None,
                   api_url: str | None = None) -> KubeConfig:
        """From the pod's service account (namespace, token, CA) unless given."""
        if namespace is None:
            ns_file = SERVICE_ACCOUNT / "namespace"
            namespace = ns_file.read_text().strip() if ns_file.exists() else "default"
        if api_url is None:
            host = os.environ.get("KUBERNETES_SERVICE_HOST")
            if not host:
                raise ValueError("--k8s-selector outside a cluster needs --k8s-api URL")
            api_url = f"https://{host}:{os.environ.get('KUBERNETES_SERVICE_PORT', '443')}"
        token_file, ca = SERVICE_ACCOUNT / "token", SERVICE_ACCOUNT / "ca.crt"
        return cls(label_selector, namespace, api_url.rstrip("/"),
                   token_file if token_file.exists() else None, ca if ca.exists() else None)


def pod_workers(pod: dict) -> tuple[str, ...]:
    """The worker SPECs a pod serves now (empty unless Running, Ready and with an IP)."""
    status = pod.get("status") or {}
    ip = status.get("podIP")
    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or [])
    terminating = (pod.get("metadata") or {}).get("deletionTimestamp")
    if status.get("phase") != "Running" or not ready or not ip or terminating:
        return ()  # a terminating pod may still say Ready while its workers shut down
    notes = (pod.get("metadata") or {}).get("annotations") or {}
    try:
        n = int(notes.get(WORKERS_ANNOTATION, 1))
        base = int(notes.get(BASE_PORT_ANNOTATION, DEFAULT_BASE_PORT))
    except ValueError:
        logger.warning("pod %s: annotations %s / %s are not integers; skipped", _name(pod),
                       WORKERS_ANNOTATION, BASE_PORT_ANNOTATION)
        return ()
    host = f"[{ip}]" if ":" in ip else ip  # IPv6
    return tuple(f"http://{host}:{base + i},kv=tcp://{host}:{base + KV_PORT_OFFSET + 2 * i}"
                 for i in range(max(n, 0)))


def _name(pod: dict) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '?')}"


@dataclass(frozen=True)
class Change:
    added: tuple[str, ...]  # worker SPECs to add
    removed: tuple[str, ...]  # worker SPECs to remove

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)


@dataclass
class PodSet:
    """Pod name -> its worker SPECs; transitions return what changed."""
    pods: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def specs(self) -> set[str]:
        return {s for specs in self.pods.values() for s in specs}

    def apply(self, kind: str, pod: dict) -> Change:
        """A watch event: ADDED / MODIFIED / DELETED (others change nothing)."""
        before = self.specs()
        name = _name(pod)
        if kind == "DELETED":
            self.pods.pop(name, None)
        elif kind in ("ADDED", "MODIFIED"):
            self.pods[name] = pod_workers(pod)
        return self._diff(before)

    def replace(self, pods: list[dict]) -> Change:
        """A fresh list of every matching pod (start, or after 410 Gone)."""
        before = self.specs()
        self.pods = {_name(p): pod_workers(p) for p in pods}
        return self._diff(before)

    def _diff(self, before: set[str]) -> Change:
        after = self.specs()
        return Change(tuple(sorted(after - before)), tuple(sorted(before - after)))


class Gone(Exception):
    """The watch's resourceVersion is too old (HTTP 410 or an ERROR event with code 410)."""


class KubeWatcher:
    """Lists and watches the pods; `changes()` yields every Change of the worker set, forever
    (reconnecting with a back-off of at most `max_backoff_s`)."""

    def __init__(self, config: KubeConfig, max_backoff_s: float = 10.0,
                 watch_timeout_s: int = 300) -> None:
        self.config = config
        self.pods = PodSet()
        self.resource_version: str | None = None
        self.max_backoff_s = max_backoff_s
        self.watch_timeout_s = watch_timeout_s
        self.num_lists = 0
        self.num_watches = 0

    async def changes(self) -> AsyncIterator[Change]:
        ssl_ctx = (ssl.create_default_context(cafile=str(self.config.ca_file))
                   if self.config.ca_file else None)
        backoff = 0.5
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_ctx)) as http:
            while True:
                try:
                    if self.resource_version is None:
                        change = await self._list(http)
                        if change:
                            yield change
                    async for change in self._watch(http):
                        backoff = 0.5
                        if change:
                            yield change
                except Gone:
                    logger.info("pod watch: history expired (410); listing again")
                    self.resource_version = None
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
                    logger.warning("pod watch: %s: %s; again in %.1f s", type(exc).__name__, exc,
                                   backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(self.max_backoff_s, backoff * 2)

    def _pods_url(self) -> str:
        return f"{self.config.api_url}/api/v1/namespaces/{self.config.namespace}/pods"

    async def _list(self, http: aiohttp.ClientSession) -> Change:
        self.num_lists += 1
        async with http.get(self._pods_url(), headers=self.config.headers(),
                            params={"labelSelector": self.config.label_selector}) as resp:
            if resp.status != 200:
                raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status,
                                                  message=(await resp.text())[:200])
            body = await resp.json(content_type=None)
        self.resource_version = (body.get("metadata") or {}).get("resourceVersion")
        return self.pods.replace(body.get("items") or [])

    async def _watch(self, http: aiohttp.ClientSession) -> AsyncIterator[Change]:
        """One watch request from the current resourceVersion, until the server ends it."""
        self.num_watches += 1
        params = {"labelSelector": self.config.label_selector, "watch": "true",
                  "allowWatchBookmarks": "true", "timeoutSeconds": str(self.watch_timeout_s),
                  "resourceVersion": self.resource_version or ""}
        timeout = aiohttp.ClientTimeout(total=None, sock_read=self.watch_timeout_s + 30)
        async with http.get(self._pods_url(), params=params, timeout=timeout,
                            headers=self.config.headers()) as resp:
            if resp.status == 410:
                raise Gone()
            if resp.status != 200:
                raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status,
                                                  message=(await resp.text())[:200])
            async for line in resp.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
                    raise ValueError(f"watch line is not an event: {line[:200]!r}")
                kind, obj = event.get("type"), event["object"]
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Gone()
                    raise ValueError(f"watch error: {obj.get('message', obj)}")
                rv = (obj.get("metadata") or {}).get("resourceVersion")
                if rv:
                    self.resource_version = rv
                yield self.pods.apply(kind, obj)
