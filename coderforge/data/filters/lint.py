"""Ruff on Python files (Abacus §9.2 step 3).

:class:`RuffUndefinedNameFilter` runs ``ruff check --select F821`` (``ruff.drop_rules``) on a
batch of files and drops those with findings (reason ``undefined_name``, the names in the
detail). :class:`RuffAutoFix` runs ``ruff check --fix --preview`` with the whitespace and
blank-line rules (``ruff.fix_rules``: W291, W293, W391, E303) and keeps the fixed text; the chain
records the fix in the ledger (``Ledger.fixed`` and the kept row's detail). Both run the ``ruff``
binary of the installed package, ``--isolated`` (no user configuration), one process per batch.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Sequence

from coderforge.config import RuffSection
from coderforge.data.filters.base import BatchFilter, BatchVerdict
from coderforge.records import Document


def ruff_binary() -> str:
    from ruff.__main__ import find_ruff_bin

    return os.fsdecode(find_ruff_bin())


def _suffix(doc: Document) -> str:
    return ".pyi" if doc.path.endswith(".pyi") else ".py"


def _write_batch(tmp: str, docs: Sequence[Document]) -> list[str]:
    paths = []
    for i, doc in enumerate(docs):
        path = os.path.join(tmp, f"f{i:06d}{_suffix(doc)}")
        with open(path, "w", encoding="utf-8", errors="surrogatepass", newline="") as fh:
            fh.write(doc.content)
        paths.append(path)
    return paths


def _run(args: list[str], timeout: float, cwd: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([ruff_binary(), *args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={**os.environ, "RUFF_NO_CACHE": "true"})
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"ruff exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


class _RuffBatches(BatchFilter):
    """Ruff over Python documents, ``batch_files`` per invocation in a scratch directory. Subclasses give
    the Ruff arguments for the batch (``ruff_args``) and read the outcome (``verdicts``)."""

    languages = frozenset({"python"})

    def __init__(self, rules: list[str], s: RuffSection):
        self.rules, self.timeout, self.batch = rules, s.timeout_s, s.batch_files

    def keep_batch(self, docs: Sequence[Document]) -> list[BatchVerdict]:
        out: list[BatchVerdict] = []
        for start in range(0, len(docs), self.batch):
            chunk = docs[start:start + self.batch]
            with tempfile.TemporaryDirectory(prefix="cf-ruff-") as tmp:
                paths = _write_batch(tmp, chunk)
                names = [os.path.basename(p) for p in paths]
                proc = _run([*self.ruff_args(), *names], self.timeout, tmp)
                out += self.verdicts(chunk, paths, proc)
        return out


class RuffUndefinedNameFilter(_RuffBatches):
    name = "undefined_name"

    def __init__(self, s: RuffSection):
        super().__init__(s.drop_rules, s)

    def ruff_args(self) -> list[str]:
        return ["check", "--isolated", "--no-cache", "--select", ",".join(self.rules),
                "--output-format", "json", "--exit-zero"]

    def verdicts(self, docs, paths, proc) -> list[BatchVerdict]:
        findings: dict[str, list[str]] = {}
        for item in json.loads(proc.stdout or "[]"):
            if item.get("code") in self.rules:
                findings.setdefault(os.path.basename(item["filename"]), []).append(item.get("message", ""))
        out = []
        for path in paths:
            msgs = findings.get(os.path.basename(path))
            out.append(BatchVerdict(True) if not msgs else
                       BatchVerdict((self.name, "; ".join(sorted(set(msgs)))[:500])))
        return out


class RuffAutoFix(_RuffBatches):
    name = "ruff_fix"

    def __init__(self, s: RuffSection):
        super().__init__(s.fix_rules, s)

    def ruff_args(self) -> list[str]:
        return ["check", "--isolated", "--no-cache", "--preview", "--fix", "--exit-zero", "--quiet",
                "--select", ",".join(self.rules)]

    def verdicts(self, docs, paths, proc) -> list[BatchVerdict]:
        out = []
        for doc, path in zip(docs, paths, strict=True):
            with open(path, encoding="utf-8", errors="surrogatepass", newline="") as fh:
                fixed = fh.read()
            if doc.content.endswith("\n") and not fixed.endswith("\n"):
                fixed += "\n"
            if fixed != doc.content:
                out.append(BatchVerdict(True, doc.with_content(fixed), ",".join(self.rules)))
            else:
                out.append(BatchVerdict(True))
        return out


def ruff_steps(s: RuffSection) -> list[BatchFilter]:
    steps: list[BatchFilter] = []
    if s.drop_rules:
        steps.append(RuffUndefinedNameFilter(s))
    if s.fix_rules:
        steps.append(RuffAutoFix(s))
    return steps
