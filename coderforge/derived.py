"""What a recipe builds beyond its own keys: the values the code derives from it (control-token ids, the
model shape of a named size, each pretraining stage's length and RoPE base, long-context YaRN at
evaluation and serving as the recipe sets it).

``coderforge validate`` prints them after the recipe as YAML comments, so a reader can check a recipe
against recipe.md without reading the code (a named model size, e.g., ignores the explicit shape keys
that the recipe also prints).
"""

from __future__ import annotations

import yaml


def derived_values(cfg) -> dict:
    """The derived values of a validated recipe, as a plain mapping."""
    from coderforge.tokens.tokenizer import CONTROL_TOKENS, control_token_ids
    from coderforge.train.model import LONG_CONTEXT_ROPE_THETA, qwen2_config_dict

    tc = cfg.tokenizer
    out: dict = {}
    if tc.mode == "train":
        out["tokenizer"] = {"regular_tokens": tc.total_vocab_size - len(CONTROL_TOKENS),
                            "control_tokens": len(CONTROL_TOKENS), "len_tokenizer": tc.total_vocab_size,
                            "control_token_ids": control_token_ids(tc.total_vocab_size)}
        vocab = tc.total_vocab_size
    else:
        out["tokenizer"] = {"control_token_ids": f"as in {tc.path} (mode=load keeps its ids)"}
        vocab = 0
    conf = qwen2_config_dict(cfg.model.size, vocab, max(cfg.pack.seq_len, cfg.model.max_position_embeddings),
                             cfg.model.rope_theta, explicit=cfg.model.model_dump())
    out["model"] = {
        "size": cfg.model.size, "layers": conf["num_hidden_layers"], "hidden": conf["hidden_size"],
        "heads": conf["num_attention_heads"], "kv_heads": conf["num_key_value_heads"],
        "head_dim": conf["hidden_size"] // conf["num_attention_heads"],
        "intermediate": conf["intermediate_size"], "tied_embeddings": conf["tie_word_embeddings"],
        "embedding_rows": conf["vocab_size"] if vocab else "len(tokenizer), padded like Qwen for named sizes"}
    stages = {"file": {"seq_len": cfg.pack.seq_len, "rope_theta": cfg.model.rope_theta,
                       "fim_rate": cfg.fim.rate, "fim_order": "PSM" if cfg.fim.spm_rate == 0 else
                       f"PSM, SPM {cfg.fim.spm_rate:.0%}"}}
    if cfg.repo.enabled:
        stages["repo"] = {"seq_len": cfg.repo.seq_len,
                          "rope_theta": max(cfg.model.rope_theta, LONG_CONTEXT_ROPE_THETA),
                          "fim_rate": cfg.repo.fim_rate}
    out["stages"] = stages
    out["long_context"] = long_context_values(cfg)
    if cfg.mixture.enabled:
        out["mixture"] = {"ratios": dict(cfg.mixture.ratios),
                          "sources": {c: (["curated (this pipeline's code)"] if c == "code" else [])
                                      + [s.name or s.path for s in cfg.mixture.sources if s.category == c]
                                      for c in cfg.mixture.ratios}}
    return out


def trained_length(cfg) -> int:
    """The positions of the model the evaluate step calls base (SFT and DPO keep its config): the repo
    stage's length when that stage runs (saved so by ``released_config``), else the file stage's."""
    return cfg.repo.seq_len if cfg.repo.enabled else max(cfg.pack.seq_len, cfg.model.max_position_embeddings)


def yarn_values(lc, trained: int) -> dict:
    """What a ``long_context`` section does to a model of ``trained`` positions: off, it runs as saved; on,
    YaRN by ``yarn_factor`` from ``original_max_position_embeddings`` (default: the trained length), with
    the positions and ramp bounds ``coderforge.train.model.yarn_overrides`` writes."""
    if not lc.enabled:
        return {"enabled": False, "max_position_embeddings": trained}
    original = lc.original_max_position_embeddings or trained
    fast, slow = lc.betas()
    return {"enabled": True, "yarn_factor": lc.yarn_factor, "original_max_position_embeddings": original,
            "max_position_embeddings": int(round(original * lc.yarn_factor)), "beta_fast": fast, "beta_slow": slow}


def long_context_values(cfg) -> dict:
    """YaRN at evaluation (``eval.long_context``: needle lengths past the trained length) and serving
    (``vllm.long_context``: the dpo_pairs server of this run's SFT model, and synthesise's of
    ``synth.teacher`` when set, else of this run's model)."""
    trained = trained_length(cfg)
    serving = yarn_values(cfg.vllm.long_context, trained)
    lc = cfg.vllm.long_context
    if cfg.synth.teacher and lc.enabled and not lc.original_max_position_embeddings:
        serving["synth.teacher"] = (f"{lc.yarn_factor:g} x the max_position_embeddings of {cfg.synth.teacher} "
                                    "(YaRN scales from the served model's own length)")
    return {"trained_length": trained, "eval": yarn_values(cfg.eval.long_context, trained), "serving": serving}


def derived_comment(cfg) -> str:
    """``derived_values`` as YAML comment lines (the output stays a loadable recipe)."""
    body = yaml.safe_dump({"derived": derived_values(cfg)}, sort_keys=False, allow_unicode=True)
    lines = ["# What the recipe builds (derived by the code from the keys above; not recipe keys):"]
    lines += [f"# {line}" for line in body.splitlines()]
    return "\n".join(lines) + "\n"
