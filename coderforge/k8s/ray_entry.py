"""Entrypoint of a RayJob: ``python -m coderforge.k8s.ray_entry MODULE ARGS...``.

Writes the recipe carried in ``CODERFORGE_RECIPE_B64`` (the RayJob's runtime env) to a file,
replaces ``{recipe}`` in ARGS with its path, and runs ``python -m MODULE ARGS`` on the Ray head,
where ``ray.init()`` attaches to the RayJob's cluster. The exit status is the module's, so a failing
step makes the Ray job FAILED and the RayJob ``AppFailed``.
"""

from __future__ import annotations

import base64
import os
import runpy
import sys
import tempfile

from coderforge.k8s.rayjob_manifest import RECIPE_ENV


def materialize_recipe(env: dict[str, str] | None = None, directory: str | None = None) -> str:
    env = os.environ if env is None else env
    blob = env.get(RECIPE_ENV)
    if not blob:
        raise SystemExit(f"ray_entry: {RECIPE_ENV} is not set (the RayJob's runtimeEnvYAML carries it)")
    fd, path = tempfile.mkstemp(prefix="recipe-", suffix=".yaml", dir=directory)
    with os.fdopen(fd, "wb") as fh:
        fh.write(base64.b64decode(blob))
    return path


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        raise SystemExit("usage: python -m coderforge.k8s.ray_entry MODULE [ARGS...]")
    module, args = argv[0], argv[1:]
    if any("{recipe}" in a for a in args):
        path = materialize_recipe()
        args = [a.replace("{recipe}", path) for a in args]
    sys.argv = [module, *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
