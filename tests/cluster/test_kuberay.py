"""The KubeRay examples and the image they run.

Every RayJob the examples make KubeRay run (jobs/kuberay-rayjob.yaml, the RayJob a tick of
jobs/kuberay-raycronjob.yaml creates, the RayJob in jobs/cronjob-rayjob.yaml's ConfigMap) has the fields KubeRay
needs, an entrypoint that runs this repository's job with a config that loads, an edit pool sized to the GPU group,
and credentials only from Secrets. The Dockerfile builds the image they name: the examples' Ray, the repository at
/app, the package installed, no weights. The schedules themselves are in test_schedules.py."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from diffedit_batch.config import load_config

REPO = Path(__file__).resolve().parents[2]
RAYJOB_FILE = REPO / "jobs" / "kuberay-rayjob.yaml"
RAYCRONJOB_FILE = REPO / "jobs" / "kuberay-raycronjob.yaml"
CRONJOB_FILE = REPO / "jobs" / "cronjob-rayjob.yaml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
IMAGE_REPO_DIR = "/app"  # where the image holds this repository
SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL", re.IGNORECASE)
# The largest suffix KubeRay's RayCronJob controller gives a RayJob ("-" and the tick's Unix minute, up to 10 digits)
# and the one the API server gives a generateName (5 characters).
CRON_SUFFIX = "-9999999999"
GENERATED_SUFFIX = "x1y2z"


def documents(path: Path) -> list[dict]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document is not None]


def only(docs: list[dict], kind: str) -> dict:
    matches = [document for document in docs if document["kind"] == kind]
    assert len(matches) == 1, f"{len(matches)} documents of kind {kind}"
    return matches[0]


def scheduled_rayjob(raycronjob: dict) -> dict:
    """The RayJob that KubeRay's RayCronJob controller creates at a tick: <name>-<Unix minute>, jobTemplate its spec."""
    name = raycronjob["metadata"]["name"] + CRON_SUFFIX
    return {"apiVersion": raycronjob["apiVersion"], "kind": "RayJob", "metadata": {"name": name},
            "spec": raycronjob["spec"]["jobTemplate"]}


def configmap_rayjob(docs: list[dict]) -> dict:
    """The RayJob manifest the CronJob's pod creates, as written in the ConfigMap."""
    return yaml.safe_load(only(docs, "ConfigMap")["data"]["rayjob.yaml"])


def created_rayjob(manifest: dict) -> dict:
    """`manifest` as the API server holds it once created: a generateName completed to a name."""
    metadata = dict(manifest["metadata"])
    if "generateName" in metadata:
        metadata["name"] = metadata.pop("generateName") + GENERATED_SUFFIX
    return {**manifest, "metadata": metadata}


EXAMPLES = {
    "rayjob": (RAYJOB_FILE, lambda: only(documents(RAYJOB_FILE), "RayJob")),
    "raycronjob": (RAYCRONJOB_FILE, lambda: scheduled_rayjob(only(documents(RAYCRONJOB_FILE), "RayCronJob"))),
    "cronjob": (CRONJOB_FILE, lambda: created_rayjob(configmap_rayjob(documents(CRONJOB_FILE)))),
}
SCHEDULED = ["raycronjob", "cronjob"]


@pytest.fixture(scope="module", params=list(EXAMPLES))
def example(request) -> tuple[Path, dict]:
    path, load = EXAMPLES[request.param]
    return path, load()


@pytest.fixture(scope="module")
def rayjob(example) -> dict:
    return example[1]


@pytest.fixture(scope="module")
def all_rayjobs() -> dict[str, dict]:
    return {name: load() for name, (_, load) in EXAMPLES.items()}


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


def runtime_env(rayjob: dict) -> dict:
    return yaml.safe_load(rayjob["spec"].get("runtimeEnvYAML") or "{}")


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
    for container in containers(rayjob):  # the entrypoint's paths are the image's repository
        assert container["workingDir"] == IMAGE_REPO_DIR


def test_credentials_come_only_from_secrets(example):
    path, rayjob = example
    text = path.read_text()
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


# Pod Security and shared memory (issue 27)

# Volume types the `restricted` Pod Security profile admits (Kubernetes' pod-security-standards).
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
                      "secret"}
RAY_UID = 1000  # the user `ray` of Ray's images, which the Dockerfile keeps (USER ray)


