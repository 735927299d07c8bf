"""Image references for components and RayJobs, read from ``images.yaml`` beside this file.

``image_for("data")`` → ``ghcr.io/coderforge/coderforge-data:0.1.0``. The registry and tag can be
overridden when compiling (``CODERFORGE_IMAGE_REGISTRY``, ``CODERFORGE_IMAGE_TAG``) so CI can
compile against the images it has just pushed; nothing else in the code names an image.

Variants are the same Dockerfile built with other arguments: ``cuda`` (the default, what clusters run)
and ``cpu`` (local runs and CI: ``image_for("train", variant="cpu")`` → ``.../coderforge-train-cpu:TAG``).
:func:`variant_of_ref` maps a reference the compiled pipeline names to another variant of it, which is
how ``coderforge run --runner docker`` runs each step in the CPU build of its image.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import yaml

ImageKind = Literal["data", "train", "vllm"]
KINDS: tuple[str, ...] = ("data", "train", "vllm")
VERSIONS_FILE = Path(__file__).with_name("images.yaml")


@lru_cache(maxsize=1)
def image_versions() -> dict[str, Any]:
    return yaml.safe_load(VERSIONS_FILE.read_text())


def default_tag() -> str:
    try:
        return metadata.version("coderforge")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "latest"


@dataclass(frozen=True)
class ImageSpec:
    """One buildable image: its kind, variant, repository name, Dockerfile and build arguments."""

    kind: str
    variant: str
    name: str
    dockerfile: str
    args: tuple[tuple[str, str], ...] = ()


def variants() -> tuple[str, ...]:
    return tuple(image_versions().get("variants") or {"cuda": {}})


def image_spec(kind: str, variant: str = "cuda") -> ImageSpec:
    spec = image_versions()
    if kind not in spec["images"]:
        raise ValueError(f"unknown image kind {kind!r}; expected one of {sorted(spec['images'])}")
    if variant not in variants():
        raise ValueError(f"unknown image variant {variant!r}; expected one of {list(variants())}")
    base = spec["images"][kind]
    over = (spec.get("variants") or {}).get(variant, {}).get(kind) or {}
    args = tuple(sorted((str(k), str(v)) for k, v in (over.get("args") or {}).items()))
    return ImageSpec(kind, variant, over.get("name", base["name"]), over.get("dockerfile", base["dockerfile"]), args)


def image_for(kind: ImageKind, *, registry: str | None = None, tag: str | None = None,
              variant: str = "cuda") -> str:
    registry = registry or os.environ.get("CODERFORGE_IMAGE_REGISTRY") or image_versions()["registry"]
    tag = tag or os.environ.get("CODERFORGE_IMAGE_TAG") or default_tag()
    return f"{registry.rstrip('/')}/{image_spec(kind, variant).name}:{tag}"


def split_ref(ref: str) -> tuple[str, str, str]:
    """``registry/name:tag`` → (registry, name, tag); registry may be empty, tag defaults to latest."""
    path, tag = ref, "latest"
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        path, tag = ref.rsplit(":", 1)
    registry, _, name = path.rpartition("/")
    return registry, name, tag


def kind_of_ref(ref: str) -> str | None:
    """The image kind whose (any variant's) repository name ``ref`` has, or None."""
    name = split_ref(ref)[1]
    for kind in KINDS:
        if any(image_spec(kind, v).name == name for v in variants()):
            return kind
    return None


def variant_of_ref(ref: str, variant: str) -> str:
    """The ``variant`` build of the image ``ref`` names (same registry and tag); ``ref`` itself when it
    is not one of our images."""
    kind = kind_of_ref(ref)
    if kind is None:
        return ref
    registry, _, tag = split_ref(ref)
    name = image_spec(kind, variant).name
    return f"{registry}/{name}:{tag}" if registry else f"{name}:{tag}"


BASE_IMAGES: dict[str, str] = {kind: image_for(kind) for kind in KINDS}
