"""The numbers of the seeds (recipe.md, the project's recipe specification), written down once for the tests
that check the shipped recipes against them. Section references are to recipe.md."""

from __future__ import annotations

# §2: Qwen2.5-Coder's control tokens and their ids (151,643 regular BPE tokens come first; len = 151,665)
QWEN_REGULAR_TOKENS = 151_643
QWEN_LEN_TOKENIZER = 151_665
CONTROL_TOKEN_IDS: dict[str, int] = {
    "<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
    "<|object_ref_start|>": 151646, "<|object_ref_end|>": 151647, "<|box_start|>": 151648, "<|box_end|>": 151649,
    "<|quad_start|>": 151650, "<|quad_end|>": 151651, "<|vision_start|>": 151652, "<|vision_end|>": 151653,
    "<|vision_pad|>": 151654, "<|image_pad|>": 151655, "<|video_pad|>": 151656,
    "<tool_call>": 151657, "</tool_call>": 151658,
    "<|fim_prefix|>": 151659, "<|fim_middle|>": 151660, "<|fim_suffix|>": 151661, "<|fim_pad|>": 151662,
    "<|repo_name|>": 151663, "<|file_sep|>": 151664,
}
# §2: ids 151657-151664 are added with "special": false; the 13 <|im_start|>..<|video_pad|> are the
# additional special tokens; <|endoftext|> is eos and pad
NOT_SPECIAL = ("<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
               "<|repo_name|>", "<|file_sep|>")

# §1: layers, hidden, Q heads, KV heads, head_dim, intermediate, tied embeddings, embedding rows
SHAPES: dict[str, tuple[int, int, int, int, int, int, bool, int]] = {
    "0.5B": (24, 896, 14, 2, 64, 4864, True, 151936),
    "1.5B": (28, 1536, 12, 2, 128, 8960, True, 151936),
    "3B": (36, 2048, 16, 2, 128, 11008, True, 151936),
    "7B": (28, 3584, 28, 4, 128, 18944, False, 152064),
    "14B": (48, 5120, 40, 8, 128, 13824, False, 152064),
    "32B": (64, 5120, 40, 8, 128, 27648, False, 152064),
}

# §3.4 (INFERRED there from DeepSeek-Coder / StarCoder): FIM rate 0.5, PSM only; repo-level FIM p = 0.5
FIM_RATE = 0.5
REPO_FIM_RATE = 0.5
# §5: file-level stage 8,192 tokens at RoPE base 10,000; repo-level stage 32,768 at 1,000,000;
# inference: YaRN factor 4 over 32,768 = 131,072 (§5.1)
FILE_SEQ_LEN, FILE_ROPE_THETA = 8192, 10_000.0
REPO_SEQ_LEN, REPO_ROPE_THETA = 32768, 1_000_000.0
YARN_FACTOR, YARN_ORIGINAL, YARN_LENGTH = 4.0, 32768, 131072
# §4.2: MinHash + LSH near-dedup on 5-grams at Jaccard 0.7 (StarCoder2)
MINHASH_NGRAM, MINHASH_THRESHOLD = 5, 0.7
# §4.5: 10-gram word-level decontamination
DECONTAM_NGRAM = 10
# §9.5 Table 2-1 and Fig. 2-4: WCL peak 1e-3, cosine to 6.2e-4 (0.62 x peak), linear to about 1e-4 (0.1 x);
# the linear stage is 7B of 95B + 7B tokens
WCL_COSINE_END, WCL_FINAL, WCL_LINEAR_SHARE = 0.62, 0.1, 7 / 102
# §4.4 / §9.6: code : text : math = 70 : 20 : 10
MIXTURE = {"code": 0.7, "text": 0.2, "math": 0.1}
# §4 item 1: the 92 languages of Qwen2.5-Coder's source code
LANGUAGE_COUNT = 92
