"""Where the gateway finds each stage's replicas: fixed addresses, Kubernetes EndpointSlices, or DNS.

gRPC keeps one long-lived HTTP/2 connection per address, so a Kubernetes ClusterIP Service would pin the
gateway to the pods that existed when it connected. Instead the gateway learns the address of every ready
pod and balances per request (see :class:`~emoserve.gateway.pool.StagePool`):

* ``host:port[,host:port...]``: a fixed list (:class:`StaticTarget`).
* ``k8s://SERVICE[.NAMESPACE][:PORT]``: watches the Service's ``discovery.k8s.io/v1`` EndpointSlices through
  the Kubernetes API (:class:`EndpointSliceWatcher`); PORT is the pods' port number or the Service port's
  name (default: the only port, else the one named ``grpc``); NAMESPACE defaults to the pod's own.
* ``dns:///HOST:PORT`` (or ``dns:HOST:PORT``): resolves HOST periodically, e.g. a headless Service whose DNS
  name lists every ready pod (:class:`DnsResolver`).

Watchers push the complete, sorted address list to an :class:`AddressSink` (the stage pool) on the event
loop whenever it changes.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import os
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
"""Label that ties an EndpointSlice to its Service."""
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
"""Namespace of the pod, mounted with its service-account token."""
DEFAULT_PORT_NAME = "grpc"
"""Port chosen on a multi-port Service when a ``k8s://`` target names none."""
DNS_INTERVAL_S = 5.0
"""Seconds between DNS look-ups (the TTL Kubernetes' cluster DNS gives Service records)."""

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class AddressSink(Protocol):
    """Receives a stage's complete address list (``host:port``) each time it changes."""

    def update_addresses(self, addresses: Sequence[str]) -> None: ...


@dataclass(frozen=True)
class StaticTarget:
    """Fixed ``host:port`` addresses."""

    addresses: tuple[str, ...]


@dataclass(frozen=True)
class KubernetesTarget:
    """The ready pods behind a Kubernetes Service, from its EndpointSlices."""

    service: str
    namespace: str | None
    """None: the namespace the gateway runs in."""
    port: int | str | None
    """Pod port number, Service port name, or None (the only port, else the one named ``grpc``)."""


@dataclass(frozen=True)
class DnsTarget:
    """Every address a DNS name resolves to (a headless Service), all on one port."""

    host: str
    port: int


Target = StaticTarget | KubernetesTarget | DnsTarget


def parse_target(addresses: str | Sequence[str]) -> Target:
    """Parses a stage's address option (``--encoder`` etc.) into a target.

    Args:
        addresses: ``host:port`` items (a comma-separated string or a list), or one ``k8s://`` or ``dns:``
            URI.

    Returns:
        The target.

    Raises:
        ValueError: empty, malformed, or a URI mixed with other addresses.
    """
    items = [a.strip() for a in (addresses.split(",") if isinstance(addresses, str) else addresses)]
    items = [a for a in items if a]
    if not items:
        raise ValueError("no address given")
    uris = [a for a in items if a.startswith(("k8s:", "dns:"))]
    if uris:
        if len(items) != 1:
            raise ValueError(f"a k8s:// or dns: target must be the only address, got {items}")
        uri = uris[0]
        return _parse_k8s(uri) if uri.startswith("k8s:") else _parse_dns(uri)
    for item in items:
        _split_host_port(item, item)
    return StaticTarget(tuple(items))


def _split_host_port(value: str, spec: str) -> tuple[str, str]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port:
        raise ValueError(f"{spec!r}: expected HOST:PORT")
    if host.startswith("[") != host.endswith("]"):
        raise ValueError(f"{spec!r}: unbalanced brackets around an IPv6 address")
    return host.strip("[]"), port


