"""deploy/kubernetes and deploy/kserve: parsed, checked against what docker/Dockerfile's image needs,
validated against the Kubernetes API schemas (offline), and read by kubectl where it is installed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S, KSERVE = DEPLOY / "kubernetes", DEPLOY / "kserve"
# The schema version the manifests are checked against: the newest the installed
# kubernetes-validate ships, so a field that a release removes fails here first.
K8S_VERSION = kubernetes_validate.latest_version()
# KServe's own fields of a predictor (ComponentExtensionSpec); everything else in it is a PodSpec.
KSERVE_PREDICTOR_FIELDS = {
    "minReplicas",
    "maxReplicas",
    "scaleMetric",
    "scaleTarget",
    "annotations",
    "labels",
}


def _dockerfile_env() -> dict[str, str]:
    """The ENV of docker/Dockerfile's final stage (``KEY=VALUE`` pairs, continued lines)."""
    text = (ROOT / "docker" / "Dockerfile").read_text()
    final = text[text.rindex("\nFROM ") :]
    block = re.search(r"\nENV ((?:[^\n]*\\\n)*[^\n]*)", final).group(1)
    return dict(pair.split("=", 1) for pair in block.replace("\\\n", " ").split())


def _dockerfile_user() -> int:
    text = (ROOT / "docker" / "Dockerfile").read_text()
    return int(re.search(r"useradd [^\n]*--uid (\d+)", text).group(1))


def _load(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _docs() -> dict[str, list[dict]]:
    return {path.name: _load(path) for path in sorted([*K8S.glob("*.yaml"), *KSERVE.glob("*.yaml")])}


def _one(path: Path, kind: str) -> dict:
    docs = [doc for doc in _load(path) if doc["kind"] == kind]
    assert len(docs) == 1, f"{path.name}: {len(docs)} {kind}"
    return docs[0]


def _pod_spec(kind: str) -> dict:
    if kind == "Deployment":
        return _one(K8S / "deployment.yaml", "Deployment")["spec"]["template"]["spec"]
    return _one(KSERVE / "inferenceservice.yaml", "InferenceService")["spec"]["predictor"]


def _env(container: dict) -> dict[str, dict]:
    return {entry["name"]: entry for entry in container.get("env", [])}


SERVERS = ["Deployment", "InferenceService"]


def test_every_manifest_parses_and_is_a_kubernetes_object():
    docs = _docs()
    assert {"deployment.yaml", "service.yaml", "pvc.yaml", "inferenceservice.yaml"} <= set(docs)
    for name, objects in docs.items():
        assert objects, name
        for obj in objects:
            assert {"apiVersion", "kind"} <= set(obj), name
            if obj["kind"] != "Kustomization":  # kustomize's file, not an object of the API
                assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", obj["metadata"]["name"]), name


def test_core_objects_match_the_kubernetes_schema():
    """Strict: an unknown or misspelt field (``readOnlyRootFileSystem``) is an error, not ignored."""
    checked = []
    for name, objects in _docs().items():
        for obj in objects:
            if obj["apiVersion"].startswith(("serving.kserve.io/", "monitoring.coreos.com/", "kustomize.")):
                continue
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
            checked.append(f"{name}:{obj['kind']}")
    assert len(checked) >= 4, checked  # Deployment, Service, PVC, the loader Pod


def test_the_kserve_predictor_is_a_valid_pod_spec():
    """KServe's predictor is a PodSpec plus a few fields of its own: the rest is checked as a Pod."""
    predictor = dict(_pod_spec("InferenceService"))
    extra = set(predictor) - KSERVE_PREDICTOR_FIELDS
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "livt"}}
    pod["spec"] = {key: predictor[key] for key in extra}
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    isvc = _one(KSERVE / "inferenceservice.yaml", "InferenceService")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    assert predictor["containers"][0]["name"] == "kserve-container"  # the name KServe looks for
    assert predictor["minReplicas"] <= predictor["maxReplicas"]
    assert predictor["annotations"]["prometheus.kserve.io/port"] == "8000"


@pytest.mark.parametrize("kind", SERVERS)
def test_the_server_runs_as_the_image_expects(kind: str):
    spec = _pod_spec(kind)
    (container,) = spec["containers"]
    image_env = _dockerfile_env()
    assert container["image"].rsplit(":", 1)[0] == "livt-serve"

    ports = container["ports"]
    assert [p["containerPort"] for p in ports] == [int(image_env["LIVT_PORT"])] == [8000]
    env = _env(container)
    assert env["LIVT_PORT"]["value"] == image_env["LIVT_PORT"]
    assert env["LIVT_HOST"]["value"] == "0.0.0.0"  # reachable from the Service, not loopback only
    assert env["LIVT_REQUIRE_CHECKSUM"]["value"] == "true"
    # Every LIVT_ name must be a setting livt-serve knows: it ignores an unknown one without a word.
    from livt.serving.settings import ServeSettings

    assert {name.removeprefix("LIVT_").lower() for name in env if name.startswith("LIVT_")} <= set(
        ServeSettings.model_fields
    )
    threads = env["LIVT_INTRA_OP_THREADS"]["valueFrom"]["resourceFieldRef"]
    assert threads["resource"] == "limits.cpu" and threads["containerName"] == container["name"]
    # Without this, a Service named "livt" in the namespace sets LIVT_PORT=tcp://... in the pod.
    assert spec["enableServiceLinks"] is False
    assert spec["automountServiceAccountToken"] is False

    for probe, route in [("startupProbe", "ready"), ("readinessProbe", "ready"), ("livenessProbe", "live")]:
        get = container[probe]["httpGet"]
        assert get["path"] == f"/v2/health/{route}", probe
        assert get["port"] in (8000, ports[0].get("name")), probe
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(resources["limits"])


