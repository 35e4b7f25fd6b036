"""Real Ray clusters on loopback, each node a `ray start` in its own process; jobs run as separate processes.

Nothing here calls `ray.init` in the pytest process (the session's in-process Ray may be up in it), and
nothing is stopped by name: `ray stop --force` kills every Ray process of the user on the machine, other
clusters and other test sessions included. A cluster is torn down by the ids of the processes it started.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import secrets

import psutil
import pytest

from tests.pipeline.conftest import REPO, read_records, write_manifest  # noqa: F401  (re-exported)

PYTHON = sys.executable
RAY = str(Path(sys.executable).with_name("ray"))  # the venv's: every node's workers run the venv's python
PHOTOS = sorted((REPO / "examples" / "images").glob("*.jpg"))
# Loopback, but not 127.0.0.1: Ray rewrites "127.0.0.1"/"localhost" in an address to the machine's outward IP,
# where nodes bound to loopback do not listen.
NODE_IP = "127.0.0.2"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))  # free on every interface, loopback included
        return probe.getsockname()[1]


def dashboard_installed() -> bool:
    """`ray job submit` needs the dashboard, which needs ray[default]'s extras (aiohttp, grpc, ...)."""
    return all(importlib.util.find_spec(name) is not None for name in ("aiohttp", "aiohttp_cors", "grpc"))


# One token for every process of the test clusters, so none depends on ~/.ray/auth_token (which a local
# `ray.init()` creates and `ray start` then silently turns on) or shares it with other Ray instances.
AUTH_TOKEN = secrets.token_hex(32)


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without a RAY_ADDRESS that would send a process to some other cluster."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_JOB_ID")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=AUTH_TOKEN,
               # One torch thread per worker (Ray keeps a value it finds set): on 2 cores shared with the
               # cluster's other processes, an actor's two spinning threads made each tiny edit ~10x slower.
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.update(extra)
    return env


def process_tree(roots: list[int]) -> list[psutil.Process]:
    found: dict[int, psutil.Process] = {}
    for pid in roots:
        try:
            root = psutil.Process(pid)
            for process in [root, *root.children(recursive=True)]:
                found[process.pid] = process
        except psutil.NoSuchProcess:
            pass
    return list(found.values())


def kill_processes(processes: list[psutil.Process], timeout: float = 20.0) -> None:
    """SIGKILL exactly these processes (by id) and wait for them."""
    for process in processes:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(processes, timeout=timeout)


