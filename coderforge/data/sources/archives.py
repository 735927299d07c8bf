"""Tar and zip files as sources. Archives are hostile input.

Every member is either read (bounded by ``max_file_bytes``) or refused with a recorded reason:
``path_traversal`` (absolute names, ``..``), ``symlink_escape`` / ``hardlink_escape`` (links leaving
the archive root), ``link`` (links inside it: not followed, the target is ingested on its own),
``not_regular_file`` (devices, fifos), ``archive_member_cap``, ``archive_size_cap``
(``data.archive_max_members`` / ``archive_max_total_bytes``), ``zip_bomb`` (member or archive
expanding more than ``data.archive_max_ratio`` times), ``encrypted``. A corrupt archive yields what it
could read plus one quarantined entry for the rest. The first path component of a member is its
repository (``source.repo_name`` puts every member in one).
"""

from __future__ import annotations

import posixpath
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from coderforge import storage
from coderforge.config import DataSection, SourceSpec
from coderforge.data.sources.entry import Entry, SourceError, refused
from coderforge.data.sources.paths import link_escapes, safe_member_path


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
        yield refused(stem, path.name, "unreadable", f"archive: {type(exc).__name__}: {exc}",
                      status="quarantined")
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
        if link_escapes(rel, member.linkname, hard):
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
        yield refused(stem, path.name, "unreadable", f"archive: {type(exc).__name__}: {exc}",
                      status="quarantined")
        return
    with zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            rel = safe_member_path(info.filename)
            if rel is None:
                yield refused(stem, info.filename[:300], "path_traversal",
                              f"member name {info.filename[:300]!r}")
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
                reason = "symlink_escape" if link_escapes(rel, target, False) else "link"
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
