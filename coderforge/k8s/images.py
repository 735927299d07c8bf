"""Image references for components and RayJobs, read from ``images.yaml`` beside this file.

``image_for("data")`` → ``ghcr.io/coderforge/coderforge-data:0.1.0``. The registry and tag can be
overridden when compiling (``CODERFORGE_IMAGE_REGISTRY``, ``CODERFORGE_IMAGE_TAG``) so CI can
compile against the images it has just pushed; nothing else in the code names an image.
"""

from __future__ import annotations

import os
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import yaml

ImageKind = Literal["data", "train", "vllm"]
VERSIONS_FILE = Path(__file__).with_name("images.yaml")


@lru_cache(maxsize=1)
def image_versions() -> dict[str, Any]:
    return yaml.safe_load(VERSIONS_FILE.read_text())


def default_tag() -> str:
    try:
        return metadata.version("coderforge")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "latest"


def image_for(kind: ImageKind, *, registry: str | None = None, tag: str | None = None) -> str:
    spec = image_versions()
    if kind not in spec["images"]:
        raise ValueError(f"unknown image kind {kind!r}; expected one of {sorted(spec['images'])}")
    registry = registry or os.environ.get("CODERFORGE_IMAGE_REGISTRY") or spec["registry"]
    tag = tag or os.environ.get("CODERFORGE_IMAGE_TAG") or default_tag()
    return f"{registry.rstrip('/')}/{spec['images'][kind]['name']}:{tag}"


BASE_IMAGES: dict[str, str] = {kind: image_for(kind) for kind in ("data", "train", "vllm")}
