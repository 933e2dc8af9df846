"""A local HTTP server that speaks the Kubernetes list/watch protocol for ``discovery.k8s.io/v1`` EndpointSlices.

No kube-apiserver can run here, so the EndpointSlice watcher is tested against this: it serves exactly one
resource path, ``GET /apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices``, with the API server's
semantics for it: a label selector, a list answered with the collection's ``resourceVersion``, and a watch
(``?watch=true&resourceVersion=N``) answered as a chunked stream of JSON events (``ADDED``, ``MODIFIED``,
``DELETED``, ``BOOKMARK``) newer than N, ended after ``timeoutSeconds``; a watch from a compacted version,
or one open when history is compacted, gets an ``ERROR`` event with a ``410 Gone`` Status.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

PATH = "/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
SERVICE_LABEL = "kubernetes.io/service-name"


@dataclass
class Request:
    """One request the server received."""

    watch: bool
    query: dict[str, str]


@dataclass
class _State:
    slices: dict[str, dict] = field(default_factory=dict)
    version: int = 100
    history: list[tuple[int, str, dict]] = field(default_factory=list)
    compacted_below: int = 0
    """Watches from a resourceVersion below this get 410 Gone."""
    epoch: int = 0
    """Bumped by compaction: open watches end with 410 Gone."""


def endpoint_slice(name: str, service: str, endpoints: list[tuple[str, bool | None]], port: int,
                   port_name: str = "grpc", terminating: bool = False) -> dict:
    """An EndpointSlice object (without resourceVersion); endpoints are (IPv4 address, ready or None)."""
    conditions = [{} if ready is None else {"ready": ready, "serving": ready, "terminating": terminating}
                  for _, ready in endpoints]
    return {
        "kind": "EndpointSlice",
        "apiVersion": "discovery.k8s.io/v1",
        "metadata": {"name": name, "namespace": "", "labels": {SERVICE_LABEL: service}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address], "conditions": cond} for (address, _), cond in zip(endpoints, conditions)],
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
    }


class KubeWatchServer:
    """The EndpointSlice list/watch endpoint of one namespace, on loopback; a context manager.

    Args:
        namespace: the only namespace served (others: 404).
    """

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.requests: list[Request] = []
        self.fail_next = 0
        """This many next requests are answered 500 Internal Server Error."""
        self._state = _State()
        self._changed = threading.Condition()
        self._closing = False
        handler = type("Handler", (_Handler,), {"owner": self})
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, name="kube-watch-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    @property
    def resource_version(self) -> str:
        with self._changed:
            return str(self._state.version)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._http.shutdown()
        self._http.server_close()

    # -- changes, as controllers would make them ----------------------------------------------------------

    def _record(self, kind: str, obj: dict) -> None:
        state = self._state
        state.version += 1
        obj = json.loads(json.dumps(obj))
        obj["metadata"]["namespace"] = self.namespace
        obj["metadata"]["resourceVersion"] = str(state.version)
        if kind == "DELETED":
            state.slices.pop(obj["metadata"]["name"], None)
        else:
            state.slices[obj["metadata"]["name"]] = obj
        state.history.append((state.version, kind, obj))
        self._changed.notify_all()

    def put(self, obj: dict) -> None:
        """Creates (ADDED) or replaces (MODIFIED) an EndpointSlice."""
        with self._changed:
            self._record("MODIFIED" if obj["metadata"]["name"] in self._state.slices else "ADDED", obj)

    def delete(self, name: str) -> None:
        """Deletes an EndpointSlice (DELETED)."""
        with self._changed:
            self._record("DELETED", self._state.slices[name])

    def bookmark(self) -> None:
        """Advances the resourceVersion with a BOOKMARK event (an unrelated change elsewhere)."""
        with self._changed:
            self._state.version += 1
            self._state.history.append((self._state.version, "BOOKMARK", {
                "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
                "metadata": {"resourceVersion": str(self._state.version)}}))
            self._changed.notify_all()

    def compact(self) -> None:
        """Forgets all history: open watches and watches from older versions get 410 Gone."""
        with self._changed:
            self._state.compacted_below = self._state.version + 1
            self._state.history.clear()
            self._state.epoch += 1
            self._changed.notify_all()

    def watches(self) -> list[Request]:
        return [r for r in self.requests if r.watch]

    def lists(self) -> list[Request]:
        return [r for r in self.requests if not r.watch]


class _Handler(BaseHTTPRequestHandler):
    owner: KubeWatchServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _status(self, code: int, reason: str, message: str) -> dict:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
                "reason": reason, "code": code}

    def do_GET(self) -> None:
        owner = self.owner
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        if url.path != PATH.format(namespace=owner.namespace):
            self._json(404, self._status(404, "NotFound", f"no such path {url.path}"))
            return
        watch = query.get("watch") in ("true", "1")
        owner.requests.append(Request(watch, query))
        if owner.fail_next > 0:
            owner.fail_next -= 1
            self._json(500, self._status(500, "InternalError", "injected failure"))
            return
        key, _, value = query.get("labelSelector", "").partition("=")
        if key != SERVICE_LABEL or not value:
            self._json(400, self._status(400, "BadRequest", "expected labelSelector kubernetes.io/service-name=..."))
            return
        if watch:
            self._watch(value, query)
        else:
            self._list(value)

    def _list(self, service: str) -> None:
        owner = self.owner
        with owner._changed:
            items = [s for s in owner._state.slices.values() if s["metadata"]["labels"][SERVICE_LABEL] == service]
            version = str(owner._state.version)
        self._json(200, {"kind": "EndpointSliceList", "apiVersion": "discovery.k8s.io/v1",
                         "metadata": {"resourceVersion": version}, "items": items})

    def _chunk(self, event: dict) -> None:
        data = json.dumps(event).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _watch(self, service: str, query: dict[str, str]) -> None:
        owner = self.owner
        since = int(query.get("resourceVersion") or 0)
        deadline = time.monotonic() + float(query.get("timeoutSeconds", 1800))
        bookmarks = query.get("allowWatchBookmarks") == "true"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            with owner._changed:
                epoch = owner._state.epoch
                gone = since < owner._state.compacted_below
            while not gone:
                with owner._changed:
                    pending = [(v, k, o) for v, k, o in owner._state.history if v > since]
                    if not pending:
                        owner._changed.wait(timeout=max(0.0, min(0.2, deadline - time.monotonic())))
                    if owner._closing or time.monotonic() >= deadline:
                        break
                    gone = owner._state.epoch != epoch
                for version, kind, obj in pending:
                    since = version
                    if kind == "BOOKMARK" and not bookmarks:
                        continue
                    if kind != "BOOKMARK" and obj["metadata"]["labels"][SERVICE_LABEL] != service:
                        continue
                    self._chunk({"type": kind, "object": obj})
            if gone:
                self._chunk({"type": "ERROR", "object": self._status(
                    410, "Expired", f"too old resource version: {since} ({owner._state.compacted_below})")})
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
