"""Print pyproject.toml's pinned dependencies as a requirements file, minus excluded packages.

Used by the image builds so every image installs exactly the versions pyproject pins:

    python images/requirements_for.py --exclude torch,vllm > /tmp/requirements.txt
    python images/requirements_for.py --build-system     # what building the package itself needs
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(req: str) -> str:
    match = NAME.match(req)
    if not match:
        raise ValueError(f"cannot parse requirement {req!r}")
    return canonical(match.group(1))


def requirements(pyproject: Path, extras: list[str], exclude: set[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += project.get("optional-dependencies", {}).get(extra, [])
    excluded = {canonical(x) for x in exclude}
    return [r for r in reqs if requirement_name(r) not in excluded]


def build_requirements(pyproject: Path) -> list[str]:
    return list(tomllib.loads(pyproject.read_text())["build-system"]["requires"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pyproject", type=Path, default=Path(__file__).resolve().parent.parent / "pyproject.toml")
    ap.add_argument("--extras", default="", help="comma-separated optional-dependency groups to add")
    ap.add_argument("--exclude", default="", help="comma-separated package names to leave out")
    ap.add_argument("--build-system", action="store_true", help="print [build-system] requires instead")
    args = ap.parse_args(argv)
    if args.build_system:
        sys.stdout.write("".join(r + "\n" for r in build_requirements(args.pyproject)))
        return 0
    extras = [e for e in args.extras.split(",") if e]
    exclude = {e for e in args.exclude.split(",") if e}
    sys.stdout.write("".join(r + "\n" for r in requirements(args.pyproject, extras, exclude)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
