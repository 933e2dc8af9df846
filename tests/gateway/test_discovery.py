"""Service discovery of stage replicas: target parsing, the EndpointSlice watcher against a local server that
speaks the Kubernetes watch protocol, the DNS resolver against real loopback servers, and the gateway
following both into its stage pools (new pods get calls within seconds of turning ready)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import grpc
import pytest
from kubernetes import client

from emoserve.gateway.discovery import (
    Backoff,
    DnsResolver,
    DnsTarget,
    EndpointSliceWatcher,
    KubernetesTarget,
    StaticTarget,
    discovery_for,
    initial_addresses,
    parse_target,
    ready_addresses,
)
from emoserve.gateway.pool import ReplicaState, StagePool
from emoserve.runtime.config import PoolConfig, ServerConfig, load_config
from emoserve.runtime.server import StageServer
from emoserve.serve import StageAddresses, start_gateway
from emoserve.v1 import stages_pb2, stages_pb2_grpc, tts_pb2
from tests.gateway.kube_watch_server import KubeWatchServer, endpoint_slice

pytestmark = pytest.mark.timeout(60)

NAMESPACE, SERVICE = "speech", "tts-emoserve-encoder"
SOON_S = 5.0
"""Upper bound for "within seconds": a change in the cluster reaching the gateway's pool."""


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 45))


# -- parsing ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "target"),
    [
        ("a:1", StaticTarget(("a:1",))),
        ("a:1, 10.0.0.2:50051,", StaticTarget(("a:1", "10.0.0.2:50051"))),
        (["[::1]:50051"], StaticTarget(("[::1]:50051",))),
        ("k8s://enc", KubernetesTarget("enc", None, None)),
        ("k8s://enc.speech", KubernetesTarget("enc", "speech", None)),
        ("k8s://enc.speech:50051", KubernetesTarget("enc", "speech", 50051)),
        ("k8s://enc:grpc", KubernetesTarget("enc", None, "grpc")),
        (["k8s://tts-enc.ns-1:grpc"], KubernetesTarget("tts-enc", "ns-1", "grpc")),
        ("dns:///enc.speech.svc.cluster.local:50051", DnsTarget("enc.speech.svc.cluster.local", 50051)),
        ("dns:localhost:7", DnsTarget("localhost", 7)),
        ("dns:///[::1]:7", DnsTarget("::1", 7)),
    ],
)
def test_parse_target(spec, target):
    assert parse_target(spec) == target


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "no address"),
        ("host", "HOST:PORT"),
        ("k8s://enc,a:1", "only address"),
        ("k8s:enc", "k8s://SERVICE"),
        ("k8s://Enc", "DNS-label"),
        ("k8s://a.b.c", "DNS-label"),
        ("k8s://enc:0", "within"),
        ("k8s://enc:Bad_Name", "neither a port number"),
        ("dns:///enc", "HOST:PORT"),
        ("dns://8.8.8.8/enc:53", "authority"),
        ("dns:///enc:http", "port must be a number"),
        ("[::1:5", "brackets"),
    ],
)
def test_parse_target_rejects_bad_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_target(spec)


def test_initial_addresses_and_discovery_choice():
    static = parse_target("a:1,b:2")
    assert initial_addresses(static) == ["a:1", "b:2"] and discovery_for("encoder", static, None) is None
    k8s, dns = parse_target("k8s://enc.speech"), parse_target("dns:///enc:1")
    assert initial_addresses(k8s) == initial_addresses(dns) == []
    assert isinstance(discovery_for("encoder", k8s, None), EndpointSliceWatcher)
    assert isinstance(discovery_for("encoder", dns, None), DnsResolver)


def model(obj: dict) -> client.V1EndpointSlice:
    """The kubernetes client's model of an EndpointSlice, as its watch decodes one."""
    obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": "1"}}
    return client.ApiClient().deserialize(json.dumps(obj), "V1EndpointSlice", "application/json")


