"""Bootstrap of every emoserve gRPC process (stages and gateway).

Typical stage ``main``::

    server = StageServer(config.server, name="encoder")
    server.add_service(stages_pb2.DESCRIPTOR.services_by_name["Encoder"], servicer,
                       stages_pb2_grpc.add_EncoderServicer_to_server)
    server.add_shutdown_hook(batcher.close)
    await server.run(ready=warm_up)   # start, signals, warm-up, SERVING, wait

Health (``grpc.health.v1``) reports NOT_SERVING for "" and every service until
:meth:`StageServer.mark_ready`; server reflection lists all services. On
SIGTERM/SIGINT (or :meth:`StageServer.stop`) health turns NOT_SERVING, new RPCs
are refused, in-flight RPCs get ``grace_period_s`` to finish, then shutdown
hooks run (e.g. batcher drains) and :meth:`StageServer.wait` returns. A second
SIGINT during shutdown interrupts at once (default handler restored).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Any, Awaitable, Callable

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from emoserve.runtime.config import MIN_CLIENT_PING_INTERVAL_MS, ServerConfig
from emoserve.runtime.health import Health
from emoserve.runtime.security import MalformedRequestInterceptor, server_credentials
from emoserve.runtime.telemetry import Telemetry

log = logging.getLogger(__name__)

AddToServer = Callable[[Any, grpc.aio.Server], None]
"""A generated ``add_<Service>Servicer_to_server`` function."""


class StageServer:
    """A ``grpc.aio`` server with health, reflection, message limits and graceful shutdown.

    Args:
        config: Host, port, message size limit and shutdown grace period.
        name: Process name for logs (e.g. "encoder", "gateway").
        telemetry: The service's metrics and tracing: its interceptors come first, its metrics endpoint starts
            with the server and it is shut down (spans flushed) when the server has stopped.
    """

    def __init__(self, config: ServerConfig, *, name: str, telemetry: Telemetry | None = None) -> None:
        self.config = config
        self.name = name
        self.telemetry = telemetry
        self._services: list[tuple[ServiceDescriptor, Any, AddToServer]] = []
        self._hooks: list[Callable[[], Awaitable[None]]] = []
        self._server: grpc.aio.Server | None = None
        self._health: Health | None = None
        self._port: int | None = None
        self._stopping: asyncio.Task | None = None
        self._stopped: asyncio.Event | None = None
        self._signals: list[signal.Signals] = []
        self._interceptors: list[grpc.aio.ServerInterceptor] = telemetry.server_interceptors() if telemetry else []

    @property
    def port(self) -> int:
        """The bound TCP port (the actual one when configured as 0)."""
        if self._port is None:
            raise RuntimeError(f"server {self.name!r} is not started")
        return self._port

    @property
    def metrics_port(self) -> int | None:
        """The port of this service's ``/metrics`` endpoint once started, None without one."""
        return None if self.telemetry is None else self.telemetry.metrics_port

    @property
    def ready(self) -> bool:
        """True once :meth:`mark_ready` ran and until shutdown starts."""
        return self._health is not None and self._health.ready

    def add_service(self, descriptor: ServiceDescriptor, servicer: Any, add_to_server: AddToServer) -> None:
        """Registers a servicer; call before :meth:`start`.

        Args:
            descriptor: The service descriptor, e.g.
                ``stages_pb2.DESCRIPTOR.services_by_name["Encoder"]`` (its full
                name is used for health and reflection).
            servicer: The servicer instance.
            add_to_server: The generated ``add_<Service>Servicer_to_server``.
        """
        if self._server is not None:
            raise RuntimeError("add_service() must be called before start()")
        self._services.append((descriptor, servicer, add_to_server))

    def add_interceptor(self, interceptor: grpc.aio.ServerInterceptor) -> None:
        """Adds a server interceptor (run in the order added); call before :meth:`start`."""
        if self._server is not None:
            raise RuntimeError("add_interceptor() must be called before start()")
        self._interceptors.append(interceptor)

    def add_shutdown_hook(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Registers a coroutine function run after the server stopped (in order), e.g. ``batcher.close``."""
        self._hooks.append(hook)

    async def start(self) -> int:
        """Binds, registers health/reflection and starts serving (health NOT_SERVING).

        Returns:
            The bound port.

        Raises:
            OSError: The address could not be bound.
            ConfigError: TLS is configured but a certificate, key or CA file is unreadable or invalid.
        """
        if self._server is not None:
            raise RuntimeError(f"server {self.name!r} already started")
        sys.setswitchinterval(self.config.gil_switch_interval_us / 1e6)
        limit = self.config.max_message_bytes
        server = grpc.aio.server(
            interceptors=[*self._interceptors, MalformedRequestInterceptor()],  # unparsable -> INVALID_ARGUMENT
            options=[
                ("grpc.max_send_message_length", limit),
                ("grpc.max_receive_message_length", limit),
                ("grpc.so_reuseport", 0),  # a second process on the same port must fail, not share it
                # Clients may probe the connection with keepalive pings (the gateway's pools detect a silently
                # dead peer that way), also on idle connections; faster pings are answered with GOAWAY.
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS),
            ]
        )
        names = [descriptor.full_name for descriptor, _, _ in self._services]
        for _, servicer, add_to_server in self._services:
            add_to_server(servicer, server)
        self._health = Health(names)
        await self._health.set_not_ready()
        health_pb2_grpc.add_HealthServicer_to_server(self._health.servicer, server)
        reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
        address = f"{self.config.host}:{self.config.port}"
        credentials = server_credentials(self.config.tls) if self.config.tls.enabled else None
        try:
            if credentials is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, credentials)
        except RuntimeError as exc:
            raise OSError(f"cannot bind {address}: {exc}") from exc
        if port == 0:
            raise OSError(f"cannot bind {address}")
        await server.start()
        if self.telemetry is not None:
            try:
                self.telemetry.start_metrics_server(self.config.host)
            except OSError:
                await server.stop(0)
                raise
        self._server, self._port, self._stopped = server, port, asyncio.Event()
        log.info("%s listening on %s:%d, %s (services: %s)", self.name, self.config.host, port,
                 _transport(self.config), ", ".join(names))
        return port

    async def mark_ready(self) -> None:
        """Reports SERVING; call after the model is loaded and warmed up."""
        if self._health is None:
            raise RuntimeError("mark_ready() called before start()")
        await self._health.set_ready()
        log.info("%s ready", self.name)

    def install_signal_handlers(self) -> None:
        """Makes SIGTERM and SIGINT start a graceful :meth:`stop` (main thread only)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
            self._signals.append(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("%s received %s, shutting down", self.name, sig.name)
        self.stop_soon()

    def stop_soon(self, grace_s: float | None = None) -> asyncio.Task:
        """Starts :meth:`stop` without waiting; returns its (shared) task."""
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(self._stop(grace_s))
        return self._stopping

    async def stop(self, grace_s: float | None = None) -> None:
        """Gracefully stops: NOT_SERVING, refuse new RPCs, let in-flight ones finish, run hooks.

        Args:
            grace_s: Time given to in-flight RPCs; default ``config.grace_period_s``.
                Idempotent: later calls wait for the first one.
        """
        await self.stop_soon(grace_s)

    async def _stop(self, grace_s: float | None) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._signals:
            loop.remove_signal_handler(sig)
        self._signals.clear()
        try:
            if self._server is not None and self._health is not None:
                await self._health.shutdown()
                await self._server.stop(self.config.grace_period_s if grace_s is None else grace_s)
            for hook in self._hooks:
                try:
                    await hook()
                except Exception:  # noqa: BLE001 - one failing hook must not block the others
                    log.exception("%s shutdown hook %r failed", self.name, hook)
        finally:
            if self.telemetry is not None:
                await asyncio.get_running_loop().run_in_executor(None, self.telemetry.shutdown)
            if self._stopped is not None:
                self._stopped.set()
            log.info("%s stopped", self.name)

    async def wait(self) -> None:
        """Returns once the server has stopped (after :meth:`stop` or a signal)."""
        if self._stopped is None:
            raise RuntimeError("wait() called before start()")
        await self._stopped.wait()

    async def run(self, ready: Callable[[], Awaitable[None]] | None = None) -> None:
        """Serves until SIGTERM/SIGINT: start, install signal handlers, ``await ready()``
        (load + warm-up), :meth:`mark_ready`, :meth:`wait`.
        """
        await self.start()
        self.install_signal_handlers()
        try:
            if ready is not None:
                await ready()
            await self.mark_ready()
        except BaseException:
            await self.stop(0)
            raise
        await self.wait()


def _transport(config: ServerConfig) -> str:
    """"plaintext", "TLS" or "mTLS", for the start-up log line."""
    if not config.tls.enabled:
        return "plaintext"
    return "mTLS" if config.tls.client_ca_file else "TLS"
