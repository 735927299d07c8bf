"""Text generation behind one interface: ``GenerationBackend.generate(prompts, ...)``.

The transformers backend runs here (CPU or one GPU); the vLLM backend (``vllm_backend``) implements
the same protocol against a vLLM server. Both record the token counts of their last call in
``last_usage`` (``Usage``) for throughput measurement. Stopping follows recipe.md §2: generation
ends at any of the Qwen2.5-Coder control tokens the official examples stop on (``<|fim_prefix|>``,
``<|fim_suffix|>``, ``<|fim_pad|>``, ``<|repo_name|>``, ``<|file_sep|>``, ``<|endoftext|>``,
``<|im_end|>``) that the tokenizer has, or at a caller's stop string (the completion is cut before it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

QWEN_STOP_TOKENS = ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
                    "<|endoftext|>", "<|im_end|>")
# Function-completion stop strings (the HumanEval/Codex convention): a new top-level statement ends it.
HUMANEVAL_STOP = ("\nclass ", "\ndef ", "\n#", "\n@", "\nif __name__", "\nprint(", "\nassert ", '\n"""',
                  "\n```")


@dataclass
class GenerationConfig:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    n: int = 1
    seed: int = 0
    stop: tuple[str, ...] = ()


@dataclass
class Usage:
    """Token counts of one ``generate`` call. ``completion_tokens`` counts every generated token, up to
    and including the one that stopped the sequence (what vLLM's ``usage`` reports)."""

    prompts: int = 0
    completions: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    @property
    def completion_tokens_per_s(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0


@runtime_checkable
class GenerationBackend(Protocol):
    name: str

    def generate(self, prompts: list[str], config: GenerationConfig) -> list[list[str]]:
        """For each prompt, ``config.n`` completions (text after the prompt, cut at stops)."""
        ...


def batches(items: list, size: int):
    """``(start, items[start:start + size])`` over ``items``: requests sent a batch at a time."""
    for start in range(0, len(items), size):
        yield start, items[start:start + size]


def truncate_at_stop(text: str, stops: tuple[str, ...] | list[str]) -> str:
    cut = len(text)
    for s in stops:
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]


class TransformersBackend:
    """Batched generation with a Hugging Face causal LM (left padding, greedy or sampled)."""

    name = "transformers"

    def __init__(self, model_dir: str, device: str | None = None, dtype: str | None = None,
                 batch_size: int = 8, model=None, tokenizer=None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        default_dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        torch_dtype = getattr(torch, dtype) if dtype else default_dtype
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(model_dir)
        self.model = model or AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype)
        self.model.to(self.device).eval()
        self.batch_size = batch_size
        self.last_usage: Usage | None = None
        tok = self.tokenizer
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token or "<|endoftext|>"
        self.stop_token_ids = self._stop_ids()

    def _stop_ids(self) -> list[int]:
        tok = self.tokenizer
        vocab = tok.get_vocab()
        ids = [vocab[t] for t in QWEN_STOP_TOKENS if t in vocab]
        if tok.eos_token_id is not None and tok.eos_token_id not in ids:
            ids.append(tok.eos_token_id)
        return ids

    def generate(self, prompts: list[str], config: GenerationConfig) -> list[list[str]]:
        import torch

        tok = self.tokenizer
        tok.padding_side = "left"
        started = time.perf_counter()
        usage = Usage(prompts=len(prompts))
        out: list[list[str]] = [[] for _ in prompts]
        stops = tuple(config.stop)
        greedy = config.temperature <= 0
        n = 1 if greedy else config.n
        expanded = [(i, p) for i, p in enumerate(prompts) for _ in range(n)]
        if not greedy:
            torch.manual_seed(config.seed)
        for start in range(0, len(expanded), self.batch_size):
            chunk = expanded[start:start + self.batch_size]
            enc = tok([p for _, p in chunk], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(self.device) for k, v in enc.items()}
            width = enc["input_ids"].shape[1]
            criteria = _stop_on_strings(tok, stops, width) if stops else None
            kwargs = dict(max_new_tokens=config.max_new_tokens, eos_token_id=self.stop_token_ids,
                          pad_token_id=tok.pad_token_id)
            if greedy:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            else:
                kwargs.update(do_sample=True, temperature=config.temperature, top_p=config.top_p, top_k=0)
            if criteria is not None:
                from transformers import StoppingCriteriaList

                kwargs["stopping_criteria"] = StoppingCriteriaList([criteria])
            with torch.no_grad():
                gen = self.model.generate(**enc, **kwargs)
            usage.prompt_tokens += int(enc["attention_mask"].sum())
            for (i, _), row in zip(chunk, gen[:, width:], strict=True):
                ids = row.tolist()
                usage.completion_tokens += len(ids)
                for j, t in enumerate(ids):  # cut at the first stop token
                    if t in self.stop_token_ids:
                        usage.completion_tokens -= len(ids) - j - 1
                        ids = ids[:j]
                        break
                text = tok.decode(ids, skip_special_tokens=False)
                out[i].append(truncate_at_stop(text, stops))
        if greedy and config.n > 1:
            out = [o * config.n for o in out]
        usage.completions = sum(len(o) for o in out)
        usage.seconds = time.perf_counter() - started
        self.last_usage = usage
        return out


def _stop_on_strings(tokenizer, stops: tuple[str, ...], prompt_width: int):
    from transformers import StoppingCriteria

    class StopOnStrings(StoppingCriteria):
        """Per-row stopping once the generated text contains a stop string."""

        def __call__(self, input_ids, scores, **kwargs):
            import torch

            texts = tokenizer.batch_decode(input_ids[:, prompt_width:], skip_special_tokens=False)
            return torch.tensor([any(s in t for s in stops) for t in texts], device=input_ids.device)

    return StopOnStrings()

