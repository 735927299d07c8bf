"""The data funnel over real step outputs (ingest → filter → dedup): PNG and metrics."""

from __future__ import annotations

from pathlib import Path

from coderforge.data.dedup import run_dedup
from coderforge.steps.funnel import summaries_from_dirs, write_funnel
from coderforge.tracking import NullRun
from tests.data.conftest import recipe


def test_funnel_png_and_metrics(tmp_path, stdlib_dir):
    from coderforge.data.filters import run_filter
    from coderforge.data.ingest import run_ingest

    cfg = recipe([{"uri": str(stdlib_dir), "kind": "dir", "repos": ["json", "wsgiref"]}])
    run_ingest(cfg, str(tmp_path / "i"), NullRun())
    run_filter(cfg, str(tmp_path / "i"), str(tmp_path / "f"), NullRun())
    run_dedup(cfg, str(tmp_path / "f"), str(tmp_path / "d"), NullRun())
    sums = summaries_from_dirs({"ingest": str(tmp_path / "i"), "filter": str(tmp_path / "f"),
                                "dedup": str(tmp_path / "d")})
    out = write_funnel(str(tmp_path / "funnel"), sums)
    assert Path(out["png"]).read_bytes()[:4] == b"\x89PNG"
    m = out["metrics"]
    assert m["funnel.ingest.docs_in"] == sums[0]["in"] and m["funnel.dedup.docs_kept"] == sums[2]["kept"]
    assert m["funnel.ingest.drop.unknown_language"] > 0