def restricted_problems(pod: dict, extra_containers: list[dict] = ()) -> list[str]:
    """Why `pod` (a pod spec) would be refused in a namespace that enforces the `restricted` Pod Security profile:
    host namespaces and ports, privileged or escalating containers, kept capabilities, no RuntimeDefault seccomp,
    a root or unverifiable user, volume types outside the profile. `extra_containers`: containers KubeRay adds to
    it (the autoscaler), as their securityContext is set in the RayJob."""
    problems = [key for key in ("hostNetwork", "hostPID", "hostIPC") if pod.get(key)]
    pod_context = pod.get("securityContext", {})
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            problems.append(f"volume {volume['name']}: {kinds}")
    for container in [*pod.get("initContainers", []), *pod["containers"], *extra_containers]:
        context = container.get("securityContext", {})
        name = container.get("name", "added by KubeRay")

        def setting(key):
            return context.get(key, pod_context.get(key))

        if context.get("privileged"):
            problems.append(f"{name}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        capabilities = context.get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []) or set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: capabilities not dropped")
        if (setting("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: no RuntimeDefault seccomp profile")
        if not extra_containers or container not in extra_containers:  # KubeRay's sidecar takes the pod's user
            if setting("runAsNonRoot") is not True or not isinstance(setting("runAsUser"), int) or setting("runAsUser") == 0:
                problems.append(f"{name}: not a non-root numeric user")
        if any(port.get("hostPort") for port in container.get("ports", [])):
            problems.append(f"{name}: hostPort")
    return problems


def pods(rayjob: dict) -> dict[str, tuple[dict, list[dict]]]:
    """Every pod a RayJob makes KubeRay create: name -> (pod spec, containers KubeRay adds to it)."""
    spec = rayjob["spec"]
    cluster = spec["rayClusterSpec"]
    autoscaler = ([{"securityContext": cluster.get("autoscalerOptions", {}).get("securityContext", {})}]
                  if cluster.get("enableInTreeAutoscaling") else [])
    found = {"head": (cluster["headGroupSpec"]["template"]["spec"], autoscaler)}
    for group in cluster["workerGroupSpecs"]:
        found[group["groupName"]] = (group["template"]["spec"], [])
    # Without a submitterPodTemplate KubeRay makes its own submitter pod, which sets none of the above.
    found["submitter"] = (spec.get("submitterPodTemplate", {}).get("spec", {"containers": [{"name": "default"}]}), [])
    return found


def test_every_pod_passes_the_restricted_pod_security_profile(rayjob):
    for name, (pod, added) in pods(rayjob).items():
        assert restricted_problems(pod, added) == [], name
        assert pod["securityContext"]["runAsUser"] == RAY_UID, name  # the image's own user, so files stay its own
    submitter = rayjob["spec"]["submitterPodTemplate"]["spec"]
    assert submitter["restartPolicy"] == "Never" and len(submitter["containers"]) == 1
    (container,) = submitter["containers"]
    assert "command" not in container  # KubeRay fills in `ray job submit` for the first container
    assert container["image"] == containers(rayjob)[0]["image"]


def test_the_profile_check_refuses_what_the_profile_refuses():
    good = {"securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": False,
                                                              "capabilities": {"drop": ["ALL"]}}}]}
    assert restricted_problems(good) == []
    assert restricted_problems({**good, "securityContext": {}}) != []  # no seccomp, no user
    assert restricted_problems({**good, "containers": [{"name": "c"}]}) != []
    assert restricted_problems({**good, "volumes": [{"name": "h", "hostPath": {"path": "/"}}]}) != []


