"""``emoserve k8s status``: what an operator checks after ``helm install`` — per component (gateway and each stage),
desired and ready pods, the autoscaler's metrics (current vs target) and replica counts, recent restarts, and
the problems that hold a rollout back (unschedulable pods, crash loops, autoscalers that cannot read metrics).

:func:`summarize` and :func:`format_status` work on the ``kubernetes`` client's model objects; :func:`fetch`
is the live call (Deployments, HorizontalPodAutoscalers and Pods of one release, three list calls).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

COMPONENTS = ("gateway", "encoder", "acoustic", "vocoder")
"""Display order of the chart's components."""
COMPONENT_LABEL = "app.kubernetes.io/component"
KEDA_LABEL = "scaledobject.keda.sh/name"
UNKNOWN = "<unknown>"


def release_selector(release: str) -> str:
    """Label selector of every object the emoserve chart creates for ``release``."""
    return f"app.kubernetes.io/instance={release},app.kubernetes.io/part-of=emoserve"


@dataclass(frozen=True)
class MetricStatus:
    """One autoscaling metric: what it measures, its current value and its target."""

    name: str
    current: str
    target: str


@dataclass(frozen=True)
class AutoscalerStatus:
    """A HorizontalPodAutoscaler (``kind`` "HPA", or "KEDA" when a ScaledObject drives it)."""

    kind: str
    name: str
    min_replicas: int
    max_replicas: int
    current_replicas: int
    desired_replicas: int
    metrics: tuple[MetricStatus, ...]


@dataclass(frozen=True)
class ComponentStatus:
    """One component of the release (its Deployment, autoscaler and pods)."""

    component: str
    deployment: str
    desired: int
    ready: int
    updated: int
    available: int
    autoscaler: AutoscalerStatus | None
    restarts: int
    """Container restarts of the current pods, all time."""
    recent_restarts: int
    """Containers of the current pods that restarted within the window."""
    problems: tuple[str, ...]

    @property
    def healthy(self) -> bool:
        """Every desired pod is ready and up to date (and at least one is desired)."""
        return self.desired > 0 and self.ready >= self.desired and self.updated >= self.desired


def _quantity(value: Any) -> str:
    """A Kubernetes quantity ("2500m", "4", 70) shown compactly ("2.5", "4", "70")."""
    if value is None:
        return UNKNOWN
    from kubernetes.utils import parse_quantity

    number = parse_quantity(value)
    if number == number.to_integral_value():
        return str(int(number))
    return f"{number.normalize():f}" if abs(number) >= Decimal("0.001") else f"{float(number):.3g}"


def _target(target: Any) -> str:
    if target is None:
        return UNKNOWN
    if target.type == "Utilization":
        return f"{target.average_utilization}%"
    if target.type == "AverageValue":
        return _quantity(target.average_value)
    return _quantity(target.value)


def _current(current: Any) -> str:
    if current is None:
        return UNKNOWN
    if current.average_utilization is not None:
        return f"{current.average_utilization}%"
    if current.average_value is not None:
        return _quantity(current.average_value)
    return _quantity(current.value)


_SOURCES = {"Resource": "resource", "ContainerResource": "container_resource", "Pods": "pods", "Object": "object",
            "External": "external"}
"""Metric type -> attribute of ``V2MetricSpec`` / ``V2MetricStatus`` that holds it."""


def _metric_name(source: Any, kind: str) -> str:
    return source.name if kind in ("Resource", "ContainerResource") else source.metric.name


def autoscaler_status(hpa: Any) -> AutoscalerStatus:
    """Summary of an ``autoscaling/v2`` HorizontalPodAutoscaler model."""
    status = hpa.status
    current = {}
    for metric in (status.current_metrics or ()) if status else ():
        source = getattr(metric, _SOURCES.get(metric.type, ""), None)
        if source is not None:
            current[(metric.type, _metric_name(source, metric.type))] = source.current
    metrics = []
    for spec in hpa.spec.metrics or ():
        source = getattr(spec, _SOURCES.get(spec.type, ""), None)
        if source is None:
            continue
        name = _metric_name(source, spec.type)
        metrics.append(MetricStatus(name, _current(current.get((spec.type, name))), _target(source.target)))
    return AutoscalerStatus(
        kind="KEDA" if KEDA_LABEL in (hpa.metadata.labels or {}) else "HPA",
        name=hpa.metadata.name,
        min_replicas=hpa.spec.min_replicas or 1,
        max_replicas=hpa.spec.max_replicas,
        current_replicas=(status.current_replicas or 0) if status else 0,
        desired_replicas=(status.desired_replicas or 0) if status else 0,
        metrics=tuple(metrics),
    )


