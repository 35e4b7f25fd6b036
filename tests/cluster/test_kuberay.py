"""jobs/kuberay-rayjob.yaml: the fields KubeRay needs, an entrypoint that runs this repository's job with a
config that loads, an edit pool sized to the GPU group, and credentials only from Secrets."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from diffedit_batch.config import load_config

REPO = Path(__file__).resolve().parents[2]
SPEC_FILE = REPO / "jobs" / "kuberay-rayjob.yaml"
IMAGE_REPO_DIR = "/app"  # where the image holds this repository
SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL", re.IGNORECASE)


@pytest.fixture(scope="module")
def rayjob() -> dict:
    return yaml.safe_load(SPEC_FILE.read_text())


def in_repo(path: str) -> Path:
    """A path of the entrypoint (absolute in the image, or relative to its working dir) in this checkout."""
    return REPO / (path[len(IMAGE_REPO_DIR) + 1:] if path.startswith(IMAGE_REPO_DIR + "/") else path)


def entrypoint_options(rayjob: dict) -> tuple[list[str], dict[str, str], list[str]]:
    argv = shlex.split(rayjob["spec"]["entrypoint"])
    options, sets = {}, []
    for flag, value in zip(argv[2::2], argv[3::2]):
        if flag == "--set":
            sets.append(value)
        else:
            options[flag] = value
    return argv, options, sets


def containers(rayjob: dict) -> list[dict]:
    cluster = rayjob["spec"]["rayClusterSpec"]
    templates = [cluster["headGroupSpec"]["template"]] + [group["template"] for group in cluster["workerGroupSpecs"]]
    return [container for template in templates for container in template["spec"]["containers"]]


def test_the_fields_kuberay_requires(rayjob):
    assert rayjob["apiVersion"] == "ray.io/v1" and rayjob["kind"] == "RayJob"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?", rayjob["metadata"]["name"])
    spec = rayjob["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] >= 0
    cluster = spec["rayClusterSpec"]
    major, minor = map(int, cluster["rayVersion"].split(".")[:2])
    assert (2, 51) <= (major, minor) < (3, 0)  # pyproject's ray range
    head = cluster["headGroupSpec"]
    groups = [head, *cluster["workerGroupSpecs"]]
    for group in groups:
        # KubeRay passes rayStartParams to `ray start` as a map of strings
        assert isinstance(group["rayStartParams"], dict)
        assert all(isinstance(v, str) for v in group["rayStartParams"].values()), group["rayStartParams"]
    images = {container["image"] for container in containers(rayjob)}
    assert len(images) == 1 and images.pop()  # one image: every node must run the same Ray and package
    for group in cluster["workerGroupSpecs"]:
        assert group["groupName"]
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def gpus(container: dict) -> int:
    return int(container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))


def test_a_gpu_worker_group_sized_for_the_edit_pool(rayjob):
    cluster = rayjob["spec"]["rayClusterSpec"]
    assert gpus(cluster["headGroupSpec"]["template"]["spec"]["containers"][0]) == 0  # no edits on the head
    gpu_groups = [g for g in cluster["workerGroupSpecs"] if gpus(g["template"]["spec"]["containers"][0]) >= 1]
    assert gpu_groups, "no worker group with nvidia.com/gpu limits"
    for group in gpu_groups:
        container = group["template"]["spec"]["containers"][0]
        assert container["resources"]["requests"]["nvidia.com/gpu"] == container["resources"]["limits"]["nvidia.com/gpu"]
        assert group["rayStartParams"].get("num-gpus", str(gpus(container))) == str(gpus(container))
    _, _, sets = entrypoint_options(rayjob)
    config = load_config(REPO / "configs" / "sd21.yaml", sets)
    per_actor = config.job.gpus_per_actor
    assert per_actor > 0
    max_gpus = sum(g["maxReplicas"] * gpus(g["template"]["spec"]["containers"][0]) for g in gpu_groups)
    start_gpus = sum(g["replicas"] * gpus(g["template"]["spec"]["containers"][0]) for g in gpu_groups)
    # the pool starts on the GPUs the cluster starts with, and may grow to every GPU the autoscaler can add
    assert config.job.num_actors * per_actor <= start_gpus
    assert config.job.max_actors is not None and config.job.max_actors * per_actor == max_gpus


def test_the_entrypoint_runs_this_repositorys_job_with_a_config_that_loads(rayjob):
    argv, options, sets = entrypoint_options(rayjob)
    assert argv[0] == "python" and in_repo(argv[1]) == REPO / "jobs" / "edit_manifest.py"
    assert in_repo(argv[1]).is_file()
    config_file = in_repo(options["--config"])
    assert config_file.is_file() and config_file.parent == REPO / "configs"
    assert options["--input"] and options["--output"]
    config = load_config(config_file, sets)  # every --set names a real key with a valid value
    assert config.model.device == "cuda"


def test_credentials_come_only_from_secrets(rayjob):
    text = SPEC_FILE.read_text()
    assert not re.search(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", text)  # an AWS access key id
    assert not re.search(r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])", text)  # a secret access key
    assert "PRIVATE KEY" not in text
    names = set()
    for container in containers(rayjob):
        for variable in container.get("env", []):
            names.add(variable["name"])
            if SECRET_NAME.search(variable["name"]):
                assert "value" not in variable, variable["name"]
                assert variable["valueFrom"]["secretKeyRef"]["name"], variable["name"]
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= names
    assert not SECRET_NAME.search(rayjob["spec"].get("runtimeEnvYAML", "")), "runtime env would carry a secret"
