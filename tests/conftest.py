"""Shared fixtures: a real local S3 server (moto) reached through the MinIO client, a real MLflow
SQLite store, and small real corpora from this machine."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import sysconfig
import time
import uuid
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

STDLIB = Path(sysconfig.get_paths()["stdlib"])
def _jdk_src_zip() -> Path | None:
    """The first JDK source archive that really exists (Debian's JDK 17 link is dangling unless
    openjdk-17-source is installed; Temurin ships its sources)."""
    for path in sorted(Path("/usr/lib/jvm").glob("*/lib/src.zip"), reverse=True):
        if path.exists():
            return path.resolve()
    return None


JDK_SRC_ZIP = _jdk_src_zip()
NPM_DIR = Path("/usr/lib/node_modules/npm")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server on a free port; yields its endpoint URL. Credentials are test-only."""
    port = _free_port()
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        raise RuntimeError("moto_server did not start")
    yield endpoint
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """Environment pointing coderforge.storage (and MLflow) at the moto server; yields a fresh bucket URI."""
    monkeypatch.setenv("S3_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    from coderforge import storage

    bucket = f"test-{uuid.uuid4().hex[:12]}"
    storage.ensure_bucket(f"s3://{bucket}")
    yield f"s3://{bucket}"


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch):
    """A real MLflow SQLite store in a temp dir (MLFLOW_TRACKING_URI cleared so it cannot leak)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture(scope="session")
def stdlib_dir() -> Path:
    return STDLIB
