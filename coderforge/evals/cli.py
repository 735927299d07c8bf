"""``coderforge compare RUN_ID ...``: evaluation runs side by side (registered by coderforge.cli)."""

from __future__ import annotations

import os
from pathlib import Path

import typer


def compare(
    run_ids: list[str] = typer.Argument(..., help="MLflow run ids (evaluate step runs or pipeline runs)"),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri",
                                            help="MLflow tracking URI (default: MLFLOW_TRACKING_URI)"),
    chart: Path | None = typer.Option(None, "--chart", help="write a bar chart PNG here"),
    stages: bool = typer.Option(False, "--stages",
                                help="one column per evaluated model (base, SFT, DPO) of each run"),
) -> None:
    """Print a side-by-side table of the runs' evaluation metrics (and optionally a chart)."""
    from coderforge.evals.compare import comparison, format_table, recipe_note, stage_columns, write_chart

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise typer.BadParameter("no tracking URI: pass --tracking-uri or set MLFLOW_TRACKING_URI",
                                 param_hint="--tracking-uri")
    try:
        labels, names, per_run = comparison(uri, run_ids)
        note = recipe_note(uri, run_ids)
    except Exception as exc:  # unknown run id, unreachable store
        typer.echo(f"error: cannot read runs from {uri}: {exc}", err=True)
        raise typer.Exit(2) from None
    if stages:
        labels, names, per_run = stage_columns(labels, per_run)
    typer.echo(format_table(labels, names, per_run))
    if note:
        typer.echo(note)
    if chart is not None:
        drawn = write_chart(labels, names, per_run, chart)
        typer.echo(f"chart: {chart} ({', '.join(drawn)})")


app = typer.Typer(help="Evaluation commands (standalone; coderforge.cli registers ``compare`` itself).")


@app.callback()
def _main() -> None:
    """Evaluation commands."""


app.command("compare")(compare)
