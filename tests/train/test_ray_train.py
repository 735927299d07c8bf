"""Ray Train: 2 gloo workers with FSDP2 and with DeepSpeed ZeRO-2; FailureConfig resumes from the checkpoint.

Three fits of the same tiny model on the same rows: FSDP2 uninterrupted; FSDP2 with a worker failure
after the step-2 checkpoint (the worker group restarts, ``ray.train.get_checkpoint()`` resumes);
DeepSpeed ZeRO-2 (fp32, torch AdamW) with the same failure. All three must end with the same
weights and losses — the same AdamW math under three sharding schemes and a restart.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from coderforge.train.hooks import FailOnceAtStep
from coderforge.train.launch import fit
from coderforge.train.loop_config import loop_config
from coderforge.train.task import PackedLM

from .conftest import tiny_recipe, write_shards

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_local():
    import ray

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(num_cpus=2, runtime_env={"env_vars": {"RAY_USAGE_STATS_ENABLED": "0", "DS_ACCELERATOR": "cpu"}})
    yield
    ray.shutdown()


def _fit(tmp_path, data, name, strategy, fail_at=None, storage=None):
    cfg = tiny_recipe(3, steps=4, micro_batch_size=2, grad_accum=1, lr=3e-3, warmup_steps=1, log_every=1,
                      checkpoint_every=2, strategy=strategy)
    loop = loop_config(cfg, data, "file", None)
    hooks = FailOnceAtStep(fail_at, str(tmp_path / f"{name}.failed")) if fail_at else None
    result = fit(cfg, loop, PackedLM.from_config(loop), name, storage or str(tmp_path / "ray"), num_workers=2,
                 use_gpu=False, max_failures=1, keep=2, hooks=hooks)
    assert result.error is None, result.error
    with result.checkpoint.as_directory() as d:
        weights = load_file(Path(d) / "hf" / "model.safetensors")
        state = json.loads((Path(d) / "trainer_state.json").read_text())
        files = sorted(p.name for p in Path(d).rglob("*") if p.is_file())
    return weights, state, files


def test_fsdp2_and_deepspeed_zero2_two_workers_with_failure_and_resume(tmp_path, ray_local):
    data = write_shards(tmp_path / "train", rows=16)
    w_ref, s_ref, files_ref = _fit(tmp_path, data, "fsdp2-ref", "fsdp2")
    assert s_ref["world"] == 2 and s_ref["step"] == 4 and "rng-rank1.pt" in files_ref  # both ranks' files merged

    w_f, s_f, _ = _fit(tmp_path, data, "fsdp2-fail", "fsdp2", fail_at=2)
    assert (tmp_path / "fsdp2-fail.failed").exists()  # the failure really happened once
    w_ds, s_ds, files_ds = _fit(tmp_path, data, "ds-fail", "deepspeed", fail_at=2)
    assert (tmp_path / "ds-fail.failed").exists()
    assert any(f.startswith("zero_pp_rank_1") for f in files_ds)  # ZeRO-2 optimizer shard of rank 1
    assert s_ds["strategy"] == "deepspeed"

    ref_losses = [h["loss"] for h in s_ref["history"]]
    assert ref_losses[-1] < ref_losses[0]
    for other in (s_f, s_ds):
        assert [h["step"] for h in other["history"]] == [1, 2, 3, 4]
        assert [h["loss"] for h in other["history"]] == pytest.approx(ref_losses, rel=1e-4)
    for k, v in w_ref.items():
        assert torch.allclose(v, w_f[k], rtol=1e-5, atol=1e-6), k
        assert torch.allclose(v, w_ds[k], rtol=1e-3, atol=1e-5), k


def test_checkpoints_in_s3_and_failure_retry_restores_from_them(tmp_path, ray_local, s3_env):
    """Ray Train storage on S3 (moto, through a pyarrow filesystem with our endpoint): checkpoints land
    in the bucket, and a worker failure is retried from the S3 checkpoint to the uninterrupted result."""
    from coderforge import storage

    data = write_shards(tmp_path / "train", rows=16)
    w_ref, s_ref, _ = _fit(tmp_path, data, "ddp-local", "ddp")
    w_s3, s_s3, files = _fit(tmp_path, data, "ddp-s3", "ddp", fail_at=2, storage=f"{s3_env}/ray")
    assert (tmp_path / "ddp-s3.failed").exists()
    objects = storage.list_uris(f"{s3_env}/ray/ddp-s3")
    assert any(u.endswith("trainer_state.json") for u in objects), objects[:20]
    assert any(u.endswith("model.safetensors") for u in objects)
    assert not Path(tmp_path / "ray" / "ddp-s3").exists()  # nothing written locally instead
    assert [h["step"] for h in s_s3["history"]] == [1, 2, 3, 4]
    assert [h["loss"] for h in s_s3["history"]] == pytest.approx([h["loss"] for h in s_ref["history"]], rel=1e-5)
    for k, v in w_ref.items():
        assert torch.allclose(v, w_s3[k], rtol=1e-5, atol=1e-6), k
