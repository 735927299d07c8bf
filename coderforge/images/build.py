"""Build every image of ``coderforge/k8s/images.yaml`` from the repository, tagged from it.

:func:`plan` says what would be built (image, Dockerfile, build arguments); :func:`build_images` builds
it on an engine (:mod:`.engine`): the base image first (:mod:`.base`: pulled, or made with debootstrap
where no registry gives it), the context staged (:mod:`.context`), then each image with the engine's
layer cache (the Dockerfiles copy ``pyproject.toml`` before the source, so a source change rebuilds
only the last layer). Each build's output goes to ``LOGDIR/<image>.log``; the result per image is its
build time, size, the layers that fill it and the largest Python distributions in it.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from coderforge.images import base as base_images
from coderforge.images.context import (
    LocalServer,
    PipSources,
    build_pip_args,
    local_wheel,
    reachable,
    stage_context,
)
from coderforge.k8s.images import KINDS, image_for, image_spec, image_versions

log = logging.getLogger("coderforge.images")
REPO = Path(__file__).resolve().parents[2]
# Runs in a built image: installed distributions of /opt/venv by size (from their RECORD files).
_DIST_SIZES = r"""
import importlib.metadata as md, json, os, sys
out = {}
for d in md.distributions():
    total = 0
    for f in d.files or []:
        try:
            total += os.path.getsize(d.locate_file(f))
        except OSError:
            pass
    out[d.metadata["Name"]] = total
print(json.dumps(sorted(out.items(), key=lambda kv: -kv[1])[:8]))
"""


class BuildError(RuntimeError):
    """An image build failed; the message holds the end of its output and the log's path."""


@dataclass
class Target:
    kind: str
    variant: str
    ref: str
    dockerfile: str
    args: dict[str, str]


@dataclass
class BuildResult:
    ref: str
    seconds: float
    size_mb: float
    cached_steps: int
    steps: int
    layers: list[tuple[str, float]] = field(default_factory=list)  # (instruction, MB), largest first
    distributions: list[tuple[str, float]] = field(default_factory=list)  # (name, MB), largest first
    log: str = ""


def plan(variant: str = "cpu", kinds: tuple[str, ...] = KINDS) -> list[Target]:
    """The images to build for ``variant`` (``cpu``, ``cuda`` or ``all``), one per distinct reference."""
    variants = ("cuda", "cpu") if variant == "all" else (variant,)
    out: dict[str, Target] = {}
    for v in variants:
        for kind in kinds:
            spec = image_spec(kind, v)
            ref = image_for(kind, variant=v)
            out.setdefault(ref, Target(kind, v, ref, spec.dockerfile, dict(spec.args)))
    return list(out.values())


def dockerfile_default(dockerfile: Path, arg: str) -> str:
    for line in dockerfile.read_text().splitlines():
        if line.startswith(f"ARG {arg}="):
            return line.split("=", 1)[1].strip().strip('"')
    return ""


def pinned_torch() -> str:
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(d.split("==", 1)[1] for d in deps if d.startswith("torch=="))


def torch_source(target: Target, pip: PipSources, emit=print) -> dict[str, str]:
    """TORCH_INDEX for ``target``: kept when it answers; emptied (torch from the pip sources) when it does
    not but a local wheel of the pinned torch is in the find-links; else a clear error."""
    index = target.args.get("TORCH_INDEX", dockerfile_default(REPO / target.dockerfile, "TORCH_INDEX"))
    if not index or reachable(index):
        return {}
    version = pinned_torch()
    wheel = local_wheel(pip.find_links, "torch", version)
    if wheel is None:
        raise BuildError(f"{target.ref}: the torch index {index} does not answer and no torch {version} wheel is "
                         f"in the find-links ({pip.find_links or 'none'}); pass --torch-index URL or --find-links DIR")
    emit(f"{target.ref}: torch index {index} does not answer; torch {version} from {wheel}")
    return {"TORCH_INDEX": ""}


def _stream_build(client, target: Target, context: Path, args: dict[str, str], log_path: Path,
                  no_cache: bool, network: str | None) -> tuple[int, int]:
    """Run one build, its output into ``log_path``; returns (steps, steps taken from the cache)."""
    steps = cached = 0
    tail: list[str] = []
    with open(log_path, "w") as out:
        out.write(f"# {target.ref} from {target.dockerfile}\n# build args: {json.dumps(args, sort_keys=True)}\n")
        for chunk in client.api.build(path=str(context), dockerfile=target.dockerfile, tag=target.ref,
                                      buildargs=args, decode=True, rm=True, forcerm=True, nocache=no_cache,
                                      network_mode=network, pull=False):
            text = chunk.get("stream") or chunk.get("status") or ""
            if "error" in chunk:
                text = f"ERROR: {chunk['error']}\n"
            if text:
                out.write(text)
                out.flush()
                tail = (tail + text.splitlines())[-25:]
                steps += text.startswith("Step ")
                cached += "Using cache" in text
            if "error" in chunk:
                raise BuildError(f"{target.ref}: build failed:\n  " + "\n  ".join(tail) + f"\n(full log: {log_path})")
    return steps, cached


