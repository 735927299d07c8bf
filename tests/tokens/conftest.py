"""Small real corpora (the running Python's standard library) as document shards."""

from __future__ import annotations

import pytest

from coderforge import records
from tests.tokens._corpus import recipe, stdlib_documents


@pytest.fixture(scope="session")
def small_docs(tmp_path_factory, stdlib_dir) -> str:
    """json + email + a hostile pair: an empty file and one containing control-token text."""
    docs = stdlib_documents(stdlib_dir, ["json", "email", "logging"])
    docs.append(records.Document(id="empty-doc", repo="hostile", path="empty.py", lang="python", content=""))
    docs.append(records.Document(id="control-text", repo="hostile", path="tricky.py", lang="python",
                                 content='EOS = "<|endoftext|>"\nFIM = "<|fim_prefix|>x<|fim_middle|>"\n'))
    out = tmp_path_factory.mktemp("docs") / "docs"
    records.write_documents(str(out), docs, shard_size=20)
    return str(out)


@pytest.fixture(scope="session")
def small_tokenizer(tmp_path_factory, small_docs) -> str:
    from coderforge.tokens.tokenizer import run_tokenizer
    from coderforge.tracking import NullRun

    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    run_tokenizer(recipe(tokenizer={"total_vocab_size": 2048}), small_docs, str(out), NullRun())
    return str(out)
