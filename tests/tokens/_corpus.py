"""Helpers: real documents from the running Python's standard library; a minimal recipe."""

from __future__ import annotations

from pathlib import Path

from coderforge import records
from coderforge.config import load_recipe_text


def stdlib_documents(stdlib: Path, packages: list[str], limit: int | None = None) -> list[records.Document]:
    docs = []
    for pkg in packages:
        for path in sorted((stdlib / pkg).rglob("*.py")):
            rel = path.relative_to(stdlib).as_posix()
            docs.append(records.Document(id=records.document_id("stdlib", pkg, rel), repo=pkg, path=rel,
                                         lang="python", content=path.read_text(encoding="utf-8"),
                                         source="stdlib"))
    return docs[:limit] if limit else docs


def recipe(**sections) -> object:
    import yaml

    data = {"data": {"sources": [{"uri": "/unused"}], "heldout_fraction": 0.1}}
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return load_recipe_text(yaml.safe_dump(data))