def analyse(client, ref: str, labels: dict[str, str]) -> tuple[float, list, list]:
    """(size MB, largest layers, largest Python distributions) of image ``ref``."""
    image = client.images.get(ref)
    layers = []
    for h in client.api.history(ref):
        if h.get("Size", 0) > 1 << 20:
            created = h.get("CreatedBy", "")
            created = created.split("/bin/sh -c ", 1)[-1].replace("#(nop) ", "")  # drop the build-arg prefix
            created = " ".join(created.split())
            layers.append((created[:110], round(h["Size"] / 1e6, 1)))
    layers.sort(key=lambda x: -x[1])
    dists = []
    try:
        out = client.containers.run(ref, ["python", "-c", _DIST_SIZES], remove=True, labels=labels,
                                    network_disabled=True)
        dists = [(name, round(size / 1e6, 1)) for name, size in json.loads(out.decode().strip().splitlines()[-1])]
    except Exception as exc:  # noqa: BLE001 - the analysis is a report, never a build failure
        log.warning("could not list the distributions of %s: %s", ref, exc)
    return round(image.attrs["Size"] / 1e6, 1), layers[:5], dists


def build_images(eng, targets: list[Target], pip: PipSources, ca_certs: list[Path], log_dir: Path,
                 base_image: str | None = None, no_cache: bool = False, emit=print) -> list[BuildResult]:
    """Build ``targets`` on engine ``eng`` in order; returns one result per image."""
    client = eng.client(timeout=3600)
    versions = image_versions()["base"]
    log_dir.mkdir(parents=True, exist_ok=True)
    results = []
    cpu_bases = {t.args.get("BASE_IMAGE") or dockerfile_default(REPO / t.dockerfile, "BASE_IMAGE")
                 for t in targets if t.variant == "cpu" or t.kind == "data"}
    bases: dict[str, str] = {}
    for wanted in sorted(b for b in cpu_bases if b):
        bases[wanted] = base_image or base_images.ensure_base(
            client, wanted, versions["debian_base"], versions["debian_suite"], log_dir / "debootstrap.log", emit)
    for t in targets:  # CUDA bases exist only in registries: say so before any build starts
        wanted = t.args.get("BASE_IMAGE") or dockerfile_default(REPO / t.dockerfile, "BASE_IMAGE")
        if wanted not in bases and not base_image and not base_images.image_exists(client, wanted):
            why = base_images.try_pull(client, wanted)
            if why:
                raise BuildError(f"{t.ref}: its base {wanted} is not here and cannot be pulled ({why}); the "
                                 f"{t.variant} variant builds only where a registry gives it (or pass --base-image)")
    with tempfile.TemporaryDirectory(prefix="coderforge-context-") as tmp, LocalServer() as server:
        context = stage_context(REPO, Path(tmp) / "context", sorted({t.dockerfile for t in targets}), ca_certs)
        pip_args = build_pip_args(pip, server)
        network = "host" if server.roots else None
        for target in targets:
            args = {**target.args, **pip_args, **torch_source(target, pip, emit)}
            wanted = args.get("BASE_IMAGE") or dockerfile_default(REPO / target.dockerfile, "BASE_IMAGE")
            if wanted in bases:
                args["BASE_IMAGE"] = bases[wanted]
            elif base_image:
                args["BASE_IMAGE"] = base_image
            log_path = log_dir / f"{target.ref.rsplit('/', 1)[-1].replace(':', '_')}.log"
            emit(f"building {target.ref} ({target.dockerfile}, base {args.get('BASE_IMAGE') or wanted}); "
                 f"log: {log_path}")
            t0 = time.monotonic()
            steps, cached = _stream_build(client, target, context, args, log_path, no_cache, network)
            seconds = round(time.monotonic() - t0, 1)
            size, layers, dists = analyse(client, target.ref, eng.labels)
            results.append(BuildResult(target.ref, seconds, size, cached, steps, layers, dists, str(log_path)))
            emit(f"built {target.ref} in {seconds:.0f} s ({cached}/{steps} steps from the cache): {size:.0f} MB")
    client.close()
    return results


def render(results: list[BuildResult]) -> str:
    lines = [f"{'image':<48} {'build s':>8} {'size MB':>8}  largest layer / distributions (MB)"]
    for r in results:
        layer = f"{r.layers[0][1]:.0f} MB: {r.layers[0][0][:60]}" if r.layers else ""
        lines.append(f"{r.ref:<48} {r.seconds:>8.0f} {r.size_mb:>8.0f}  {layer}")
        if r.distributions:
            lines.append(" " * 67 + ", ".join(f"{n} {s:.0f}" for n, s in r.distributions[:6]))
    return "\n".join(lines)


def write_report(results: list[BuildResult], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([asdict(r) for r in results], indent=2))
