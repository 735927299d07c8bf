"""A local directory as a source: each top-level folder is a repository (loose top-level files form a
repository named after the directory), walked in sorted order.

Symlinks are followed only to files inside the tree (``symlink_escape`` otherwise; directories are
not followed: ``symlink_dir``); version-control metadata (``.git`` …) is skipped; fifos, sockets and
devices are refused (``not_regular_file``); unreadable paths are quarantined.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from coderforge import storage
from coderforge.config import DataSection, SourceSpec
from coderforge.data.sources.entry import Entry, SourceError, refused

VCS_DIRS = frozenset({".git", ".hg", ".svn", ".bzr"})


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
