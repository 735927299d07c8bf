"""One local Ray per local run: when it is started, that the steps' processes attach to it (and start
nothing), and that it is gone with its address when the run ends, also on failure."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from coderforge.config import RecipeConfig
from coderforge.shared_ray import shared_ray, wanted
from coderforge.steps.table import STEPS

RAY_STEPS = [s for s in STEPS if s.resources == "ray"]
LIGHT = [s for s in STEPS if s.resources == "light"]


def recipe(**executor) -> RecipeConfig:
    return RecipeConfig.model_validate({"data": {"sources": [{"uri": "/x"}]}, "executor": executor})


def test_when_a_run_gets_one(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert wanted(recipe(), RAY_STEPS)
    assert not wanted(recipe(), LIGHT)
    assert wanted(recipe(kind="ray"), LIGHT)  # Ray-executor data steps
    assert not wanted(recipe(address="ray://head:10001"), RAY_STEPS)  # the recipe names a cluster
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert not wanted(recipe(), RAY_STEPS)  # the user's own cluster


PROBE = ("import os, ray, json; from coderforge.train.launch import _start_ray; from coderforge.config import "
         "RecipeConfig; cfg = RecipeConfig.model_validate({'data': {'sources': [{'uri': '/x'}]}}); "
         "started = _start_ray(cfg); print(json.dumps([started, ray.get_runtime_context().get_node_id(), "
         "ray.cluster_resources().get('CPU')]))")


@pytest.mark.slow
def test_steps_attach_and_the_ray_is_gone_afterwards(monkeypatch):
    import json

    import ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cfg = RecipeConfig.model_validate({"data": {"sources": [{"uri": "/x"}]}, "train": {"num_workers": 2}})
    with pytest.raises(RuntimeError, match="boom"), shared_ray(cfg, RAY_STEPS) as address:
        assert address and os.environ["RAY_ADDRESS"] == address
        node = ray.get_runtime_context().get_node_id()
        runs = [json.loads(subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                                          check=True, env=dict(os.environ)).stdout.strip().splitlines()[-1])
                for _ in range(2)]
        # each step connected to the run's Ray (its shutdown only disconnects), twice
        assert runs == [[True, node, 2.0], [True, node, 2.0]]
        raise RuntimeError("boom")  # a failing run still stops its Ray
    assert "RAY_ADDRESS" not in os.environ and not ray.is_initialized()
    host, port = address.rsplit(":", 1)
    with pytest.raises(OSError):  # nothing listens at the old GCS address
        socket.create_connection((host, int(port)), timeout=5).close()
