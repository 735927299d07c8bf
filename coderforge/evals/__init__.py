"""Evaluation: HumanEval/MBPP pass@k in the sandbox, HumanEval-FIM exact match, needle-in-a-haystack,
held-out perplexity, the evaluate step, and run comparison."""
