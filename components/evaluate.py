"""Evaluation component: held-out perplexity and sandboxed HumanEval pass@1 (and more per the recipe)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Model, Output

from components._images import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE)
def evaluate(recipe: str, parent_run_id: str, model: Input[Model], tokens: Input[Dataset],
             results: Output[Dataset], report: Output[Markdown]) -> str:
    """Evaluate the trained model; per-problem results and a Markdown summary as artifacts."""
    import os
    import shutil

    from coderforge.evals.step import run_evaluate
    from coderforge.runtime import execute_step

    res = execute_step("evaluate", recipe, parent_run_id, run_evaluate, results.path,
                       model_dir=os.path.join(model.path, "model"), data_dir=tokens.path)
    summary_md = os.path.join(results.path, "summary.md")
    if os.path.exists(summary_md):
        shutil.copyfile(summary_md, report.path)
    else:
        with open(report.path, "w") as fh:
            fh.write("# Evaluation\n\n(no summary written)\n")
    return res.to_json()