def _autoscaler_problems(hpa: Any) -> list[str]:
    problems = []
    for condition in (hpa.status.conditions or ()) if hpa.status else ():
        if condition.type in ("AbleToScale", "ScalingActive") and condition.status == "False":
            problems.append(f"autoscaler {hpa.metadata.name}: {condition.reason}: {condition.message}")
    return problems


def _duration(seconds: float) -> str:
    """``90`` -> "1m", ``7200`` -> "2h" (largest whole unit)."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _age(then: dt.datetime, now: dt.datetime) -> str:
    return _duration((now - then).total_seconds())


def _pod_problems(pod: Any, now: dt.datetime, window: dt.timedelta) -> tuple[int, int, list[str]]:
    """(all restarts, containers restarted within the window, problems) of one pod."""
    name = pod.metadata.name
    problems = []
    for condition in (pod.status.conditions or ()) if pod.status else ():
        if condition.type == "PodScheduled" and condition.status == "False":
            problems.append(f"pod {name}: unschedulable: {condition.message or condition.reason}")
    restarts = recent = 0
    statuses = [*(pod.status.init_container_statuses or ()), *(pod.status.container_statuses or ())] \
        if pod.status else []
    for container in statuses:
        restarts += container.restart_count or 0
        waiting = container.state.waiting if container.state else None
        if waiting is not None and waiting.reason not in (None, "ContainerCreating", "PodInitializing"):
            problems.append(f"pod {name} container {container.name}: {waiting.reason}"
                            + (f": {waiting.message}" if waiting.message else ""))
        last = container.last_state.terminated if container.last_state else None
        if last is not None and last.finished_at is not None and now - last.finished_at <= window:
            recent += 1
            problems.append(f"pod {name} container {container.name} restarted {container.restart_count} times, "
                            f"last {_age(last.finished_at, now)} ago: {last.reason or 'exited'} "
                            f"(exit code {last.exit_code})")
    return restarts, recent, problems


def _component(obj: Any) -> str:
    return (obj.metadata.labels or {}).get(COMPONENT_LABEL, obj.metadata.name)


def summarize(deployments: Iterable[Any], autoscalers: Iterable[Any], pods: Iterable[Any], *,
              now: dt.datetime | None = None, window: dt.timedelta = dt.timedelta(hours=1)) -> list[ComponentStatus]:
    """Per-component status of one release.

    Args:
        deployments: the release's ``V1Deployment`` objects.
        autoscalers: ``V2HorizontalPodAutoscaler`` objects of the namespace (matched by scale target).
        pods: the release's ``V1Pod`` objects.
        now: the current time (UTC; default: now).
        window: restarts within this window count as recent.

    Returns:
        One status per Deployment, the chart's components first in pipeline order.
    """
    now = now or dt.datetime.now(dt.UTC)
    by_target = {}
    for hpa in autoscalers:
        ref = hpa.spec.scale_target_ref
        if ref.kind == "Deployment":
            by_target[ref.name] = hpa
    pods_by_component: dict[str, list[Any]] = {}
    for pod in pods:
        pods_by_component.setdefault(_component(pod), []).append(pod)
    out = []
    for deployment in deployments:
        component = _component(deployment)
        hpa = by_target.get(deployment.metadata.name)
        problems = _autoscaler_problems(hpa) if hpa is not None else []
        restarts = recent = 0
        for pod in sorted(pods_by_component.get(component, []), key=lambda p: p.metadata.name):
            pod_restarts, pod_recent, pod_problems = _pod_problems(pod, now, window)
            restarts, recent = restarts + pod_restarts, recent + pod_recent
            problems += pod_problems
        status = deployment.status
        out.append(ComponentStatus(
            component=component,
            deployment=deployment.metadata.name,
            desired=deployment.spec.replicas if deployment.spec.replicas is not None else 1,
            ready=(status.ready_replicas or 0) if status else 0,
            updated=(status.updated_replicas or 0) if status else 0,
            available=(status.available_replicas or 0) if status else 0,
            autoscaler=autoscaler_status(hpa) if hpa is not None else None,
            restarts=restarts,
            recent_restarts=recent,
            problems=tuple(problems),
        ))
    order = {name: i for i, name in enumerate(COMPONENTS)}
    return sorted(out, key=lambda s: (order.get(s.component, len(order)), s.component))


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


def format_status(release: str, namespace: str, statuses: Sequence[ComponentStatus],
                  window: dt.timedelta = dt.timedelta(hours=1)) -> str:
    """A human-readable report: one table row per component, then autoscaler metrics and problems."""
    if not statuses:
        return f"release {release} in namespace {namespace}: no emoserve Deployments found"
    window_text = _duration(window.total_seconds())
    rows = [("COMPONENT", "READY", "UP-TO-DATE", "AVAILABLE", "AUTOSCALER", "REPLICAS (MIN-MAX)",
             f"RESTARTS ({window_text})", "STATUS")]
    for s in statuses:
        scaler = s.autoscaler
        if scaler is None:
            autoscaling, replicas = "none", f"{s.desired} (fixed)"
        else:
            autoscaling = f"{scaler.kind} {scaler.name}"
            replicas = str(scaler.current_replicas)
            if scaler.desired_replicas != scaler.current_replicas:
                replicas += f" -> {scaler.desired_replicas}"
            replicas += f" ({scaler.min_replicas}-{scaler.max_replicas})"
        rows.append((s.component, f"{s.ready}/{s.desired}", str(s.updated), str(s.available), autoscaling,
                     replicas, f"{s.recent_restarts} (total {s.restarts})", "ok" if s.healthy else "NOT READY"))
    lines = [f"release {release} in namespace {namespace}", "", *_table(rows)]
    metric_rows = [(s.component, m.name, m.current, m.target)
                   for s in statuses if s.autoscaler is not None for m in s.autoscaler.metrics]
    if metric_rows:
        lines += ["", *_table([("COMPONENT", "METRIC", "CURRENT", "TARGET"), *metric_rows])]
    problems = [f"  {s.component}: {p}" for s in statuses for p in s.problems]
    if problems:
        lines += ["", "problems:", *problems]
    return "\n".join(lines)


@dataclass(frozen=True)
class Snapshot:
    """What :func:`fetch` read from the cluster."""

    namespace: str
    deployments: list[Any]
    autoscalers: list[Any]
    pods: list[Any]


def current_namespace() -> str:
    """The pod's namespace in a cluster, else the kubeconfig's current context's, else ``default``."""
    from emoserve.gateway.discovery import NAMESPACE_FILE

    try:
        return NAMESPACE_FILE.read_text(encoding="utf-8").strip() or "default"
    except OSError:
        pass
    from kubernetes import config

    try:
        _, active = config.list_kube_config_contexts()
    except (config.ConfigException, OSError):
        return "default"
    return (active or {}).get("context", {}).get("namespace") or "default"


