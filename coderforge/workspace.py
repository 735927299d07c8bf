"""Where a run lives on this machine: its work directory, its MLflow store, and the process
environment every step sets up the same way."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from coderforge import tracking
from coderforge.config import RecipeConfig


def setup_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def workdir_of(cfg: RecipeConfig) -> Path:
    return Path(cfg.run.workdir or Path.cwd() / "runs" / cfg.run.name).resolve()


def tracking_uri_of(cfg: RecipeConfig) -> str:
    return tracking.resolve_tracking_uri(cfg.tracking.uri, workdir_of(cfg))
