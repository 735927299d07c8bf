"""One local Ray for a whole local run, shared by its Ray steps.

Each Ray step of a local run (the training steps, Ray-executor data steps) used to start a Ray of its
own and stop it at the end: ``ray.init`` of a fresh local cluster (GCS, raylet, workers) on every
step. ``coderforge run`` instead starts one local Ray in the driver process before the DAG, hands its
address to the steps through ``RAY_ADDRESS`` (kfp.local's subprocesses inherit the environment), and
stops it when the run ends, also on failure. The steps already attach when ``RAY_ADDRESS`` is set
(``train.launch._start_ray``, ``fanout.ray_init``) and then never shut the cluster down.

Nothing is shared when the recipe names a cluster (``executor.address``), when ``RAY_ADDRESS`` is
already set (the user's own cluster), or when no step of the run uses Ray.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator

log = logging.getLogger("coderforge.shared_ray")

RAY_RESOURCES = ("ray",)


def wanted(cfg, steps) -> bool:
    """Whether a run of ``steps`` for ``cfg`` should get a shared local Ray."""
    if os.environ.get("RAY_ADDRESS") or cfg.executor.address:
        return False
    return any(s.resources in RAY_RESOURCES for s in steps) or cfg.executor.kind == "ray"


def local_ray_kwargs(cfg) -> dict:
    """``ray.init`` arguments of a local Ray for ``cfg``: the CPUs the training workers and executor need."""
    env = {"RAY_USAGE_STATS_ENABLED": "0"}
    if not cfg.train.use_gpu:
        env["DS_ACCELERATOR"] = "cpu"
    return {"num_cpus": max(cfg.train.num_workers, cfg.executor.num_cpus or 0, 2), "include_dashboard": False,
            "log_to_driver": False, "runtime_env": {"env_vars": env}}


@contextlib.contextmanager
def shared_ray(cfg, steps) -> Iterator[str | None]:
    """Start a local Ray for the duration of the block when :func:`wanted`; yields its address (or None)."""
    if not wanted(cfg, steps):
        yield None
        return
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray's session files: a short path of their own (Unix sockets live there; AF_UNIX paths are limited)
    tmp = tempfile.mkdtemp(prefix="cf-ray-")
    ctx = ray.init(_temp_dir=tmp, **local_ray_kwargs(cfg))
    address = ctx.address_info["gcs_address"]
    log.info("one local Ray for the run's steps at %s", address)
    os.environ["RAY_ADDRESS"] = address
    try:
        yield address
    finally:
        os.environ.pop("RAY_ADDRESS", None)
        ray.shutdown()
        with contextlib.suppress(OSError):
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
