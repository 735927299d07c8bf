"""Every shipped recipe (configs/*.yaml) against the seeds (recipe.md, numbers in tests/config/seeds.py):
the tokenizer layout each one builds, and for the Qwen2.5-Coder-0.5B recipe every number issue 14 names."""

from __future__ import annotations

from pathlib import Path

import pytest

from coderforge.config import load_recipe
from coderforge.derived import derived_values
from coderforge.tokens import tokenizer as T
from tests.config import seeds

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "configs").glob("*.yaml"))
QWEN_05B = REPO / "configs" / "qwen2.5-coder-0.5b.yaml"


def test_the_shipped_recipes_are_all_here():
    assert {p.name for p in SHIPPED} >= {"tiny.yaml", "qwen2.5-coder-0.5b.yaml"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_tokenizer_layout_of_every_shipped_recipe(path, tmp_path):
    """The tokenizer the recipe trains, laid out without training (``layout_tokenizer`` equals real training:
    tests/tokens/test_tokenizer.py), saved and read back by transformers: every control token where
    recipe.md §2 puts it (absolute ids for a Qwen2.5-Coder size; order and contiguity for debug sizes)."""
    cfg = load_recipe(path)
    assert cfg.tokenizer.mode == "train", "a load-mode recipe keeps its tokenizer's ids: add a check for it"
    total = cfg.tokenizer.total_vocab_size
    T.save_hf(T.layout_tokenizer(total), tmp_path / "tok")
    hf = T.load_hf(tmp_path / "tok")
    eos = hf.convert_tokens_to_ids("<|endoftext|>")
    ids = {t: hf.convert_tokens_to_ids(t) for t in seeds.CONTROL_TOKEN_IDS}
    assert {t: i - eos for t, i in ids.items()} == {t: i - seeds.QWEN_REGULAR_TOKENS
                                                    for t, i in seeds.CONTROL_TOKEN_IDS.items()}
    assert len(hf) == eos + len(seeds.CONTROL_TOKEN_IDS) == total
    assert hf.eos_token_id == hf.pad_token_id == eos and hf.bos_token is None
    assert {t for t in ids if not hf.added_tokens_decoder[ids[t]].special} == set(seeds.NOT_SPECIAL)
    assert derived_values(cfg)["tokenizer"]["control_token_ids"] == ids  # what `coderforge validate` prints
    if cfg.model.size in seeds.SHAPES:
        assert ids == seeds.CONTROL_TOKEN_IDS
        assert len(hf) == seeds.QWEN_LEN_TOKENIZER and eos == seeds.QWEN_REGULAR_TOKENS


def test_qwen_shapes_of_every_named_size():
    from coderforge.train.model import QWEN25_CODER_SHAPES, qwen2_config_dict

    assert set(QWEN25_CODER_SHAPES) == set(seeds.SHAPES)
    for size, (layers, hidden, heads, kv, head_dim, inter, tied, rows) in seeds.SHAPES.items():
        c = qwen2_config_dict(size, seeds.QWEN_LEN_TOKENIZER, 32768)
        assert (c["num_hidden_layers"], c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"],
                c["hidden_size"] // c["num_attention_heads"], c["intermediate_size"], c["tie_word_embeddings"],
                c["vocab_size"]) == (layers, hidden, heads, kv, head_dim, inter, tied, rows), size


@pytest.fixture(scope="module")
def qwen():
    return load_recipe(QWEN_05B)


def test_qwen_05b_model_and_stages(qwen):
    d = derived_values(qwen)
    m = d["model"]
    assert (m["layers"], m["hidden"], m["heads"], m["kv_heads"], m["head_dim"], m["intermediate"],
            m["tied_embeddings"], m["embedding_rows"]) == seeds.SHAPES["0.5B"]
    assert qwen.pack.seq_len == seeds.FILE_SEQ_LEN and qwen.model.rope_theta == seeds.FILE_ROPE_THETA
    assert qwen.repo.enabled and qwen.repo.seq_len == seeds.REPO_SEQ_LEN
    assert d["stages"]["repo"]["rope_theta"] == seeds.REPO_ROPE_THETA
    # YaRN for the needle past the trained length (eval.long_context); vLLM serves the model as saved
    assert d["long_context"] == {
        "trained_length": seeds.YARN_ORIGINAL,
        "eval": {"enabled": True, "yarn_factor": seeds.YARN_FACTOR,
                 "original_max_position_embeddings": seeds.YARN_ORIGINAL,
                 "max_position_embeddings": seeds.YARN_LENGTH, "beta_fast": 32.0, "beta_slow": 1.0},
        "serving": {"enabled": False, "max_position_embeddings": seeds.YARN_ORIGINAL}}
    from coderforge.train.model import yarn_rope_parameters

    yarn = yarn_rope_parameters(seeds.REPO_ROPE_THETA, qwen.repo.seq_len)
    assert (yarn["rope_type"], yarn["factor"], yarn["original_max_position_embeddings"]) == \
        ("yarn", seeds.YARN_FACTOR, seeds.YARN_ORIGINAL)


def test_qwen_05b_fim_is_psm_at_rate_one_half(qwen):
    from coderforge.tokens.formats import PRE, SUF, file_sample

    assert qwen.fim.rate == seeds.FIM_RATE and qwen.fim.spm_rate == 0.0
    assert qwen.repo.fim_rate == seeds.REPO_FIM_RATE
    formats = [file_sample("def f(x):\n    return x + 1\n", f"doc{i}", qwen.run.seed, qwen.fim.rate,
                           qwen.fim.spm_rate) for i in range(2000)]
    kinds = [k for _, k in formats]
    assert set(kinds) == {"plain", "psm"}
    assert kinds.count("psm") / len(kinds) == pytest.approx(seeds.FIM_RATE, abs=0.04)
    pieces = next(p for p, k in formats if k == "psm")
    assert pieces[0] == PRE and pieces[2] == SUF


def test_qwen_05b_curation_numbers(qwen):
    assert qwen.dedup.near and qwen.dedup.ngram == seeds.MINHASH_NGRAM
    assert qwen.dedup.threshold == seeds.MINHASH_THRESHOLD
    assert qwen.decontam.enabled and qwen.decontam.ngram == seeds.DECONTAM_NGRAM


def test_qwen_05b_data_is_the_seeds_mix(qwen):
    """Code in every language of The Stack (ingest keeps the 92), text and math sources, 70:20:10 on, the
    grounding chain on."""
    from coderforge.data.languages import CODE_LANGUAGES

    assert len(CODE_LANGUAGES) == seeds.LANGUAGE_COUNT
    code = [s for s in qwen.data.sources]
    assert code and all(s.repos is None and "python" not in s.uri.lower() for s in code)
    assert qwen.mixture.enabled and qwen.mixture.ratios == seeds.MIXTURE
    categories = {s.category for s in qwen.mixture.sources}
    assert categories == {"text", "math"}
    assert qwen.quality.enabled


def test_qwen_05b_wcl_schedule(qwen):
    """Warmup, cosine from the peak to 0.62 x peak, then a linear anneal over Table 2-1's 7/102 of the steps
    to 0.1 x peak (recipe.md §9.5)."""
    from coderforge.train.schedules import anneal_steps, lr_at

    t = qwen.train
    assert t.schedule == "wcl" and t.wcl_cosine_end == seeds.WCL_COSINE_END and t.min_lr_ratio == seeds.WCL_FINAL
    assert t.anneal.shape == "linear"
    n = anneal_steps(t.steps, t.schedule, t.anneal.fraction, t.warmup_steps)
    assert n == round(seeds.WCL_LINEAR_SHARE * t.steps)
    kw = {"anneal_steps": n, "anneal_shape": t.anneal.shape, "wcl_cosine_end": t.wcl_cosine_end}
    curve = [lr_at(s, t.steps, t.lr, t.warmup_steps, t.schedule, t.min_lr_ratio, **kw) for s in range(t.steps)]
    assert max(curve) == pytest.approx(t.lr)
    assert curve[t.steps - n - 1] == pytest.approx(seeds.WCL_COSINE_END * t.lr, rel=1e-6)
    assert curve[-1] == pytest.approx(seeds.WCL_FINAL * t.lr, rel=1e-6)
    steps = curve[t.steps - n:]
    assert all(b < a for a, b in zip(steps, steps[1:], strict=False))
    assert steps[0] - steps[1] == pytest.approx(steps[-2] - steps[-1], rel=1e-6)  # linear
