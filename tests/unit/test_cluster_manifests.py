"""The KubeRay manifests validate against the CRD fields they use, and say what the issue demands.

The schema (cluster/kuberay/schema/) is written from KubeRay's ray.io/v1 API reference and forbids
unknown keys, so a misspelled field fails here instead of being pruned silently by the API server.
The fact tests pin the run's shape: a CPU-only head, 6 pods x 8 A100, /dev/shm in memory, NCCL env,
credentials only from a Secret, and a RayJob that runs the paper's pipeline on the same cluster spec.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml

KUBERAY = Path(__file__).resolve().parents[2] / "cluster" / "kuberay"
SCHEMA = KUBERAY / "schema" / "kuberay-ray.io-v1.schema.json"
MANIFESTS = ["raycluster.yaml", "rayjob.yaml"]
SECRET_ENV = ["MLFLOW_TRACKING_URI", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((KUBERAY / name).read_text())


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def errors(validator: jsonschema.Draft202012Validator, manifest: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(manifest)]


def cluster_spec() -> dict[str, Any]:
    return load("raycluster.yaml")["spec"]


def worker_group(spec: dict[str, Any]) -> dict[str, Any]:
    groups = spec["workerGroupSpecs"]
    assert [g["groupName"] for g in groups] == ["a100"]
    return groups[0]


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    pods = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    return [c for pod in pods for c in pod["spec"]["containers"]]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


# ---- schema ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_validates_against_kuberay_schema(validator, name):
    assert errors(validator, load(name)) == []


@pytest.mark.parametrize("mutate, where", [
    (lambda m: m["spec"].__setitem__("workerGroupSpec", m["spec"].pop("workerGroupSpecs")), "spec"),
    (lambda m: m["spec"]["workerGroupSpecs"][0].__setitem__("replica", 6), "workerGroupSpecs/0"),
    (lambda m: m["spec"]["workerGroupSpecs"][0].__setitem__("replicas", "6"), "replicas"),
    (lambda m: m["spec"]["headGroupSpec"]["rayStartParams"].__setitem__("num-gpus", 0), "num-gpus"),
    (lambda m: m["spec"]["headGroupSpec"].pop("template"), "headGroupSpec"),
    (lambda m: m["spec"]["workerGroupSpecs"][0]["template"]["spec"]["volumes"][0]["emptyDir"]
     .__setitem__("medium", "memory"), "medium"),
    (lambda m: m["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"][0]
     .__setitem__("value", "http://literal"), "env/0"),
    (lambda m: m.__setitem__("apiVersion", "ray.io/v1alpha1"), "apiVersion"),
], ids=["misspelled-workerGroupSpecs", "misspelled-replicas", "replicas-as-string",
        "rayStartParam-not-string", "head-without-template", "bad-emptyDir-medium",
        "env-value-and-valueFrom", "old-apiVersion"])
def test_raycluster_schema_rejects_broken_manifests(validator, mutate, where):
    manifest = load("raycluster.yaml")
    mutate(manifest)
    found = errors(validator, manifest)
    assert found, "the broken manifest validated"
    assert any(where in e for e in found), found


@pytest.mark.parametrize("mutate", [
    lambda s: s.__setitem__("entrypointt", s.pop("entrypoint")),
    lambda s: s.__setitem__("shutdownAfterJobFinishes", "true"),
    lambda s: s.__setitem__("submissionMode", "K8sJob"),
    lambda s: s.pop("rayClusterSpec"),
    lambda s: s.__setitem__("clusterSelector", {"ray.io/cluster": "llava-st"}),
], ids=["misspelled-entrypoint", "bool-as-string", "unknown-submissionMode",
        "neither-cluster-spec-nor-selector", "both-cluster-spec-and-selector"])
def test_rayjob_schema_rejects_broken_manifests(validator, mutate):
    manifest = load("rayjob.yaml")
    mutate(manifest["spec"])
    assert errors(validator, manifest)


def test_rayjob_on_an_existing_cluster_validates(validator):
    """The README's variant: clusterSelector instead of rayClusterSpec."""
    manifest = load("rayjob.yaml")
    spec = manifest["spec"]
    del spec["rayClusterSpec"], spec["shutdownAfterJobFinishes"], spec["ttlSecondsAfterFinished"]
    spec["clusterSelector"] = {"ray.io/cluster": load("raycluster.yaml")["metadata"]["name"]}
    assert errors(validator, manifest) == []


# ---- the run's shape ------------------------------------------------------------------------------

