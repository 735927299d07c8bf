"""What an image build is given: its build context (staged from the repository) and its pip sources.

The context holds only what the Dockerfiles copy (``pyproject.toml``, ``README.md``, the packages, the
build scripts of ``images/``) plus the extra CA certificates, staged into a temporary directory, so
the same build works with the legacy builder, BuildKit and podman, and no certificate is ever written
into the checkout.

Pip sources default to this machine's pip configuration (``pip config list``: ``index-url``,
``extra-index-url``, ``find-links``). Local ones (``file://`` indexes, wheel directories) are served
read-only over HTTP on 127.0.0.1 for the duration of the build (the build then runs with host
networking), on a fixed port so the pip layer's cache key stays the same from one build to the next.
"""

from __future__ import annotations

import http.server
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

CONTEXT_FILES = ("pyproject.toml", "README.md", "images/requirements_for.py", "images/check_env.py",
                 "images/system.sh", "images/ca-certificates/README.md")
CONTEXT_DIRS = ("coderforge", "components", "pipelines")
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
SERVE_PORT = 38917
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


def stage_context(repo: Path, dest: Path, dockerfiles: list[str], ca_certs: list[Path]) -> Path:
    """Copy what the images need from ``repo`` into ``dest`` (emptied first); extra CA certificates go to
    ``images/ca-certificates/`` there."""
    if dest.exists():
        shutil.rmtree(dest)
    for rel in (*CONTEXT_FILES, *dockerfiles):
        src = repo / rel
        if not src.is_file():
            raise FileNotFoundError(f"{src}: needed in the image build context")
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)
    for rel in CONTEXT_DIRS:
        shutil.copytree(repo / rel, dest / rel, ignore=_IGNORE)
    for cert in ca_certs:
        if not cert.is_file():
            raise FileNotFoundError(f"--ca-cert {cert}: no such file")
        name = cert.name if cert.suffix == ".crt" else cert.name + ".crt"  # update-ca-certificates reads *.crt
        shutil.copyfile(cert, dest / "images/ca-certificates" / name)
    return dest


def host_ca_certs() -> list[Path]:
    """The extra CA certificates this machine trusts (Debian's local CA folder)."""
    return sorted(p for p in HOST_CA_DIR.glob("**/*.crt") if p.is_file()) if HOST_CA_DIR.is_dir() else []


@dataclass
class PipSources:
    index_url: str = ""
    extra_index_urls: list[str] = field(default_factory=list)
    find_links: list[str] = field(default_factory=list)
    trusted_hosts: list[str] = field(default_factory=list)

    def describe(self) -> str:
        parts = [f"index {self.index_url or 'PyPI'}"]
        parts += [f"extra index {u}" for u in self.extra_index_urls]
        parts += [f"find-links {u}" for u in self.find_links]
        return ", ".join(parts)


def _config_values(text: str) -> dict[str, list[str]]:
    """``pip config list`` output → key (without its scope) → values; the later scope wins per key."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        name = key.rsplit(".", 1)[-1].strip()
        out[name] = value.strip().strip("'\"").split()
    return out


def host_pip_sources() -> PipSources:
    """This machine's pip configuration (files and ``PIP_*`` variables)."""
    proc = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                          check=False)
    values = _config_values(proc.stdout)
    return PipSources(index_url=(values.get("index-url") or [""])[0],
                      extra_index_urls=values.get("extra-index-url", []),
                      find_links=values.get("find-links", []), trusted_hosts=values.get("trusted-host", []))


def local_dir(url: str) -> Path | None:
    """The directory a ``file://`` URL or a plain path names, else None (a remote URL)."""
    if url.startswith("file://"):
        return Path(unquote(urlparse(url).path))
    if "://" not in url:
        return Path(url)
    return None


class _Handler(http.server.SimpleHTTPRequestHandler):
    roots: list[Path] = []

    def translate_path(self, path: str) -> str:
        head, _, rest = path.lstrip("/").partition("/")
        if not head.isdigit() or int(head) >= len(self.roots):
            return "/nonexistent"
        self.directory = str(self.roots[int(head)])
        return super().translate_path("/" + rest)

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


class LocalServer:
    """Serves local directories read-only over HTTP on 127.0.0.1 (``/0/``, ``/1/``, ... one per directory)
    while a build runs. The port is :data:`SERVE_PORT` when free (then build arguments, and so the pip
    layer's cache key, are the same from build to build), else any free one."""

    def __init__(self, port: int = SERVE_PORT):
        self.roots: list[Path] = []
        handler = type("Handler", (_Handler,), {"roots": self.roots})
        try:
            self._server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
        except OSError:
            self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self._server.server_address[1]
        self._thread: threading.Thread | None = None

    def add(self, directory: Path) -> str:
        self.roots.append(directory.resolve())
        return f"http://127.0.0.1:{self.port}/{len(self.roots) - 1}/"

    def __enter__(self) -> LocalServer:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._server.shutdown()
        self._server.server_close()


def build_pip_args(sources: PipSources, server: LocalServer) -> dict[str, str]:
    """Build arguments (pip's own ``PIP_*`` variables) for ``sources``; local directories are added to
    ``server``. Empty values are left out (unset in the build)."""
    def url_of(url: str, index: bool) -> str:
        d = local_dir(url)
        if d is None:
            return url
        if not d.is_dir():
            raise FileNotFoundError(f"pip source {url}: no such directory")
        if index:  # a PEP 503 tree's links climb to its parent (../../files/x.whl): serve the parent
            return server.add(d.parent) + d.name + "/"
        return server.add(d)

    args: dict[str, str] = {}
    if sources.index_url:
        args["PIP_INDEX_URL"] = url_of(sources.index_url, True)
    extra = [url_of(u, True) for u in sources.extra_index_urls]
    links = [url_of(u, False) for u in sources.find_links]
    if extra:
        args["PIP_EXTRA_INDEX_URL"] = " ".join(extra)
    if links:
        args["PIP_FIND_LINKS"] = " ".join(links)
    trusted = list(sources.trusted_hosts) + (["127.0.0.1"] if server.roots else [])
    if trusted:
        args["PIP_TRUSTED_HOST"] = " ".join(trusted)
    return args


def reachable(url: str, timeout: float = 8.0) -> bool:
    """Does ``url`` answer (any HTTP status below 500)?"""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="GET"), timeout=timeout) as resp:
            return resp.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except (OSError, ValueError):
        return False


def local_wheel(find_links: list[str], project: str, version: str) -> Path | None:
    """A wheel of ``project==version`` (any local label, e.g. ``+cpu``) in the local find-links directories."""
    stem = project.replace("-", "_")
    for url in find_links:
        d = local_dir(url)
        if d is not None and d.is_dir():
            for wheel in sorted(d.glob(f"{stem}-{version}*.whl")):
                return wheel
    return None
