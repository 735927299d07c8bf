"""Make a KFP lightweight component from generated source.

KFP ships a lightweight component as the source text of its function (``inspect.getsource``), so
components made from the step table are real functions whose source is registered with
``linecache`` under a descriptive file name; the compiled IR carries exactly that source.
"""

from __future__ import annotations

import linecache
from collections.abc import Callable

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output

NAMESPACE = {"Artifact": Artifact, "Dataset": Dataset, "Input": Input, "Markdown": Markdown, "Model": Model,
             "Output": Output}


def make_component(name: str, source: str, base_image: str) -> Callable:
    filename = f"<coderforge component {name}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    namespace = dict(NAMESPACE)
    exec(compile(source, filename, "exec", dont_inherit=True), namespace)  # noqa: S102 - our own generated source
    return dsl.component(base_image=base_image)(namespace[name])
