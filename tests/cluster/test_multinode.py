"""The job on a real two-node Ray cluster: edit actors on both nodes, every edit recorded exactly once."""

from __future__ import annotations

import re
import subprocess

import pytest

from .conftest import PYTHON, REPO, assert_each_id_once_ok, clean_env, job_args, photo_manifest, submit_job

pytestmark = pytest.mark.slow


def test_edit_actors_span_nodes_and_each_edit_finishes_once(two_node_cluster, tiny_model_dir, tmp_path):
    manifest = photo_manifest(tmp_path / "in", 12)
    output = tmp_path / "out"
    # Each actor reserves 2 CPUs: one fits on the head (2 CPUs), one on the worker (3 CPUs), never two on one.
    args = job_args(
        manifest, output, tiny_model_dir,
        "job.num_actors=2", "job.cpus_per_actor=2", "job.batch_size=2", "job.max_tasks_in_flight_per_actor=1",
        "job.decode_cpus=0.5", "job.write_cpus=0.5", "edit.num_inference_steps=20",
    )
    # Hand out batches only once both actors are up; otherwise the first one ready could take all six. Each actor
    # holds one batch at a time, so a batch that arrives while one is busy goes to the other, even though Ray Data
    # prefers the actor beside the block's data (the fetch tasks all run on the worker: the head has no CPU left).
    env_vars = {"RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S": "180"}
    log = tmp_path / "job.log"
    status, how = submit_job(two_node_cluster, args, log, timeout=300, env_vars=env_vars)
    print(f"submitted with: {how}")
    assert status == 0, log.read_text()[-4000:]

    records = assert_each_id_once_ok(output, [f"edit-{k:03d}" for k in range(12)])
    nodes = [record["node_id"] for record in records]
    assert None not in nodes
    assert set(nodes) <= set(two_node_cluster.node_ids)
    assert len(set(nodes)) == 2, f"edits by node: { {n: nodes.count(n) for n in set(nodes)} }"


# The job's entrypoint with buckets of two rows, so a small manifest takes the disk-based hash shuffle (over
# SMALL_PLAN_BUCKETS buckets) on a cluster of two nodes, each with its own shuffle files and file server. (Which
# node a map or reduce task lands on is Ray's choice; the test does not pin it.)
SMALL_BUCKETS_DRIVER = """
import runpy, sys
from diffedit_batch.pipeline import planning
planning.ROWS_PER_BUCKET = 2
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_a_plan_of_many_buckets_is_shuffled_across_nodes(two_node_cluster, tiny_model_dir, tmp_path):
    manifest = photo_manifest(tmp_path / "in", 24)
    output = tmp_path / "out"
    args = job_args(manifest, output, tiny_model_dir, "job.mode=noop", "job.decode_cpus=0.5", "job.write_cpus=0.5")
    command = [PYTHON, "-c", SMALL_BUCKETS_DRIVER, str(REPO / "jobs" / "edit_manifest.py"), *args]
    env = clean_env(RAY_ADDRESS=two_node_cluster.address)
    logs = []
    for _ in range(2):  # a first run, then a re-run that finds every edit done
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        logs.append(done.stdout + done.stderr)
        assert done.returncode == 0, logs[-1][-4000:]
    ids = [f"edit-{k:03d}" for k in range(24)]
    assert_each_id_once_ok(output, ids)
    # 24 requests in 12 buckets, then 24 requests and 24 records in 24: each its own partition
    assert re.search(r"\(12 buckets in 12 partitions", logs[0]), logs[0][-3000:]
    assert re.search(r"0 edits to do, 24 done earlier.*\(24 buckets in 24 partitions", logs[1]), logs[1][-3000:]