def test_ready_addresses_follow_the_endpoint_conditions_and_ports():
    slice_ = model(endpoint_slice("s", SERVICE, [("10.0.0.1", True), ("10.0.0.2", False), ("10.0.0.3", None)], 50051))
    assert ready_addresses(slice_, None) == ["10.0.0.1:50051", "10.0.0.3:50051"]
    assert ready_addresses(slice_, "grpc") == ready_addresses(slice_, None)
    assert ready_addresses(slice_, 6000) == ["10.0.0.1:6000", "10.0.0.3:6000"]
    assert ready_addresses(slice_, "metrics") == []
    terminating = model(endpoint_slice("t", SERVICE, [("10.0.0.4", False)], 50051, terminating=True))
    assert ready_addresses(terminating, None) == []
    two_ports = endpoint_slice("p", SERVICE, [("fd00::5", True)], 9464, port_name="metrics")
    two_ports["ports"].append({"name": "grpc", "port": 50051, "protocol": "TCP"})
    two_ports["addressType"] = "IPv6"
    assert ready_addresses(model(two_ports), None) == ["[fd00::5]:50051"]


def test_backoff_grows_to_its_cap_and_resets():
    backoff = Backoff(0.1, 1.0)
    delays = [backoff.next_delay() for _ in range(8)]
    assert 0.05 <= delays[0] <= 0.1 and all(0.5 <= d <= 1.0 for d in delays[4:])
    backoff.reset()
    assert backoff.next_delay() <= 0.1
    with pytest.raises(ValueError):
        Backoff(0, 1)


# -- the EndpointSlice watcher ---------------------------------------------------------------------------------


class RecordingSink:
    """An AddressSink that keeps every list it is given."""

    def __init__(self) -> None:
        self.updates: list[list[str]] = []
        self._changed = asyncio.Event()

    def update_addresses(self, addresses: Sequence[str]) -> None:
        self.updates.append(list(addresses))
        self._changed.set()

    async def wait_for(self, expected: set[str], timeout: float = SOON_S) -> float:
        """Waits until the latest list is ``expected``; returns how long that took."""
        started = time.monotonic()
        while not (self.updates and set(self.updates[-1]) == expected):
            self._changed.clear()
            remaining = timeout - (time.monotonic() - started)
            assert remaining > 0, f"addresses {self.updates[-1:] or 'none'} never became {sorted(expected)}"
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass
        return time.monotonic() - started


def api_client(server: KubeWatchServer) -> client.ApiClient:
    configuration = client.Configuration()
    configuration.host = server.url
    return client.ApiClient(configuration)


def watcher(server: KubeWatchServer, sink: RecordingSink, port: int | str | None = "grpc",
            watch_timeout_s: int = 30) -> EndpointSliceWatcher:
    return EndpointSliceWatcher("encoder", KubernetesTarget(SERVICE, NAMESPACE, port), sink,
                                api_client=api_client(server), watch_timeout_s=watch_timeout_s,
                                backoff=Backoff(0.05, 0.2))


def test_watcher_lists_then_follows_added_modified_and_deleted_slices():
    async def scenario() -> None:
        with KubeWatchServer(NAMESPACE) as server:
            server.put(endpoint_slice("enc-a", SERVICE, [("10.1.0.1", True), ("10.1.0.2", False)], 50051))
            server.put(endpoint_slice("other", "another-service", [("10.9.0.1", True)], 50051))
            sink = RecordingSink()
            follower = watcher(server, sink)
            await follower.start()
            try:
                await sink.wait_for({"10.1.0.1:50051"})
                server.put(endpoint_slice("enc-a", SERVICE, [("10.1.0.1", True), ("10.1.0.2", True)], 50051))
                took = await sink.wait_for({"10.1.0.1:50051", "10.1.0.2:50051"})
                assert took < 2.0, "a pod that turned ready must be seen at once"
                server.put(endpoint_slice("enc-b", SERVICE, [("10.1.1.1", True)], 50051))
                await sink.wait_for({"10.1.0.1:50051", "10.1.0.2:50051", "10.1.1.1:50051"})
                server.put(endpoint_slice("other", "another-service", [("10.9.0.2", True)], 50051))
                server.delete("enc-a")
                await sink.wait_for({"10.1.1.1:50051"})
                server.put(endpoint_slice("enc-b", SERVICE, [("10.1.1.1", False)], 50051, terminating=True))
                await sink.wait_for(set())
            finally:
                await follower.close()
            assert len(server.lists()) == 1, "no re-list without a 410"
            assert all(u == sorted(u) for u in sink.updates)
            assert len(sink.updates) == len({tuple(u) for u in sink.updates}), "only changes are published"
            selectors = {r.query["labelSelector"] for r in server.requests}
            assert selectors == {f"kubernetes.io/service-name={SERVICE}"}

    run(scenario)


