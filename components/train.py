"""Training components: pretraining stages run by Ray Train."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components._images import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE)
def pretrain(recipe: str, parent_run_id: str, tokens: Input[Dataset], tokenizer: Input[Model],
             model: Output[Model]) -> str:
    """File-level pretraining of a Qwen2ForCausalLM with Ray Train (local Ray, or a KubeRay RayJob when
    the recipe enables it); the model is saved in HF format."""
    import os

    from coderforge.runtime import execute_heavy_step

    res = execute_heavy_step("pretrain", recipe, parent_run_id, model.path, model.uri,
                             {"data_dir": (tokens.path, tokens.uri), "tokenizer_dir": (tokenizer.path, tokenizer.uri)})
    res.info["model_path"] = os.path.join(model.path, "model")  # where this task's artifact holds it
    return res.to_json()


@dsl.component(base_image=TRAIN_IMAGE)
def pretrain_repo(recipe: str, parent_run_id: str, tokens: Input[Dataset], tokenizer: Input[Model],
                  base_model: Input[Model], model: Output[Model]) -> str:
    """Repo-level pretraining (32K rows, RoPE base 1M) from the file-level checkpoint; the saved config
    carries the YaRN settings for 128K inference."""
    import os

    from coderforge.runtime import execute_heavy_step

    res = execute_heavy_step("pretrain_repo", recipe, parent_run_id, model.path, model.uri,
                             {"data_dir": (tokens.path, tokens.uri), "tokenizer_dir": (tokenizer.path, tokenizer.uri),
                              "init_from": (os.path.join(base_model.path, "model"),
                                            base_model.uri.rstrip("/") + "/model")})
    res.info["model_path"] = os.path.join(model.path, "model")
    return res.to_json()
