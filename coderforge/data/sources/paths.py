"""Path safety for members of untrusted trees (archives, git trees): names and links that escape the root."""

from __future__ import annotations

import posixpath


def safe_member_path(name: str) -> str | None:
    """Normalised relative POSIX path of an archive member, or None if it escapes the root."""
    name = name.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return None
    norm = posixpath.normpath(name)
    if norm in (".", "") or norm == ".." or norm.startswith("../"):
        return None
    return norm


def link_escapes(member_path: str, target: str, hard: bool) -> bool:
    """Whether a link at ``member_path`` to ``target`` (hard links: relative to the root) leaves the root."""
    if target.startswith("/") or (len(target) > 1 and target[1] == ":"):
        return True
    base = "" if hard else posixpath.dirname(member_path)
    resolved = posixpath.normpath(posixpath.join(base, target.replace("\\", "/")))
    return resolved == ".." or resolved.startswith("../")
