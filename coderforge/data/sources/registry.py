"""The source kinds and their readers: which reader a source spec gets, and the per-repository cap.

``kind: auto`` is chosen from the URI: ``.parquet`` → parquet, ``.jsonl``/``.ndjson`` → jsonl, tar/zip
names → archive, ``.git`` or a URL → git, a local git work tree with ``repo_name`` → git, another file
→ archive, else a directory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from coderforge import storage
from coderforge.config import DataSection, SourceSpec
from coderforge.data.languages import language_of
from coderforge.data.sources.archives import archive_entries
from coderforge.data.sources.directory import dir_entries
from coderforge.data.sources.entry import Entry, SourceError
from coderforge.data.sources.git import git_entries
from coderforge.data.sources.rows import jsonl_entries, parquet_entries

READERS: dict[str, Callable[[SourceSpec, DataSection], Iterator[Entry]]] = {
    "dir": dir_entries,
    "git": git_entries,
    "archive": archive_entries,
    "parquet": parquet_entries,
    "jsonl": jsonl_entries,
}


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
    if kind not in READERS:
        raise SourceError(f"source {spec.uri}: unknown kind {kind!r}")
    return cap_per_repo(READERS[kind](spec, data), spec.max_files_per_repo)
