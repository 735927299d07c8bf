"""Base images: the one a Dockerfile names (``python:3.11-slim-bookworm``), when it is on this machine
or a registry gives it; otherwise a Debian base made here from Debian packages with ``debootstrap``
(minbase + ``python3``, ``python3-venv``, ``ca-certificates``: about 190 MB), imported into the
engine as a local image. The images' Dockerfiles need nothing more of a base than a ``python3`` with
``venv``, ``apt-get`` and ``useradd``, so either base builds the same images.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

log = logging.getLogger("coderforge.images")

BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
IMAGE_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8")


class BaseImageError(RuntimeError):
    """The base image is neither here nor pullable, and cannot be made."""


def debian_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """The Debian archive this machine's apt uses (deb822 ``.sources`` or ``sources.list``), else
    ``deb.debian.org``. Security and ports archives are skipped."""
    texts = [p.read_text(errors="replace") for p in sorted((apt_dir / "sources.list.d").glob("*.sources"))]
    texts += [p.read_text(errors="replace") for p in [apt_dir / "sources.list", *sorted(
        (apt_dir / "sources.list.d").glob("*.list"))] if p.exists()]
    for text in texts:
        urls = re.findall(r"^\s*URIs:\s*(\S+)", text, flags=re.M) + re.findall(
            r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)", text, flags=re.M)
        for url in urls:
            if url.startswith(("http://", "https://")) and "security" not in url and url.rstrip("/").endswith(
                    "debian"):
                return url.rstrip("/")
    return DEFAULT_MIRROR


def image_exists(client, ref: str) -> bool:
    import docker

    try:
        client.images.get(ref)
        return True
    except docker.errors.ImageNotFound:
        return False


def try_pull(client, ref: str) -> str:
    """Pull ``ref``; returns "" on success, else why not (one line)."""
    import docker

    repo, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "latest")
    try:
        client.images.pull(repo, tag=tag)
        return ""
    except docker.errors.DockerException as exc:
        return str(exc).splitlines()[0][:300]


def make_debian_base(client, ref: str, suite: str = "bookworm", mirror: str | None = None,
                     log_file: Path | None = None) -> float:
    """Make ``ref`` from Debian packages (needs root and ``debootstrap``); returns the seconds it took."""
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None or os.geteuid() != 0:
        raise BaseImageError("making a base image from Debian packages needs root and debootstrap "
                             "(apt-get install debootstrap), or a registry that has the base image")
    mirror = mirror or debian_mirror()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="coderforge-rootfs-") as tmp:
        root = Path(tmp) / "root"
        cmd = [debootstrap, "--variant=minbase", "--include=" + ",".join(BASE_PACKAGES), suite, str(root), mirror]
        log.info("debootstrap %s from %s (a few minutes)", suite, mirror)
        with open(log_file or os.devnull, "ab") as out:
            proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False)
        if proc.returncode != 0:
            raise BaseImageError(f"debootstrap failed ({proc.returncode}); see {log_file}")
        for junk in ("var/lib/apt/lists", "var/cache/apt", "usr/share/doc", "usr/share/man", "usr/share/info"):
            shutil.rmtree(root / junk, ignore_errors=True)
        (root / "var/lib/apt/lists/partial").mkdir(parents=True)
        (root / "var/cache/apt/archives/partial").mkdir(parents=True)
        (root / "etc/apt/sources.list").write_text(
            f"deb {mirror} {suite} main\ndeb {mirror} {suite}-updates main\n")
        tarball = Path(tmp) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(tarball), "."], check=True)
        repo, _, tag = ref.rpartition(":")
        client.api.import_image_from_file(str(tarball), repository=repo, tag=tag,
                                          changes=[f"ENV {e}" for e in IMAGE_ENV] + ['CMD ["bash"]'])
    return time.monotonic() - started


def ensure_base(client, wanted: str, fallback: str, suite: str, log_file: Path | None = None,
                emit=print) -> str:
    """The base image to build on: ``wanted`` if present or pullable, else ``fallback`` (made with
    debootstrap unless it is already here). Says which, and why."""
    if image_exists(client, wanted):
        return wanted
    why = try_pull(client, wanted)
    if not why:
        emit(f"base image {wanted}: pulled")
        return wanted
    if image_exists(client, fallback):
        emit(f"base image {wanted} is not here and cannot be pulled ({why}); using {fallback}, made earlier "
             f"from Debian {suite} packages with debootstrap")
        return fallback
    emit(f"base image {wanted} is not here and cannot be pulled ({why}); making {fallback} from Debian "
         f"{suite} packages with debootstrap")
    seconds = make_debian_base(client, fallback, suite=suite, log_file=log_file)
    emit(f"made {fallback} in {seconds:.0f} s")
    return fallback
