"""CLI commands of the tokens area (registered on the ``coderforge`` typer app by ``coderforge.cli``)."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import typer

from coderforge.data.repo_order import order_files

SKIP_DIRS = {".git", ".hg", ".svn", "__pycache__", "node_modules", ".venv"}


def read_repository(path: Path, max_bytes: int = 2_000_000) -> dict[str, bytes]:
    """``relative path → bytes`` of a repository directory or a ``.zip`` archive of one."""
    files: dict[str, bytes] = {}
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.is_dir() and info.file_size <= max_bytes:
                    files[info.filename] = zf.read(info)
        return files
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: not a directory or zip archive")
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path)
        if SKIP_DIRS.intersection(rel.parts[:-1]) or p.is_symlink() or not p.is_file():
            continue
        if p.stat().st_size <= max_bytes:
            files[rel.as_posix()] = p.read_bytes()
    return files


def order_repo(
    path: Path = typer.Argument(..., help="repository directory (or a .zip of one)"),
    stats: bool = typer.Option(False, "--stats", help="print ordering statistics to stderr"),
) -> None:
    """Print a repository's files in training order (dependencies first), one path per line.

    Files inside an import cycle are marked with a tab and ``# cycle K (N files)``.
    """
    try:
        files = read_repository(path)
    except FileNotFoundError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    order = order_files(files, name=path.resolve().name)
    cycle_of = {p: k for k, members in enumerate(order.cycles) for p in members}
    out = sys.stdout
    for f in order.files:
        if f.path in cycle_of:
            k = cycle_of[f.path]
            out.write(f"{f.path}\t# cycle {k} ({len(order.cycles[k])} files)\n")
        else:
            out.write(f"{f.path}\n")
    if stats:
        typer.echo(" ".join(f"{k}={v}" for k, v in order.stats().items()), err=True)


def main() -> None:  # `python -m coderforge.tokens.cli DIR`
    typer.run(order_repo)


if __name__ == "__main__":
    main()
