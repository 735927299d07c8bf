"""The recipe as KFP DAGs, wired from the step table (``coderforge.steps.table``).

``build_pipeline(name, cfg)`` adds one task per step the pipeline runs for ``cfg`` (optional steps
by their switches), feeds each input from the step the table names for it, and closes the run with
``finish_run``. Every task gets the validated recipe YAML and the MLflow parent run id; typed
artifacts (Dataset, Model, Markdown) flow between steps. ``compile_recipe`` writes the KFP IR YAML
that users upload to the pipeline UI or submit with ``coderforge submit``; ``coderforge run``
executes the same DAG with ``kfp.local``.
"""

from collections.abc import Callable
from pathlib import Path

from kfp import compiler, dsl
from kfp.dsl import Artifact

from coderforge.config import RecipeConfig
from coderforge.steps.table import PIPELINES, STEP_BY_NAME, steps_of, wiring
from components.run_control import finish_run, start_run
from components.steps import component

PIPELINE_NAMES = tuple(PIPELINES)


def _platform_hook(cfg: RecipeConfig | None) -> Callable:
    """Kubernetes settings (resources, secrets, node selectors) for a task; none on the embedded default."""
    if cfg is None:
        return lambda task, step: task
    from pipelines.platform import apply_platform

    return lambda task, step: apply_platform(task, step, cfg.k8s)


def _step_tasks(pipeline: str, cfg: RecipeConfig | None, recipe: str, rid, platform: Callable) -> dict:
    tasks: dict = {}
    for name, sources in wiring(pipeline, cfg).items():
        inputs = {arg: tasks[src].outputs[STEP_BY_NAME[src].output] for arg, src in sources.items()}
        task = component(name)(recipe=recipe, parent_run_id=rid, **inputs).set_display_name(name)
        tasks[name] = platform(task, name)
    return tasks


def build_pipeline(name: str = "recipe", cfg: RecipeConfig | None = None, for_cluster: bool = False):
    """The pipeline function for ``name``. ``cfg`` decides optional steps; with ``for_cluster`` its
    ``k8s`` section adds Kubernetes settings to every task."""
    if name not in PIPELINES:
        raise ValueError(f"unknown pipeline {name!r}; choose one of {PIPELINE_NAMES}")
    platform = _platform_hook(cfg if for_cluster else None)
    wiring(name, cfg)  # fail at build time, not inside the DSL, when the recipe leaves an input unfed

    @dsl.pipeline(name=f"coderforge-{name}", description=f"CoderForge {name}: {PIPELINES[name]}.")
    def pipeline(recipe: str, mlflow_run_id: str = "") -> Artifact:
        start = start_run(recipe=recipe, pipeline=name, existing_run_id=mlflow_run_id).set_display_name("start_run")
        start.set_caching_options(False)
        rid = platform(start, "start_run").output
        tasks = _step_tasks(name, cfg, recipe, rid, platform)
        fin = finish_run(recipe=recipe, parent_run_id=rid, **{n: t.outputs["Output"] for n, t in tasks.items()})
        fin.set_display_name("finish_run").set_caching_options(False)
        return platform(fin, "finish_run").outputs["summary"]

    return pipeline


def compile_recipe(cfg: RecipeConfig, output_path: str | Path, pipeline: str = "recipe",
                   for_cluster: bool = True) -> Path:
    """Write the KFP IR YAML for ``cfg``; the recipe YAML is the default of the ``recipe`` parameter."""
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    func = build_pipeline(pipeline, cfg, for_cluster)
    compiler.Compiler().compile(func, str(output_path), pipeline_parameters={"recipe": cfg.to_json()})
    return output_path


__all__ = ["PIPELINE_NAMES", "build_pipeline", "compile_recipe", "steps_of"]
