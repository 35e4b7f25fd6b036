"""The edit pass's rows in flight are capped in Ray's object store, per edit actor (job.object_store_mib_per_actor)."""

from __future__ import annotations

import pytest

from diffedit_batch.pipeline.plan import edit_pass, edit_pass_stages

NOOP = ("job.mode=noop", "model.resolution=64")
WORK = [("/nowhere/work-00000.parquet", 100)]  # the pass is only built here, never run


def _limits(config):
    stages = edit_pass_stages(config, "/nowhere/out", "run", caption_images=False)
    return edit_pass(stages, WORK, config).context.execution_options.resource_limits


def test_the_object_store_budget_grows_with_the_edit_actors(ray_local, job_config):
    fixed = _limits(job_config(*NOOP, "job.num_actors=2", "job.object_store_mib_per_actor=300"))
    assert fixed.object_store_memory == 2 * 300 * 2**20
    elastic = _limits(job_config(*NOOP, "job.num_actors=1", "job.max_actors=3"))
    assert elastic.object_store_memory == 3 * 512 * 2**20  # the default, for the most actors the pool may have
    # CPU and GPU limits stay Ray Data's own (auto-detected; an autoscaler may add nodes)
    assert elastic.cpu == float("inf") and elastic.gpu == float("inf")


def test_zero_leaves_ray_datas_own_limit(ray_local, job_config):
    assert _limits(job_config(*NOOP, "job.object_store_mib_per_actor=0")).object_store_memory == float("inf")


def test_the_budget_is_checked_at_the_door(job_config):
    with pytest.raises(ValueError, match="object_store_mib_per_actor must be >= 0"):
        job_config(*NOOP, "job.object_store_mib_per_actor=-1")
    with pytest.raises(ValueError, match="object_store_mib_per_actor must be at most"):
        job_config(*NOOP, "job.object_store_mib_per_actor=2000000000")