def test_ray_nodes_keep_their_object_store_in_memory(rayjob):
    for name, (pod, _) in pods(rayjob).items():
        if name == "submitter":
            continue
        (container,) = pod["containers"]
        (mount,) = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/dev/shm"]
        (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        assert volume["emptyDir"]["medium"] == "Memory", name
        size, limit = (int(volume["emptyDir"]["sizeLimit"].removesuffix("Gi")),
                       int(container["resources"]["limits"]["memory"].removesuffix("Gi")))
        assert 0 < size < limit, name  # /dev/shm counts against the pod's memory limit


def test_the_schedules_guide_names_the_raycronjob_version_and_a_dry_run_of_the_configmaps_rayjob():
    import subprocess
    import sys

    readme = (REPO / "docs" / "guides" / "scheduled-runs.md").read_text()
    assert "use KubeRay >= 1.7.0" in readme and "#4888" in readme and "exits with code 3" in readme
    assert "KubeRay >= 1.7.0" in RAYCRONJOB_FILE.read_text() and "#4888" in RAYCRONJOB_FILE.read_text()
    # The guide's command that prints the ConfigMap's RayJob for `kubectl create --dry-run=server -f -`.
    command = re.search(r"python -c '(.*?)' \\\n\s*\| kubectl create --dry-run=server -f -", readme, re.DOTALL)
    assert command, "docs/guides/scheduled-runs.md lost its dry run of the ConfigMap's RayJob"
    printed = subprocess.run([sys.executable, "-c", command.group(1)], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout
    assert yaml.safe_load(printed) == configmap_rayjob(documents(CRONJOB_FILE))


# The scheduled runs


@pytest.mark.parametrize("name", SCHEDULED)
def test_a_scheduled_run_is_the_rayjob_example_on_a_fixed_output(all_rayjobs, name):
    example, scheduled = all_rayjobs["rayjob"], all_rayjobs[name]
    # the same cluster and environment: a change to the example that misses a schedule fails here
    assert scheduled["spec"]["rayClusterSpec"] == example["spec"]["rayClusterSpec"]
    assert scheduled["spec"]["submitterPodTemplate"] == example["spec"]["submitterPodTemplate"]
    assert runtime_env(scheduled) == runtime_env(example)
    argv, options, sets = entrypoint_options(scheduled)
    example_argv, example_options, example_sets = entrypoint_options(example)
    assert argv[:2] == example_argv[:2] and sets == example_sets
    assert options["--config"] == example_options["--config"] == "/app/configs/sd21.yaml"
    assert set(options) == set(example_options) == {"--config", "--input", "--output"}
    # every tick resumes one output: a literal prefix (nothing expanded per run), and never a broken lease
    for flag in ("--input", "--output"):
        assert re.fullmatch(r"(s3|gs)://[a-z0-9][-a-z0-9.]*/[-\w./]*/", options[flag]), options[flag]
    assert "--break-lease" not in argv and "--break-lease" not in scheduled["spec"]["entrypoint"]


def test_every_example_runs_one_image(all_rayjobs):
    images = {name: {container["image"] for container in containers(rayjob)} for name, rayjob in all_rayjobs.items()}
    assert len(set().union(*images.values())) == 1, images


# The image


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile: continuation lines joined, comments and blank lines dropped."""
    result, pending = [], ""
    for line in dockerfile.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += " " + stripped[:-1] if stripped.endswith("\\") else " " + stripped
        if not stripped.endswith("\\"):
            keyword, _, arguments = pending.strip().partition(" ")
            result.append((keyword.upper(), arguments.strip()))
            pending = ""
    assert not pending, "the Dockerfile ends in a continuation line"
    return result


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves `path` out of the build context under these .dockerignore patterns: the last pattern
    that matches the path or a folder above it decides, `!` re-includes, `**` spans folders."""

    def regex(pattern: str) -> re.Pattern:
        parts = re.split(r"(\*\*/|\*\*|\*|\?)", pattern.strip("/"))
        table = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
        return re.compile("".join(table.get(part, re.escape(part)) for part in parts))

    folders = path.split("/")
    candidates = ["/".join(folders[:i]) for i in range(1, len(folders) + 1)]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        compiled = regex(pattern.lstrip("!"))
        if any(compiled.fullmatch(candidate) for candidate in candidates):
            ignored = not negated
    return ignored


def test_the_ignore_matcher():
    patterns = ["models", "**/*.safetensors", ".venv", "!keep/me.safetensors"]
    assert dockerignored("models/tiny-sd/unet/config.json", patterns)
    assert dockerignored("deep/er/weights.safetensors", patterns) and dockerignored("w.safetensors", patterns)
    assert not dockerignored("keep/me.safetensors", patterns)
    assert not dockerignored("diffedit_batch/models.py", patterns) and not dockerignored("src/models", patterns)


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def requirement(pyproject: dict, name: str) -> Requirement:
    (found,) = [r for r in map(Requirement, pyproject["project"]["dependencies"]) if r.name == name]
    return found


def test_the_image_is_on_rays_cuda_image_of_the_examples_ray(dockerfile, pyproject, all_rayjobs):
    bases = [arguments for keyword, arguments in dockerfile if keyword == "FROM"]
    assert len(bases) == 1, bases
    tag = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)-(cu\d{3}|gpu)", bases[0])
    assert tag, f"not a CUDA image of rayproject/ray: {bases[0]}"
    ray_version, python = tag[1], f"{tag[2]}.{tag[3]}"
    assert {rayjob["spec"]["rayClusterSpec"]["rayVersion"] for rayjob in all_rayjobs.values()} == {ray_version}
    assert requirement(pyproject, "ray").specifier.contains(ray_version), (ray_version, pyproject["project"])
    assert SpecifierSet(pyproject["project"]["requires-python"]).contains(python)


def test_the_image_holds_the_repository_at_app_with_the_package_installed(dockerfile):
    copies = [i for i, (keyword, arguments) in enumerate(dockerfile)
              if keyword == "COPY" and [a for a in arguments.split() if not a.startswith("--")] in (
                  [".", IMAGE_REPO_DIR], [".", IMAGE_REPO_DIR + "/"])]
    assert len(copies) == 1, "the repository is not copied to /app"
    installs = [i for i, (keyword, arguments) in enumerate(dockerfile)
                if keyword == "RUN" and re.search(r"pip install( --?[\w-]+(=\S+)?)* (/app/?|\.)(\s|$)", arguments)]
    assert installs and installs[-1] > copies[0], "the package is not pip-installed from /app after the copy"
    # the dependencies are a layer of their own, built from pyproject before the source arrives
    pyproject_copy = [i for i, (keyword, arguments) in enumerate(dockerfile)
                      if keyword == "COPY" and "pyproject.toml" in arguments.split()]
    dependencies = [i for i, (keyword, arguments) in enumerate(dockerfile)
                    if keyword == "RUN" and "pyproject.toml" in arguments and "pip install" in arguments]
    assert pyproject_copy and dependencies and pyproject_copy[0] < dependencies[0] < copies[0]


def test_the_image_brings_torch_only_when_its_base_has_none(dockerfile, pyproject):
    arguments = dict(a.split("=", 1) for keyword, a in dockerfile if keyword == "ARG" and "=" in a)
    default = shlex.split(arguments["TORCH_SPEC"])  # overridable with --build-arg; may carry pip options
    assert len(default) == 1, "a TORCH_SPEC with options must be quoted"
    spec = default[0].split()[0]
    torch = requirement(pyproject, "torch")
    pinned = Requirement(spec)
    assert pinned.name == "torch" and all(torch.specifier.contains(s.version) for s in pinned.specifier)
    torch_runs = [a for keyword, a in dockerfile if keyword == "RUN" and "TORCH_SPEC" in a]
    assert len(torch_runs) == 1 and re.search(r"python -c ['\"]import torch['\"].*\|\|", torch_runs[0]), torch_runs


def test_the_image_bakes_in_no_weights_and_caches_them_where_the_examples_mount(dockerfile, all_rayjobs):
    environment = dict(a.split("=", 1) for keyword, a in dockerfile if keyword == "ENV")
    for rayjob in all_rayjobs.values():
        assert runtime_env(rayjob)["env_vars"]["HF_HOME"] == environment["HF_HOME"]
        mounts = {mount["mountPath"] for container in containers(rayjob) for mount in container.get("volumeMounts", ())}
        assert environment["HF_HOME"] in mounts
    runs = " ".join(a for keyword, a in dockerfile if keyword == "RUN")
    assert not re.search(r"snapshot_download|from_pretrained|huggingface-cli|hf download|git lfs", runs)
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.strip().startswith("#")]
    for left_out in (".venv/bin/python", ".git/HEAD", "models/tiny-sd/unet/config.json",
                     "output/run/edits/x.png", "some/where/unet.safetensors", "weights/model.ckpt"):
        assert dockerignored(left_out, patterns), left_out
    for needed in ("pyproject.toml", "README.md", "diffedit_batch/__init__.py", "diffedit_batch/cli.py",
                   "jobs/edit_manifest.py", "configs/sd21.yaml"):
        assert (REPO / needed).is_file() and not dockerignored(needed, patterns), needed
