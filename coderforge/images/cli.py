"""``coderforge images ...``: build the container images from the repository, list them."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

app = typer.Typer(help="Build and list CoderForge's container images.", no_args_is_help=True)


@app.callback()
def _main() -> None:
    """Build and list CoderForge's container images."""


def _sources(no_host_pip: bool, index_url: str | None, extra_index_url: list[str] | None,
             find_links: list[str] | None):
    from coderforge.images.context import PipSources, host_pip_sources

    pip = PipSources() if no_host_pip else host_pip_sources()
    if index_url:
        pip.index_url = index_url
    pip.extra_index_urls += list(extra_index_url or [])
    pip.find_links += list(find_links or [])
    return pip


@app.command("build")
def build_cmd(
    only: list[str] | None = typer.Option(None, "--only", help="data, train or vllm (repeatable; default: all)"),
    variant: str = typer.Option("cpu", help="cpu (local runs and CI), cuda (clusters: CUDA bases), or all"),
    base_image: str | None = typer.Option(None, help="build on this base instead of the Dockerfiles' default "
                                                     "(e.g. a mirror's python:3.11-slim-bookworm)"),
    torch_index: str | None = typer.Option(None, help="the index torch is installed from (TORCH_INDEX)"),
    index_url: str | None = typer.Option(None, help="pip index (default: this machine's pip configuration)"),
    extra_index_url: list[str] | None = typer.Option(None, help="another pip index (repeatable; file:// is "
                                                                 "served to the build)"),
    find_links: list[str] | None = typer.Option(None, help="a wheel directory or URL (repeatable)"),
    no_host_pip: bool = typer.Option(False, "--no-host-pip", help="ignore this machine's pip configuration"),
    ca_cert: list[Path] | None = typer.Option(None, help="an extra CA certificate (PEM) for the images (repeatable)"),
    no_host_ca: bool = typer.Option(False, "--no-host-ca", help="leave out /usr/local/share/ca-certificates"),
    no_cache: bool = typer.Option(False, "--no-cache", help="rebuild every layer"),
    log_dir: Path = typer.Option(Path("runs/images"), help="build logs and report.json go here"),
) -> None:
    """Build every image of coderforge/k8s/images.yaml, tagged from it (needs a Docker daemon, or dockerd
    to start one). Where no registry gives the base image, one is made from Debian packages."""
    from coderforge.images.base import BaseImageError
    from coderforge.images.build import BuildError, build_images, plan, render, write_report
    from coderforge.images.context import host_ca_certs
    from coderforge.images.engine import EngineError, engine
    from coderforge.k8s.images import KINDS

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    kinds = tuple(only or KINDS)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or variant not in ("cpu", "cuda", "all"):
        typer.echo(f"error: --only takes {', '.join(KINDS)}; --variant takes cpu, cuda or all", err=True)
        raise typer.Exit(2)
    targets = plan(variant, kinds)
    if torch_index is not None:
        for t in targets:
            if "TORCH_INDEX" in t.args or t.kind == "train":
                t.args["TORCH_INDEX"] = torch_index
    pip = _sources(no_host_pip, index_url, extra_index_url, find_links)
    certs = ([] if no_host_ca else host_ca_certs()) + list(ca_cert or [])
    typer.echo(f"pip sources: {pip.describe()}; extra CA certificates: {[str(c) for c in certs] or 'none'}")
    try:
        with engine() as eng:
            results = build_images(eng, targets, pip, certs, log_dir.resolve(), base_image=base_image,
                                   no_cache=no_cache, emit=typer.echo)
    except (BuildError, EngineError, BaseImageError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    write_report(results, log_dir / "report.json")
    typer.echo("\n" + render(results))
    typer.echo(f"\nreport: {log_dir / 'report.json'}")


@app.command("list")
def list_cmd(variant: str = typer.Option("all", help="cpu, cuda or all")) -> None:
    """The image references of each variant, and whether the engine has them."""
    from coderforge.images.base import image_exists
    from coderforge.images.build import plan
    from coderforge.images.engine import EngineError, engine

    targets = plan(variant)
    try:
        with engine() as eng:
            client = eng.client()
            for t in targets:
                typer.echo(f"{t.ref:<52} {t.variant:<5} {'present' if image_exists(client, t.ref) else 'missing'}")
    except EngineError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
