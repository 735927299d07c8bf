"""Evaluation: HumanEval/MBPP/HumanEval+/MBPP+ and MultiPL-E (Python, JavaScript, Java, C++) pass@k in the
sandbox, in completion mode (base models) or instruct mode through the chat template (SFT/DPO models),
HumanEval-FIM exact match, needle-in-a-haystack, held-out perplexity, the evaluate step over base, SFT
and DPO models (vLLM or transformers generation), and run / stage comparison."""
