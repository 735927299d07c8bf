"""What a source reader yields: one :class:`Entry` per file (or row) seen, readable or refused."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


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
