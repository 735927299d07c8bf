"""One way to run per-shard work: in-process, in a local process pool, or as Ray tasks.

``map_tasks(section, fn, tasks)`` returns ``[fn(*t) for t in tasks]`` in order. With
``executor.kind: local`` it runs in this process (or in ``num_cpus`` worker processes when
``num_cpus > 1``); with ``kind: ray`` each task is a Ray task on the cluster at
``executor.address`` (or a local Ray started with ``num_cpus``). ``fn`` must be a module-level
function whose arguments pickle; the same function runs in every mode.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from coderforge.config import ExecutorSection

log = logging.getLogger("coderforge.fanout")


def ray_init(section: ExecutorSection):
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"ignore_reinit_error": True, "include_dashboard": False,
                                  "logging_level": logging.WARNING, "log_to_driver": False}
        if section.address:
            kwargs["address"] = section.address
        elif os.environ.get("RAY_ADDRESS"):  # attach (e.g. the run's shared local Ray): no resources to give
            pass
        elif section.num_cpus:
            kwargs["num_cpus"] = section.num_cpus
        ray.init(**kwargs)
    return ray


def _call(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


def map_tasks(section: ExecutorSection, fn: Callable[..., Any], tasks: Sequence[tuple]) -> list[Any]:
    if not tasks:
        return []
    if section.kind == "ray":
        ray = ray_init(section)
        remote = ray.remote(num_cpus=1, max_retries=2)(_call)
        refs = [remote.remote(fn, *t) for t in tasks]
        log.info("executor: %d ray tasks", len(refs))
        return ray.get(refs)
    workers = section.num_cpus or 1
    if workers > 1 and len(tasks) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=min(workers, len(tasks)),
                                 mp_context=mp.get_context("forkserver")) as pool:
            futures = [pool.submit(fn, *t) for t in tasks]
            return [f.result() for f in futures]
    return [fn(*t) for t in tasks]