def fetch(release: str, namespace: str | None = None, api_client: Any = None) -> Snapshot:
    """Reads a release's Deployments and Pods and the namespace's HorizontalPodAutoscalers.

    Raises:
        RuntimeError: no Kubernetes configuration, or the ``kubernetes`` package is missing.
        kubernetes.client.ApiException: the API refused a call (e.g. RBAC).
    """
    from emoserve.gateway.discovery import kubernetes_api_client

    api = api_client or kubernetes_api_client()
    from kubernetes import client

    namespace = namespace or current_namespace()
    selector = release_selector(release)
    deployments = client.AppsV1Api(api).list_namespaced_deployment(namespace, label_selector=selector).items
    autoscalers = client.AutoscalingV2Api(api).list_namespaced_horizontal_pod_autoscaler(namespace).items
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=selector).items
    return Snapshot(namespace, deployments, autoscalers, pods)


def status_command(release: str, namespace: str | None, window: dt.timedelta) -> tuple[int, str]:
    """Runs ``emoserve k8s status``: (exit code, report). 0: every component ready; 1: not (or none found);
    2: the cluster could not be read."""
    try:
        from kubernetes.client import ApiException
    except ImportError:
        return 2, "emoserve k8s status needs the kubernetes package: pip install 'emoserve[k8s]'"
    try:
        snapshot = fetch(release, namespace)
    except (RuntimeError, ApiException, OSError) as exc:
        reason = f"{exc.status} {exc.reason}" if isinstance(exc, ApiException) else str(exc)
        return 2, f"emoserve k8s status: cannot read the cluster: {reason}"
    statuses = summarize(snapshot.deployments, snapshot.autoscalers, snapshot.pods, window=window)
    healthy = bool(statuses) and all(s.healthy for s in statuses)
    return (0 if healthy else 1), format_status(release, snapshot.namespace, statuses, window)
