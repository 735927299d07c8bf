"""``coderforge`` command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="CoderForge: build code LLMs the Qwen2.5-Coder / Abacus way.", no_args_is_help=True,
                  pretty_exceptions_enable=False)

SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override a recipe value: key.sub=value")]


def _load(recipe: Path, overrides: list[str] | None, workdir: Path | None = None, defer: tuple[str, ...] = ()):
    from coderforge.config import ConfigError, load_recipe

    try:
        return load_recipe(recipe, overrides, workdir=str(workdir.resolve()) if workdir else None, defer=defer)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def run(
    recipe: Annotated[Path, typer.Argument(help="recipe YAML, e.g. configs/tiny.yaml")],
    workdir: Annotated[Path | None, typer.Option(help="work directory (default runs/<run.name>)")] = None,
    pipeline: Annotated[str, typer.Option(help="recipe (everything) or data (curation alone)")] = "recipe",
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="stream every step's full output")] = False,
    runner: Annotated[str, typer.Option(help="subprocess, or docker: each step in its image "
                                             "(`coderforge images build` first)")] = "subprocess",
    set_: SetOpt = None,
):
    """Run a recipe on this machine (kfp.local, local Ray, SQLite MLflow, local artifacts)."""
    from coderforge.local_dag import RUNNERS, run_local
    from coderforge.steps.summary import render_table
    from coderforge.steps.table import PIPELINES

    if pipeline not in PIPELINES:
        typer.echo(f"error: --pipeline must be one of {', '.join(PIPELINES)}", err=True)
        raise typer.Exit(2)
    if runner not in RUNNERS:
        typer.echo(f"error: --runner must be one of {', '.join(RUNNERS)}", err=True)
        raise typer.Exit(2)
    cfg = _load(recipe, set_, workdir, defer=("stdlib",) if runner == "docker" else ())
    errors: tuple[type[Exception], ...] = ()
    if runner == "docker":
        from coderforge.images.runner import setup_errors

        errors = setup_errors()
    try:
        summary = run_local(cfg, pipeline, verbose=verbose, runner=runner)
    except errors as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo("")
    typer.echo(render_table(summary))
    typer.echo(f"\nlogs:     {Path(summary['workdir']) / 'logs'}")
    typer.echo(f"\noutputs:  {summary['outputs']}")
    typer.echo(f"summary:  {Path(summary['workdir']) / 'summary.json'}")
    if summary.get("model_path"):
        typer.echo(f"model:    {summary['model_path']}")
    typer.echo(f"mlflow:   {summary['mlflow']['tracking_uri']}  run {summary['mlflow']['run_id']}")


@app.command("compile")
def compile_(
    recipe: Annotated[Path, typer.Argument(help="recipe YAML")] = Path("configs/tiny.yaml"),
    output: Annotated[Path, typer.Option(help="where to write the KFP IR YAML")] = Path("recipe.yaml"),
    pipeline: Annotated[str, typer.Option(help="recipe or data")] = "recipe",
    set_: SetOpt = None,
):
    """Compile the recipe DAG to KFP IR YAML (upload it in the pipeline UI or submit it)."""
    from pipelines.recipe import compile_recipe

    cfg = _load(recipe, set_)
    path = compile_recipe(cfg, output, pipeline)
    typer.echo(f"wrote {path}")


@app.command()
def validate(recipe: Annotated[Path, typer.Argument(help="recipe YAML")], set_: SetOpt = None):
    """Validate a recipe and print it with every default filled in, then what it builds (as comments)."""
    from coderforge.derived import derived_comment

    cfg = _load(recipe, set_)
    sys.stdout.write(cfg.to_yaml() + derived_comment(cfg))


@app.command()
def step(
    name: Annotated[str, typer.Argument(help="a step of the step table: ingest, filter, dedup, pack, pretrain, ...")],
    recipe: Annotated[Path, typer.Option(help="recipe YAML")],
    out: Annotated[str, typer.Option(help="output directory or s3:// prefix")],
    in_: Annotated[list[str] | None, typer.Option("--in", help="input: arg=path-or-s3-uri (repeatable)")] = None,
    parent_run_id: Annotated[str, typer.Option(help="MLflow parent run id")] = "",
):
    """Run one recipe step outside a pipeline (what a KubeRay RayJob runs on a cluster)."""
    from coderforge.steps.execute import execute_step_with_uris
    from coderforge.steps.table import STEP_BY_NAME

    if name not in STEP_BY_NAME:
        typer.echo(f"error: unknown step {name!r}; steps: {', '.join(STEP_BY_NAME)}", err=True)
        raise typer.Exit(2)
    args = STEP_BY_NAME[name].input_args
    cfg = _load(recipe, None)
    inputs = {}
    for item in in_ or []:
        key, sep, value = item.partition("=")
        if not sep or key not in args:
            typer.echo(f"error: --in {item!r}: expected one of {args} as arg=uri", err=True)
            raise typer.Exit(2)
        inputs[key] = value
    result = execute_step_with_uris(name, cfg.to_json(), parent_run_id, out, inputs)
    typer.echo(result.to_json())


def _register_subcommands() -> None:
    """Commands that live beside the code they drive."""
    from coderforge.evals.cli import compare
    from coderforge.images.cli import app as images_app
    from coderforge.k8s.cli import submit
    from coderforge.sandbox.cli import app as sandbox_app
    from coderforge.tokens.cli import order_repo

    app.add_typer(sandbox_app, name="sandbox", help="Run untrusted programs in the sandbox.")
    app.add_typer(images_app, name="images", help="Build and list the container images.")
    app.command("compare", help="Compare MLflow runs side by side (table and chart).")(compare)
    app.command("order-repo", help="Print a repository's files in training (dependency) order.")(order_repo)
    app.command("submit", help="Compile a recipe and submit it to a Kubeflow Pipelines endpoint.")(submit)


_register_subcommands()


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
