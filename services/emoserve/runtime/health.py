"""``grpc.health.v1`` status of a server: NOT_SERVING until ready, NOT_SERVING again while draining."""

from __future__ import annotations

from typing import Sequence

from grpc_health.v1 import health, health_pb2

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Health:
    """Health status of the overall server ("") and each registered service.

    Args:
        service_names: Fully qualified names of the served services
            (e.g. "emoserve.v1.Encoder"); the overall status "" is always included.
    """

    def __init__(self, service_names: Sequence[str]) -> None:
        self.servicer = health.aio.HealthServicer()
        self._names = ("", *service_names)
        self._ready = False

    @property
    def ready(self) -> bool:
        """True between :meth:`set_ready` and :meth:`shutdown`."""
        return self._ready

    async def _set_all(self, status: int) -> None:
        for name in self._names:
            await self.servicer.set(name, status)

    async def set_not_ready(self) -> None:
        """Reports NOT_SERVING for everything (model loading or temporarily unhealthy)."""
        self._ready = False
        await self._set_all(NOT_SERVING)

    async def set_ready(self) -> None:
        """Reports SERVING for everything (model loaded and warmed up)."""
        self._ready = True
        await self._set_all(SERVING)

    async def shutdown(self) -> None:
        """Reports NOT_SERVING permanently; later status changes are ignored."""
        self._ready = False
        await self.servicer.enter_graceful_shutdown()
