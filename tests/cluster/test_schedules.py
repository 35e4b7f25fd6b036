"""The scheduled examples: jobs/kuberay-raycronjob.yaml (a KubeRay RayCronJob) and jobs/cronjob-rayjob.yaml (a
Kubernetes CronJob whose pod creates a RayJob). The RayJobs they create are checked with the RayJob example in
test_kuberay.py; here: every document, the schedules, the CronJob's pod and its RBAC, and no secret inline."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.cluster.test_kuberay import (
    CRONJOB_FILE,
    RAYCRONJOB_FILE,
    SECRET_NAME,
    configmap_rayjob,
    documents,
    only,
)

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
MAX_RAYCRONJOB_NAME = 36  # KubeRay's MaxRayCronJobNameLength: its RayJobs' names add "-" and up to 10 digits
RAYCRONJOB_SPEC_FIELDS = {"jobTemplate", "schedule", "timeZone", "suspend"}  # RayCronJobSpec, KubeRay 1.7
CRON_FIELDS = [(0, 59, {}), (0, 23, {}), (1, 31, {}),
               (1, 12, {m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())}),
               (0, 7, {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())})]


def valid_cron(expression: str) -> bool:
    """Whether `expression` is a standard 5-field cron schedule (minute hour day-of-month month day-of-week), each
    field a comma list of `*`, a value or a range, with an optional /step, and names for months and weekdays."""
    fields = expression.split()
    if len(fields) != 5:
        return False

    def value(text: str, low: int, high: int, names: dict) -> int | None:
        number = names.get(text.lower()) if not text.isdigit() else int(text)
        return number if number is not None and low <= number <= high else None

    for field, (low, high, names) in zip(fields, CRON_FIELDS):
        for item in field.split(","):
            span, _, step = item.partition("/")
            if step and not (step.isdigit() and int(step) > 0):
                return False
            if span == "*":
                continue
            first, dash, last = span.partition("-")
            start = value(first, low, high, names)
            end = value(last, low, high, names) if dash else start
            if start is None or end is None or end < start:
                return False
    return True


@pytest.mark.parametrize("expression", ["0 2 * * *", "*/15 * * * *", "30 1 1,15 * mon-fri", "0 0 * jan-mar 0",
                                        "5 4 * * 7", "0 22 * * 1-5/2"])
def test_valid_cron_accepts(expression):
    assert valid_cron(expression)


@pytest.mark.parametrize("expression", ["0 2 * *", "0 2 * * * *", "60 * * * *", "0 24 * * *", "0 0 0 * *",
                                        "0 0 * 13 *", "0 0 * * 8", "*/0 * * * *", "5-1 * * * *", "@daily",
                                        "0 2 * * mon-", "TZ=UTC 0 2 * * *", "x * * * *"])
def test_valid_cron_refuses(expression):
    assert not valid_cron(expression)


@pytest.fixture(scope="module")
def raycronjob() -> dict:
    return only(documents(RAYCRONJOB_FILE), "RayCronJob")


@pytest.fixture(scope="module")
def cronjob_docs() -> list[dict]:
    return documents(CRONJOB_FILE)


@pytest.fixture(scope="module")
def pod(cronjob_docs) -> dict:
    return only(cronjob_docs, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]


@pytest.mark.parametrize("path", [RAYCRONJOB_FILE, CRONJOB_FILE], ids=lambda path: path.name)
def test_every_document_is_a_named_kubernetes_object(path):
    docs = documents(path)
    assert docs
    for document in docs:
        assert document["apiVersion"] and document["kind"], document
        assert DNS_LABEL.fullmatch(document["metadata"]["name"]), document["metadata"]
        assert "namespace" not in document["metadata"]  # applied with -n, into the namespace the RayJobs run in
        assert document["metadata"]["labels"]["app.kubernetes.io/name"] == "diffedit-batch"


def test_the_raycronjob_has_kuberays_schema(raycronjob):
    assert raycronjob["apiVersion"] == "ray.io/v1" and raycronjob["kind"] == "RayCronJob"
    assert len(raycronjob["metadata"]["name"]) <= MAX_RAYCRONJOB_NAME
    spec = raycronjob["spec"]
    assert {"jobTemplate", "schedule"} <= set(spec) <= RAYCRONJOB_SPEC_FIELDS, set(spec)
    assert valid_cron(spec["schedule"]) and "TZ" not in spec["schedule"]  # KubeRay wants timeZone for that
    assert isinstance(spec.get("suspend", False), bool)
    assert spec.get("timeZone", "UTC") != ""
    assert "entrypoint" in spec["jobTemplate"] and "rayClusterSpec" in spec["jobTemplate"]  # a RayJobSpec


def test_the_cronjob_runs_one_pod_at_a_time_and_keeps_a_short_history(cronjob_docs, pod):
    assert {document["kind"] for document in cronjob_docs} == {
        "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "CronJob"}
    cronjob = only(cronjob_docs, "CronJob")
    assert cronjob["apiVersion"] == "batch/v1"
    spec = cronjob["spec"]
    assert valid_cron(spec["schedule"])
    assert spec["concurrencyPolicy"] == "Forbid"
    assert isinstance(spec["startingDeadlineSeconds"], int) and spec["startingDeadlineSeconds"] > 0
    for limit in ("successfulJobsHistoryLimit", "failedJobsHistoryLimit"):
        assert isinstance(spec[limit], int) and 0 <= spec[limit] <= 10, limit
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    assert pod["serviceAccountName"] == only(cronjob_docs, "ServiceAccount")["metadata"]["name"]


def kubectl_command(pod: dict) -> list[str]:
    (container,) = pod["containers"]
    return [*container.get("command", []), *container.get("args", [])]


def test_the_pod_creates_the_rayjob_in_the_configmap(cronjob_docs, pod):
    command = kubectl_command(pod)
    assert command[:3] == ["kubectl", "create", "-f"] and len(command) == 4, command
    folder, _, key = command[3].rpartition("/")
    (container,) = pod["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"].rstrip("/") == folder]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    configmap = only(cronjob_docs, "ConfigMap")
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    assert key in configmap["data"] and key == "rayjob.yaml"  # the key test_kuberay.py checks the RayJob of
    rayjob = yaml.safe_load(configmap["data"][key])
    assert rayjob["apiVersion"] == "ray.io/v1" and rayjob["kind"] == "RayJob"
    # a new RayJob every tick: a fixed name would make the second `kubectl create` fail with AlreadyExists
    assert "name" not in rayjob["metadata"] and rayjob["metadata"]["generateName"].endswith("-")
    assert "namespace" not in rayjob["metadata"]  # created in the pod's own namespace, which the Role covers


def test_the_role_grants_exactly_what_the_pods_command_needs(cronjob_docs, pod):
    command = kubectl_command(pod)
    verb = command[1]  # kubectl create -f <file>: one request, that verb on the file's kind
    rayjob = configmap_rayjob(cronjob_docs)
    group = rayjob["apiVersion"].rpartition("/")[0]
    resource = rayjob["kind"].lower() + "s"
    role = only(cronjob_docs, "Role")
    assert role["apiVersion"] == "rbac.authorization.k8s.io/v1"
    assert role["rules"] == [{"apiGroups": [group], "resources": [resource], "verbs": [verb]}]
    assert (group, resource, verb) == ("ray.io", "rayjobs", "create")
    binding = only(cronjob_docs, "RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert [{k: v for k, v in subject.items() if k != "namespace"} for subject in binding["subjects"]] == [
        {"kind": "ServiceAccount", "name": pod["serviceAccountName"]}]
    assert not [d for d in cronjob_docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]


def env_variables(node):
    """Every container env variable in `node`, including those of YAML manifests held as strings (a ConfigMap's)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "env" and isinstance(value, list):
                yield from value
            else:
                yield from env_variables(value)
    elif isinstance(node, list):
        for item in node:
            yield from env_variables(item)
    elif isinstance(node, str) and "\n" in node:
        try:
            embedded = yaml.safe_load(node)
        except yaml.YAMLError:
            return
        yield from env_variables(embedded)


@pytest.mark.parametrize("path", [RAYCRONJOB_FILE, CRONJOB_FILE], ids=lambda path: path.name)
def test_no_secret_value_is_written_inline(path):
    docs = documents(path)
    assert not [d for d in docs if d["kind"] == "Secret"]
    text = path.read_text()
    assert not re.search(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", text) and "PRIVATE KEY" not in text
    variables = list(env_variables(docs))
    secret_like = [v for v in variables if SECRET_NAME.search(v["name"])]
    assert secret_like, "no credential variables found: the walk missed the containers"
    for variable in secret_like:
        assert "value" not in variable and variable["valueFrom"]["secretKeyRef"]["name"], variable
    for variable in variables:
        assert not re.search(r"[A-Za-z0-9/+]{40}", str(variable.get("value", ""))), variable


def test_the_kubectl_pod_passes_the_restricted_pod_security_profile(pod):
    from tests.cluster.test_kuberay import restricted_problems

    assert restricted_problems(pod) == []