@pytest.mark.parametrize("kind", SERVERS)
def test_security_context(kind: str):
    spec = _pod_spec(kind)
    (container,) = spec["containers"]
    pod, box = spec["securityContext"], container["securityContext"]
    uid = _dockerfile_user()
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] == uid and pod["runAsGroup"] == uid
    assert pod["fsGroup"] == uid  # the model files readable by the image's user
    assert pod["seccompProfile"]["type"] == "RuntimeDefault"
    assert box["readOnlyRootFilesystem"] is True
    assert box["allowPrivilegeEscalation"] is False
    assert box["capabilities"]["drop"] == ["ALL"] and "add" not in box["capabilities"]
    assert box.get("privileged", False) is False


@pytest.mark.parametrize("kind", SERVERS)
def test_the_only_writable_place_is_a_memory_backed_tmp(kind: str):
    """A read-only root file system: /tmp (multipart spooling) is the one writable mount."""
    spec = _pod_spec(kind)
    (container,) = spec["containers"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    writable = [m for m in container["volumeMounts"] if not m.get("readOnly", False)]
    assert [m["mountPath"] for m in writable] == ["/tmp"]
    tmp = volumes[writable[0]["name"]]["emptyDir"]
    assert tmp["medium"] == "Memory" and tmp["sizeLimit"]


def test_the_deployment_mounts_the_model_read_only_where_livt_model_points():
    spec = _pod_spec("Deployment")
    (container,) = spec["containers"]
    model = Path(_env(container)["LIVT_MODEL"]["value"])
    assert str(model) == _dockerfile_env()["LIVT_MODEL"]
    mount = next(m for m in container["volumeMounts"] if model.is_relative_to(m["mountPath"]))
    assert mount["readOnly"] is True
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert volume["persistentVolumeClaim"]["readOnly"] is True
    claim = _one(K8S / "pvc.yaml", "PersistentVolumeClaim")
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    # The loader pod writes into that same claim, where livt-serve then reads.
    loader = _one(K8S / "model-loader.yaml", "Pod")["spec"]
    assert [
        v["persistentVolumeClaim"]["claimName"] for v in loader["volumes"] if "persistentVolumeClaim" in v
    ] == [claim["metadata"]["name"]]
    loader_mount = next(
        m for m in loader["containers"][0]["volumeMounts"] if m["mountPath"] == mount["mountPath"]
    )
    assert not loader_mount.get("readOnly", False)


def test_kserve_reads_the_model_from_its_storage_initializer():
    """KServe fetches STORAGE_URI into /mnt/models (read-only) before the container starts."""
    (container,) = _pod_spec("InferenceService")["containers"]
    env = _env(container)
    claim = _one(K8S / "pvc.yaml", "PersistentVolumeClaim")["metadata"]["name"]
    assert env["STORAGE_URI"]["value"].startswith(f"pvc://{claim}/")
    assert Path(env["LIVT_MODEL"]["value"]).parent == Path("/mnt/models")
    # KServe's v2 routes use the InferenceService's name as the model's.
    name = _one(KSERVE / "inferenceservice.yaml", "InferenceService")["metadata"]["name"]
    assert env["LIVT_MODEL_NAME"]["value"] == name


def test_service_and_service_monitor_reach_the_pods():
    deployment = _one(K8S / "deployment.yaml", "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}

    service = _one(K8S / "service.yaml", "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in port_names

    monitor = _one(K8S / "servicemonitor.yaml", "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == port["name"] and endpoint["path"] == "/metrics"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port_names["http"])


def test_the_kustomization_lists_existing_files():
    kustomization = _one(K8S / "kustomization.yaml", "Kustomization")
    assert {"deployment.yaml", "service.yaml", "pvc.yaml"} == set(kustomization["resources"])


KUBECTL = shutil.which("kubectl")


def _kubectl(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    # A kubeconfig of its own that names no cluster: never the user's, whatever KUBECONFIG says.
    env = {**os.environ, "HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "kubeconfig")}
    return subprocess.run([KUBECTL, *args], capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.skipif(
    KUBECTL is None,
    reason="kubectl is not installed: Debian bookworm has it only as kubernetes-client (kubectl 1.20; "
    "apt-get install kubernetes-client); the schema checks above run without it",
)
def test_kubectl_reads_every_manifest_and_builds_the_kustomization(tmp_path: Path):
    """What kubectl does without a cluster: ``kubectl apply --dry-run=client`` is not among it,
    since even a client-side dry run asks the API server for its resource types (README "Deploy").
    ``label --local --dry-run=client`` decodes each object with kubectl's own YAML reader (the
    InferenceService and ServiceMonitor as unstructured objects), and ``kustomize`` builds the unit
    that ``kubectl apply -k`` would send."""
    for name, objects in _docs().items():
        if name == "kustomization.yaml":
            continue
        path = K8S / name if (K8S / name).exists() else KSERVE / name
        done = _kubectl("label", "--local", "--dry-run=client", "-o", "json", "-f", str(path), "livt.check=1",
                        tmp_path=tmp_path)  # fmt: skip
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        seen = out["items"] if out.get("kind") == "List" else [out]
        for mine, theirs in zip(objects, seen, strict=True):
            theirs["metadata"]["labels"].pop("livt.check")
            if not theirs["metadata"]["labels"]:
                del theirs["metadata"]["labels"]
            assert theirs == mine, name  # kubectl reads what PyYAML reads: no YAML 1.1 surprises

    done = _kubectl("kustomize", str(K8S), tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    built = {(obj["kind"], obj["metadata"]["name"]) for obj in yaml.safe_load_all(done.stdout)}
    assert built == {
        ("Deployment", "livt-serve"),
        ("Service", "livt-serve"),
        ("PersistentVolumeClaim", "livt-models"),
    }