def test_head_has_no_gpus():
    head = cluster_spec()["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"
    for container in head["template"]["spec"]["containers"]:
        resources = container.get("resources", {})
        for kind in ("requests", "limits"):
            assert not any("gpu" in name for name in resources.get(kind, {})), (kind, resources)
    assert "tolerations" not in head["template"]["spec"], "the head must not tolerate the GPU taint"


def test_six_workers_with_eight_gpus_each():
    group = worker_group(cluster_spec())
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 6
    (container,) = group["template"]["spec"]["containers"]
    gpus = {int(container["resources"][kind]["nvidia.com/gpu"]) for kind in ("requests", "limits")}
    assert gpus == {8}
    assert group["replicas"] * gpus.pop() == 48  # the paper's 6 nodes x 8 A100


def test_workers_land_on_a100_nodes_only():
    pod = worker_group(cluster_spec())["template"]["spec"]
    required = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    terms = required["nodeSelectorTerms"]
    expressions = [e for term in terms for e in term["matchExpressions"]]
    assert expressions and all(e["operator"] == "In" for e in expressions)
    assert all(v.startswith("NVIDIA-A100") for e in expressions for v in e["values"])
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]


def test_dev_shm_is_a_memory_volume_larger_than_the_object_store():
    group = worker_group(cluster_spec())
    pod = group["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volume = {v["name"]: v for v in pod["volumes"]}[mounts["/dev/shm"]]
    assert volume["emptyDir"]["medium"] == "Memory"
    size = volume["emptyDir"]["sizeLimit"]
    assert re.fullmatch(r"\d+Gi", size), size
    assert int(size[:-2]) * 2**30 > int(group["rayStartParams"]["object-store-memory"])


def test_workers_have_nccl_env():
    (container,) = worker_group(cluster_spec())["template"]["spec"]["containers"]
    env = env_of(container)
    assert env["NCCL_DEBUG"]["value"] == "WARN"
    assert env["NCCL_SOCKET_IFNAME"]["value"]
    assert env["NCCL_IB_DISABLE"]["value"] in {"0", "1"}


@pytest.mark.parametrize("name", MANIFESTS)
def test_credentials_come_from_a_secret_never_literal(name):
    manifest = load(name)
    spec = manifest["spec"].get("rayClusterSpec", manifest["spec"])
    for container in containers(spec):
        env = env_of(container)
        for var in SECRET_ENV:
            assert "value" not in env[var], (container["name"], var)
            assert env[var]["valueFrom"]["secretKeyRef"]["name"], (container["name"], var)
        for var, entry in env.items():
            if re.search(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY|TRACKING_URI|ENDPOINT", var):
                assert "secretKeyRef" in entry.get("valueFrom", {}), (container["name"], var)


def test_every_container_runs_the_same_image_with_the_manifests_ray_version():
    spec = cluster_spec()
    images = {c["image"] for c in containers(spec)}
    assert len(images) == 1, images
    assert spec["rayVersion"] == ray.__version__, "the cluster's Ray must match the submitting client's"
    dockerfile = (KUBERAY.parent / "image" / "Dockerfile").read_text()
    assert f"FROM rayproject/ray:{spec['rayVersion']}-py311-gpu" in dockerfile
    # the image installs the lock (less its CPU torch line), torch's CUDA build, and the project with no deps
    assert "grep -v '^torch==' requirements.lock" in dockerfile and "-r /tmp/requirements-gpu.lock" in dockerfile
    assert "torch==2.13.0" in dockerfile and "--no-deps --no-build-isolation ." in dockerfile


# ---- the RayJob -----------------------------------------------------------------------------------

def test_rayjob_embeds_the_raycluster_spec_verbatim():
    """One source of truth: raycluster.yaml's spec; rayjob.yaml carries a copy that must not drift."""
    assert load("rayjob.yaml")["spec"]["rayClusterSpec"] == cluster_spec()


def test_rayjob_runs_the_paper_pipeline_and_cleans_up():
    spec = load("rayjob.yaml")["spec"]
    assert re.search(r"(^|&& )llavast run jobs/llava_st_7b/pipeline\.yaml$", spec["entrypoint"])
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert isinstance(runtime_env, dict) and set(runtime_env) <= {"env_vars", "pip", "working_dir", "config"}
    assert spec["submissionMode"] == "K8sJobMode"
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    assert spec["activeDeadlineSeconds"] > 72 * 3600  # longer than the paper's 72 h run
    assert spec["backoffLimit"] >= 1  # a retry resumes (registered stages skipped, checkpoints, leases expire)


def test_a_changed_copy_is_detected():
    """The drift check above can fail: any edit to the copy makes the specs differ."""
    job_spec = copy.deepcopy(load("rayjob.yaml")["spec"]["rayClusterSpec"])
    worker_group(job_spec)["replicas"] = 5
    assert job_spec != cluster_spec()
