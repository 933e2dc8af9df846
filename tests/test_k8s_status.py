"""``emoserve k8s status``: aggregation and report built from the kubernetes client's model objects.

No API server runs here: the objects are built as the client would decode them, and the live ``fetch`` (three
list calls) is replaced where the command's exit codes are checked.
"""

from __future__ import annotations

import datetime as dt

import pytest
from kubernetes import client

from emoserve import k8s
from emoserve.cli import main

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
RELEASE, NAMESPACE = "tts", "speech"


def _meta(name: str, component: str | None = None, **labels: str) -> client.V1ObjectMeta:
    if component is not None:
        labels = {"app.kubernetes.io/component": component, "app.kubernetes.io/instance": RELEASE, **labels}
    return client.V1ObjectMeta(name=name, namespace=NAMESPACE, labels=labels)


def deployment(component: str, replicas: int, ready: int, updated: int | None = None) -> client.V1Deployment:
    name = f"{RELEASE}-emoserve-{component}"
    selector = client.V1LabelSelector(match_labels={"app.kubernetes.io/component": component})
    template = client.V1PodTemplateSpec(spec=client.V1PodSpec(containers=[client.V1Container(name=component)]))
    return client.V1Deployment(
        metadata=_meta(name, component),
        spec=client.V1DeploymentSpec(replicas=replicas, selector=selector, template=template),
        status=client.V1DeploymentStatus(ready_replicas=ready or None, available_replicas=ready or None,
                                         updated_replicas=updated if updated is not None else replicas),
    )


def hpa(target: str, spec_metrics: list, current_metrics: list | None, *, name: str | None = None,
        replicas: tuple[int, int] = (1, 1), bounds: tuple[int, int] = (1, 8), conditions: list | None = None,
        labels: dict | None = None) -> client.V2HorizontalPodAutoscaler:
    return client.V2HorizontalPodAutoscaler(
        metadata=client.V1ObjectMeta(name=name or target, namespace=NAMESPACE, labels=labels),
        spec=client.V2HorizontalPodAutoscalerSpec(
            scale_target_ref=client.V2CrossVersionObjectReference(api_version="apps/v1", kind="Deployment",
                                                                   name=target),
            min_replicas=bounds[0], max_replicas=bounds[1], metrics=spec_metrics),
        status=client.V2HorizontalPodAutoscalerStatus(current_replicas=replicas[0], desired_replicas=replicas[1],
                                                      current_metrics=current_metrics, conditions=conditions),
    )


def cpu_metric(target: int, current: int | None = None) -> tuple:
    spec = client.V2MetricSpec(type="Resource", resource=client.V2ResourceMetricSource(
        name="cpu", target=client.V2MetricTarget(type="Utilization", average_utilization=target)))
    status = None if current is None else client.V2MetricStatus(type="Resource", resource=client.V2ResourceMetricStatus(
        name="cpu", current=client.V2MetricValueStatus(average_utilization=current)))
    return spec, status


def pods_metric(name: str, target: str, current: str | None = None) -> tuple:
    identifier = client.V2MetricIdentifier(name=name)
    spec = client.V2MetricSpec(type="Pods", pods=client.V2PodsMetricSource(
        metric=identifier, target=client.V2MetricTarget(type="AverageValue", average_value=target)))
    status = None if current is None else client.V2MetricStatus(type="Pods", pods=client.V2PodsMetricStatus(
        metric=identifier, current=client.V2MetricValueStatus(average_value=current)))
    return spec, status


def pod(name: str, component: str, *, restarts: int = 0, last_exit: tuple[str, int, dt.timedelta] | None = None,
        waiting: str | None = None, unschedulable: str | None = None) -> client.V1Pod:
    last_state = None
    if last_exit is not None:
        reason, code, ago = last_exit
        last_state = client.V1ContainerState(terminated=client.V1ContainerStateTerminated(
            exit_code=code, reason=reason, finished_at=NOW - ago))
    state = client.V1ContainerState(
        waiting=client.V1ContainerStateWaiting(reason=waiting, message="back-off 5m0s restarting failed container")
        if waiting else None,
        running=None if waiting else client.V1ContainerStateRunning(started_at=NOW - dt.timedelta(minutes=1)))
    statuses = None if unschedulable else [client.V1ContainerStatus(
        name=component, image="emoserve:0.1.0", image_id="", ready=not waiting, restart_count=restarts,
        state=state, last_state=last_state)]
    conditions = [client.V1PodCondition(type="PodScheduled", status="False", reason="Unschedulable",
                                        message=unschedulable)] if unschedulable else None
    return client.V1Pod(metadata=_meta(name, component),
                        status=client.V1PodStatus(phase="Pending" if unschedulable else "Running",
                                                  container_statuses=statuses, conditions=conditions))


