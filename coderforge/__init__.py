"""CoderForge: build code LLMs the Qwen2.5-Coder / Abacus way."""

__version__ = "0.1.0"
