"""Fixtures for the data-curation tests: recipes over given sources, real source files, a JDK source zip."""

from __future__ import annotations

from pathlib import Path

import pytest

from coderforge.config import RecipeConfig

JDK_SRC_CANDIDATES = [
    Path("/usr/lib/jvm/java-17-openjdk-amd64/lib/src.zip"),  # a dangling link on some machines
    Path("/usr/lib/jvm/temurin-25-jdk-amd64/lib/src.zip"),
]


@pytest.fixture(scope="session")
def jdk_src_zip() -> Path:
    for p in JDK_SRC_CANDIDATES:
        if p.is_file():
            return p
    pytest.skip("no JDK src.zip on this machine")


def recipe(sources: list[dict], **sections) -> RecipeConfig:
    data = {"data": {"sources": sources, **sections.pop("data", {})}, **sections}
    return RecipeConfig.model_validate(data)


def stdlib_files(stdlib_dir: Path, n: int) -> list[str]:
    """Up to ``n`` real Python files (3–60 KB) of the standard library, in a fixed order."""
    out = []
    for p in [f for pkg in ("email", "json", "logging", "http", "importlib", "concurrent", "xml", "urllib",
                            "asyncio", "unittest") for f in sorted((stdlib_dir / pkg).rglob("*.py"))]:
        text = p.read_text()
        if 3000 < len(text) < 60000:
            out.append(text)
    return out[:n]