def cluster() -> tuple[list, list, list]:
    """A release two minutes into a scale-up: acoustic scaling 2 -> 3 on queue depth, vocoder waiting for a GPU."""
    gateway_cpu = cpu_metric(70, 35)
    pending = pods_metric("emoserve_pending_requests", "4", "6500m")
    keda = client.V2MetricSpec(type="External", external=client.V2ExternalMetricSource(
        metric=client.V2MetricIdentifier(name="s0-prometheus"),
        target=client.V2MetricTarget(type="AverageValue", average_value="8")))
    deployments = [
        deployment("vocoder", 1, 0),
        deployment("gateway", 2, 2),
        deployment("acoustic", 3, 2),
        deployment("encoder", 1, 1),
    ]
    autoscalers = [
        hpa(f"{RELEASE}-emoserve-gateway", [gateway_cpu[0]], [gateway_cpu[1]], replicas=(2, 2), bounds=(2, 8)),
        hpa(f"{RELEASE}-emoserve-acoustic", [pending[0]], [pending[1]], replicas=(2, 3)),
        hpa(f"{RELEASE}-emoserve-vocoder", [keda], None, name=f"keda-hpa-{RELEASE}-emoserve-vocoder",
            labels={"scaledobject.keda.sh/name": f"{RELEASE}-emoserve-vocoder"},
            conditions=[client.V2HorizontalPodAutoscalerCondition(
                type="ScalingActive", status="False", reason="FailedGetExternalMetric",
                message="unable to get external metric s0-prometheus")]),
        hpa("someone-else", [cpu_metric(50, 10)[0]], None),
    ]
    pods = [
        pod("gw-1", "gateway"), pod("gw-2", "gateway"), pod("enc-1", "encoder", restarts=1,
                                                            last_exit=("Error", 1, dt.timedelta(hours=5))),
        pod("ac-1", "acoustic", restarts=3, last_exit=("OOMKilled", 137, dt.timedelta(minutes=12))),
        pod("ac-2", "acoustic"),
        pod("ac-3", "acoustic", waiting="CrashLoopBackOff", restarts=2,
            last_exit=("Error", 1, dt.timedelta(seconds=40))),
        pod("voc-1", "vocoder", unschedulable="0/4 nodes are available: 4 Insufficient nvidia.com/gpu."),
    ]
    return deployments, autoscalers, pods


def test_summarize_aggregates_each_component_in_pipeline_order():
    statuses = k8s.summarize(*cluster(), now=NOW)
    assert [s.component for s in statuses] == ["gateway", "encoder", "acoustic", "vocoder"]
    gateway, encoder, acoustic, vocoder = statuses
    assert (gateway.desired, gateway.ready, gateway.healthy) == (2, 2, True)
    assert gateway.autoscaler.metrics == (k8s.MetricStatus("cpu", "35%", "70%"),)
    assert (encoder.healthy, encoder.restarts, encoder.recent_restarts, encoder.problems) == (True, 1, 0, ())
    assert (acoustic.desired, acoustic.ready, acoustic.healthy) == (3, 2, False)
    scaler = acoustic.autoscaler
    assert (scaler.kind, scaler.current_replicas, scaler.desired_replicas, scaler.min_replicas, scaler.max_replicas) \
        == ("HPA", 2, 3, 1, 8)
    assert scaler.metrics == (k8s.MetricStatus("emoserve_pending_requests", "6.5", "4"),)
    assert (acoustic.restarts, acoustic.recent_restarts) == (5, 2)
    assert acoustic.problems == (
        "pod ac-1 container acoustic restarted 3 times, last 12m ago: OOMKilled (exit code 137)",
        "pod ac-3 container acoustic: CrashLoopBackOff: back-off 5m0s restarting failed container",
        "pod ac-3 container acoustic restarted 2 times, last 40s ago: Error (exit code 1)",
    )
    assert vocoder.autoscaler.kind == "KEDA"
    assert vocoder.autoscaler.metrics == (k8s.MetricStatus("s0-prometheus", k8s.UNKNOWN, "8"),)
    assert vocoder.problems == (
        (f"autoscaler keda-hpa-{RELEASE}-emoserve-vocoder: FailedGetExternalMetric: unable to get external metric "
         "s0-prometheus"),
        "pod voc-1: unschedulable: 0/4 nodes are available: 4 Insufficient nvidia.com/gpu.",
    )


