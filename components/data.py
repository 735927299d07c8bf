"""Data curation components: ingest, filter, dedup, decontaminate. Each returns its step report (JSON)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components._images import DATA_IMAGE


@dsl.component(base_image=DATA_IMAGE)
def ingest(recipe: str, parent_run_id: str, documents: Output[Dataset]) -> str:
    """Repositories (directories, git, archives, Parquet/JSONL) → document shards + ledger."""
    from coderforge.data.ingest import run_ingest
    from coderforge.runtime import execute_step

    return execute_step("ingest", recipe, parent_run_id, run_ingest, documents.path).to_json()


@dsl.component(base_image=DATA_IMAGE)
def filter_documents(recipe: str, parent_run_id: str, documents: Input[Dataset], kept: Output[Dataset]) -> str:
    """Heuristic, syntax, data-density and lint filters; every drop with its reason."""
    from coderforge.data.filters import run_filter
    from coderforge.runtime import execute_step

    return execute_step("filter", recipe, parent_run_id, run_filter, kept.path, in_dir=documents.path).to_json()


@dsl.component(base_image=DATA_IMAGE)
def dedup(recipe: str, parent_run_id: str, documents: Input[Dataset], kept: Output[Dataset]) -> str:
    """Exact and MinHash near-duplicate removal; every drop names its kept twin."""
    from coderforge.data.dedup import run_dedup
    from coderforge.runtime import execute_step

    return execute_step("dedup", recipe, parent_run_id, run_dedup, kept.path, in_dir=documents.path).to_json()


@dsl.component(base_image=DATA_IMAGE)
def decontaminate(recipe: str, parent_run_id: str, documents: Input[Dataset], kept: Output[Dataset]) -> str:
    """Remove documents sharing a word n-gram (10 by default) or a function name with the benchmarks."""
    from coderforge.data.decontam import run_decontam
    from coderforge.runtime import execute_step

    return execute_step("decontam", recipe, parent_run_id, run_decontam, kept.path, in_dir=documents.path).to_json()


@dsl.component(base_image=DATA_IMAGE)
def quality_filter(recipe: str, parent_run_id: str, documents: Input[Dataset], kept: Output[Dataset]) -> str:
    """Coarse-to-fine fastText text-code grounding chain over the text documents (Qwen2.5-Coder)."""
    from coderforge.data.quality import run_quality
    from coderforge.runtime import execute_step

    return execute_step("quality", recipe, parent_run_id, run_quality, kept.path, docs_dir=documents.path).to_json()