def edit_actor_processes(roots: list[int]) -> list[psutil.Process]:
    """The processes under `roots` running an edit actor: Ray titles them `ray::MapWorker(...EditStage...)`."""
    actors = []
    for process in process_tree(roots):
        try:
            title = " ".join(process.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if title.startswith("ray::") and "EditStage" in title:
            actors.append(process)
    return actors


@dataclass
class LocalCluster:
    """A head and worker nodes on loopback, each a blocking `ray start` that we started and will kill."""

    temp_dir: str
    log_dir: Path
    gcs_port: int = 0
    dashboard_port: int | None = None
    nodes: list[subprocess.Popen] = field(default_factory=list)
    node_ids: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{NODE_IP}:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str | None:
        return f"http://{NODE_IP}:{self.dashboard_port}" if self.dashboard_port else None

    def _start(self, name: str, args: list[str]) -> None:
        ports = [f"--node-ip-address={NODE_IP}", f"--temp-dir={self.temp_dir}", "--block", "--disable-usage-stats",
                 f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
                 f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
                 f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                 "--object-store-memory=200000000"]
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        self.nodes.append(subprocess.Popen([RAY, "start", *args, *ports], stdout=log, stderr=subprocess.STDOUT,
                                           env=clean_env(), start_new_session=True))

    def start_head(self, num_cpus: int, resources: dict[str, float]) -> None:
        self.gcs_port = free_port()
        # The head runs a (minimal) dashboard process even without the dashboard: give it its own port too, not
        # the default 8265 that another cluster on this machine may hold.
        dashboard_port = free_port()
        args = ["--head", f"--port={self.gcs_port}", f"--num-cpus={num_cpus}", f"--resources={json.dumps(resources)}",
                f"--dashboard-host={NODE_IP}", f"--dashboard-port={dashboard_port}"]
        if dashboard_installed():
            self.dashboard_port = dashboard_port
            args += ["--include-dashboard=true"]
        else:
            args += ["--include-dashboard=false"]
        self._start("head", args)

    def add_worker(self, num_cpus: int, resources: dict[str, float] | None = None) -> None:
        args = [f"--address={self.address}", f"--num-cpus={num_cpus}"]
        if resources:
            args.append(f"--resources={json.dumps(resources)}")
        self._start(f"worker{len(self.nodes)}", args)

    def wait_for_nodes(self, count: int, timeout: float = 90.0) -> list[dict]:
        """Block until `count` nodes are alive; returns them (NodeID, Resources) as Ray reports them.

        Asked from a short-lived Python process, never from this one.
        """
        probe = (
            "import json, sys, time, ray\n"
            f"ray.init(address={self.address!r}, logging_level='ERROR', log_to_driver=False)\n"
            f"deadline = time.time() + {timeout}\n"
            "while True:\n"
            "    alive = [n for n in ray.nodes() if n['Alive']]\n"
            f"    if len(alive) >= {count} or time.time() > deadline: break\n"
            "    time.sleep(0.5)\n"
            "print(json.dumps([{'NodeID': n['NodeID'], 'Resources': n['Resources']} for n in alive]))\n"
        )
        deadline = time.time() + timeout
        while True:
            self._check_alive()
            if not self._gcs_answers():
                if time.time() > deadline:
                    raise RuntimeError(f"no GCS at {self.address} after {timeout} s; see {self.log_dir}")
                time.sleep(0.5)
                continue
            done = subprocess.run([PYTHON, "-c", probe], capture_output=True, text=True, env=clean_env(),
                                  timeout=timeout + 30)
            if done.returncode == 0:
                nodes = json.loads(done.stdout.strip().splitlines()[-1])
                if len(nodes) >= count:
                    break
            if time.time() > deadline:
                raise RuntimeError(f"{count} Ray nodes not up after {timeout} s: {done.stderr[-2000:]}")
            time.sleep(1)
        if self.dashboard_port and not self._dashboard_answers(deadline=time.time() + 30):
            self.dashboard_port = None  # ray[default] is there but its dashboard did not come up: no job API
        return nodes

    def _check_alive(self) -> None:
        for node in self.nodes:
            if node.poll() is not None:
                raise RuntimeError(f"`ray start` exited with {node.returncode}; see {self.log_dir}")

    def _gcs_answers(self) -> bool:
        try:
            with socket.create_connection((NODE_IP, self.gcs_port), timeout=1):
                return True
        except OSError:
            return False

    def _dashboard_answers(self, deadline: float) -> bool:
        while time.time() < deadline:
            request = urllib.request.Request(f"{self.dashboard_url}/api/version",
                                             headers={"Authorization": f"Bearer {AUTH_TOKEN}"})
            try:
                with urllib.request.urlopen(request, timeout=2) as response:
                    return response.status == 200
            except OSError:
                time.sleep(1)
        return False

    def processes(self) -> list[psutil.Process]:
        """Every process of this cluster: the `ray start`s, what they started, and those processes' workers."""
        own = process_tree([node.pid for node in self.nodes])
        pids = {process.pid for process in own}
        for process in psutil.process_iter(["pid", "cmdline"]):  # anything of ours that was re-parented
            if process.pid not in pids and self.temp_dir in " ".join(process.info["cmdline"] or ()):
                own.extend(process_tree([process.pid]))
        return own

    def stop(self) -> None:
        kill_processes(self.processes())
        for node in self.nodes:
            node.wait(timeout=10)


@pytest.fixture(scope="session")
def two_node_cluster(tmp_path_factory):
    """A head (2 CPUs, resource `head`) and one worker node (3 CPUs), both on loopback.

    An edit actor that reserves 2 CPUs fits once on each node and never twice on one, so a pool of two
    spans both nodes. The temp dir is short: Ray's Unix socket paths must stay under ~107 characters.
    """
    log_dir = tmp_path_factory.mktemp("ray-cluster-logs")
    cluster = LocalCluster(temp_dir=tempfile.mkdtemp(prefix="rc", dir="/tmp"), log_dir=log_dir)
    try:
        cluster.start_head(num_cpus=2, resources={"head": 1})
        cluster.wait_for_nodes(1)
        cluster.add_worker(num_cpus=3)
        cluster.node_ids = [node["NodeID"] for node in cluster.wait_for_nodes(2)]
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.temp_dir, ignore_errors=True)


