"""benchmarks/pretrain_throughput.py keeps working against the engine (CPU, debug shape, in-process phases).

The GPU numbers come from the device machine; this only guards the script's contract with
``coderforge.train`` (names, config keys, result fields) so the benchmark does not rot between runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    path = ROOT / "benchmarks" / "pretrain_throughput.py"
    spec = importlib.util.spec_from_file_location("pretrain_throughput", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _args(data: str, **kw) -> argparse.Namespace:
    base = dict(data=data, size="debug-tiny", micro_batch=2, steps=3, warmup=1, loss_chunk=128, compile=False,
                ac=False, strategy="ddp", profile=False)
    base.update(kw)
    return argparse.Namespace(**base)


def test_benchmark_phases_run_on_cpu(tmp_path, bench):
    data = str(tmp_path / "rows")
    stats = bench.write_rows(data, rows=12, seq_len=256, seed=1, vocab=512)
    assert stats["documents"] >= 2
    frac = bench.attention_fraction(data)
    assert 0.0 < frac <= 1.0
    hf = bench.phase_hf(_args(data))
    ours = bench.phase_ours(_args(data))
    check = bench.phase_check(_args(data))
    assert check["phase"] == "check" and check["seq_len"] == 256
    for r in (hf, ours):
        assert r["tokens_per_s"] > 0 and r["flops_per_token"] > 0
        assert r["mfu"] is None  # no peak FLOPs on CPU: MFU is not made up
        assert math.isfinite(r["final_loss"])
    assert ours["document_mask"] and not hf["document_mask"]
    assert len(ours["tokens_per_s_windows"]) == 4  # warm-up window + three timed windows
    # same shape, same rows, same init seed: both start near ln(vocab) and take comparable steps
    assert abs(hf["final_loss"] - math.log(512)) < 1.0
    assert abs(ours["final_loss"] - hf["final_loss"]) < 0.5


def test_repo_like_rows_have_long_documents(tmp_path, bench):
    """--long-doc-median: repo-level rows (long documents) leave far more attention to compute than file-like rows."""
    files = bench.write_rows(str(tmp_path / "f"), rows=32, seq_len=2048, seed=2, vocab=512, doc_median=256)
    repos = bench.write_rows(str(tmp_path / "r"), rows=32, seq_len=2048, seed=2, vocab=512, doc_median=4096)
    assert repos["doc_len_median"] > 4 * files["doc_len_median"]
    assert bench.attention_fraction(str(tmp_path / "r")) > 2 * bench.attention_fraction(str(tmp_path / "f"))