def test_restart_window_decides_what_is_recent():
    statuses = k8s.summarize(*cluster(), now=NOW, window=dt.timedelta(hours=6))
    assert statuses[1].recent_restarts == 1 and "last 5h ago: Error" in statuses[1].problems[0]
    statuses = k8s.summarize(*cluster(), now=NOW, window=dt.timedelta(seconds=30))
    assert statuses[2].recent_restarts == 0


def test_format_status_report():
    report = k8s.format_status(RELEASE, NAMESPACE, k8s.summarize(*cluster(), now=NOW))
    lines = report.splitlines()
    assert lines[0] == f"release {RELEASE} in namespace {NAMESPACE}"
    header = lines[2].split()
    assert header[:4] == ["COMPONENT", "READY", "UP-TO-DATE", "AVAILABLE"]
    rows = {line.split()[0]: line for line in lines[3:7]}
    assert rows["gateway"].split()[1] == "2/2" and rows["gateway"].endswith("ok")
    assert "HPA tts-emoserve-acoustic" in rows["acoustic"] and "2 -> 3 (1-8)" in rows["acoustic"]
    assert rows["acoustic"].split()[1] == "2/3" and rows["acoustic"].endswith("NOT READY")
    assert "2 (total 5)" in rows["acoustic"] and "RESTARTS (1h)" in lines[2]
    assert f"KEDA keda-hpa-{RELEASE}-emoserve-vocoder" in rows["vocoder"] and "1 (1-8)" in rows["vocoder"]
    assert [line.split() for line in lines if line.startswith("acoustic ") and "pending" in line] == [
        ["acoustic", "emoserve_pending_requests", "6.5", "4"]]
    problems = lines[lines.index("problems:") + 1:]
    assert len(problems) == 5 and problems[-1].startswith("  vocoder: pod voc-1: unschedulable")
    columns = {line.index("AVAILABLE") for line in lines if "AVAILABLE" in line}
    assert len(columns) == 1


def test_fixed_replicas_and_an_empty_release():
    statuses = k8s.summarize([deployment("gateway", 2, 1, updated=1)], [], [], now=NOW)
    assert statuses[0].autoscaler is None and not statuses[0].healthy
    assert "none" in k8s.format_status(RELEASE, NAMESPACE, statuses) and "2 (fixed)" in \
        k8s.format_status(RELEASE, NAMESPACE, statuses)
    assert "no emoserve Deployments found" in k8s.format_status(RELEASE, NAMESPACE, [])


@pytest.mark.parametrize(("quantity", "shown"), [("4", "4"), ("2500m", "2.5"), ("1k", "1000"), ("100m", "0.1"),
                                                  (70, "70"), (None, k8s.UNKNOWN)])
def test_quantities_are_shown_compactly(quantity, shown):
    assert k8s._quantity(quantity) == shown


@pytest.mark.parametrize(("ready", "code"), [(True, 0), (False, 1)])
def test_cli_exit_code_follows_readiness(monkeypatch, capsys, ready, code):
    deployments, autoscalers, pods = cluster()
    if ready:
        deployments = [deployment("gateway", 2, 2), deployment("encoder", 1, 1)]
    calls = []

    def fetch(release: str, namespace: str | None = None) -> k8s.Snapshot:
        calls.append((release, namespace))
        return k8s.Snapshot(namespace or "default", deployments, autoscalers, pods)

    monkeypatch.setattr(k8s, "fetch", fetch)
    assert main(["k8s", "status", "--release", RELEASE, "--namespace", NAMESPACE, "--restart-window", "30"]) == code
    assert calls == [(RELEASE, NAMESPACE)]
    out = capsys.readouterr().out
    assert out.startswith(f"release {RELEASE} in namespace {NAMESPACE}") and "RESTARTS (30m)" in out


def test_cli_reports_an_unreadable_cluster(monkeypatch, capsys):
    def fetch(release: str, namespace: str | None = None) -> k8s.Snapshot:
        raise client.ApiException(status=403, reason="Forbidden")

    monkeypatch.setattr(k8s, "fetch", fetch)
    assert main(["k8s", "status", "--release", RELEASE]) == 2
    assert "cannot read the cluster: 403 Forbidden" in capsys.readouterr().err


def test_release_selector_matches_the_chart_labels():
    assert k8s.release_selector(RELEASE) == "app.kubernetes.io/instance=tts,app.kubernetes.io/part-of=emoserve"