def test_watcher_resumes_from_the_last_resource_version_and_bookmark():
    async def scenario() -> None:
        with KubeWatchServer(NAMESPACE) as server:
            server.put(endpoint_slice("enc-a", SERVICE, [("10.1.0.1", True)], 50051))
            listed_at = server.resource_version
            sink = RecordingSink()
            follower = watcher(server, sink, watch_timeout_s=1)
            await follower.start()
            try:
                await sink.wait_for({"10.1.0.1:50051"})
                server.put(endpoint_slice("enc-a", SERVICE, [("10.1.0.1", True), ("10.1.0.2", True)], 50051))
                await sink.wait_for({"10.1.0.1:50051", "10.1.0.2:50051"})
                modified_at = server.resource_version
                server.bookmark()
                bookmark_at = server.resource_version
                deadline = time.monotonic() + SOON_S
                while len(server.watches()) < 3 and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
            finally:
                await follower.close()
            versions = [w.query["resourceVersion"] for w in server.watches()]
            assert versions[0] == listed_at
            assert modified_at in versions[1:] or bookmark_at in versions[1:]
            assert versions[-1] == bookmark_at, "the watch resumes after the last event seen, bookmarks included"
            assert all(w.query["allowWatchBookmarks"] == "true" and w.query["timeoutSeconds"] == "1"
                       for w in server.watches())
            assert len(server.lists()) == 1

    run(scenario)


def test_watcher_lists_again_after_410_gone():
    async def scenario() -> None:
        with KubeWatchServer(NAMESPACE) as server:
            server.put(endpoint_slice("enc-a", SERVICE, [("10.1.0.1", True)], 50051))
            sink = RecordingSink()
            follower = watcher(server, sink)
            await follower.start()
            try:
                await sink.wait_for({"10.1.0.1:50051"})
                server.compact()
                server.put(endpoint_slice("enc-b", SERVICE, [("10.1.1.1", True)], 50051))
                await sink.wait_for({"10.1.0.1:50051", "10.1.1.1:50051"})
                assert len(server.lists()) == 2, "a 410 Gone must trigger a fresh list"
                server.put(endpoint_slice("enc-b", SERVICE, [("10.1.1.1", True), ("10.1.1.2", True)], 50051))
                await sink.wait_for({"10.1.0.1:50051", "10.1.1.1:50051", "10.1.1.2:50051"})
            finally:
                await follower.close()

    run(scenario)


def test_watcher_retries_with_backoff_after_api_errors():
    async def scenario() -> None:
        with KubeWatchServer(NAMESPACE) as server:
            server.put(endpoint_slice("enc-a", SERVICE, [("10.1.0.1", True)], 50051))
            server.fail_next = 3
            sink = RecordingSink()
            follower = watcher(server, sink)
            started = time.monotonic()
            await follower.start()
            try:
                await sink.wait_for({"10.1.0.1:50051"})
            finally:
                await follower.close()
            assert len(server.lists()) == 4
            assert time.monotonic() - started >= (0.05 + 0.1 + 0.2) / 2, "three retries back off 0.05, 0.1, 0.2 s (jittered down to half)"

    run(scenario)


def test_watcher_close_ends_a_blocked_watch_promptly():
    async def scenario() -> None:
        with KubeWatchServer(NAMESPACE) as server:
            server.put(endpoint_slice("enc-a", SERVICE, [("10.1.0.1", True)], 50051))
            sink = RecordingSink()
            follower = watcher(server, sink, watch_timeout_s=300)
            await follower.start()
            await sink.wait_for({"10.1.0.1:50051"})
            while not server.watches():
                await asyncio.sleep(0.02)
            started = time.monotonic()
            await follower.close()
            assert time.monotonic() - started < 2.0
            assert not follower._thread.is_alive()
            updates = len(sink.updates)
            server.put(endpoint_slice("enc-a", SERVICE, [("10.1.0.9", True)], 50051))
            await asyncio.sleep(0.3)
            assert len(sink.updates) == updates

    run(scenario)


# -- real replicas behind discovery ----------------------------------------------------------------------------


class FakeStage(stages_pb2_grpc.EncoderServicer, stages_pb2_grpc.AcousticServicer, stages_pb2_grpc.VocoderServicer):
    """``Info`` of any stage kind (the rest UNIMPLEMENTED), naming the replica in ``device``; counts calls."""

    def __init__(self, kind: str, name: str) -> None:
        self.kind, self.name, self.calls = kind, name, 0

    async def Info(self, request: stages_pb2.InfoRequest, context: grpc.aio.ServicerContext) -> stages_pb2.StageInfo:
        self.calls += 1
        return stages_pb2.StageInfo(stage=self.kind, model="demo", sample_rate_hz=16000, n_mels=80,
                                    default_voice="8051", voices=[tts_pb2.Voice(name="8051", id=0)],
                                    device=self.name)


