"""``helm lint --strict`` and strict Kubernetes schema validation of every rendered manifest.

Every value set (the chart's defaults and each ``charts/emoserve/ci/*-values.yaml``) is rendered for
Kubernetes 1.29 and 1.33 and each object is validated with kubernetes-validate in strict mode (unknown fields
are errors). Custom resources (KEDA ScaledObject, Prometheus Operator ServiceMonitor) have no schema there;
their shape is asserted in test_render.py.
"""

from __future__ import annotations

import copy
import subprocess

import kubernetes_validate
import pytest

from tests.chart.conftest import (
    CHART,
    KUBE_VERSIONS,
    VALUE_SETS,
    RenderError,
    find,
    render,
)

CUSTOM_RESOURCES = {("keda.sh/v1alpha1", "ScaledObject"), ("monitoring.coreos.com/v1", "ServiceMonitor")}


def test_value_sets_cover_cpu_gpu_and_keda():
    assert {"default", "cpu-only", "gpu-tensorrt", "keda-custom-metrics"} <= set(VALUE_SETS)


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_helm_lint_strict(helm, value_set):
    command = [helm, "lint", "--strict", str(CHART)]
    if VALUE_SETS[value_set] is not None:
        command += ["--values", str(VALUE_SETS[value_set])]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_every_manifest_is_valid_kubernetes(helm, value_set, kube_version):
    docs = render(helm, value_set, kube_version, "--api-versions", "monitoring.coreos.com/v1")
    checked = set()
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_RESOURCES:
            continue
        try:
            validated = kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']} invalid for Kubernetes {kube_version}: {exc}")
        assert validated == kube_version.rsplit(".", 1)[0], "validated against another version's schemas"
        checked.add(doc["kind"])
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "NetworkPolicy", "ServiceAccount",
            "Pod"} <= checked
    unknown = {(d["apiVersion"], d["kind"]) for d in docs} - CUSTOM_RESOURCES
    assert all(kind in checked for _, kind in unknown)


def test_strict_validation_rejects_an_unknown_field(helm):
    deployment = copy.deepcopy(find(render(helm), "Deployment")[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    for version in KUBE_VERSIONS:
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(deployment, version, strict=True)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--set", "encoder.gpus=1"], "gpus"),
        (["--set", "model.source=url"], "model.url"),
        (["--set", "acoustic.autoscaling.kind=vpa"], "kind"),
        (["--set", "model.sha256=abc"], "sha256"),
    ],
)
def test_values_schema_rejects_bad_values(helm, flags, message):
    with pytest.raises(RenderError, match=message):
        render(helm, "default", KUBE_VERSIONS[-1], *flags)


def test_an_autoscaler_without_metrics_is_refused(helm):
    with pytest.raises(RenderError, match="vocoder.autoscaling: set targetCPUUtilization"):
        render(helm, "default", KUBE_VERSIONS[-1], "--set", "vocoder.autoscaling.targetCPUUtilization=0")