def photo_manifest(folder: Path, count: int, prefix: str = "edit") -> Path:
    """A manifest folder of `count` one-row files over the example photos (copied into `folder`), ids
    `<prefix>-<k>`.

    One file per row: the job reads each manifest file as a unit and a small file travels as one block, which
    one task fetches and one actor edits; separate files make separate blocks (bundled up to job.batch_size
    rows), so the work streams batch by batch and spreads over the pool as it would for a large manifest.
    """
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    for photo in PHOTOS:
        shutil.copy(photo, images / photo.name)
    manifest = folder / "manifest"
    manifest.mkdir()
    for k in range(count):
        row = {"id": f"{prefix}-{k:03d}", "image": str(images / PHOTOS[k % len(PHOTOS)].name),
               "source_prompt": "a photo", "target_prompt": f"a painting number {k}", "seed": k}
        write_manifest(manifest / f"part-{k:03d}.parquet", [row])
    return manifest


def job_args(manifest: Path, output: Path, model_dir: Path, *overrides: str) -> list[str]:
    """Arguments of jobs/edit_manifest.py (the `diffedit-batch run` options) on configs/tiny.yaml."""
    sets = [f"model.pretrained={model_dir}", "job.progress_interval_s=5", *overrides]
    return ["--config", str(REPO / "configs" / "tiny.yaml"), "--input", str(manifest), "--output", str(output),
            *[arg for value in sets for arg in ("--set", value)]]


def assert_each_id_once_ok(output: Path, ids: list[str]) -> list[dict]:
    records = read_records(output)
    found = sorted(record["id"] for record in records)
    assert found == sorted(ids), f"ids recorded {len(found)} times for {len(ids)} ids"
    bad = [(r["id"], r["status"], r["error"]) for r in records if r["status"] != "ok"]
    assert not bad, bad
    return records


def submit_job(cluster: LocalCluster, args: list[str], log_path: Path, timeout: float,
               env_vars: dict[str, str] | None = None) -> tuple[int, str]:
    """Run jobs/edit_manifest.py on `cluster`; returns (exit status, how it was submitted).

    With a dashboard: `ray job submit` (the driver runs on the head, as in production). Without one (Ray
    installed without ray[default]'s extras, as this project's venv is): the same entrypoint as a driver
    process with RAY_ADDRESS set, which is what the job supervisor would run. No `--working-dir`: every node
    runs the venv that has this package installed, and the entrypoint puts the repository on its path.
    """
    entrypoint = [PYTHON, str(REPO / "jobs" / "edit_manifest.py"), *args]
    env_vars = env_vars or {}
    if cluster.dashboard_url:
        command = [RAY, "job", "submit", "--address", cluster.dashboard_url,
                   "--runtime-env-json", json.dumps({"env_vars": env_vars}), "--", *entrypoint]
        env, how = clean_env(), "ray job submit"
    else:
        command, env, how = entrypoint, clean_env(RAY_ADDRESS=cluster.address, **env_vars), "driver with RAY_ADDRESS"
    with open(log_path, "wb") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout)
    return done.returncode, how