SERVICES = {
    "encoder": ("Encoder", stages_pb2_grpc.add_EncoderServicer_to_server, stages_pb2_grpc.EncoderStub),
    "acoustic": ("Acoustic", stages_pb2_grpc.add_AcousticServicer_to_server, stages_pb2_grpc.AcousticStub),
    "vocoder": ("Vocoder", stages_pb2_grpc.add_VocoderServicer_to_server, stages_pb2_grpc.VocoderStub),
}


async def start_replica(kind: str, host: str = "127.0.0.1", port: int = 0) -> tuple[StageServer, FakeStage]:
    service, add, _ = SERVICES[kind]
    servicer = FakeStage(kind, f"{kind}@{host}:{port}")
    server = StageServer(ServerConfig(host=host, port=port, grace_period_s=0.5), name=servicer.name)
    server.add_service(stages_pb2.DESCRIPTOR.services_by_name[service], servicer, add)
    await server.start()
    servicer.name = f"{host}:{server.port}"
    await server.mark_ready()
    return server, servicer


def pool_for(kind: str = "encoder") -> StagePool:
    return StagePool(kind, [], SERVICES[kind][2], 1 << 20, options=PoolConfig(health_interval_s=0.05))


async def serving(pool: StagePool, addresses: set[str], timeout: float = SOON_S) -> float:
    """Waits until exactly ``addresses`` are the pool's SERVING replicas; returns how long it took."""
    started = time.monotonic()
    while {r.address for r in pool.replicas if r.state is ReplicaState.SERVING} != addresses or \
            {r.address for r in pool.replicas} != addresses:
        assert time.monotonic() - started < timeout, f"pool has {[(r.address, r.state) for r in pool.replicas]}"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def spread(pool: StagePool, calls: int = 24) -> Counter:
    """Which replicas answer ``calls`` concurrent Info calls."""
    replies = await asyncio.gather(*(pool.call("Info", stages_pb2.InfoRequest(), timeout=5.0) for _ in range(calls)))
    return Counter(reply.device for reply in replies)


def test_pool_follows_endpointslices_as_pods_scale_up_and_down():
    async def scenario() -> None:
        replicas = [await start_replica("encoder") for _ in range(3)]
        addresses = [f"127.0.0.1:{server.port}" for server, _ in replicas]
        pool = pool_for()
        with KubeWatchServer(NAMESPACE) as server:
            # Pod IPs of one Service all listen on the same port in a cluster; here each replica has its own
            # loopback port, so each pod's slice carries its port (as per-pod slices of a real Service may).
            def pod(i: int, ready: bool) -> dict:
                return endpoint_slice(f"enc-{i}", SERVICE, [("127.0.0.1", ready)], replicas[i][0].port)

            server.put(pod(0, True))
            server.put(pod(1, False))
            follower = EndpointSliceWatcher("encoder", KubernetesTarget(SERVICE, NAMESPACE, "grpc"), pool,
                                            api_client=api_client(server))
            await follower.start()
            try:
                await serving(pool, {addresses[0]})
                assert await spread(pool) == Counter({addresses[0]: 24})
                server.put(pod(1, True))
                server.put(pod(2, True))
                took = await serving(pool, set(addresses))
                assert took < SOON_S
                assert set(await spread(pool)) == set(addresses), "new pods take calls at once"
                server.delete("enc-0")
                await serving(pool, set(addresses[1:]))
                before = replicas[0][1].calls
                assert set(await spread(pool)) == set(addresses[1:])
                assert replicas[0][1].calls == before
            finally:
                await follower.close()
                await pool.close()
                for stage_server, _ in replicas:
                    await stage_server.stop(0)

    run(scenario)


