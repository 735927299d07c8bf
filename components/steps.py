"""One KFP component per step of the step table (``coderforge.steps.table``), made from its entry.

Each component takes the recipe, the MLflow parent run id and the step's input artifacts, and writes
the step's output artifact; its body is one call to ``coderforge.steps.execute.run_component``.
``component("pack_repo")`` is the component of step ``pack_repo`` (``pack-repo`` in compiled IR).
"""

from __future__ import annotations

from collections.abc import Callable

from coderforge.steps.table import STEPS, Step, get_step
from components._images import IMAGE_OF_RESOURCES
from components.factory import make_component

_TEMPLATE = '''def {name}(recipe: str, parent_run_id: str{params}) -> str:
    """{doc}"""
    from coderforge.steps.execute import run_component

    return run_component({name!r}, recipe, parent_run_id, {output}, {{{inputs}}}{markdown})
'''


def component_source(step: Step) -> str:
    unfed = [i for i in step.inputs if i.fallback or i.optional]  # KFP optional inputs: may be left unfed
    params = [f"{i.arg}: Input[{i.kind}]" for i in step.inputs if i not in unfed]
    params += [f"{step.output}: Output[{step.output_kind}]"]
    if step.markdown_report:
        params.append("report: Output[Markdown]")
    params += [f"{i.arg}: Input[{i.kind}] = None" for i in unfed]  # parameters with defaults come last
    return _TEMPLATE.format(name=step.name, doc=step.doc, params="".join(", " + p for p in params),
                            output=step.output, inputs=", ".join(f"{i.arg!r}: {i.arg}" for i in step.inputs),
                            markdown=", markdown=report" if step.markdown_report else "")


STEP_COMPONENTS: dict[str, Callable] = {
    step.name: make_component(step.name, component_source(step), IMAGE_OF_RESOURCES[step.resources])
    for step in STEPS
}


def component(name: str) -> Callable:
    get_step(name)  # a clear error for an unknown name
    return STEP_COMPONENTS[name]
