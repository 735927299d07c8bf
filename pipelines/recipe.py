"""The recipe as KFP DAGs: ``data`` (curation alone) and ``recipe`` (data → tokens → pretrain → eval).

Every task gets the validated recipe YAML and the MLflow parent run id; typed artifacts (Dataset,
Model, Markdown) flow between steps. ``compile_recipe`` writes the KFP IR YAML that users upload to
the pipeline UI or submit with ``coderforge submit``; ``coderforge run`` executes the same DAG with
``kfp.local``.
"""


from collections.abc import Callable
from pathlib import Path

from kfp import compiler, dsl
from kfp.dsl import Artifact

from coderforge.config import RecipeConfig
from components.data import decontaminate, dedup, filter_documents, ingest, quality_filter
from components.evaluate import evaluate
from components.run_control import finish_run, start_run
from components.tokens import mixture, pack, pack_repo, train_tokenizer
from components.train import pretrain, pretrain_repo

PIPELINE_NAMES = ("recipe", "data")
DATA_STEPS = ("ingest", "filter", "dedup", "decontam")
OPTIONAL_DATA_STEPS = ("quality",)
RECIPE_STEPS = DATA_STEPS + ("tokenizer", "pack", "pretrain", "pack_repo", "pretrain_repo", "evaluate")


def steps_of(pipeline: str, cfg: RecipeConfig) -> tuple[str, ...]:
    """The steps a pipeline runs for ``cfg`` (optional ones by their ``enabled`` switches)."""
    steps = list(DATA_STEPS)
    if cfg.quality.enabled:
        steps.append("quality")
    if pipeline == "recipe":
        steps += ["tokenizer"] + (["mixture"] if cfg.mixture.enabled else []) + ["pack", "pretrain"]
        steps += ["pack_repo", "pretrain_repo"] if cfg.repo.enabled else []
        steps.append("evaluate")
    return tuple(steps)


def _platform_hook(cfg: RecipeConfig | None) -> Callable:
    """Kubernetes settings (resources, secrets, node selectors) for a task; none on the embedded default."""
    if cfg is None:
        return lambda task, step: task
    from pipelines.platform import apply_platform

    return lambda task, step: apply_platform(task, step, cfg.k8s)


def _data_tasks(recipe: str, rid, platform: Callable, cfg: RecipeConfig | None) -> dict:
    t = {}
    t["ingest"] = platform(ingest(recipe=recipe, parent_run_id=rid).set_display_name("ingest"), "ingest")
    t["filter"] = platform(filter_documents(recipe=recipe, parent_run_id=rid,
                                            documents=t["ingest"].outputs["documents"])
                           .set_display_name("filter"), "filter")
    t["dedup"] = platform(dedup(recipe=recipe, parent_run_id=rid, documents=t["filter"].outputs["kept"])
                          .set_display_name("dedup"), "dedup")
    t["decontam"] = platform(decontaminate(recipe=recipe, parent_run_id=rid, documents=t["dedup"].outputs["kept"])
                             .set_display_name("decontam"), "decontam")
    t["_docs"] = t["decontam"].outputs["kept"]
    if cfg is not None and cfg.quality.enabled:
        t["quality"] = platform(quality_filter(recipe=recipe, parent_run_id=rid, documents=t["_docs"])
                                .set_display_name("quality"), "quality")
        t["_docs"] = t["quality"].outputs["kept"]
    return t


def _finish(recipe: str, rid, tasks: dict, platform: Callable):
    reports = {name: task.outputs["Output"] for name, task in tasks.items() if not name.startswith("_")}
    fin = finish_run(recipe=recipe, parent_run_id=rid, **reports).set_display_name("finish-run")
    fin.set_caching_options(False)
    return platform(fin, "finish_run")


