"""Source readers for ingest: each yields :class:`Entry` objects, one per file (or row) seen.

An entry is either readable (``read(limit)`` or ready ``text``) or a *refusal*: a
``(status, reason, detail)`` triple the ingest step records as it is (a traversal path in an
archive, a symlink leaving the tree, a zip bomb, a malformed row …). Readers never raise for one
bad file; a source that cannot be opened at all raises :class:`SourceError`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coderforge import storage
from coderforge.config import DataSection, SourceSpec
from coderforge.data.languages import language_of

VCS_DIRS = frozenset({".git", ".hg", ".svn", ".bzr"})


class SourceError(RuntimeError):
    """A whole source cannot be read (missing path, not a repository, unknown format)."""


@dataclass
class Entry:
    repo: str
    path: str
    size: int | None = None
    reader: Callable[[int], bytes] | None = None
    text: str | None = None
    lang: str | None = None
    doc_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    refusal: tuple[str, str, str] | None = None

    def read(self, limit: int) -> bytes:
        if self.reader is None:
            raise OSError("entry has no content")
        return self.reader(limit)


def refused(repo: str, path: str, reason: str, detail: str, size: int = 0, status: str = "dropped") -> Entry:
    return Entry(repo=repo, path=path, size=size, refusal=(status, reason, detail))


def _file_reader(path: str) -> Callable[[int], bytes]:
    def read(limit: int) -> bytes:
        with open(path, "rb") as fh:
            return fh.read(limit)
    return read


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _walk_dir(repo: str, base: Path, root: str, rel: str = "") -> Iterator[Entry]:
    """Files under ``base`` in sorted order; symlinks resolved only when they stay inside ``root``."""
    try:
        items = sorted(os.scandir(base), key=lambda e: e.name)
    except OSError as exc:
        yield refused(repo, rel or ".", "unreadable", f"directory: {type(exc).__name__}: {exc}",
                      status="quarantined")
        return
    for item in items:
        path = f"{rel}/{item.name}" if rel else item.name
        try:
            if item.is_symlink():
                target = os.path.realpath(item.path)
                if not os.path.exists(target):
                    yield refused(repo, path, "unreadable", f"broken symlink -> {os.readlink(item.path)}",
                                  status="quarantined")
                elif not _within(target, root):
                    yield refused(repo, path, "symlink_escape", f"symlink leaves the tree -> {target}")
                elif os.path.isdir(target):
                    yield refused(repo, path, "symlink_dir", f"symlinked directory not followed -> {target}")
                elif os.path.isfile(target):
                    yield Entry(repo, path, size=os.path.getsize(target), reader=_file_reader(target),
                                meta={"symlink_to": os.path.relpath(target, root)})
                else:
                    yield refused(repo, path, "not_regular_file", f"symlink to a special file -> {target}")
            elif item.is_dir(follow_symlinks=False):
                if item.name in VCS_DIRS:
                    continue  # version-control metadata is not source
                yield from _walk_dir(repo, Path(item.path), root, path)
            elif item.is_file(follow_symlinks=False):
                yield Entry(repo, path, size=item.stat(follow_symlinks=False).st_size,
                            reader=_file_reader(item.path))
            else:
                yield refused(repo, path, "not_regular_file", "fifo, socket or device")
        except OSError as exc:
            yield refused(repo, path, "unreadable", f"{type(exc).__name__}: {exc}", status="quarantined")


def dir_entries(spec: SourceSpec, data: DataSection) -> Iterator[Entry]:
    root_path = storage.local_path(spec.uri)
    if not root_path.is_dir():
        raise SourceError(f"source {spec.uri}: not a directory")
    root = os.path.realpath(root_path)
    if spec.repo_name:
        yield from _walk_dir(spec.repo_name, Path(root), root)
        return
    wanted = set(spec.repos) if spec.repos is not None else None
    loose_repo = Path(root).name or "root"
    loose: list[os.DirEntry] = []
    for item in sorted(os.scandir(root), key=lambda e: e.name):
        if item.is_dir(follow_symlinks=False):
            if item.name in VCS_DIRS or (wanted is not None and item.name not in wanted):
                continue
            yield from _walk_dir(item.name, Path(item.path), root)
        else:
            loose.append(item)
    if loose and (wanted is None or loose_repo in wanted):
        names = {i.name for i in loose}
        for entry in _walk_dir(loose_repo, Path(root), root):
            if entry.path.split("/", 1)[0] in names:
                yield entry


def cap_per_repo(entries: Iterator[Entry], limit: int | None) -> Iterator[Entry]:
    """At most ``limit`` readable files of a known language per repository; others beyond are not read."""
    if limit is None:
        yield from entries
        return
    counts: dict[str, int] = {}
    for entry in entries:
        if entry.refusal is None and (entry.lang or language_of(entry.path)):
            n = counts.get(entry.repo, 0)
            if n >= limit:
                continue
            counts[entry.repo] = n + 1
        yield entry


def detect_kind(spec: SourceSpec) -> str:
    if spec.kind != "auto":
        return spec.kind
    uri = spec.uri.lower()
    if uri.endswith((".parquet", ".pq")):
        return "parquet"
    if uri.endswith((".jsonl", ".jsonl.gz", ".ndjson", ".json.gz")):
        return "jsonl"
    if uri.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".zip", ".jar")):
        return "archive"
    if uri.endswith(".git") or uri.startswith(("git@", "git://", "https://", "http://", "ssh://")):
        return "git"
    if not storage.is_s3(spec.uri):
        p = storage.local_path(spec.uri)
        if p.is_dir() and (p / ".git").exists() and spec.repo_name:
            return "git"
        if p.is_file():
            return "archive"
    return "dir"


def open_source(spec: SourceSpec, data: DataSection) -> Iterator[Entry]:
    kind = detect_kind(spec)
    if kind == "dir":
        entries = dir_entries(spec, data)
    else:
        from coderforge.data import sources_ext

        entries = sources_ext.open_kind(kind, spec, data)
    return cap_per_repo(entries, spec.max_files_per_repo)
