"""Source readers beyond plain directories: git repositories, tar/zip archives, Parquet/JSONL rows.

Archives are hostile input. Every member is either read (bounded by ``max_file_bytes``) or refused
with a recorded reason: ``path_traversal`` (absolute names, ``..``), ``symlink_escape`` /
``hardlink_escape`` (links leaving the archive root), ``link`` (links inside it: not followed, the
target is ingested on its own), ``not_regular_file`` (devices, fifos), ``archive_member_cap``,
``archive_size_cap`` (``data.archive_max_members`` / ``archive_max_total_bytes``), ``zip_bomb``
(member or archive expanding more than ``data.archive_max_ratio`` times), ``encrypted``. A corrupt
archive yields what it could read plus one quarantined entry for the rest.

Git: ``git ls-tree -r --long <ref>`` lists blobs with their sizes; ``git cat-file --batch`` streams
them; symlinks and submodules are recorded, not followed. A URL is cloned (bare, shallow) into a
temporary directory first. A repository with no commits yields no entries.

Parquet/JSONL in The Stack's layout: ``content``; ``path`` (or ``max_stars_repo_path``);
``repo_name`` (or ``max_stars_repo_name``, ``repo``); ``lang`` (or ``language``); every other
column goes to ``meta``. ``source.columns`` renames. Malformed rows (bad JSON, missing or
non-string content/path) are quarantined as ``malformed_row``; an unreadable row group or file as
``unreadable``.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import posixpath
import shutil
import stat
import subprocess
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from coderforge import storage
from coderforge.config import DataSection, SourceSpec
from coderforge.data.sources import Entry, SourceError, refused

log = logging.getLogger("coderforge.sources")

STACK_COLUMNS = {
    "content": ("content", "text", "code"),
    "path": ("path", "max_stars_repo_path", "file_path", "filename"),
    "repo": ("repo_name", "max_stars_repo_name", "repo", "repository"),
    "lang": ("lang", "language"),
}


# ---------------------------------------------------------------- helpers

@contextmanager
def local_copy(uri: str) -> Iterator[Path]:
    """A local path for ``uri`` (S3 objects are downloaded to a temporary file)."""
    if not storage.is_s3(uri):
        yield storage.local_path(uri)
        return
    with tempfile.TemporaryDirectory(prefix="cf-src-") as tmp:
        path = Path(tmp) / posixpath.basename(uri.rstrip("/"))
        path.write_bytes(storage.read_bytes(uri))
        yield path


def safe_member_path(name: str) -> str | None:
    """Normalised relative POSIX path of an archive member, or None if it escapes the root."""
    name = name.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return None
    norm = posixpath.normpath(name)
    if norm in (".", "") or norm == ".." or norm.startswith("../"):
        return None
    return norm


def _link_escapes(member_path: str, target: str, hard: bool) -> bool:
    if target.startswith("/") or (len(target) > 1 and target[1] == ":"):
        return True
    base = "" if hard else posixpath.dirname(member_path)
    resolved = posixpath.normpath(posixpath.join(base, target.replace("\\", "/")))
    return resolved == ".." or resolved.startswith("../")


def _split_repo(spec: SourceSpec, default_repo: str, rel: str) -> tuple[str, str] | None:
    """(repo, path) of an archive-relative path: first component is the repository."""
    if spec.repo_name:
        return spec.repo_name, rel
    if "/" in rel:
        repo, path = rel.split("/", 1)
    else:
        repo, path = default_repo, rel
    if spec.repos is not None and repo not in spec.repos:
        return None
    return repo, path


def _archive_stem(path: Path) -> str:
    name = path.name
    for ext in (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tbz2", ".txz", ".tar", ".zip", ".jar"):
        if name.lower().endswith(ext):
            return name[: -len(ext)] or "archive"
    return name


# ---------------------------------------------------------------- archives

class _Caps:
    def __init__(self, data: DataSection, archive_bytes: int):
        self.data, self.archive_bytes = data, max(1, archive_bytes)
        self.members, self.total = 0, 0

    def check(self, declared: int, compressed: int | None = None) -> tuple[str, str] | None:
        self.members += 1
        if self.members > self.data.archive_max_members:
            return "archive_member_cap", f"more than {self.data.archive_max_members} members"
        self.total += declared
        if self.total > self.data.archive_max_total_bytes:
            return "archive_size_cap", f"expands past {self.data.archive_max_total_bytes} bytes"
        ratio = self.data.archive_max_ratio
        if compressed is not None and declared > 1 << 16 and declared > ratio * max(1, compressed):
            return "zip_bomb", f"member ratio {declared / max(1, compressed):.0f} > {ratio:.0f}"
        if self.total > 1 << 20 and self.total > ratio * self.archive_bytes:
            return "zip_bomb", f"archive expands {self.total / self.archive_bytes:.0f}x > {ratio:.0f}x"
        return None


def _bounded_reader(opener):
    def read(limit: int) -> bytes:
        with opener() as fh:
            return fh.read(limit)
    return read


def tar_entries(path: Path, spec: SourceSpec, data: DataSection) -> Iterator[Entry]:
    stem = _archive_stem(path)
    caps = _Caps(data, path.stat().st_size)
    try:
        tf = tarfile.open(path, mode="r:*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        yield refused(stem, path.name, "unreadable", f"archive: {type(exc).__name__}: {exc}", status="quarantined")
        return
    with tf:
        it = iter(tf)
        while True:
            try:
                member = next(it)
            except StopIteration:
                break
            except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
                yield refused(stem, f"{path.name}#rest", "unreadable",
                              f"archive corrupt after {caps.members} members: {type(exc).__name__}: {exc}",
                              status="quarantined")
                break
            if member.isdir():
                continue
            yield from _tar_member(tf, member, spec, stem, caps)


def _tar_member(tf: tarfile.TarFile, member: tarfile.TarInfo, spec: SourceSpec, stem: str,
                caps: _Caps) -> Iterator[Entry]:
    rel = safe_member_path(member.name)
    if rel is None:
        yield refused(stem, member.name[:300], "path_traversal", f"member name {member.name[:300]!r}")
        return
    where = _split_repo(spec, stem, rel)
    if where is None:
        return
    repo, path = where
    if member.issym() or member.islnk():
        hard = member.islnk()
        if _link_escapes(rel, member.linkname, hard):
            yield refused(repo, path, "hardlink_escape" if hard else "symlink_escape",
                          f"link -> {member.linkname[:300]}")
        else:
            yield refused(repo, path, "link", f"{'hard' if hard else 'sym'}link -> {member.linkname[:300]} "
                                              "(target ingested on its own)")
        return
    if not member.isfile():
        yield refused(repo, path, "not_regular_file", f"tar member type {member.type!r}")
        return
    refusal = caps.check(member.size)
    if refusal:
        yield refused(repo, path, refusal[0], refusal[1], size=member.size)
        return

    def opener(tf=tf, member=member):
        fh = tf.extractfile(member)
        if fh is None:
            raise OSError("tar member has no data")
        return fh

    yield Entry(repo, path, size=member.size, reader=_bounded_reader(opener))


def zip_entries(path: Path, spec: SourceSpec, data: DataSection) -> Iterator[Entry]:
    stem = _archive_stem(path)
    caps = _Caps(data, path.stat().st_size)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        yield refused(stem, path.name, "unreadable", f"archive: {type(exc).__name__}: {exc}", status="quarantined")
        return
    with zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            rel = safe_member_path(info.filename)
            if rel is None:
                yield refused(stem, info.filename[:300], "path_traversal", f"member name {info.filename[:300]!r}")
                continue
            where = _split_repo(spec, stem, rel)
            if where is None:
                continue
            repo, mpath = where
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                try:
                    target = zf.read(info)[:4096].decode("utf-8", "replace")
                except Exception as exc:  # noqa: BLE001 - a broken link member is recorded, not fatal
                    target = f"<unreadable: {exc}>"
                reason = "symlink_escape" if _link_escapes(rel, target, False) else "link"
                yield refused(repo, mpath, reason, f"symlink -> {target[:300]}")
                continue
            if mode and not (stat.S_ISREG(mode) or stat.S_IFMT(mode) == 0):
                yield refused(repo, mpath, "not_regular_file", f"mode {oct(mode)}")
                continue
            if info.flag_bits & 0x1:
                yield refused(repo, mpath, "encrypted", "encrypted zip member", size=info.file_size,
                              status="quarantined")
                continue
            refusal = caps.check(info.file_size, info.compress_size)
            if refusal:
                yield refused(repo, mpath, refusal[0], refusal[1], size=info.file_size)
                continue
            yield Entry(repo, mpath, size=info.file_size,
                        reader=_bounded_reader(lambda zf=zf, info=info: zf.open(info)))


def archive_entries(spec: SourceSpec, data: DataSection) -> Iterator[Entry]:
    with local_copy(spec.uri) as path:
        if not path.is_file():
            raise SourceError(f"source {spec.uri}: archive not found")
        if zipfile.is_zipfile(path):
            yield from zip_entries(path, spec, data)
        else:
            yield from tar_entries(path, spec, data)


# ---------------------------------------------------------------- git

def _git(args: list[str], timeout: float, cwd: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(["git", *args], capture_output=True, timeout=timeout, cwd=cwd, env=env)


class _CatFile:
    """One ``git cat-file --batch`` process serving blob reads in order."""

    def __init__(self, git_dir: str):
        self.proc = subprocess.Popen(["git", "--git-dir", git_dir, "cat-file", "--batch"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def read(self, sha: str, limit: int) -> bytes:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(sha.encode() + b"\n")
        self.proc.stdin.flush()
        header = self.proc.stdout.readline().split()
        if len(header) < 3 or header[1] == b"missing":
            raise OSError(f"git object {sha} missing")
        size = int(header[2])
        data = self.proc.stdout.read(size)
        self.proc.stdout.read(1)  # trailing newline
        return data[:limit]

    def close(self):
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def git_entries(spec: SourceSpec, data: DataSection) -> Iterator[Entry]:
    uri, timeout = spec.uri, data.git_timeout_s
    ref = spec.ref or "HEAD"
    tmp = None
    try:
        local = not uri.startswith(("http://", "https://", "ssh://", "git://", "git@"))
        if local:
            path = storage.local_path(uri)
            proc = _git(["-C", str(path), "rev-parse", "--absolute-git-dir"], timeout)
            if proc.returncode != 0:
                raise SourceError(f"source {uri}: not a git repository: {proc.stderr.decode()[-500:]}")
            git_dir = proc.stdout.decode().strip()
        else:
            tmp = tempfile.mkdtemp(prefix="cf-git-")
            args = ["clone", "--bare", "--depth", "1", "--quiet"]
            if spec.ref:
                args += ["--branch", spec.ref]
            proc = _git([*args, "--", uri, tmp + "/repo.git"], timeout)
            if proc.returncode != 0:
                raise SourceError(f"source {uri}: git clone failed: {proc.stderr.decode()[-500:]}")
            git_dir, ref = tmp + "/repo.git", "HEAD"
        repo = spec.repo_name or posixpath.basename(uri.rstrip("/")).removesuffix(".git") or "repo"
        head = _git(["--git-dir", git_dir, "rev-parse", "--verify", "--quiet", ref + "^{commit}"], timeout)
        if head.returncode != 0:
            log.warning("git source %s: ref %s has no commit (empty repository?): no files", uri, ref)
            return
        commit = head.stdout.decode().strip()
        listing = _git(["--git-dir", git_dir, "ls-tree", "-r", "-z", "--long", "--full-tree", commit], timeout)
        if listing.returncode != 0:
            raise SourceError(f"source {uri}: git ls-tree failed: {listing.stderr.decode()[-500:]}")
        cat = _CatFile(git_dir)
        try:
            for raw in listing.stdout.split(b"\0"):
                if not raw:
                    continue
                info, _, rawpath = raw.partition(b"\t")
                mode, kind, sha, size = info.decode().split()
                path = rawpath.decode("utf-8", "surrogateescape")
                if spec.repos is not None and path.split("/", 1)[0] not in spec.repos and not spec.repo_name:
                    continue
                meta = {"commit": commit}
                if kind == "commit":
                    yield refused(repo, path, "submodule", f"submodule at {sha}")
                elif mode == "120000":
                    target = cat.read(sha, 4096).decode("utf-8", "replace")
                    reason = "symlink_escape" if _link_escapes(path, target, False) else "link"
                    yield refused(repo, path, reason, f"symlink -> {target[:300]}")
                elif kind == "blob":
                    yield Entry(repo, path, size=int(size), meta=meta,
                                reader=lambda limit, sha=sha: cat.read(sha, limit))
        finally:
            cat.close()
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- Parquet / JSONL rows

def _column_map(spec: SourceSpec, names: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for field_name, candidates in STACK_COLUMNS.items():
        if field_name in spec.columns:
            out[field_name] = spec.columns[field_name]
        else:
            out[field_name] = next((c for c in candidates if c in names), None)
    return out


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, str | int | float | bool):
        return v
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return str(v)


def row_entry(row: dict, cols: dict[str, str | None], spec: SourceSpec, where: str, default_repo: str) -> Entry:
    path = row.get(cols["path"]) if cols["path"] else None
    content = row.get(cols["content"]) if cols["content"] else None
    repo = row.get(cols["repo"]) if cols["repo"] else None
    repo = spec.repo_name or (repo if isinstance(repo, str) and repo else default_repo)
    if not isinstance(path, str) or not path:
        return refused(repo, where, "malformed_row", f"{where}: no path (column {cols['path']!r})",
                       status="quarantined")
    if not isinstance(content, str):
        return refused(repo, path, "malformed_row",
                       f"{where}: content is {type(content).__name__}, not text (column {cols['content']!r})",
                       status="quarantined")
    lang = row.get(cols["lang"]) if cols["lang"] else None
    used = {c for c in cols.values() if c}
    meta = {k: _jsonable(v) for k, v in row.items() if k not in used}
    meta["row"] = where
    return Entry(repo, path, size=None, text=content, lang=lang if isinstance(lang, str) else None, meta=meta)


def _files(uri: str, suffixes: tuple[str, ...]) -> list[str]:
    if storage.is_s3(uri) or not storage.local_path(uri).is_dir():
        return [uri]
    return [u for u in storage.list_uris(uri) if u.lower().endswith(suffixes)]


def parquet_entries(spec: SourceSpec, data: DataSection) -> Iterator[Entry]:
    import pyarrow.parquet as pq

    for uri in _files(spec.uri, (".parquet", ".pq")):
        name = posixpath.basename(uri)
        default_repo = name.rsplit(".", 1)[0]
        try:
            pf = pq.ParquetFile(io.BytesIO(storage.read_bytes(uri)))
        except Exception as exc:  # noqa: BLE001 - a corrupt file is one quarantined entry
            yield refused(default_repo, name, "unreadable", f"parquet: {type(exc).__name__}: {exc}",
                          status="quarantined")
            continue
        cols = _column_map(spec, pf.schema_arrow.names)
        if cols["content"] is None:
            yield refused(default_repo, name, "malformed_row", f"{name}: no content column "
                          f"(columns {pf.schema_arrow.names[:20]})", status="quarantined")
            continue
        n = 0
        for rg in range(pf.num_row_groups):
            try:
                rows = pf.read_row_group(rg).to_pylist()
            except Exception as exc:  # noqa: BLE001
                yield refused(default_repo, f"{name}#rowgroup{rg}", "unreadable",
                              f"row group {rg}: {type(exc).__name__}: {exc}", status="quarantined")
                continue
            for row in rows:
                entry = row_entry(row, cols, spec, f"{name}:{n}", default_repo)
                n += 1
                if spec.repos is None or entry.repo in spec.repos:
                    yield entry


def jsonl_entries(spec: SourceSpec, data: DataSection) -> Iterator[Entry]:
    for uri in _files(spec.uri, (".jsonl", ".jsonl.gz", ".ndjson", ".json.gz")):
        name = posixpath.basename(uri)
        default_repo = name.split(".", 1)[0]
        raw = storage.read_bytes(uri)
        if uri.endswith(".gz"):
            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError) as exc:
                yield refused(default_repo, name, "unreadable", f"gzip: {exc}", status="quarantined")
                continue
        for lineno, line in enumerate(raw.split(b"\n"), start=1):
            if not line.strip():
                continue
            where = f"{name}:{lineno}"
            try:
                row = json.loads(line)
            except ValueError as exc:
                yield refused(default_repo, where, "malformed_row", f"{where}: {exc}", status="quarantined")
                continue
            if not isinstance(row, dict):
                yield refused(default_repo, where, "malformed_row", f"{where}: not an object",
                              status="quarantined")
                continue
            cols = _column_map(spec, list(row))  # JSONL rows need not share their keys
            entry = row_entry(row, cols, spec, where, default_repo)
            if spec.repos is None or entry.repo in spec.repos:
                yield entry


def open_kind(kind: str, spec: SourceSpec, data: DataSection) -> Iterator[Entry]:
    readers = {"git": git_entries, "archive": archive_entries, "parquet": parquet_entries, "jsonl": jsonl_entries}
    if kind not in readers:
        raise SourceError(f"source {spec.uri}: unknown kind {kind!r}")
    return readers[kind](spec, data)
