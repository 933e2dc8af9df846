"""What the chart renders: one Deployment/Service/autoscaler/PDB per component, GPUs only where configured,
gRPC probes, drain timing, NetworkPolicy rules, RBAC for the EndpointSlice watch, CRDs only when asked."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from emoserve.gateway.discovery import DnsTarget, KubernetesTarget, parse_target
from emoserve.runtime.config import load_config
from tests.chart.conftest import (
    CHART,
    KUBE_VERSIONS,
    NAMESPACE,
    RELEASE,
    ROOT,
    VALUE_SETS,
    component_name,
    container,
    find,
    one,
    render,
)

COMPONENTS = ("gateway", "encoder", "acoustic", "vocoder")
STAGES = COMPONENTS[1:]
GPU = "nvidia.com/gpu"
GRPC_PORT, METRICS_PORT = 50051, 9464


def _args(deployment: dict) -> dict[str, str]:
    """``--key=value`` container arguments as a dict."""
    return dict(a[2:].split("=", 1) for a in container(deployment)["args"] if a.startswith("--"))


def _config(docs: list[dict], component: str) -> dict:
    return yaml.safe_load(one(docs, "ConfigMap", component_name(component))["data"]["config.yaml"])


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_each_component_has_its_own_deployment_service_pdb_and_autoscaler(helm, value_set):
    docs = render(helm, value_set)
    for component in COMPONENTS:
        name = component_name(component)
        deployment = one(docs, "Deployment", name)
        labels = deployment["spec"]["selector"]["matchLabels"]
        assert labels["app.kubernetes.io/component"] == component
        assert deployment["spec"]["template"]["metadata"]["labels"].items() >= labels.items()
        assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"
        assert one(docs, "Service", name)["spec"]["selector"] == labels
        assert one(docs, "PodDisruptionBudget", name)["spec"]["selector"]["matchLabels"] == labels
        scalers = find(docs, "HorizontalPodAutoscaler", name) + find(docs, "ScaledObject", name)
        assert len(scalers) == 1
        assert scalers[0]["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert container(deployment)["args"][:2] == ["serve", component]
    assert len(find(docs, "Deployment")) == 4


def test_default_autoscaling_is_an_hpa_per_stage_with_behavior(helm):
    docs = render(helm)
    for component in COMPONENTS:
        hpa = one(docs, "HorizontalPodAutoscaler", component_name(component))
        assert hpa["apiVersion"] == "autoscaling/v2"
        (metric,) = hpa["spec"]["metrics"]
        assert metric["resource"] == {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}
        behavior = hpa["spec"]["behavior"]
        assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
        assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_gpu_tensorrt_values_scale_stages_on_their_queue_depth(helm):
    docs = render(helm, "gpu-tensorrt")
    acoustic = one(docs, "HorizontalPodAutoscaler", component_name("acoustic"))["spec"]["metrics"]
    assert acoustic == [{"type": "Pods", "pods": {"metric": {"name": "emoserve_pending_requests"},
                                                  "target": {"type": "AverageValue", "averageValue": "4"}}}]
    vocoder = one(docs, "HorizontalPodAutoscaler", component_name("vocoder"))["spec"]["metrics"]
    assert [m["pods"]["metric"]["name"] for m in vocoder] == ["emoserve_pending_requests", "DCGM_FI_DEV_GPU_UTIL"]
    gateway = one(docs, "HorizontalPodAutoscaler", component_name("gateway"))["spec"]["metrics"]
    assert [m["type"] for m in gateway] == ["Resource", "Pods"]
    assert gateway[1]["pods"]["metric"]["name"] == "emoserve_inflight_requests"


def test_keda_values_render_scaled_objects_with_prometheus_triggers_and_no_hpa(helm):
    docs = render(helm, "keda-custom-metrics")
    assert not find(docs, "HorizontalPodAutoscaler")
    vocoder = one(docs, "ScaledObject", component_name("vocoder"))
    assert vocoder["apiVersion"] == "keda.sh/v1alpha1"
    spec = vocoder["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 8)
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 600
    triggers = {t["name"]: t for t in spec["triggers"]}
    assert set(triggers) == {"emoserve-pending-requests", "emoserve-inflight-requests"}
    pending = triggers["emoserve-pending-requests"]
    assert pending["type"] == "prometheus" and pending["metricType"] == "AverageValue"
    selector = f'namespace="{NAMESPACE}",service="{component_name("vocoder")}"'
    assert pending["metadata"]["query"] == f"sum(emoserve_pending_requests{{{selector}}})"
    assert pending["metadata"]["threshold"] == "8"
    assert pending["metadata"]["serverAddress"].startswith("http://")
    gateway = one(docs, "ScaledObject", component_name("gateway"))["spec"]
    assert [t["name"] for t in gateway["triggers"]] == ["emoserve-inflight-requests"]
    assert gateway["triggers"][0]["authenticationRef"] == {"name": "prometheus-auth"}
    encoder = one(docs, "ScaledObject", component_name("encoder"))["spec"]["triggers"]
    assert [t["type"] for t in encoder] == ["cpu", "prometheus"]
    assert encoder[0] == {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "70"}}


@pytest.mark.parametrize(
    ("value_set", "gpus"),
    [
        ("default", {"acoustic": 1, "vocoder": 1}),
        ("gpu-tensorrt", {"acoustic": 1, "vocoder": 1}),
        ("cpu-only", {}),
    ],
)
def test_gpus_are_requested_only_where_configured(helm, value_set, gpus):
    docs = render(helm, value_set)
    for component in COMPONENTS:
        deployment = one(docs, "Deployment", component_name(component))
        resources = container(deployment)["resources"]
        assert resources["limits"].get(GPU) == gpus.get(component), component
        assert GPU not in resources.get("requests", {})
        if component in gpus:
            tolerations = deployment["spec"]["template"]["spec"]["tolerations"]
            assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in tolerations
    for pod in find(docs, "Pod"):
        assert GPU not in json.dumps(pod)


def test_default_pools_pin_the_vocoder_to_strong_gpus_and_prefer_edge_nodes_for_the_encoder(helm):
    docs = render(helm)
    vocoder = one(docs, "Deployment", component_name("vocoder"))["spec"]["template"]["spec"]
    assert vocoder["nodeSelector"] == {"gpu-pool": "strong"}
    encoder = one(docs, "Deployment", component_name("encoder"))["spec"]["template"]["spec"]
    preferred = encoder["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred[0]["preference"]["matchExpressions"][0]["values"] == ["edge"]
    assert "nodeSelector" not in encoder
    for component in COMPONENTS:
        spread = one(docs, "Deployment", component_name(component))["spec"]["template"]["spec"]
        (constraint,) = spread["topologySpreadConstraints"]
        assert constraint["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == component


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_native_grpc_probes_and_ports(helm, value_set):
    for deployment in find(render(helm, value_set), "Deployment"):
        main = container(deployment)
        assert {p["name"]: p["containerPort"] for p in main["ports"]} == {"grpc": GRPC_PORT, "metrics": METRICS_PORT}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert main[probe]["grpc"] == {"port": GRPC_PORT}, probe
        startup = main["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "model load + warm-up need minutes"
        args = _args(deployment)
        assert (args["port"], args["metrics-port"]) == (str(GRPC_PORT), str(METRICS_PORT))


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_rendered_configs_are_valid_emoserve_configs_and_drain_fits_the_grace_period(helm, value_set, tmp_path):
    docs = render(helm, value_set)
    for component in COMPONENTS:
        path = tmp_path / f"{component}.yaml"
        path.write_text(yaml.safe_dump(_config(docs, component)), encoding="utf-8")
        config = load_config(path, environ={})
        deployment = one(docs, "Deployment", component_name(component))
        assert _args(deployment)["config"] == "/etc/emoserve/config.yaml"
        pod = deployment["spec"]["template"]["spec"]
        (sleep,) = [int(a) for a in container(deployment)["lifecycle"]["preStop"]["exec"]["command"][1:]]
        assert pod["terminationGracePeriodSeconds"] > sleep + config.server.grace_period_s
        if component != "gateway":
            assert config.device == ("cpu" if value_set == "cpu-only" or component == "encoder" else "cuda")


def test_component_config_overrides_the_shared_config_and_drain_follows_it(helm, tmp_path):
    docs = render(helm, "default", KUBE_VERSIONS[-1], "--set", "config.max_text_chars=2000",
                  "--set-json", "vocoder.config.server.grace_period_s=42.5", "--set", "vocoder.config.warmup=false",
                  "--set", "config.warmup=true")
    vocoder = _config(docs, "vocoder")
    assert vocoder["server"]["grace_period_s"] == 42.5 and vocoder["warmup"] is False
    assert vocoder["max_text_chars"] == 2000 and vocoder["batching"]["max_batch_size"] == 32
    assert _config(docs, "encoder")["warmup"] is True
    pod = one(docs, "Deployment", component_name("vocoder"))["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 5 + 43 + 10


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_pods_run_as_non_root_with_a_read_only_root(helm, value_set):
    dockerfile = (ROOT / "services" / "Dockerfile").read_text(encoding="utf-8")
    uid = int(re.search(r"^USER (\d+)", dockerfile, re.MULTILINE).group(1))
    docs = render(helm, value_set)
    for pod in [d["spec"]["template"]["spec"] for d in find(docs, "Deployment")] + [d["spec"] for d in find(docs, "Pod")]:
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == uid
        for box in pod["containers"] + pod.get("initContainers", []):
            assert box["securityContext"]["readOnlyRootFilesystem"] is True
            assert box["securityContext"]["allowPrivilegeEscalation"] is False
            assert box["securityContext"]["capabilities"] == {"drop": ["ALL"]}
            assert {"name": "tmp", "mountPath": "/tmp"} in box["volumeMounts"]


def test_gateway_watches_endpointslices_of_each_stage_service_with_rbac(helm):
    docs = render(helm)
    gateway = one(docs, "Deployment", component_name("gateway"))
    pod = gateway["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True and pod["serviceAccountName"] == component_name("gateway")
    args = _args(gateway)
    for stage in STAGES:
        target = parse_target(args[stage])
        assert target == KubernetesTarget(component_name(stage), NAMESPACE, "grpc")
        service = one(docs, "Service", component_name(stage))
        assert service["spec"]["clusterIP"] == "None"
        assert "grpc" in [p["name"] for p in service["spec"]["ports"]]
        stage_pod = one(docs, "Deployment", component_name(stage))["spec"]["template"]["spec"]
        assert stage_pod["automountServiceAccountToken"] is False
    role = one(docs, "Role", f"{component_name('gateway')}-endpointslices")
    assert role["rules"] == [{"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                              "verbs": ["get", "list", "watch"]}]
    binding = one(docs, "RoleBinding", role["metadata"]["name"])
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": component_name("gateway"), "namespace": NAMESPACE}]
    assert len(find(docs, "Role")) == 1


def test_dns_discovery_uses_headless_service_names_and_needs_no_rbac(helm):
    docs = render(helm, "cpu-only")
    gateway = one(docs, "Deployment", component_name("gateway"))
    for stage in STAGES:
        target = parse_target(_args(gateway)[stage])
        assert target == DnsTarget(f"{component_name(stage)}.{NAMESPACE}.svc.cluster.local", GRPC_PORT)
    assert not find(docs, "Role") and not find(docs, "RoleBinding")
    assert gateway["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def _ingress(docs: list[dict], component: str) -> dict[str, list]:
    """NetworkPolicy ingress of a component: port name -> its ``from`` peers (None: from anywhere)."""
    policy = one(docs, "NetworkPolicy", component_name(component))
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == component
    rules = {}
    for rule in policy["spec"]["ingress"]:
        (port,) = rule["ports"]
        rules[port["port"]] = rule.get("from")
    return rules


def test_network_policy_only_the_gateway_is_reachable_and_stages_only_from_it(helm):
    docs = render(helm)
    monitoring = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    gateway = _ingress(docs, "gateway")
    assert gateway == {"grpc": None, "metrics": monitoring}
    gateway_pods = one(docs, "Deployment", component_name("gateway"))["spec"]["selector"]["matchLabels"]
    for stage in STAGES:
        assert _ingress(docs, stage) == {"grpc": [{"podSelector": {"matchLabels": gateway_pods}}], "metrics": monitoring}


def test_network_policy_restricted_gateway_still_admits_the_helm_test(helm):
    docs = render(helm, "keda-custom-metrics")
    peers = _ingress(docs, "gateway")["grpc"]
    assert peers[0] == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "backend"}}}
    test_pod = one(docs, "Pod", f"{RELEASE}-emoserve-test-synthesize")
    selector = peers[1]["podSelector"]["matchLabels"]
    assert test_pod["metadata"]["labels"].items() >= selector.items()


def test_no_network_policies_when_disabled(helm):
    assert not find(render(helm, "default", KUBE_VERSIONS[-1], "--set", "networkPolicy.enabled=false"), "NetworkPolicy")


def test_service_monitor_only_when_the_prometheus_operator_api_exists(helm):
    assert not find(render(helm), "ServiceMonitor")
    docs = render(helm, "default", KUBE_VERSIONS[-1], "--api-versions", "monitoring.coreos.com/v1")
    monitor = one(docs, "ServiceMonitor", f"{RELEASE}-emoserve")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = [s for s in find(docs, "Service") if s["metadata"]["labels"].items() >= selector.items()]
    assert len(services) == 4
    assert all("metrics" in [p["name"] for p in s["spec"]["ports"]] for s in services)
    off = render(helm, "default", KUBE_VERSIONS[-1], "--api-versions", "monitoring.coreos.com/v1",
                 "--set", "serviceMonitor.enabled=false")
    assert not find(off, "ServiceMonitor")


def test_grafana_dashboard_configmap_holds_the_shipped_dashboard(helm):
    dashboard = one(render(helm), "ConfigMap", f"{RELEASE}-emoserve-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((CHART / "dashboards" / "emoserve.json").read_text(encoding="utf-8"))
    assert json.loads(dashboard["data"]["emoserve.json"]) == shipped


def test_helm_test_hook_synthesises_through_the_gateway(helm):
    docs = render(helm)
    (pod,) = find(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    args = pod["spec"]["containers"][0]["args"]
    assert args[0] == "synth" and args[1]
    target = dict(a[2:].split("=", 1) for a in args if a.startswith("--"))["target"]
    host, port = target.rsplit(":", 1)
    assert host == f"{component_name('gateway')}.{NAMESPACE}" and int(port) == GRPC_PORT
    assert one(docs, "Service", component_name("gateway"))["spec"]["ports"][0]["port"] == GRPC_PORT


def _volumes(deployment: dict) -> dict[str, dict]:
    return {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}


def test_model_from_a_pvc_is_mounted_read_only_in_stages_only(helm):
    docs = render(helm)
    for stage in STAGES:
        deployment = one(docs, "Deployment", component_name(stage))
        claim = _volumes(deployment)["model"]["persistentVolumeClaim"]
        assert claim == {"claimName": "emoserve-model", "readOnly": True}
        assert _args(deployment)["model"] == "/models/emoserve"
        assert "initContainers" not in deployment["spec"]["template"]["spec"]
    assert "model" not in _volumes(one(docs, "Deployment", component_name("gateway")))


def test_model_from_a_url_is_downloaded_by_an_init_container(helm):
    docs = render(helm, "cpu-only")
    script = one(docs, "ConfigMap", f"{RELEASE}-emoserve-model-fetch")["data"]["fetch_model.py"]
    assert script == (CHART / "files" / "fetch_model.py").read_text(encoding="utf-8")
    for stage in STAGES:
        deployment = one(docs, "Deployment", component_name(stage))
        (init,) = deployment["spec"]["template"]["spec"]["initContainers"]
        env = {e["name"]: e.get("value") for e in init["env"]}
        assert env["MODEL_URL"].startswith("https://") and env["MODEL_DIR"] == "/models/emoserve"
        assert init["command"][-1].endswith("fetch_model.py") and init["image"] == container(deployment)["image"]
        assert "emptyDir" in _volumes(deployment)["model"]


def test_model_from_an_s3_bucket_and_tensorrt_engine_caches(helm):
    docs = render(helm, "gpu-tensorrt")
    for stage in STAGES:
        spec = one(docs, "Deployment", component_name(stage))["spec"]["template"]["spec"]
        (init,) = spec["initContainers"]
        assert init["image"].startswith("amazon/aws-cli") and init["command"][:3] == ["aws", "s3", "sync"]
        assert init["command"][-2:] == ["s3://tts-models/emotivoice/", "/models/emoserve"]
        assert {"name": "AWS_REGION", "value": "eu-west-1"} in init["env"]
    vocoder = one(docs, "Deployment", component_name("vocoder"))
    assert _volumes(vocoder)["engine-cache"]["persistentVolumeClaim"] == {"claimName": "emoserve-trt-engines"}
    assert {"name": "engine-cache", "mountPath": "/var/cache/emoserve/engines"} in container(vocoder)["volumeMounts"]
    acoustic = one(docs, "Deployment", component_name("acoustic"))
    assert _volumes(acoustic)["engine-cache"]["emptyDir"] == {"sizeLimit": "10Gi"}
    assert "engine-cache" not in _volumes(one(docs, "Deployment", component_name("encoder")))
    for stage, engines in (("acoustic", ["tensorrt", "torch"]), ("vocoder", ["tensorrt", "onnxruntime", "torch"])):
        engine = _config(docs, stage)["engine"]
        assert engine == {stage: engines, "cache_dir": "/var/cache/emoserve/engines"}
    assert "engine" not in _config(docs, "encoder")


def test_bearer_tokens_from_a_secret_reach_the_gateway_and_the_helm_test(helm):
    docs = render(helm, "gpu-tensorrt")
    secret_ref = {"secretKeyRef": {"name": "emoserve-tokens", "key": "tokens"}}
    gateway_env = container(one(docs, "Deployment", component_name("gateway")))["env"]
    assert {"name": "EMOSERVE_TOKENS", "valueFrom": secret_ref} in gateway_env
    (pod,) = find(docs, "Pod")
    assert {"name": "EMOSERVE_TOKEN", "valueFrom": secret_ref} in pod["spec"]["containers"][0]["env"]
    for stage in STAGES:
        assert "EMOSERVE_TOKENS" not in json.dumps(one(docs, "Deployment", component_name(stage)))
    assert "EMOSERVE_TOKEN" not in json.dumps(render(helm))


def test_extra_volumes_carry_tls_certificates_named_in_the_config(helm):
    docs = render(helm, "keda-custom-metrics")
    gateway = one(docs, "Deployment", component_name("gateway"))
    assert _volumes(gateway)["tls"] == {"name": "tls", "secret": {"secretName": "emoserve-gateway-tls"}}
    mount = next(m for m in container(gateway)["volumeMounts"] if m["name"] == "tls")
    tls = _config(docs, "gateway")["server"]["tls"]
    assert Path(tls["cert_file"]).parent == Path(tls["key_file"]).parent == Path(mount["mountPath"])
    assert _config(docs, "gateway")["server"]["grace_period_s"] == 10


def test_dockerfile_uses_a_cuda_base_runs_emoserve_and_bakes_no_model():
    dockerfile = (ROOT / "services" / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:\S+-runtime-", dockerfile, re.MULTILINE)
    assert re.search(r'^ENTRYPOINT \["emoserve"\]', dockerfile, re.MULTILINE)
    assert 'pip install "/src[k8s]"' in dockerfile
    copied = [line.split()[1:-1] for line in dockerfile.splitlines() if line.startswith("COPY ") and "--from" not in line]
    assert sorted(p for group in copied for p in group) == ["README.md", "pyproject.toml", "services", "tools"]
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    ignore = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert ignore[0] == "**" and {"!services/", "!tools/", "!pyproject.toml", "!README.md"} <= set(ignore)
    assert Path(ROOT / "pyproject.toml").read_text(encoding="utf-8").count('k8s = [') == 1


@pytest.mark.parametrize("value_set", ["default", "cpu-only"])
def test_notes_render_with_the_status_and_test_commands(helm, value_set, tmp_path):
    """NOTES.txt (which ``helm template`` skips) rendered through a copy of the chart that wraps it in a ConfigMap."""
    chart = tmp_path / "emoserve"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text(encoding="utf-8")
    (chart / "templates" / "notes-check.yaml").write_text(
        '{{- define "notes.check" }}' + notes + "{{- end }}\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n"
        'data:\n  notes: {{ include "notes.check" . | toJson }}\n', encoding="utf-8")
    values = [] if VALUE_SETS[value_set] is None else ["--values", str(VALUE_SETS[value_set])]
    done = subprocess.run([helm, "template", RELEASE, str(chart), "--namespace", NAMESPACE, *values,
                           "--show-only", "templates/notes-check.yaml"], check=False, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    text = yaml.safe_load(done.stdout)["data"]["notes"]
    assert f"emoserve k8s status --release {RELEASE} --namespace {NAMESPACE}" in text
    assert f"helm test {RELEASE} --namespace {NAMESPACE}" in text
    assert f"{component_name('gateway')}.{NAMESPACE}:{GRPC_PORT}" in text
    assert ("watching EndpointSlices" in text) == (value_set == "default")
    assert ("PersistentVolumeClaim emoserve-model" in text) == (value_set == "default")


def test_model_from_a_gcs_bucket(helm):
    docs = render(helm, "default", KUBE_VERSIONS[-1], "--set", "model.source=bucket",
                  "--set", "model.bucket.uri=gs://voices/emotivoice")
    for stage in STAGES:
        (init,) = one(docs, "Deployment", component_name(stage))["spec"]["template"]["spec"]["initContainers"]
        assert init["image"].startswith("google/cloud-sdk")
        assert init["command"] == ["gcloud", "storage", "rsync", "--recursive", "gs://voices/emotivoice",
                                   "/models/emoserve"]
    assert not find(docs, "ConfigMap", f"{RELEASE}-emoserve-model-fetch")
