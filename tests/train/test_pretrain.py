"""The pretrain step end to end on a local Ray: 2 gloo workers, MLflow history, HF save, repo stage + YaRN."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from coderforge.config import load_recipe_text
from coderforge.tracking import StepRun

from .conftest import VOCAB, write_shards

RECIPE = """
run: {{name: t6, workdir: {wd}}}
data: {{sources: [{{uri: /nonexistent}}]}}
model: {{size: debug-tiny}}
train: {{steps: 6, micro_batch_size: 2, lr: 0.003, warmup_steps: 1, num_workers: 2, log_every: 2,
         checkpoint_every: 3, schedule: wcl}}
repo: {{steps: 3, seq_len: 128, micro_batch_size: 1}}
"""


def _tokenizer(path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="t1", pad_token="t0").save_pretrained(path)
    return str(path)


@pytest.mark.slow
def test_file_then_repo_stage(tmp_path):
    cfg = load_recipe_text(RECIPE.format(wd=tmp_path / "wd"))
    data = tmp_path / "tokens"
    write_shards(data / "train", rows=24, seq_len=64)
    tok = _tokenizer(tmp_path / "tok")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with StepRun(uri, None, "pretrain") as run:
        res = __import__("coderforge.train.pretrain", fromlist=["x"]).run_pretrain(
            cfg, str(data), str(tmp_path / "out"), run, tokenizer_dir=tok)
        run_id = run.run_id
    assert res.metrics["steps"] == 6 and res.metrics["tokens"] == 6 * 2 * 2 * 64
    assert res.metrics["final_loss"] < 4.5  # ln(96) = 4.56 at init
    model_dir = res.info["model_path"]
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert AutoTokenizer.from_pretrained(model_dir).eos_token == "t1"
    assert model.config.num_hidden_layers == 2 and model.config.vocab_size == VOCAB
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    hist = client.get_metric_history(run_id, "loss")
    assert sorted(m.step for m in hist) == [2, 3, 4, 6]  # every log_every steps, and at each checkpoint
    for key in ("lr", "grad_norm", "tokens_per_s", "mem_peak_gb"):
        assert len(client.get_metric_history(run_id, key)) == 4, key
    lrs = {m.step: m.value for m in client.get_metric_history(run_id, "lr")}
    assert lrs[2] > lrs[6] and lrs[6] == pytest.approx(0.003 * 0.1)  # WCL ends at the floor
    arts = [a.path for a in client.list_artifacts(run_id)]
    assert "lr_schedule.png" in arts

    # repo stage from the file-level model: RoPE 10k -> 1M, 128-token rows, saved without YaRN (as Qwen)
    repo_data = tmp_path / "repo_tokens"
    write_shards(repo_data / "train", rows=6, seq_len=128, seed=1)
    with StepRun(uri, None, "pretrain_repo") as run:
        from coderforge.train.pretrain import run_pretrain

        rres = run_pretrain(cfg, str(repo_data), str(tmp_path / "out_repo"), run, stage="repo",
                            init_from=model_dir, tokenizer_dir=tok)
    assert rres.info["rope_theta_base"] == 10_000.0 and rres.info["rope_theta"] == 1_000_000.0
    saved = json.loads((tmp_path / "out_repo" / "model" / "config.json").read_text())
    assert saved["rope_parameters"] == {"rope_type": "default", "rope_theta": 1_000_000.0}
    assert saved.get("rope_scaling") is None and saved["max_position_embeddings"] == 128
    conf = AutoConfig.from_pretrained(tmp_path / "out_repo" / "model")
    conf.validate_rope() if hasattr(conf, "validate_rope") else None
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "out_repo" / "model").model.rotary_emb.rope_type == "default"
    from coderforge.config import LongContextSection
    from coderforge.evals.serving import load_model

    m2 = load_model(tmp_path / "out_repo" / "model", LongContextSection(enabled=True))  # YaRN x4 at load time
    assert m2.model.rotary_emb.rope_type == "yarn" and m2.model.rotary_emb.attention_scaling == pytest.approx(
        0.1 * torch.log(torch.tensor(4.0)).item() + 1, rel=1e-5)
    with torch.no_grad():
        out = m2(torch.randint(0, VOCAB, (1, 300)))  # beyond the 128-token training length
    assert torch.isfinite(out.logits).all()
