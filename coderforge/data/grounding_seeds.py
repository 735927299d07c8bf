"""Seed data of the text-code grounding chain, found on this machine (:mod:`coderforge.data.quality`).

Every seed is a paragraph window (200–1,200 characters) of a real file, labelled by the group it
comes from. Groups carry a **difficulty** (1–4): the stage of a 4-stage chain at which they join the
seed set. Positives all join at stage 1 (every stage must keep every kind of code-related prose);
negatives get harder stage by stage, so each finer stage learns the distinction the coarser ones could
not make (recipe.md §4.3: each stage one responsibility, applied iteratively):

======================  ====  ==========  ==========================================================
group                   +/-   difficulty  what
======================  ====  ==========  ==========================================================
python_docstrings        +    1           docstrings (≥ 200 chars) of the standard library
javadoc                  +    1           ``/** … */`` comments of the JDK's ``src.zip`` (tags stripped)
npm_markdown             +    1           npm's documentation and its packages' READMEs (code blocks)
jsdoc_npm                +    1           JSDoc comments (≥ 200 chars) of npm's JavaScript
restructuredtext         +    1           ``.rst`` documentation found on disk
man_programming          +    1           man pages of programming tools (1), system calls (2), library
                                          functions (3), SQL commands (7)
legal                    -    1           licenses and ``/usr/share/doc/*/copyright``
admin_man                -    2           system administration and device man pages (8, 4), config
                                          file formats (5) — technical, not programming
debian_changelogs        -    3           packaging changelogs and news (``changelog.Debian``, ``NEWS.Debian``)
upstream_changelogs      -    4           release notes (``/usr/share/doc/*/changelog``, ``NEWS``, npm
                                          packages' ``CHANGELOG.md``): name APIs, explain nothing
======================  ====  ==========  ==========================================================

With ``n`` stages a group of difficulty ``d`` joins at stage ``1 + floor((d - 1) * n / 4)``. Windows
are deduplicated (copyright boilerplate repeats across packages) and carry the file they come from, so
held-out seeds are whole held-out files (:func:`split_heldout`).
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import random
import re
import sysconfig
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PROGRAMMING_MAN = re.compile(
    r"^(git|gcc|g\+\+|cpp|cc|clang|llvm|lldb|gdb|make|cmake|ctags|python|pydoc|perl|ld|as|ar|nm|objdump|"
    r"readelf|strip|gprof|bison|flex|m4|autoconf|automake|libtool|pkg-config|javac|java|jar|node|npm|"
    r"ruby|rustc|cargo|go|valgrind|strace|ltrace|diff|patch|addr2line|c\+\+filt|FileCheck|bugpoint|opt|"
    r"Dockerfile|elf|core|deb-src)([-.]|$)")
MAX_DIFFICULTY = 4
MANDIR = Path("/usr/share/man")
DOCDIR = Path("/usr/share/doc")
NPM_DIR = Path("/usr/lib/node_modules/npm")


@dataclass(frozen=True)
class Seed:
    text: str
    positive: bool
    group: str
    origin: str  # the file (or archive member) the window comes from


@dataclass(frozen=True)
class SeedGroup:
    name: str
    positive: bool
    difficulty: int
    files: Callable[[], list]
    read: Callable[[object], list[str]]


def join_stage(difficulty: int, num_stages: int) -> int:
    """The stage (0-based) of an ``num_stages``-stage chain at which a group of ``difficulty`` joins."""
    return min(num_stages - 1, (difficulty - 1) * num_stages // MAX_DIFFICULTY)


# --- readers -----------------------------------------------------------------------------------------------

def windows(text: str, lo: int = 200, hi: int = 1200) -> list[str]:
    """Paragraph windows: consecutive paragraphs merged until ``lo`` characters, cut at ``hi``."""
    out, cur = [], ""
    for para in re.split(r"\n\s*\n", text):
        para = " ".join(para.split())
        if not para:
            continue
        cur = f"{cur} {para}".strip()
        if len(cur) >= lo:
            out.append(cur[:hi])
            cur = ""
    return out


_ROFF_ESC = re.compile(r"\\f[BIRP1-4]|\\f\(..|\\f\[[^]]*\]|\\\*\(..|\\\*\[[^]]*\]|\\\*.|\\\(..|\\\[[^]]*\]"
                       r"|\\[&|^%:]|\\s[-+]?\d")


_ROFF_REQUESTS = frozenset({"ds", "if", "ie", "el", "nr", "so", "tr", "ss", "ft", "ps", "ll", "in", "ti", "ne",
                            "na", "ad", "hy", "nh", "fi", "nf", "TH", "rm", "rr", "as", "am", "ig", "cs", "mso",
                            "lf", "ec", "eo", "hw", "pc", "rn", "ta", "fam", "do", "cc", "c2"})


def roff_to_text(src: str) -> str:
    """Plain text of a man page: text macros dropped with their arguments kept, formatting requests
    (``.ds``, ``.if``, ``.TH`` …) and macro definitions (``.de`` … ``..``) dropped, escapes removed."""
    lines = []
    in_def = False
    for line in src.splitlines():
        if in_def:
            in_def = line.strip() != ".."
            continue
        if line.startswith(('.\\"', "'\\\"", '.\\}')) or line.strip() in (".", "'"):
            continue
        if line.startswith((".", "'")):
            parts = line[1:].split(None, 1)
            macro = parts[0] if parts else ""
            if macro in ("de", "de1"):
                in_def = True
                continue
            if macro in _ROFF_REQUESTS or macro.startswith(("\\", "}")):
                continue
            if macro in ("SH", "SS"):
                lines.append("")
            if macro in ("PP", "P", "LP", "sp", "br", "TP", "IP"):
                lines.append("")
                if macro != "IP" or len(parts) < 2:
                    continue
            line = parts[1] if len(parts) > 1 else ""
            line = line.replace('"', "")
        line = _ROFF_ESC.sub("", line).replace("\\-", "-").replace("\\e", "\\").replace("\\ ", " ")
        lines.append(line)
    return "\n".join(lines)


def _read_text(path: Path) -> str:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return raw.decode("utf-8", "replace")


def _man_windows(path: Path) -> list[str]:
    return windows(roff_to_text(_read_text(path)))


def _text_windows(path: Path) -> list[str]:
    return windows(_read_text(path))


def _docstring_windows(path: Path) -> list[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError, RecursionError):
        return []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc and len(doc) >= 200:
                out += windows(doc)
    return out


_DOC_COMMENT = re.compile(r"^[ \t]*/\*\*(.*?)\*/", re.DOTALL | re.MULTILINE)
_INLINE_TAG = re.compile(r"\{@(?:code|link|linkplain|literal|value)\s+([^{}]*)\}")
_HTML_TAG = re.compile(r"</?[A-Za-z][^>]*>")


def comment_windows(source: str) -> list[str]:
    """Windows of the documentation comments (``/** … */`` opening a line) of Java/JavaScript source, with the
    leading ``*`` of each line, HTML tags and ``{@code …}`` markers removed; license headers skipped."""
    out = []
    for m in _DOC_COMMENT.finditer(source):
        body = "\n".join(re.sub(r"^\s*\*? ?", "", ln) for ln in m.group(1).splitlines())
        body = _HTML_TAG.sub("", _INLINE_TAG.sub(r"\1", body)).replace("&lt;", "<").replace("&gt;", ">")
        if len(body) >= 200 and "copyright" not in body[:400].lower():
            out += windows(body)
    return out


def _src_zip() -> Path | None:
    for p in sorted(Path("/usr/lib/jvm").glob("*/lib/src.zip"), reverse=True):
        if p.exists():
            return p.resolve()
    return None


def _jdk_members() -> list[tuple[Path, str]]:
    src = _src_zip()
    if src is None:
        return []
    with zipfile.ZipFile(src) as zf:
        return [(src, n) for n in sorted(zf.namelist()) if n.endswith(".java")]


@lru_cache(maxsize=2)
def _open_zip(path: Path) -> zipfile.ZipFile:
    return zipfile.ZipFile(path)


def _javadoc_windows(member: tuple[Path, str]) -> list[str]:
    src, name = member
    return comment_windows(_open_zip(src).read(name).decode("utf-8", "replace"))


def _js_comment_windows(path: Path) -> list[str]:
    return comment_windows(path.read_text(encoding="utf-8", errors="replace"))


def _man_pages(sections: tuple[str, ...], programming: bool) -> list[Path]:
    out = []
    for sec in sections:
        for p in sorted((MANDIR / sec).glob("*")):
            is_prog = bool(PROGRAMMING_MAN.match(p.name)) or sec in ("man2", "man3") or \
                (sec == "man7" and p.name[:1].isupper())  # man7: PostgreSQL's SQL command pages
            if is_prog == programming:
                out.append(p)
    return out


def _npm_md(changelog: bool) -> list[Path]:
    return [p for p in sorted(NPM_DIR.rglob("*.md"))
            if not p.name.upper().startswith("LICENSE") and p.name.upper().startswith("CHANGELOG") == changelog]


def _doc_files(*names: str) -> list[Path]:
    return [p for n in names for p in sorted(DOCDIR.glob(f"*/{n}"))]


def seed_groups() -> list[SeedGroup]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    legal = [p for p in sorted(Path("/usr/share/common-licenses").glob("*")) if p.is_file()]
    return [
        SeedGroup("python_docstrings", True, 1,
                  lambda: sorted(stdlib.glob("*.py")) + sorted(stdlib.glob("*/*.py")), _docstring_windows),
        SeedGroup("javadoc", True, 1, _jdk_members, _javadoc_windows),
        SeedGroup("npm_markdown", True, 1, lambda: _npm_md(False), _text_windows),
        SeedGroup("jsdoc_npm", True, 1, lambda: sorted(NPM_DIR.rglob("*.js")), _js_comment_windows),
        SeedGroup("restructuredtext", True, 1, lambda: sorted(Path("/usr/share").glob("**/*.rst")) +
                  sorted((stdlib / "site-packages").glob("**/*.rst")), _text_windows),
        SeedGroup("man_programming", True, 1, lambda: _man_pages(("man1", "man2", "man3", "man7"), True),
                  _man_windows),
        SeedGroup("legal", False, 1, lambda: legal + _doc_files("copyright"), _text_windows),
        SeedGroup("admin_man", False, 2, lambda: _man_pages(("man8", "man4", "man5"), False), _man_windows),
        SeedGroup("debian_changelogs", False, 3, lambda: _doc_files("changelog.Debian.gz", "NEWS.Debian.gz"),
                  _text_windows),
        SeedGroup("upstream_changelogs", False, 4, lambda: _doc_files("changelog.gz", "NEWS.gz") + _npm_md(True),
                  _text_windows),
    ]


def _collect(group: SeedGroup, limit: int, rng: random.Random, seen: set[str]) -> Iterator[Seed]:
    """Up to ``limit`` new windows of ``group``, its files visited in a seeded random order, at most
    ``max(3, limit // 40)`` windows (a random sample) from one file, so the seeds spread over many files."""
    files = list(group.files())
    rng.shuffle(files)
    per_file = max(3, limit // 40)
    got: list[Seed] = []
    for f in files:
        if len(got) >= limit:
            break
        try:
            texts = [t for t in dict.fromkeys(group.read(f)) if t not in seen]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            continue
        origin = f"{f[0]}!{f[1]}" if isinstance(f, tuple) else str(f)
        for t in rng.sample(texts, per_file) if len(texts) > per_file else texts:
            seen.add(t)
            got.append(Seed(t, group.positive, group.name, origin))
    rng.shuffle(got)
    yield from got[:limit]


@lru_cache(maxsize=4)
def seed_corpus(max_per_source: int = 1500, seed: int = 0) -> tuple[tuple[Seed, ...], dict[str, int]]:
    """Labelled windows found on this machine, and how many each group gave (at most
    ``max_per_source``; a group with no files on this machine gives none)."""
    rng = random.Random(seed)
    seen: set[str] = set()
    seeds: list[Seed] = []
    counts: dict[str, int] = {}
    for group in seed_groups():
        got = list(_collect(group, max_per_source, rng, seen))
        counts[group.name] = len(got)
        seeds += got
    return tuple(seeds), counts


def difficulty_of() -> dict[str, int]:
    return {g.name: g.difficulty for g in seed_groups()}


def split_heldout(seeds, fraction: float = 0.2) -> tuple[list[Seed], list[Seed]]:
    """Deterministic train/held-out split by the hash of each seed's file: held-out seeds come from
    files no training seed comes from."""
    def is_ho(origin: str) -> bool:
        return int.from_bytes(hashlib.blake2b(origin.encode(), digest_size=4).digest(), "big") / 2**32 < fraction

    train, held = [], []
    for s in seeds:
        (held if is_ho(s.origin) else train).append(s)
    return train, held
