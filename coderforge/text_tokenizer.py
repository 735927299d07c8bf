"""The tokenizer that document text is encoded with: a saved tokenizer without its added tokens.

Used wherever text becomes token ids or token counts (packing in :mod:`coderforge.tokens.packing`,
the mixture's token budget in :mod:`coderforge.data.mixture`): a file that happens to contain the text
``<|endoftext|>`` or ``<|fim_prefix|>`` never produces a control token, so control tokens only enter
through the sample formats, as ids.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer


def plain_text_tokenizer(tokenizer_dir: str | Path) -> Tokenizer:
    """The tokenizer without its added tokens: text never turns into control tokens."""
    path = Path(tokenizer_dir)
    data = json.loads((path / "tokenizer.json" if path.is_dir() else path).read_text())
    data["added_tokens"] = []
    return Tokenizer.from_str(json.dumps(data))
