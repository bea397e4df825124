"""Starting and sizing Ray for a run (`inference.ray_runtime`): CPUs for every stage, a cluster too small named,
always a new local Ray, and Ray Data's own progress output only where a person watches it."""

from __future__ import annotations

import logging

import ray

from pipeline.inference import ray_runtime
from pipeline.inference.config import RunConfig


def test_a_local_ray_has_cpus_for_one_task_of_every_stage(monkeypatch):
    compute = RunConfig(run_id="r", catalogue_uri="c", scenes_uri="s", output_uri="o",
                        compute={"cpus_per_task": 1.0, "cpus_per_actor": 1.0, "gpu_actors_max": 2}).compute
    assert ray_runtime.stage_cpus(compute) == 1 + 2 * 1.0 + 2 * 1.0  # repartition, preprocess, postprocess, actors
    monkeypatch.setattr(ray_runtime.os, "cpu_count", lambda: 2)
    assert ray_runtime.local_cpus(compute) == 5
    monkeypatch.setattr(ray_runtime.os, "cpu_count", lambda: 64)
    assert ray_runtime.local_cpus(compute) == 64  # never fewer than the cores
    fractional = compute.model_copy(update={"cpus_per_task": 0.25, "cpus_per_actor": 0.5, "gpu_actors_max": 1})
    monkeypatch.setattr(ray_runtime.os, "cpu_count", lambda: 1)
    assert ray_runtime.local_cpus(fractional) == 2  # 2.0 exactly: no rounding up past it


def test_a_cluster_with_fewer_cpus_than_the_stages_need_is_named(ray_local, caplog):
    cfg = RunConfig(run_id="r", catalogue_uri="c", scenes_uri="s", output_uri="o",
                    compute={"cpus_per_task": 1.0, "cpus_per_actor": 1.0, "gpu_actors_max": 1})
    cpus = ray_local.cluster_resources()["CPU"]
    with caplog.at_level(logging.WARNING, logger=ray_runtime.log.name):
        ray_runtime.warn_if_few_cpus(cfg)
    assert f"has {cpus:g} logical CPUs, fewer than the 4 that" in caplog.text
    caplog.clear()
    small = cfg.model_copy(update={"compute": cfg.compute.model_copy(
        update={"cpus_per_task": 0.25, "cpus_per_actor": 0.0})})
    with caplog.at_level(logging.WARNING, logger=ray_runtime.log.name):
        ray_runtime.warn_if_few_cpus(small)
    assert caplog.text == ""


def _ray_data_verbosity() -> tuple[bool, bool, bool]:
    context = ray.data.DataContext.get_current()
    return context.enable_progress_bars, context.enable_operator_progress_bars, context.print_on_execution_start


def test_ray_datas_tables_and_bars_only_on_a_terminal_or_at_debug(monkeypatch):
    context = ray.data.DataContext.get_current()
    for name in ("enable_progress_bars", "enable_operator_progress_bars", "print_on_execution_start"):
        monkeypatch.setattr(context, name, getattr(context, name))  # put back after the test
    monkeypatch.setattr(logging.getLogger(), "level", logging.INFO)
    monkeypatch.setattr(logging.getLogger("ray.data"), "level", logging.getLogger("ray.data").level)
    monkeypatch.setattr(logging.getLogger("ray.data._internal.progress"), "level", logging.NOTSET)
    monkeypatch.setattr(ray_runtime.sys.stderr, "isatty", lambda: False)
    ray_runtime.quiet_ray_data()
    assert _ray_data_verbosity() == (False, False, False)
    assert logging.getLogger("ray.data").getEffectiveLevel() == logging.WARNING
    monkeypatch.setattr(logging.getLogger(), "level", logging.DEBUG)
    ray_runtime.quiet_ray_data()
    assert _ray_data_verbosity() == (True, True, True)
    monkeypatch.setattr(logging.getLogger(), "level", logging.INFO)
    monkeypatch.setattr(ray_runtime.sys.stderr, "isatty", lambda: True)
    ray_runtime.quiet_ray_data()
    assert _ray_data_verbosity() == (True, True, True)


def test_a_local_run_starts_its_own_ray_and_a_submitted_one_joins_the_cluster(monkeypatch):
    """Without RAY_ADDRESS a run starts a new Ray (`address="local"`), never one another process left running;
    under `ray job submit` it joins the cluster as it is (no CPU count)."""
    calls = []
    monkeypatch.setattr(ray_runtime.ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(ray_runtime, "bound_allocators", lambda: None)
    monkeypatch.setattr(ray_runtime, "quiet_ray_data", lambda: None)
    cfg = RunConfig(run_id="r", catalogue_uri="c", scenes_uri="s", output_uri="o")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray_runtime.start_local_ray(cfg, include_dashboard=False)
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265")
    ray_runtime.start_local_ray(cfg)
    assert calls == [{"address": "local", "num_cpus": ray_runtime.local_cpus(cfg.compute), "include_dashboard": False},
                     {}]
