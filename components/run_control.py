"""Pipeline-run bookkeeping components: open the MLflow parent run, and close it with the summary."""

from kfp import dsl
from kfp.dsl import Artifact, Markdown, Output

from components._images import DATA_IMAGE


@dsl.component(base_image=DATA_IMAGE)
def start_run(recipe: str, pipeline: str, existing_run_id: str = "") -> str:
    """Create the MLflow parent run of this pipeline run (or adopt ``existing_run_id``); returns its id."""
    from coderforge.runtime import start_pipeline_run

    return start_pipeline_run(recipe, pipeline, existing_run_id)


@dsl.component(base_image=DATA_IMAGE)
def finish_run(
    recipe: str,
    parent_run_id: str,
    summary: Output[Artifact],
    report: Output[Markdown],
    ingest: str = "",
    filter: str = "",
    dedup: str = "",
    decontam: str = "",
    quality: str = "",
    tokenizer: str = "",
    mixture: str = "",
    pack: str = "",
    pretrain: str = "",
    pack_repo: str = "",
    pretrain_repo: str = "",
    evaluate: str = "",
):
    """Gather every step's report (the JSON each step returned) into the run summary, log it to the
    parent MLflow run and close that run."""
    from coderforge.runtime import finish_pipeline_run

    reports = {
        "ingest": ingest, "filter": filter, "dedup": dedup, "decontam": decontam, "quality": quality,
        "tokenizer": tokenizer, "mixture": mixture,
        "pack": pack, "pretrain": pretrain, "pack_repo": pack_repo, "pretrain_repo": pretrain_repo,
        "evaluate": evaluate,
    }
    finish_pipeline_run(recipe, parent_run_id, {k: v for k, v in reports.items() if v}, summary.path, report.path)
