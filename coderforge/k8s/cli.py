"""``coderforge submit``: compile a recipe for the cluster and submit it to Kubeflow Pipelines.

The lead registers it on the main typer app: ``app.command("submit")(submit)``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated

import typer


def submit(
    recipe: Annotated[Path, typer.Argument(help="recipe YAML, e.g. configs/tiny.yaml")],
    host: Annotated[str, typer.Option(envvar="KFP_HOST", help="Kubeflow Pipelines API URL")] = "",
    experiment: Annotated[str, typer.Option(help="KFP experiment (created if missing)")] = "coderforge",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print what would be sent; contact nothing")] = False,
    pipeline: Annotated[str, typer.Option(help="recipe (everything) or data (curation alone)")] = "recipe",
    namespace: Annotated[str | None, typer.Option(help="KFP namespace (multi-user Kubeflow profiles)")] = None,
    service_account: Annotated[str | None, typer.Option(help="service account of the run's pods")] = None,
    output: Annotated[Path | None, typer.Option(help="also keep the compiled pipeline here")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a recipe value: key.sub=value")] = None,
):
    """Compile RECIPE with its Kubernetes settings and submit it; at most one run per recipe content."""
    from coderforge.config import ConfigError, load_recipe
    from coderforge.k8s.submit import describe, prepare
    from coderforge.k8s.submit import submit as submit_run

    try:
        cfg = load_recipe(recipe, set_)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if not dry_run and not host:
        typer.echo("error: --host (or KFP_HOST) is required unless --dry-run", err=True)
        raise typer.Exit(2)
    with tempfile.TemporaryDirectory(prefix="coderforge-submit-") as tmp:
        package = output or Path(tmp) / f"{cfg.run.name}-{cfg.fingerprint()}.yaml"
        sub = prepare(cfg, str(recipe), host or "<not set>", experiment, package, pipeline=pipeline,
                      service_account=service_account, namespace=namespace)
        if dry_run:
            shown = describe(sub)
            if output is None:
                shown["package"] = "<temporary file; --output keeps it>"
            typer.echo(json.dumps({"dry_run": True, **shown}, indent=2, sort_keys=True))
            return
        result = submit_run(sub)
    if result.created:
        typer.echo(f"created run {result.run_id} ({result.run_name}) in experiment {experiment}")
    else:
        typer.echo(f"run {result.run_id} ({result.run_name}) already exists for this recipe content "
                   f"(state {result.state}); nothing submitted")
