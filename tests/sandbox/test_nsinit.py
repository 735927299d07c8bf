"""The init process (``coderforge/sandbox/nsinit.py``) runs as ``python -I -S`` before anything else:
standard library only, never a coderforge import (the checkout is hidden once the mounts are made)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from coderforge.sandbox import isolation


def test_init_imports_the_standard_library_only():
    tree = ast.parse(Path(isolation.INIT).read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import in the init"
            names.add(node.module.split(".")[0])
    assert names and names <= set(sys.stdlib_module_names), names - set(sys.stdlib_module_names)
    assert Path(isolation.INIT).name == "nsinit.py"
