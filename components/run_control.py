"""Pipeline-run bookkeeping components: open the MLflow parent run, and close it with the summary.

``finish_run`` takes one report parameter per step of the step table (each a step's returned JSON;
empty when the step did not run), so it is generated from the table like the step components.
"""

from kfp import dsl

from coderforge.steps.table import STEPS
from components._images import DATA_IMAGE
from components.factory import make_component


@dsl.component(base_image=DATA_IMAGE)
def start_run(recipe: str, pipeline: str, existing_run_id: str = "") -> str:
    """Create the MLflow parent run of this pipeline run (or adopt ``existing_run_id``); returns its id."""
    from coderforge.steps.summary import start_pipeline_run

    return start_pipeline_run(recipe, pipeline, existing_run_id)


_FINISH = '''def finish_run(recipe: str, parent_run_id: str, summary: Output[Artifact], report: Output[Markdown],
               {params}):
    """Gather every step's report (the JSON each step returned) into the run summary, log it to the
    parent MLflow run and close that run."""
    from coderforge.steps.summary import finish_pipeline_run

    reports = {{{reports}}}
    finish_pipeline_run(recipe, parent_run_id, {{k: v for k, v in reports.items() if v}}, summary.path, report.path)
'''

finish_run = make_component("finish_run", _FINISH.format(
    params=", ".join(f'{s.name}: str = ""' for s in STEPS),
    reports=", ".join(f"{s.name!r}: {s.name}" for s in STEPS)), DATA_IMAGE)
