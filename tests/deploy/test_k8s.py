"""deploy/k8s against the Kubernetes OpenAPI schemas, offline (kubernetes-validate bundles them)."""

from __future__ import annotations

import copy
import importlib.util
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError

from service.settings import Settings

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
KUBE_VERSION = "1.33.0"  # NOTE: the oldest version we claim; sleep preStop and grpc probes exist.


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _base() -> dict[str, dict[str, Any]]:
    kustomization = _docs(K8S / "base" / "kustomization.yaml")[0]
    resources = [d for f in kustomization["resources"] for d in _docs(K8S / "base" / f)]
    return {r["kind"]: r for r in resources}


def _merge_by_name(base: list[dict], patch: list[dict]) -> list[dict]:
    by_name = {c["name"]: c for c in base}
    for c in patch:
        if c.get("$patch") == "delete":
            del by_name[c["name"]]
        else:
            by_name[c["name"]] = _merge(by_name.get(c["name"], {}), c)
    return list(by_name.values())


def _merge(base: Any, patch: Any) -> Any:
    """A strategic-merge subset: maps merge, containers and env merge by name (`$patch: delete`
    removes one), other lists replace."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for key, value in patch.items():
            if key in ("containers", "env"):
                out[key] = _merge_by_name(out.get(key, []), value)
            else:
                out[key] = _merge(out.get(key), value)
        return out
    return copy.deepcopy(patch)


@pytest.mark.parametrize(
    "kind",
    [
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PersistentVolumeClaim",
        "PodDisruptionBudget",
        "NetworkPolicy",
    ],
)
def test_base_resources_match_the_schema(kind: str) -> None:
    kubernetes_validate.validate(_base()[kind], KUBE_VERSION, strict=True)


def test_gpu_overlay_matches_the_schema_and_requests_a_gpu() -> None:
    overlay = _docs(K8S / "overlays" / "gpu" / "kustomization.yaml")[0]
    assert overlay["resources"] == ["../../base"]
    patch = _docs(K8S / "overlays" / "gpu" / overlay["patches"][0]["path"])[0]
    deployment = _merge(_base()["Deployment"], patch)
    kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"  # kept from the base
    (image,) = overlay["images"]
    assert image["name"] == "visor" and image["newTag"] == f"{_project_version()}-gpu"


def _env(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_base_fails_closed_without_the_api_key_secret() -> None:
    env = _env(_base()["Deployment"])
    ref = env["VISOR_API_KEYS"]["valueFrom"]["secretKeyRef"]
    # NOTE: a required Secret: the kubelet does not start the container without it
    assert ref == {"name": "visor-api-keys", "key": "keys"}
    assert env["VISOR_REQUIRE_API_KEYS"]["value"] == "true"  # an empty Secret stops the server
    fields = Settings.model_fields
    for name in env:
        assert name.startswith("VISOR_") and name.removeprefix("VISOR_").lower() in fields, name


def test_replicas_share_the_feedback_key_through_a_secret() -> None:
    ref = _env(_base()["Deployment"])["VISOR_FEEDBACK_KEYS"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "visor-feedback-keys", "key": "keys", "optional": True}


def test_no_auth_overlay_is_the_explicit_way_to_serve_without_keys() -> None:
    overlay = _docs(K8S / "overlays" / "no-auth" / "kustomization.yaml")[0]
    assert overlay["resources"] == ["../../base"]
    patch = _docs(K8S / "overlays" / "no-auth" / overlay["patches"][0]["path"])[0]
    deployment = _merge(_base()["Deployment"], patch)
    kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)
    env = _env(deployment)
    assert "VISOR_API_KEYS" not in env and env["VISOR_REQUIRE_API_KEYS"]["value"] == "false"
    assert Settings(require_api_keys=env["VISOR_REQUIRE_API_KEYS"]["value"], _env_file=None)
    with pytest.raises(ValidationError, match="no API key is set"):
        Settings(
            require_api_keys=_env(_base()["Deployment"])["VISOR_REQUIRE_API_KEYS"]["value"],
            api_keys="",
            _env_file=None,
        )


def test_a_broken_manifest_is_refused() -> None:
    broken = copy.deepcopy(_base()["Deployment"])
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBE_VERSION, strict=True)


def test_probes_ports_and_service_agree() -> None:
    resources = _base()
    pod = resources["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 3000, "grpc": 50051}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["startupProbe"]["grpc"]["port"] == ports["grpc"]
    service_ports = {p["name"]: p["targetPort"] for p in resources["Service"]["spec"]["ports"]}
    assert set(service_ports) == set(ports)
    grace = next(e["value"] for e in container["env"] if e["name"] == "VISOR_GRACE_PERIOD_S")
    assert pod["terminationGracePeriodSeconds"] > float(grace)
    target = resources["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert target["name"] == resources["Deployment"]["metadata"]["name"]


def _project_version() -> str:
    return tomllib.loads((K8S.parents[1] / "pyproject.toml").read_text())["project"]["version"]


def test_disruptions_and_spread_keep_replicas_apart() -> None:
    resources = _base()
    deployment = resources["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    pdb = resources["PodDisruptionBudget"]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    min_replicas = resources["HorizontalPodAutoscaler"]["spec"]["minReplicas"]
    assert 0 < pdb["maxUnavailable"] < min_replicas  # a drain never takes every replica
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} >= {"kubernetes.io/hostname"}
    for constraint in spread:
        assert constraint["labelSelector"]["matchLabels"].items() <= labels.items()


def test_pod_is_locked_down() -> None:
    resources = _base()
    pod = resources["Deployment"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    container = pod["containers"][0]
    name, _, tag = container["image"].partition(":")
    assert name == "visor" and tag == _project_version()  # pinned, never :latest
    for volume in pod["volumes"]:
        if "emptyDir" in volume:
            assert volume["emptyDir"].get("sizeLimit"), volume["name"]
    resources = container["resources"]
    assert resources["requests"]["ephemeral-storage"] and resources["limits"]["ephemeral-storage"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["models"]["readOnly"] is True
    grace = next(e["value"] for e in container["env"] if e["name"] == "VISOR_GRACE_PERIOD_S")
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > float(grace) + pre_stop


def test_network_policy_opens_only_the_serving_ports() -> None:
    resources = _base()
    policy = resources["NetworkPolicy"]["spec"]
    labels = resources["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    assert policy["egress"] == []  # Visor opens no connection of its own
    container = resources["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    named = {p["name"] for p in container["ports"]}
    opened = {p["port"] for rule in policy["ingress"] for p in rule["ports"]}
    assert opened == named


def _renderer():
    path = K8S.parents[1] / "scripts" / "kube-smoke-render.py"
    spec = importlib.util.spec_from_file_location("kube_smoke_render", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kube_smoke_plays_the_base_with_host_networking_only() -> None:
    base = _base()["Deployment"]
    played = _renderer().render(18080, 18081)
    kubernetes_validate.validate(played, KUBE_VERSION, strict=True)
    pod, container = (
        played["spec"]["template"]["spec"],
        played["spec"]["template"]["spec"]["containers"][0],
    )
    assert (
        played["spec"]["replicas"] == 1 and pod["hostNetwork"] is True and "ports" not in container
    )
    env = _env(played)
    assert env["VISOR_HOST"]["value"] == "127.0.0.1"  # never a pod or bridge address
    assert (env["VISOR_HTTP_PORT"]["value"], env["VISOR_GRPC_PORT"]["value"]) == ("18080", "18081")
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 18080}
    assert container["startupProbe"]["grpc"]["port"] == 18081
    # everything else is the base's own: image, volumes, security context, the key Secret
    base_container = base["spec"]["template"]["spec"]["containers"][0]
    for key in ("image", "args", "volumeMounts", "securityContext", "resources", "lifecycle"):
        assert container[key] == base_container[key], key
    assert pod["volumes"] == base["spec"]["template"]["spec"]["volumes"]
    assert pod["securityContext"] == base["spec"]["template"]["spec"]["securityContext"]
    assert env["VISOR_API_KEYS"] == _env(base)["VISOR_API_KEYS"]
