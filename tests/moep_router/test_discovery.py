"""Workers from the Kubernetes API: the pod reducer, and the watcher against recorded list/watch
streams served over HTTP (added, modified, deleted pods, a bookmark, a cut stream, 410 Gone)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from aiohttp import web

from moep_router.discovery import Change, KubeConfig, KubeWatcher, PodSet, pod_workers

DATA = Path(__file__).parent / "data"
POD_LIST = json.loads((DATA / "k8s_pod_list.json").read_text())
EVENTS = [json.loads(line) for line in (DATA / "k8s_pod_watch.jsonl").read_text().splitlines()]
W0 = ("http://10.0.0.7:31000,kv=tcp://10.0.0.7:32000", "http://10.0.0.7:31001,kv=tcp://10.0.0.7:32002")
W1 = ("http://10.0.0.8:31000,kv=tcp://10.0.0.8:32000", "http://10.0.0.8:31001,kv=tcp://10.0.0.8:32002")


def test_a_pod_serves_its_annotated_workers_only_while_ready():
    [ready] = POD_LIST["items"]
    assert pod_workers(ready) == W0
    assert pod_workers(EVENTS[0]["object"]) == ()  # pending, no IP
    assert pod_workers(EVENTS[3]["object"]) == ()  # running but not ready
    bare = {"metadata": {"name": "p"}, "status": {"phase": "Running", "podIP": "10.1.1.1",
                                                   "conditions": [{"type": "Ready", "status": "True"}]}}
    assert pod_workers(bare) == ("http://10.1.1.1:30000,kv=tcp://10.1.1.1:31000",)  # defaults
    bad = {**bare, "metadata": {"name": "p", "annotations": {"moep.io/workers": "two"}}}
    assert pod_workers(bad) == ()
    going = {**bare, "metadata": {"name": "p", "deletionTimestamp": "2026-12-03T10:00:00Z"}}
    assert pod_workers(going) == ()  # terminating: out before its workers stop


def test_pod_set_returns_each_change_once():
    pods = PodSet()
    assert pods.replace(POD_LIST["items"]) == Change(W0, ())
    changes = [pods.apply(e["type"], e["object"]) for e in EVENTS]
    assert changes == [Change((), ()), Change(W1, ()), Change((), ()), Change((), W0),
                       Change((), ())]
    assert pods.specs() == set(W1)
    assert pods.replace([]) == Change((), W1)  # a re-list that finds no pod removes them all


class _FakeApi:
    """Serves the recorded list, then the watch stream cut after 2 events; the resumed watch
    must carry the last resourceVersion and gets the rest; the next watch gets 410 Gone, and the
    re-list (worker-1 only now) must leave the watcher's set equal to it."""

    def __init__(self) -> None:
        self.watch_versions: list[str] = []
        self.lists = 0

    async def pods(self, request: web.Request) -> web.StreamResponse:
        assert request.query["labelSelector"] == "app=moep-worker"
        if request.query.get("watch") != "true":
            self.lists += 1
            if self.lists == 1:
                return web.json_response(POD_LIST)
            return web.json_response({"metadata": {"resourceVersion": "200"},
                                      "items": [EVENTS[1]["object"]]})
        self.watch_versions.append(request.query["resourceVersion"])
        n = len(self.watch_versions)
        if n == 3:
            return web.json_response({"kind": "Status", "code": 410}, status=410)
        resp = web.StreamResponse()
        await resp.prepare(request)
        for event in (EVENTS[:2] if n == 1 else EVENTS[2:] if n == 2 else []):
            await resp.write((json.dumps(event) + "\n").encode())
        if n >= 4:
            await asyncio.sleep(0.5)  # an idle watch
        return resp  # ends the stream: the client must resume


def test_watcher_resumes_a_cut_stream_and_relists_after_410():
    async def run() -> tuple[list[Change], _FakeApi, KubeWatcher]:
        api = _FakeApi()
        app = web.Application()
        app.router.add_get("/api/v1/namespaces/serving/pods", api.pods)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        watcher = KubeWatcher(KubeConfig("app=moep-worker", "serving", f"http://127.0.0.1:{port}"),
                              max_backoff_s=0.1)
        got: list[Change] = []

        async def collect() -> None:
            async for change in watcher.changes():
                got.append(change)

        task = asyncio.get_running_loop().create_task(collect())
        try:
            for _ in range(200):  # until it watches again after the re-list
                if len(api.watch_versions) >= 4:
                    break
                await asyncio.sleep(0.05)
        finally:
            task.cancel()
            await runner.cleanup()
        return got, api, watcher

    got, api, watcher = asyncio.run(run())
    # list: W0; first stream: worker-1 ready; resumed stream: worker-0 out (not ready, deleted)
    assert got[:3] == [Change(W0, ()), Change(W1, ()), Change((), W0)]
    # each watch resumed where the last stopped; after the 410 and the re-list: from the list's
    assert api.watch_versions[:4] == ["100", "102", "105", "200"]
    assert api.lists == 2 and watcher.pods.specs() == set(W1)  # re-listed after 410: unchanged
    assert len(got) == 3  # the re-list found the same set: no spurious change


def test_router_adds_and_removes_the_discovered_workers(tiny_model):
    from moep_router.config import parse_router_args
    from moep_router.server import Router

    class Recorded:  # a watcher that yields what the recorded streams produced above
        async def changes(self):
            for change in (Change(W0, ()), Change(W1, ()), Change((), W0), Change((), ("x",))):
                yield change

    async def run() -> list[str]:
        router = Router(parse_router_args(["--model-path", str(tiny_model)]))
        await router._discover(Recorded())
        urls = [w.worker_id for w in router.registry.all()]
        for url in urls:
            await router.remove_worker(url)
        router.zmq_ctx.term()
        return urls

    assert asyncio.run(run()) == [s.split(",")[0] for s in W1]
