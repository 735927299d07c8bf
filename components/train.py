"""Training components: pretraining stages run by Ray Train."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components._images import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE)
def pretrain(recipe: str, parent_run_id: str, tokens: Input[Dataset], tokenizer: Input[Model],
             model: Output[Model]) -> str:
    """File-level pretraining of a Qwen2ForCausalLM with Ray Train; the model is saved in HF format."""
    import os

    from coderforge.runtime import execute_step
    from coderforge.train.pretrain import run_pretrain

    res = execute_step("pretrain", recipe, parent_run_id, run_pretrain, model.path, data_dir=tokens.path,
                       tokenizer_dir=tokenizer.path)
    res.info.setdefault("model_path", os.path.join(model.path, "model"))
    return res.to_json()
