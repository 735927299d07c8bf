"""Problems with tests that the user provides (``synth.problems``), next to the teacher's samples.

A problem file is JSONL, one problem per line::

    {"id": "rotate_left", "language": "python", "problem": "Write rotate_left(xs, k) ...",
     "solution": "def rotate_left(xs, k): ...", "tests": "assert rotate_left([1, 2], 1) == [2, 1]"}

(``id`` optional: the line number stands in; blank lines are not problems). Each problem becomes an
``InstructionSample`` shaped like a synthesised one (user turn: the problem; assistant turn: the
solution in a fenced block), with ``teacher = "file:<name>"``, so the verify step runs it in the
sandbox and keeps it only when it passes, exactly as it treats the teacher's output. These are the
prompts that carry tests for DPO when the teacher is too weak to write any (the tiny recipe), and
the place for a team's own problem sets (e.g. a training split of a benchmark-style set) in a real
run.

Ledger (the synthesise step's, next to the seeds): a line that is not a JSON object with non-empty
string ``problem``, ``solution``, ``tests`` and a sandbox ``language`` is quarantined with the error;
a problem in a language outside ``synth.languages`` is dropped ``language_not_selected``; a repeated
id within a file is quarantined (ids must be unique: the ledger is keyed by them).
"""

from __future__ import annotations

import json
from pathlib import Path

from coderforge import storage
from coderforge.config.posttrain import SANDBOX_LANGUAGES
from coderforge.ledger import DocRef, Ledger
from coderforge.posttrain.parse import fenced
from coderforge.posttrain.samples import InstructionSample, stable_id

REQUIRED = ("problem", "solution", "tests", "language")


def problem_error(row: object) -> str:
    """Why a parsed line is not a problem ('' when it is one)."""
    if not isinstance(row, dict):
        return "a line must be a JSON object"
    for key in REQUIRED:
        value = row.get(key)
        if not isinstance(value, str) or not value.strip():
            return f"{key!r} must be a non-empty string"
    if row["language"] not in SANDBOX_LANGUAGES:
        return f"language {row['language']!r} is not one the sandbox runs ({', '.join(SANDBOX_LANGUAGES)})"
    if "id" in row and not isinstance(row["id"], str | int):
        return "'id' must be a string or an integer"
    return ""


def problem_sample(row: dict, name: str, where: str) -> InstructionSample:
    pid = str(row.get("id", where))
    language, solution = row["language"], row["solution"].strip("\n")
    return InstructionSample(
        id=stable_id("problem", name, pid), language=language, seed_id="", doc_id=f"file:{name}:{pid}",
        repo=name, path=where, symbol=pid,
        messages=[{"role": "user", "content": row["problem"].strip()},
                  {"role": "assistant", "content": fenced(language, solution)}],
        problem=row["problem"].strip(), solution=solution, tests=row["tests"].strip("\n"), teacher=f"file:{name}")


def count_problems(files) -> int:
    """Non-blank lines over the files: the ledger's expected inputs."""
    return sum(1 for f in files for line in storage.read_text(f.path).splitlines() if line.strip())


def read_problems(files, languages, ledger: Ledger) -> list[InstructionSample]:
    """The problems of every ``synth.problems`` file; each line recorded in ``ledger`` (kept, dropped
    or quarantined)."""
    out: list[InstructionSample] = []
    for f in files:
        name = f.name or Path(f.path).stem
        seen: set[str] = set()
        for no, line in enumerate(storage.read_text(f.path).splitlines(), 1):
            if not line.strip():
                continue
            where = f"{f.path}:{no}"
            err, row = "", None
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                err = f"invalid JSON: {exc}"
            err = err or problem_error(row)
            pid = str(row.get("id", no)) if isinstance(row, dict) and not err else str(no)
            if not err and pid in seen:
                err = f"id {pid!r} repeats an earlier line of {f.path}"
            if err:
                ledger.quarantine(stable_id("problem-line", name, str(no)), f"{where}: {err}", name, where,
                                  len(line.encode()))
                continue
            seen.add(pid)
            sample = problem_sample({**row, "id": pid}, name, where)
            if sample.language not in languages:
                ledger.drop(DocRef(sample.id, name, where, line), "language_not_selected",
                            f"{sample.language} not in synth.languages")
                continue
            ledger.keep(DocRef(sample.id, name, where, line))
            out.append(sample)
    return out