def _loopback_servers_share_a_port(hosts: Sequence[str]) -> int:
    """A port free on every one of ``hosts`` (127.0.0.x all reach this machine's loopback)."""
    for _ in range(20):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = probe.getsockname()[1]
        try:
            for host in hosts:
                with socket.socket() as other:
                    other.bind((host, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no common free port")


def test_dns_resolver_follows_a_headless_service_as_it_scales():
    hosts = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    records = {"enc.speech.svc.cluster.local": hosts[:1]}

    def resolve(host: str, port: int, **kwargs: Any) -> list[tuple]:
        """The headless Service's A records, resolved by the real getaddrinfo as numeric addresses."""
        if host not in records or not records[host]:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [info for ip in records[host] for info in socket.getaddrinfo(ip, port, **kwargs)]

    async def scenario() -> None:
        port = _loopback_servers_share_a_port(hosts)
        replicas = [await start_replica("encoder", host, port) for host in hosts]
        pool = pool_for()
        target = parse_target(f"dns:///enc.speech.svc.cluster.local:{port}")
        resolver = DnsResolver("encoder", target, pool, interval_s=0.2, resolve=resolve)
        await resolver.start()
        try:
            await serving(pool, {f"{hosts[0]}:{port}"})
            records["enc.speech.svc.cluster.local"] = hosts
            await serving(pool, {f"{h}:{port}" for h in hosts})
            assert set(await spread(pool)) == {f"{h}:{port}" for h in hosts}
            records["enc.speech.svc.cluster.local"] = []  # a failed look-up keeps what is known
            await asyncio.sleep(0.5)
            assert {r.address for r in pool.replicas} == {f"{h}:{port}" for h in hosts}
            records["enc.speech.svc.cluster.local"] = hosts[1:]
            await serving(pool, {f"{h}:{port}" for h in hosts[1:]})
            assert replicas[0][1].name not in await spread(pool)
        finally:
            await resolver.close()
            await pool.close()
            for server, _ in replicas:
                await server.stop(0)

    run(scenario)


def test_dns_resolver_with_the_system_resolver_on_localhost():
    async def scenario() -> None:
        infos = socket.getaddrinfo("localhost", None, type=socket.SOCK_STREAM)
        ips = sorted({info[4][0] for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)})
        port = _loopback_servers_share_a_port(ips)
        replicas = [await start_replica("encoder", f"[{ip}]" if ":" in ip else ip, port) for ip in ips]
        expected = {f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}" for ip in ips}
        pool = pool_for()
        resolver = DnsResolver("encoder", parse_target(f"dns:///localhost:{port}"), pool)
        await resolver.start()
        try:
            await serving(pool, expected)
            assert set(await spread(pool)) == expected
        finally:
            await resolver.close()
            await pool.close()
            for server, _ in replicas:
                await server.stop(0)

    run(scenario)


def test_gateway_starts_on_discovered_stages(tmp_path, monkeypatch):
    """``start_gateway`` with a k8s:// encoder (via a kubeconfig), a dns: acoustic and a fixed vocoder."""

    async def scenario() -> None:
        encoder, acoustic, vocoder = [await start_replica(kind) for kind in ("encoder", "acoustic", "vocoder")]
        with KubeWatchServer(NAMESPACE) as server:
            kubeconfig = tmp_path / "kubeconfig"
            kubeconfig.write_text(
                "apiVersion: v1\nkind: Config\ncurrent-context: test\n"
                f"clusters: [{{name: local, cluster: {{server: '{server.url}'}}}}]\n"
                "users: [{name: tester, user: {token: not-checked}}]\n"
                "contexts: [{name: test, context: {cluster: local, user: tester}}]\n"
            )
            monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
            server.put(endpoint_slice("enc-0", SERVICE, [("127.0.0.1", True)], encoder[0].port))
            config = load_config(None, environ={}, server={"host": "127.0.0.1", "port": 0}, metrics={"port": -1})
            stages = StageAddresses([f"k8s://{SERVICE}.{NAMESPACE}:grpc"], [f"dns:///localhost:{acoustic[0].port}"],
                                    [f"127.0.0.1:{vocoder[0].port}"])
            gateway, service = await asyncio.wait_for(start_gateway(config, stages), 20)
            try:
                assert gateway.ready and service.info.model == "demo"
                assert [r.address for r in service.encoder.replicas] == [f"127.0.0.1:{encoder[0].port}"]
                assert f"127.0.0.1:{acoustic[0].port}" in [r.address for r in service.acoustic.replicas]
                assert encoder[1].calls >= 1 and acoustic[1].calls >= 1 and vocoder[1].calls >= 1
            finally:
                await gateway.stop(0)
            assert [r for r in server.watches()], "the gateway watched the encoder's EndpointSlices"
        for stage_server, _ in (encoder, acoustic, vocoder):
            await stage_server.stop(0)

    run(scenario)
