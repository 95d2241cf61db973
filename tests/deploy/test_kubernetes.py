"""deploy/kubernetes/ holds what the README promises, valid offline: each manifest passes
kubernetes-validate (strict: an unknown or misspelt field fails) for the oldest and the
newest Kubernetes the package knows from 1.25 on, the kustomization lists them all, the
ConfigMap's configuration passes `check-config`, and the Deployment, Service and
PodDisruptionBudget agree with it and with each other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils

from forwarder import cli
from forwarder import config as config_mod
from forwarder.config.values import parse_server

DIR = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
MANIFESTS = sorted(p for p in DIR.glob("*.yaml") if p.name != "kustomization.yaml")
VERSIONS = sorted(v for v in kv_utils.all_versions()
                  if tuple(map(int, v.split("."))) >= (1, 25))
CHECKED = [VERSIONS[0], VERSIONS[-1]]


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def resource(kind: str) -> dict[str, Any]:
    found = [d for p in MANIFESTS for d in documents(p) if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_spec() -> dict[str, Any]:
    return resource("Deployment")["spec"]["template"]["spec"]


def container() -> dict[str, Any]:
    (c,) = pod_spec()["containers"]
    return c


@pytest.mark.parametrize("version", CHECKED)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_valid(path: Path, version: str) -> None:
    for doc in documents(path):
        kubernetes_validate.validate(doc, version, strict=True)  # raises ValidationError


def test_validation_catches_a_misspelt_field() -> None:
    """The check above can fail: a typo in the Deployment is rejected."""
    broken = yaml.safe_load(yaml.safe_dump(resource("Deployment")))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, CHECKED[-1], strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((DIR / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == [p.name for p in MANIFESTS]
    assert [i["name"] for i in kustomization["images"]] == [container()["image"].split(":")[0]]


def embedded_config(tmp_path: Path) -> Path:
    path = tmp_path / "forwarder.yaml"
    path.write_text(resource("ConfigMap")["data"]["forwarder.yaml"])
    return path


def test_configmap_config_passes_check_config(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = embedded_config(tmp_path)
    assert cli.check_config(str(path)) == 0, capsys.readouterr().err
    cfg = config_mod.load(str(path))
    assert cfg.reload.watch, "ConfigMap updates must reach the pods without a restart"


def test_deployment_serves_the_configmap_config(tmp_path: Path) -> None:
    """The ports the pod declares and probes are the ones its configuration listens on,
    and the file is mounted where the command reads it."""
    cfg = config_mod.load(str(embedded_config(tmp_path)))
    c = container()
    ports = {(p["containerPort"], p["protocol"]) for p in c["ports"]}
    dns = {(lst.port, proto.upper()) for lst in cfg.listen for proto in lst.protocols}
    metrics = parse_server(cfg.metrics.listen, any_port=True)
    assert ports == dns | {(metrics.port, "TCP")}
    assert all(lst.address in ("0.0.0.0", "::") for lst in cfg.listen)
    assert metrics.host in ("0.0.0.0", "::")  # the kubelet probes the pod's address
    config_arg = c["args"][c["args"].index("-c") + 1]
    mount = next(m for m in c["volumeMounts"] if config_arg.startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod_spec()["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == resource("ConfigMap")["metadata"]["name"]
    assert config_arg.rsplit("/", 1)[1] in resource("ConfigMap")["data"]
    assert "subPath" not in mount, "a subPath mount is never updated: no reload"


def test_deployment_is_highly_available_and_probed() -> None:
    deployment = resource("Deployment")
    assert deployment["spec"]["replicas"] >= 2
    spread = pod_spec()["topologySpreadConstraints"]
    assert any(s["topologyKey"] == "kubernetes.io/hostname"
               and s["whenUnsatisfiable"] == "DoNotSchedule" for s in spread)
    c = container()
    named = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert named[c["readinessProbe"]["httpGet"]["port"]] == 9153


def test_deployment_is_locked_down() -> None:
    pod = pod_spec()
    c = container()
    security = c["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}  # nothing added back
    # port 53 without a capability: unprivileged ports start at 53 in the pod
    sysctls = {s["name"]: s["value"] for s in pod["securityContext"]["sysctls"]}
    assert int(sysctls["net.ipv4.ip_unprivileged_port_start"]) <= 53
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind])


def test_service_and_budget_select_the_pods() -> None:
    labels = resource("Deployment")["spec"]["template"]["metadata"]["labels"]
    service = resource("Service")
    budget = resource("PodDisruptionBudget")
    assert service["spec"]["selector"].items() <= labels.items()
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["minAvailable"] < resource("Deployment")["spec"]["replicas"]
    named = {(p["name"], p["protocol"]) for p in container()["ports"]}
    dns = {(p["port"], p["protocol"]) for p in service["spec"]["ports"]
           if (p["targetPort"], p["protocol"]) in named and p["port"] == 53}
    assert dns == {(53, "UDP"), (53, "TCP")}
