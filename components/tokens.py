"""Token components: tokenizer training/loading and packing into token shards."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components._images import DATA_IMAGE


@dsl.component(base_image=DATA_IMAGE)
def train_tokenizer(recipe: str, parent_run_id: str, documents: Input[Dataset], tokenizer: Output[Model]) -> str:
    """Train a byte-level BPE with the Qwen2.5-Coder control tokens (or load one) in HF format."""
    from coderforge.runtime import execute_step
    from coderforge.tokens.tokenizer import run_tokenizer

    return execute_step("tokenizer", recipe, parent_run_id, run_tokenizer, tokenizer.path,
                        docs_dir=documents.path).to_json()


@dsl.component(base_image=DATA_IMAGE)
def pack(recipe: str, parent_run_id: str, documents: Input[Dataset], tokenizer: Input[Model],
         tokens: Output[Dataset]) -> str:
    """Tokenise and pack documents into fixed-length rows with document boundaries (train/heldout)."""
    from coderforge.runtime import execute_step
    from coderforge.tokens.packing import run_pack

    return execute_step("pack", recipe, parent_run_id, run_pack, tokens.path, docs_dir=documents.path,
                        tokenizer_dir=tokenizer.path).to_json()


@dsl.component(base_image=DATA_IMAGE)
def pack_repo(recipe: str, parent_run_id: str, documents: Input[Dataset], tokenizer: Input[Model],
              tokens: Output[Dataset]) -> str:
    """Repo-level samples (files in dependency order, repo-level FIM) packed into ``repo.seq_len`` rows."""
    from coderforge.runtime import execute_step
    from coderforge.tokens.packing import run_pack

    return execute_step("pack_repo", recipe, parent_run_id, run_pack, tokens.path, docs_dir=documents.path,
                        tokenizer_dir=tokenizer.path, stage="repo").to_json()


@dsl.component(base_image=DATA_IMAGE)
def mixture(recipe: str, parent_run_id: str, documents: Input[Dataset], tokenizer: Input[Model],
            mixed: Output[Dataset]) -> str:
    """Code / text / math sampled to a token budget at the configured ratios (70/20/10 by default)."""
    from coderforge.data.mixture import run_mixture
    from coderforge.runtime import execute_step

    return execute_step("mixture", recipe, parent_run_id, run_mixture, mixed.path, docs_dir=documents.path,
                        tokenizer_dir=tokenizer.path).to_json()
