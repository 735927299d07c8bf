"""What a recipe builds beyond its own keys: the values the code derives from it (control-token ids, the
model shape of a named size, each pretraining stage's length and RoPE base, long-context YaRN).

``coderforge validate`` prints them after the recipe as YAML comments, so a reader can check a recipe
against recipe.md without reading the code (a named model size, e.g., ignores the explicit shape keys
that the recipe also prints).
"""

from __future__ import annotations

import yaml


def derived_values(cfg) -> dict:
    """The derived values of a validated recipe, as a plain mapping."""
    from coderforge.tokens.tokenizer import CONTROL_TOKENS, control_token_ids
    from coderforge.train.model import LONG_CONTEXT_ROPE_THETA, YARN_FACTOR, qwen2_config_dict

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
                          "fim_rate": cfg.repo.fim_rate,
                          "long_context_inference": {"yarn_factor": YARN_FACTOR,
                                                     "original_max_position_embeddings": cfg.repo.seq_len,
                                                     "max_length": int(cfg.repo.seq_len * YARN_FACTOR)}}
    out["stages"] = stages
    if cfg.mixture.enabled:
        out["mixture"] = {"ratios": dict(cfg.mixture.ratios),
                          "sources": {c: (["curated (this pipeline's code)"] if c == "code" else [])
                                      + [s.name or s.path for s in cfg.mixture.sources if s.category == c]
                                      for c in cfg.mixture.ratios}}
    return out


def derived_comment(cfg) -> str:
    """``derived_values`` as YAML comment lines (the output stays a loadable recipe)."""
    body = yaml.safe_dump({"derived": derived_values(cfg)}, sort_keys=False, allow_unicode=True)
    lines = ["# What the recipe builds (derived by the code from the keys above; not recipe keys):"]
    lines += [f"# {line}" for line in body.splitlines()]
    return "\n".join(lines) + "\n"