def _port_number(value: str, spec: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise ValueError(f"{spec!r}: port must be a number within [1, 65535], got {value!r}")
    return int(value)


def _parse_k8s(spec: str) -> KubernetesTarget:
    if not spec.startswith("k8s://"):
        raise ValueError(f"{spec!r}: expected k8s://SERVICE[.NAMESPACE][:PORT]")
    rest = spec[len("k8s://"):]
    name, sep, port_text = rest.partition(":")
    port: int | str | None = None
    if sep:
        port = _port_number(port_text, spec) if port_text.isdigit() else port_text
        if isinstance(port, str) and not _DNS_LABEL.match(port):
            raise ValueError(f"{spec!r}: {port_text!r} is neither a port number nor a port name")
    parts = name.split(".")
    if len(parts) > 2 or not all(_DNS_LABEL.match(p) for p in parts):
        raise ValueError(f"{spec!r}: expected k8s://SERVICE[.NAMESPACE][:PORT] with DNS-label names")
    return KubernetesTarget(parts[0], parts[1] if len(parts) == 2 else None, port)


def _parse_dns(spec: str) -> DnsTarget:
    rest = spec[len("dns:"):]
    if rest.startswith("//"):
        authority, slash, rest = rest[2:].partition("/")
        if authority or not slash:
            raise ValueError(f"{spec!r}: expected dns:///HOST:PORT (a DNS server authority is not supported)")
    host, port = _split_host_port(rest, spec)
    return DnsTarget(host, _port_number(port, spec))


def format_address(host: str, port: int) -> str:
    """``host:port``, with IPv6 addresses in brackets."""
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


class Backoff:
    """Exponential back-off with full jitter between ``initial_s`` and ``max_s``."""

    def __init__(self, initial_s: float = 0.5, max_s: float = 30.0) -> None:
        if not 0 < initial_s <= max_s:
            raise ValueError(f"back-off needs 0 < initial_s <= max_s, got {initial_s}, {max_s}")
        self.initial_s, self.max_s = initial_s, max_s
        self._failures = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; grows with each consecutive failure."""
        ceiling = min(self.max_s, self.initial_s * 2 ** min(self._failures, 30))
        self._failures += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        """Call after a success."""
        self._failures = 0


class _Publisher:
    """Hands address lists to the sink on the event loop, only when they change."""

    def __init__(self, stage: str, sink: AddressSink, loop: asyncio.AbstractEventLoop) -> None:
        self.stage, self.sink, self.loop = stage, sink, loop
        self.current: tuple[str, ...] | None = None

    def publish(self, addresses: Iterable[str]) -> None:
        ordered = tuple(sorted(set(addresses)))
        if ordered == self.current:
            return
        self.current = ordered
        log.info("%s replicas: %s", self.stage, ", ".join(ordered) or "none")
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.sink.update_addresses, list(ordered))


def ready_addresses(endpoint_slice: Any, port: int | str | None) -> list[str]:
    """``ip:port`` of the ready endpoints of one EndpointSlice (a ``V1EndpointSlice``).

    An endpoint whose ``ready`` condition is unset counts as ready (the API's rule); terminating endpoints
    are not ready.

    Args:
        endpoint_slice: the slice.
        port: pod port number, port name, or None (the only port, else the one named ``grpc``).
    """
    number = _slice_port(endpoint_slice, port)
    if number is None:
        return []
    out = []
    for endpoint in endpoint_slice.endpoints or ():
        conditions = endpoint.conditions
        if conditions is not None and conditions.ready is False:
            continue
        out.extend(format_address(address, number) for address in endpoint.addresses or ())
    return out


def _slice_port(endpoint_slice: Any, port: int | str | None) -> int | None:
    if isinstance(port, int):
        return port
    ports = [p for p in endpoint_slice.ports or () if p.port is not None]
    if port is None and len(ports) == 1:
        return ports[0].port
    wanted = DEFAULT_PORT_NAME if port is None else port
    for candidate in ports:
        if candidate.name == wanted:
            return candidate.port
    log.warning("EndpointSlice %s has no port named %r (ports: %s); ignoring it",
                endpoint_slice.metadata.name, wanted, [(p.name, p.port) for p in ports])
    return None


def pod_namespace(default: str = "default") -> str:
    """The namespace this pod runs in (from its service-account mount), else ``default``."""
    try:
        return NAMESPACE_FILE.read_text(encoding="utf-8").strip() or default
    except OSError:
        return default


def kubernetes_api_client() -> Any:
    """A ``kubernetes.client.ApiClient`` for the in-cluster service account, else the local kubeconfig.

    Raises:
        RuntimeError: the ``kubernetes`` package is missing, or no configuration was found.
    """
    try:
        from kubernetes import client, config
    except ImportError:
        raise RuntimeError("k8s:// targets need the kubernetes package: pip install 'emoserve[k8s]'") from None
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        try:
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration)
        except (config.ConfigException, OSError) as exc:
            raise RuntimeError(f"no Kubernetes configuration (neither in-cluster nor kubeconfig): {exc}") from None
    return client.ApiClient(configuration)


class EndpointSliceWatcher:
    """Follows the ready pods of a Service through its EndpointSlices (list, then watch).

    The Kubernetes client blocks, so the watch runs in a daemon thread and hands each new address list to
    the sink on the event loop. It lists the Service's slices, publishes their ready endpoints, then watches
    from the list's ``resourceVersion`` (resuming from the last one seen, bookmarks included, whenever the
    server ends a watch); a ``410 Gone`` (history compacted) triggers a fresh list, and any other error a
    retry after an exponential back-off. Needs RBAC ``get``/``list``/``watch`` on
    ``discovery.k8s.io`` ``endpointslices`` in the namespace.

    Args:
        stage: stage name for logs.
        target: Service, namespace and port.
        sink: receives the address lists.
        api_client: a ``kubernetes.client.ApiClient``; default :func:`kubernetes_api_client`.
        watch_timeout_s: server-side duration of one watch request before it is resumed.
        backoff: delays between failed attempts.
    """

    def __init__(self, stage: str, target: KubernetesTarget, sink: AddressSink, *, api_client: Any = None,
                 watch_timeout_s: int = 240, backoff: Backoff | None = None) -> None:
        self.stage = stage
        self.target = target
        self.namespace = target.namespace or pod_namespace()
        self.selector = f"{SERVICE_NAME_LABEL}={target.service}"
        self.watch_timeout_s = watch_timeout_s
        self._sink = sink
        self._api_client = api_client
        self._backoff = backoff or Backoff()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch: Any = None
        self._publisher: _Publisher | None = None
        self._slices: dict[str, list[str]] = {}

    async def start(self) -> None:
        """Starts following the Service (returns at once; addresses arrive as they are listed)."""
        if self._thread is not None:
            raise RuntimeError("watcher already started")
        if self._api_client is None:
            self._api_client = await asyncio.to_thread(kubernetes_api_client)
        self._publisher = _Publisher(self.stage, self._sink, asyncio.get_running_loop())
        self._thread = threading.Thread(target=self._run, name=f"endpointslices-{self.stage}", daemon=True)
        self._thread.start()
        log.info("%s: watching EndpointSlices of service %s/%s", self.stage, self.namespace, self.target.service)

    async def close(self, timeout_s: float = 5.0) -> None:
        """Stops the watch and waits up to ``timeout_s`` for its thread (a daemon: it never blocks exit)."""
        self._stopping.set()
        thread = self._thread
        deadline = time.monotonic() + timeout_s
        while thread is not None and thread.is_alive() and time.monotonic() < deadline:
            watch = self._watch
            if watch is not None:
                watch.stop()  # repeated: a watch whose response was not open yet cannot be interrupted earlier
            await asyncio.to_thread(thread.join, 0.05)
        if thread is not None and thread.is_alive():
            log.warning("%s: EndpointSlice watch thread still busy after %.0f s; leaving it", self.stage, timeout_s)

    def _run(self) -> None:
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        api = client.DiscoveryV1Api(self._api_client)
        while not self._stopping.is_set():
            try:
                version = self._list(api)
                self._backoff.reset()
                while not self._stopping.is_set():
                    version = self._follow(api, version)
            except ApiException as exc:
                if exc.status == 410:
                    log.info("%s: EndpointSlice watch expired (410 Gone); listing again", self.stage)
                    continue
                self._pause(f"Kubernetes API error {exc.status} {exc.reason}")
            except Exception as exc:  # noqa: BLE001 - any failure (connection, decoding) is retried
                if self._stopping.is_set():
                    break
                self._pause(f"{type(exc).__name__}: {exc}")

    def _pause(self, reason: str) -> None:
        delay = self._backoff.next_delay()
        log.warning("%s: EndpointSlice discovery failed (%s); retrying in %.1f s", self.stage, reason, delay)
        self._stopping.wait(delay)

    def _list(self, api: Any) -> str:
        listing = api.list_namespaced_endpoint_slice(self.namespace, label_selector=self.selector,
                                                    _request_timeout=30)
        self._slices = {s.metadata.name: ready_addresses(s, self.target.port) for s in listing.items}
        self._publish()
        return listing.metadata.resource_version

    def _follow(self, api: Any, version: str) -> str:
        """One watch request from ``version``; returns the last resourceVersion seen when the server ends it."""
        from kubernetes import watch

        self._watch = watch.Watch()
        if self._stopping.is_set():
            return version
        stream = self._watch.stream(
            api.list_namespaced_endpoint_slice, self.namespace, label_selector=self.selector,
            resource_version=version, allow_watch_bookmarks=True, timeout_seconds=self.watch_timeout_s,
            _request_timeout=self.watch_timeout_s + 30,
        )
        for event in stream:
            kind, obj = event["type"], event["object"]
            if kind in ("ADDED", "MODIFIED"):
                self._slices[obj.metadata.name] = ready_addresses(obj, self.target.port)
                self._publish()
            elif kind == "DELETED":
                self._slices.pop(obj.metadata.name, None)
                self._publish()
        return self._watch.resource_version or version

    def _publish(self) -> None:
        assert self._publisher is not None
        self._publisher.publish(a for addresses in self._slices.values() for a in addresses)


Resolver = Callable[..., list[tuple[Any, ...]]]
"""``socket.getaddrinfo``-compatible look-up."""


class DnsResolver:
    """Resolves a DNS name every ``interval_s`` and publishes every address it returns.

    A headless Service's name resolves to its ready pods, so scaled-up pods are used within one interval.
    A failed look-up keeps the previous addresses (the pool skips replicas that refuse calls).

    Args:
        stage: stage name for logs.
        target: host and port.
        sink: receives the address lists.
        interval_s: seconds between look-ups.
        resolve: ``socket.getaddrinfo``-compatible function (tests inject one).
    """

    def __init__(self, stage: str, target: DnsTarget, sink: AddressSink, *, interval_s: float = DNS_INTERVAL_S,
                 resolve: Resolver = socket.getaddrinfo) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.stage, self.target, self.interval_s = stage, target, interval_s
        self._sink = sink
        self._resolve = resolve
        self._task: asyncio.Task | None = None
        self._publisher: _Publisher | None = None

    async def start(self) -> None:
        """Resolves once (publishing what it finds), then keeps resolving in the background."""
        if self._task is not None:
            raise RuntimeError("resolver already started")
        self._publisher = _Publisher(self.stage, self._sink, asyncio.get_running_loop())
        await self.refresh()
        self._task = asyncio.get_running_loop().create_task(self._loop())
        log.info("%s: resolving %s every %.1f s", self.stage, self.target.host, self.interval_s)

    async def refresh(self) -> None:
        """One look-up; publishes the addresses if they changed, logs and keeps them on failure."""
        assert self._publisher is not None
        lookup = functools.partial(self._resolve, self.target.host, self.target.port, type=socket.SOCK_STREAM)
        try:
            infos = await asyncio.get_running_loop().run_in_executor(None, lookup)
        except OSError as exc:
            log.warning("%s: cannot resolve %s: %s", self.stage, self.target.host, exc)
            return
        self._publisher.publish(format_address(info[4][0], self.target.port) for info in infos
                                if info[0] in (socket.AF_INET, socket.AF_INET6))

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.refresh()

    async def close(self) -> None:
        """Stops resolving."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass


Discovery = EndpointSliceWatcher | DnsResolver


def initial_addresses(target: Target) -> list[str]:
    """The addresses a stage pool starts with: the fixed ones, or none until discovery reports."""
    return list(target.addresses) if isinstance(target, StaticTarget) else []


def discovery_for(stage: str, target: Target, sink: AddressSink) -> Discovery | None:
    """The watcher that keeps ``sink`` up to date for ``target`` (None for fixed addresses)."""
    if isinstance(target, KubernetesTarget):
        return EndpointSliceWatcher(stage, target, sink)
    if isinstance(target, DnsTarget):
        return DnsResolver(stage, target, sink)
    return None
