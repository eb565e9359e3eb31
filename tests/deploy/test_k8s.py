"""deploy/k8s: every manifest valid against the Kubernetes schemas (kubernetes-validate ships them,
so nothing is fetched), the ServiceMonitor against its vendored schema, and the properties the
manifests promise: non-root and read-only, a drainable PDB, an autoscaler, a versioned image,
config changes that roll the pods, only the WebSocket paths published."""

from __future__ import annotations

import copy
import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy.tools import ROOT

K8S = ROOT / "deploy" / "k8s"
# The oldest Kubernetes minor still commonly run that has every API used here (autoscaling/v2,
# policy/v1); the schemas of later minors accept the same documents.
KUBERNETES_VERSION = "1.30"
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): Path(__file__).parent
    / "schemas"
    / "servicemonitor-monitoring-v1.json"
}


def _documents() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path.name, doc))
    return out


def _one(kind: str) -> dict[str, Any]:
    found = [doc for _, doc in _documents() if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _validate(doc: dict[str, Any]) -> None:
    schema_path = CRD_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
    if schema_path is not None:
        jsonschema.validate(doc, json.loads(schema_path.read_text()))
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(
    "name,doc", _documents(), ids=[f"{n}:{d['kind']}" for n, d in _documents()]
)
def test_manifest_is_valid(name: str, doc: dict[str, Any]) -> None:
    _validate(doc)


def test_the_manifests_hold_every_kind_operators_need() -> None:
    kinds = {doc["kind"] for _, doc in _documents()}
    assert kinds >= {
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ServiceMonitor",
        "Ingress",
    }


def test_the_validators_reject_an_unknown_field() -> None:
    """Strict validation: a misspelt key is an error, not silently ignored."""
    deployment = copy.deepcopy(_one("Deployment"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["readOnlyRootFileSystem"] = True  # the real key: ...Filesystem
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(deployment)
    monitor = copy.deepcopy(_one("ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    with pytest.raises(jsonschema.ValidationError):
        _validate(monitor)


def test_pods_run_non_root_read_only_without_capabilities() -> None:
    pod = _one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    # The image's user is the one the pod runs as (runAsNonRoot checks a numeric USER).
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert f"USER {pod['securityContext']['runAsUser']}:" in dockerfile
    # /tmp is the only writable path, in memory and bounded.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/tmp"]]["emptyDir"]["sizeLimit"]


def test_the_image_is_the_package_version_never_latest() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    (container,) = _one("Deployment")["spec"]["template"]["spec"]["containers"]
    name, _, tag = container["image"].rpartition(":")
    assert name == "lingua-scheduler" and tag == version


def test_a_node_drain_can_evict_a_pod_at_the_autoscaler_minimum() -> None:
    pdb = _one("PodDisruptionBudget")["spec"]
    hpa = _one("HorizontalPodAutoscaler")["spec"]
    assert "minAvailable" not in pdb
    assert pdb["maxUnavailable"] == 1
    assert hpa["minReplicas"] >= 2  # one evicted, one still serving
    assert hpa["scaleTargetRef"]["name"] == _one("Deployment")["metadata"]["name"]
    # The autoscaler owns the count: a fixed `replicas` would undo it on every apply.
    assert "replicas" not in _one("Deployment")["spec"]


def test_a_config_change_rolls_the_pods() -> None:
    config = _one("ConfigMap")["data"]["config.toml"]
    annotations = _one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    expected = hashlib.sha256(config.encode()).hexdigest()
    assert annotations["checksum/config"] == expected, (
        f"deploy/k8s/scheduler.yaml: the ConfigMap changed; set the Deployment's pod annotation "
        f'checksum/config: "{expected}" so the pods roll'
    )


def test_the_service_monitor_scrapes_the_service_port() -> None:
    service = _one("Service")
    monitor = _one("ServiceMonitor")["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    ports = {p["name"] for p in service["spec"]["ports"]}
    assert [e["port"] for e in monitor["endpoints"]] == ["http"] and "http" in ports
    assert monitor["endpoints"][0]["path"] == "/metrics"
    # alerts.yaml matches up{job="lingua-scheduler"}: the operator names the job after the Service.
    assert service["metadata"]["name"] == "lingua-scheduler"


def test_the_ingress_publishes_only_the_websockets_with_long_timeouts() -> None:
    ingress = _one("Ingress")
    paths = [p["path"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert sorted(paths) == ["/ws/node", "/ws/session"]
    annotations = ingress["metadata"]["annotations"]
    for key in ("proxy-read-timeout", "proxy-send-timeout"):
        # ingress-nginx's 60 s default would cut idle sockets between pings.
        assert int(annotations[f"nginx.ingress.kubernetes.io/{key}"]) >= 3600