def build_pipeline(name: str = "recipe", cfg: RecipeConfig | None = None, for_cluster: bool = False):
    """The pipeline function for ``name``. ``cfg`` decides optional stages (``repo.enabled``); with
    ``for_cluster`` its ``k8s`` section adds Kubernetes settings to every task."""
    platform = _platform_hook(cfg if for_cluster else None)
    repo_stage = cfg is None or cfg.repo.enabled

    def start(recipe: str, mlflow_run_id: str):
        task = start_run(recipe=recipe, pipeline=name, existing_run_id=mlflow_run_id).set_display_name("start-run")
        task.set_caching_options(False)
        return platform(task, "start_run").output

    if name == "data":

        @dsl.pipeline(name="coderforge-data", description="CoderForge code curation: ingest, filter, dedup, decontamination.")
        def data_pipeline(recipe: str, mlflow_run_id: str = "") -> Artifact:
            rid = start(recipe, mlflow_run_id)
            tasks = _data_tasks(recipe, rid, platform, cfg)
            return _finish(recipe, rid, tasks, platform).outputs["summary"]

        return data_pipeline

    if name == "recipe":

        @dsl.pipeline(name="coderforge-recipe",
                      description="CoderForge recipe: curation, tokenizer, packing, pretraining, evaluation.")
        def recipe_pipeline(recipe: str, mlflow_run_id: str = "") -> Artifact:
            rid = start(recipe, mlflow_run_id)
            tasks = _data_tasks(recipe, rid, platform, cfg)
            docs = tasks["_docs"]
            tasks["tokenizer"] = platform(train_tokenizer(recipe=recipe, parent_run_id=rid, documents=docs)
                                          .set_display_name("tokenizer"), "tokenizer")
            tok = tasks["tokenizer"].outputs["tokenizer"]
            code_docs = docs
            if cfg is not None and cfg.mixture.enabled:
                tasks["mixture"] = platform(mixture(recipe=recipe, parent_run_id=rid, documents=docs, tokenizer=tok)
                                            .set_display_name("mixture"), "mixture")
                docs = tasks["mixture"].outputs["mixed"]
            tasks["pack"] = platform(pack(recipe=recipe, parent_run_id=rid, documents=docs, tokenizer=tok)
                                     .set_display_name("pack"), "pack")
            toks = tasks["pack"].outputs["tokens"]
            tasks["pretrain"] = platform(pretrain(recipe=recipe, parent_run_id=rid, tokens=toks, tokenizer=tok)
                                         .set_display_name("pretrain"), "pretrain")
            final_model = tasks["pretrain"].outputs["model"]
            if repo_stage:
                tasks["pack_repo"] = platform(pack_repo(recipe=recipe, parent_run_id=rid, documents=code_docs,
                                                        tokenizer=tok).set_display_name("pack-repo"), "pack_repo")
                tasks["pretrain_repo"] = platform(
                    pretrain_repo(recipe=recipe, parent_run_id=rid, tokens=tasks["pack_repo"].outputs["tokens"],
                                  tokenizer=tok, base_model=final_model).set_display_name("pretrain-repo"),
                    "pretrain_repo")
                final_model = tasks["pretrain_repo"].outputs["model"]
            tasks["evaluate"] = platform(evaluate(recipe=recipe, parent_run_id=rid, model=final_model, tokens=toks)
                                         .set_display_name("evaluate"), "evaluate")
            return _finish(recipe, rid, tasks, platform).outputs["summary"]

        return recipe_pipeline

    raise ValueError(f"unknown pipeline {name!r}; choose one of {PIPELINE_NAMES}")


def compile_recipe(cfg: RecipeConfig, output_path: str | Path, pipeline: str = "recipe",
                   for_cluster: bool = True) -> Path:
    """Write the KFP IR YAML for ``cfg``; the recipe YAML is the default of the ``recipe`` parameter."""
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    func = build_pipeline(pipeline, cfg, for_cluster)
    compiler.Compiler().compile(func, str(output_path), pipeline_parameters={"recipe": cfg.to_json()})
    return output_path
