"""``coderforge sandbox ...``: run one program in the sandbox, or check what it isolates on this node."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="Run untrusted programs in the CoderForge sandbox.", no_args_is_help=True)

_EXT = {".py": "python", ".js": "javascript", ".mjs": "javascript", ".cpp": "cpp", ".cc": "cpp",
        ".cxx": "cpp", ".java": "java"}


@app.callback()
def _main() -> None:
    """Run untrusted programs in the CoderForge sandbox."""


@app.command("run")
def run_cmd(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="program to run"),
    lang: str | None = typer.Option(None, "--lang",
                                    help="python, javascript, cpp, java (default: from extension)"),
    timeout: float = typer.Option(5.0, "--timeout", min=0.1, help="seconds"),
    memory: int = typer.Option(512, "--memory", min=16, help="address-space limit in MB"),
    stdin_file: Path | None = typer.Option(None, "--stdin", exists=True, dir_okay=False,
                                           help="feed this file as stdin"),
    allow_unisolated: bool = typer.Option(
        False, "--allow-unisolated", help="where namespaces are unavailable, run with resource limits only"),
) -> None:
    """Run FILE in the sandbox and print its verdict as JSON (exit status 0 only when it passed)."""
    from coderforge.sandbox.core import run_program

    language = lang or _EXT.get(file.suffix.lower(), "python")
    v = run_program(file.read_text(), lang=language, timeout_s=timeout, memory_mb=memory,
                    stdin=stdin_file.read_text() if stdin_file else "", allow_unisolated=allow_unisolated)
    out = {k: getattr(v, k) for k in ("verdict", "exit_code", "stdout", "stderr", "seconds", "detail", "lang",
                                      "isolated", "truncated")}
    typer.echo(json.dumps(out, indent=2))
    raise typer.Exit(0 if v.passed else 1)


@app.command("check")
def check_cmd() -> None:
    """Say whether this node can isolate programs, which languages have toolchains, the allow-list of
    host paths a program sees (everything else of the host is absent), and the privileges this process
    holds (in a container: capabilities, seccomp, masked /proc, AppArmor; where isolation fails, which one
    is missing); JSON."""
    from coderforge.sandbox.allowlist import root_plan
    from coderforge.sandbox.cgroups import cgroup_support
    from coderforge.sandbox.container import container_report, missing_privileges
    from coderforge.sandbox.core import run_program
    from coderforge.sandbox.host import is_root
    from coderforge.sandbox.isolation import probe
    from coderforge.sandbox.languages import available_languages
    from coderforge.sandbox.seccomp import seccomp_summary

    ok, reason = probe()
    report = {"isolated": ok, "reason": reason, "mode": "root: throw-away uid per run" if is_root()
              else "rootless: user namespace", "languages": available_languages(),
              "allow_list": root_plan().report(), "seccomp": seccomp_summary(),
              "cgroups": cgroup_support(), "privileges": container_report()}
    if not ok:
        report["missing"] = missing_privileges(report["privileges"], reason)
    if ok:
        v = run_program("import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=2)\n")
        report["network_blocked"] = v.verdict == "failed"
    typer.echo(json.dumps(report, indent=2))
    raise typer.Exit(0 if ok else 2)
