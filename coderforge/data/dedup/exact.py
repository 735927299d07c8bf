"""Exact-duplicate key of a document: a 128-bit hash of its normalised content."""

from __future__ import annotations

import xxhash


def normalise(content: str) -> str:
    """Line endings unified, trailing whitespace and surrounding blank lines removed.

    (``str.rstrip`` per line: 5x faster than a ``[ \t\f\v]+$`` multiline regex, which rescans
    every indentation run.)"""
    lines = content.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join([ln.rstrip(" \t\f\v") for ln in lines]).strip("\n")


def content_hash(content: str) -> str:
    return xxhash.xxh3_128_hexdigest(normalise(content).encode("utf-8", "surrogatepass"))
