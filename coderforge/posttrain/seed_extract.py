"""Documented functions and classes of one source file, found with tree-sitter.

``extract(lang, path, source)`` parses a document (``lang``: a name of ``coderforge.data.languages``:
``python``, ``javascript``, ``typescript``, ``java``, ``c++`` or ``c``) and returns every function
and class that carries documentation, as :class:`Symbol` (name, kind, code, cleaned docstring, usage
examples), with ``skip`` naming why a symbol is not a seed candidate ("" when it is one). What
counts as documentation, per language:

* Python: the docstring (first statement of the body, a string literal; ``inspect.cleandoc``'d).
  Examples: the docstring's doctest examples (``>>>`` / ``...`` and expected output, as
  ``doctest.DocTestParser`` reads them).
* JavaScript / TypeScript: a JSDoc block ``/** … */`` right above a function or class declaration,
  a class method, ``const f = (…) => …`` / ``function`` / ``class`` expressions, or
  ``a.b = function …`` assignments (CommonJS exports, prototype methods). Examples: ``@example``
  blocks (``<caption>`` removed).
* Java: a Javadoc block right above a class, record, enum or method with a body (interfaces are
  searched for default methods). Examples: ``<pre>{@code …}</pre>`` / ``<pre>…</pre>`` blocks.
* C++ (and C, parsed with the C++ grammar): a ``/** … */`` or ``/*! … */`` block, or a run of
  ``///`` / ``//!`` lines, right above a function definition (with a body) or a class/struct with a
  body; trailing member comments (``///<``) are not documentation. Examples: Doxygen
  ``@code … @endcode`` blocks. Export/attribute macros (``ARROW_EXPORT``, ``_GLIBCXX_NOEXCEPT``,
  lines made only of upper-case macros, ``namespace std _GLIBCXX_VISIBILITY(default)``) are blanked
  before parsing (same byte offsets) so that the grammar sees plain declarations.

"Right above" means only whitespace, and no blank line, between the comment and the declaration.
Symbols are searched at file level and in class bodies (methods, nested classes), namespaces,
``extern "C"`` blocks, preprocessor conditionals and tree-sitter ``ERROR`` regions, never inside
function bodies. Methods are named ``Class.method`` (C++: ``Class::method``).

``skip`` reasons: ``private`` (a leading ``_`` or ``#``, Java ``private``, C++ private/protected
members or ``detail``/``internal`` namespaces, JSDoc ``@private``/``@ignore``/``@internal``, and
everything inside a private class), ``special`` (constructors, destructors, operators), ``test``
(Python ``test*`` functions and ``Test*`` classes, Java ``@Test`` methods), ``syntax`` (the symbol's
subtree has parse errors, or its Python code does not compile as Python 3).
"""

from __future__ import annotations

import ast
import doctest
import html
import inspect
import re
import textwrap
import warnings
from dataclasses import dataclass, field
from functools import lru_cache

GRAMMARS = {"python": "python", "javascript": "javascript", "typescript": "typescript", "java": "java",
            "c++": "cpp", "c": "cpp"}
MAX_DEPTH = 64  # container nesting searched (namespaces in namespaces, preprocessor blocks …)
_PRIVATE_NAMESPACES = frozenset({"detail", "details", "internal", "impl", "anonymous"})
_JS_FUNCS = frozenset({"function_expression", "function", "arrow_function", "generator_function"})
_JS_CLASSES = frozenset({"class_declaration", "abstract_class_declaration", "class"})
_JS_PRIVATE_TAGS = re.compile(r"^@(?:private|ignore|internal)\b", re.MULTILINE)
_JS_EXAMPLE = re.compile(r"^@example\b[^\n]*\n?(.*?)(?=^@\w|\Z)", re.MULTILINE | re.DOTALL)
_JAVA_PRE = re.compile(r"<pre>(.*?)</pre>", re.DOTALL | re.IGNORECASE)
_CPP_CODE = re.compile(r"[@\\]code(?:\{[^}\n]*\})?(.*?)[@\\]endcode", re.DOTALL)
_CPP_CONTAINERS = frozenset({"translation_unit", "declaration_list", "linkage_specification", "preproc_if",
                             "preproc_ifdef", "preproc_else", "preproc_elif", "preproc_elifdef", "ERROR"})
_CPP_DECLARATORS = frozenset({"pointer_declarator", "reference_declarator", "attributed_declarator",
                              "parenthesized_declarator"})

# C/C++ macros that hide declarations from the grammar (see the module docstring)
_M = rb"_?[A-Z][A-Z0-9_]*(?:\([^()\n]*\))?"
_MU = rb"_?[A-Z][A-Z0-9]*_[A-Z0-9_]*(?:\([^()\n]*\))?"
_MACRO_RULES = (
    (re.compile(rb"^[ \t]*" + _M + rb"(?:[ \t]+" + _M + rb")*[ \t]*$", re.MULTILINE), 0),
    (re.compile(rb"(namespace[ \t]+\w+[ \t]+)(" + _M + rb")"), 2),
    (re.compile(rb"(\)[ \t]*(?:const[ \t]*)?)(" + _MU + rb"(?:[ \t]+" + _MU + rb")*)"
                rb"(?=[ \t]*(?:[{;:=]|$|->|override|final))", re.MULTILINE), 2),
    (re.compile(rb"^([ \t]*)(" + _MU + rb"(?:[ \t]+" + _MU + rb")*)(?=[ \t]+[a-z_])", re.MULTILINE), 2),
    (re.compile(rb"((?:class|struct)[ \t]+)(" + _MU + rb")(?=[ \t]+\w)"), 2),
)
_PREPROCESSOR_LINE = re.compile(rb"^[ \t]*#.*$", re.MULTILINE)


@dataclass
class Symbol:
    kind: str  # "function" | "class"
    name: str
    code: str  # the declaration as written (with its doc comment), dedented
    docstring: str
    doctest: str  # usage examples from the documentation ("" when none)
    skip: str = ""  # why this is not a seed candidate ("" when it is one)


@dataclass
class Extraction:
    symbols: list[Symbol] = field(default_factory=list)
    parse_errors: int = 0  # ERROR and MISSING nodes of the tree


@lru_cache(maxsize=None)
def _parser(grammar: str):
    from tree_sitter_language_pack import get_parser

    return get_parser(grammar)


def grammar_for(lang: str, path: str) -> str | None:
    if lang == "typescript" and path.lower().endswith(".tsx"):
        return "tsx"
    return GRAMMARS.get(lang)


def mask_macros(data: bytes) -> bytes:
    """``data`` with C/C++ declaration macros replaced by spaces (preprocessor lines untouched)."""
    out = bytearray(data)
    for rx, group in _MACRO_RULES:
        for m in rx.finditer(data):
            s, e = m.span(group)
            out[s:e] = b" " * (e - s)
    for m in _PREPROCESSOR_LINE.finditer(data):
        out[m.start():m.end()] = data[m.start():m.end()]
    return bytes(out)


def extract(lang: str, path: str, source: str) -> Extraction:
    grammar = grammar_for(lang, path)
    if grammar is None:
        raise ValueError(f"no seed extraction for language {lang!r}")
    data = source.encode("utf-8", "surrogatepass")
    parsed = mask_macros(data) if grammar == "cpp" else data
    root = _parser(grammar).parse(parsed).root_node
    walker = {"python": _Python, "java": _Java, "cpp": _Cpp}.get(grammar, _JavaScript)(data)
    walker.container(root, "", False, 0)
    return Extraction(walker.found, _count_errors(root))


def _count_errors(root) -> int:
    n, stack = 0, [root]
    while stack:
        node = stack.pop()
        if node.has_error or node.is_missing:
            n += node.is_error or node.is_missing
            stack.extend(node.children)
    return n


def _text(node) -> str:
    return node.text.decode("utf-8", "replace") if node is not None else ""


def _name(node) -> str:
    return _text(node.child_by_field_name("name"))


# ---- documentation text ---------------------------------------------------------------------------

def clean_block_comment(text: str) -> str:
    """``/** … */`` (or ``/*! … */``) without its delimiters and leading ``*`` columns."""
    body = text[3:-2] if text.endswith("*/") else text[3:]
    first, *rest = body.split("\n")
    starred = all(ln.lstrip().startswith("*") for ln in rest if ln.strip())
    if starred:
        rest = [re.sub(r"^\s*\*(?: |(?=\S)|$)?", "", ln, count=1) for ln in rest]
    else:
        rest = textwrap.dedent("\n".join(rest)).split("\n")
    return _strip_doc("\n".join([first.strip(), *rest]))


def clean_line_comments(lines: list[str]) -> str:
    """``///`` / ``//!`` lines without their markers."""
    return _strip_doc(textwrap.dedent("\n".join(ln[3:] for ln in lines)))


def _strip_doc(text: str) -> str:
    lines = [ln.rstrip() for ln in text.split("\n") if ln.strip() not in ("@{", "@}")]
    return textwrap.dedent("\n".join(lines)).strip()


def python_doctest(docstring: str) -> str:
    try:
        examples = doctest.DocTestParser().get_examples(docstring)
    except ValueError:  # inconsistent indentation or prompts: not a usable doctest
        return ""
    blocks = []
    for ex in examples:
        src = ex.source.rstrip("\n").split("\n")
        blocks.append("\n".join([">>> " + src[0], *("... " + s for s in src[1:])]) + ("\n" + ex.want.rstrip("\n")
                                                                                   if ex.want else ""))
    return "\n".join(blocks)


def _examples(blocks: list[str]) -> str:
    return "\n\n".join(b for b in (textwrap.dedent(b).strip("\n").rstrip() for b in blocks) if b.strip())


def jsdoc_examples(docstring: str) -> str:
    blocks = [re.sub(r"<caption>.*?</caption>", "", m.group(1), flags=re.DOTALL) for m in
              _JS_EXAMPLE.finditer(docstring)]
    return _examples([re.sub(r"^\s*```\w*\s*$", "", b, flags=re.MULTILINE) for b in blocks])


def javadoc_examples(docstring: str) -> str:
    blocks = []
    for m in _JAVA_PRE.finditer(docstring):
        body = m.group(1).strip("\n")
        if body.lstrip().startswith("{@code"):
            body = body.lstrip()[len("{@code"):]
            body = body[:body.rfind("}")] if "}" in body else body
        blocks.append(html.unescape(body))
    return _examples(blocks)


def doxygen_examples(docstring: str) -> str:
    return _examples([m.group(1) for m in _CPP_CODE.finditer(docstring)])


# ---- walkers ----------------------------------------------------------------------------------------

class _Walker:
    comment_types: frozenset[str] = frozenset({"comment"})
    sep = "."

    def __init__(self, data: bytes):
        self.data = data
        self.found: list[Symbol] = []

    def container(self, node, prefix: str, private: bool, depth: int) -> None:
        raise NotImplementedError

    def code(self, start: int, end: int) -> str:
        """The source from ``start``'s line to ``end``, dedented (indentation kept relative)."""
        line_start = self.data.rfind(b"\n", 0, start) + 1
        if not self.data[line_start:start].strip():
            start = line_start
        return textwrap.dedent(self.data[start:end].decode("utf-8", "replace")).strip("\n")

    def doc_comment(self, anchor) -> tuple[str, int] | None:
        """The doc comment right above ``anchor``: (cleaned text, its start byte), or None."""
        run, node, end = [], anchor.prev_sibling, anchor.start_byte
        while node is not None and node.type in self.comment_types:
            gap = self.data[node.end_byte:end]
            if gap.strip() or gap.count(b"\n") > 1:
                break
            run.append(node)
            end, node = node.start_byte, node.prev_sibling
        if not run:
            return None
        last = _text(run[0])
        if last.startswith(("/**", "/*!")) and not last.startswith(("/***", "/**<", "/*!<")) and len(last) > 4:
            return clean_block_comment(last), run[0].start_byte
        lines = []
        for c in run:
            t = _text(c)
            if not t.startswith(("///", "//!")) or t.startswith(("////", "///<", "//!<")):
                break
            lines.append(t)
        if not lines or self.comment_types == frozenset({"block_comment", "line_comment"}) or \
                isinstance(self, _JavaScript):
            return None
        return clean_line_comments(lines[::-1]), run[len(lines) - 1].start_byte

    def add(self, kind: str, name: str, anchor, doc: tuple[str, int], examples: str, skip: str) -> None:
        if anchor.has_error:
            skip = skip or "syntax"
        self.found.append(Symbol(kind, name, self.code(doc[1], anchor.end_byte), doc[0], examples, skip))


class _Python(_Walker):
    def container(self, node, prefix: str, private: bool, depth: int) -> None:
        if depth > MAX_DEPTH:
            return
        for child in node.named_children:
            defn = child.child_by_field_name("definition") if child.type == "decorated_definition" else child
            if defn is None or defn.type not in ("function_definition", "class_definition"):
                continue
            name, is_class = _name(defn), defn.type == "class_definition"
            skip = "private" if private or name.startswith("_") else ""
            if not skip and (name.startswith("test") or (is_class and name.startswith("Test"))):
                skip = "test"
            body = defn.child_by_field_name("body")
            doc = self.docstring(body)
            if doc is not None:
                code = self.code(child.start_byte, child.end_byte)
                if not skip and not child.has_error and not _compiles(code):
                    skip = "syntax"
                self.found.append(Symbol("class" if is_class else "function", prefix + name, code, doc,
                                         python_doctest(doc), skip or ("syntax" if child.has_error else "")))
            if is_class and body is not None:
                self.container(body, f"{prefix}{name}.", bool(skip), depth + 1)

    @staticmethod
    def docstring(body) -> str | None:
        first = next((c for c in (body.named_children if body is not None else []) if c.type != "comment"), None)
        if first is None or first.type != "expression_statement" or first.named_child_count != 1:
            return None
        lit = first.named_children[0]
        if lit.type != "string":
            return None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                value = ast.literal_eval(_text(lit))
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return None  # f-strings are not docstrings
        return inspect.cleandoc(value) if isinstance(value, str) else None


def _compiles(code: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compile(code, "<seed>", "exec", flags=ast.PyCF_ONLY_AST, dont_inherit=True)
        return True
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False


class _JavaScript(_Walker):
    def container(self, node, prefix: str, private: bool, depth: int) -> None:
        if depth > MAX_DEPTH:
            return
        for child in node.named_children:
            if child.type == "ERROR":
                self.container(child, prefix, private, depth + 1)
                continue
            decl = child.child_by_field_name("declaration") if child.type == "export_statement" else child
            found = self.symbol(decl) if decl is not None else None
            if found is None:
                continue
            kind, name, cls = found
            skip = "private" if private or name.lstrip(".").startswith(("_", "#")) else ""
            if child.type == "method_definition":
                mod = next((c for c in child.children if c.type == "accessibility_modifier"), None)
                skip = skip or ("private" if _text(mod) in ("private", "protected") else "")
                skip = skip or ("special" if name == "constructor" else "")
            doc = self.doc_comment(child)
            if doc is not None:
                skip = skip or ("private" if _JS_PRIVATE_TAGS.search(doc[0]) else "")
                self.add(kind, prefix + name, child, doc, jsdoc_examples(doc[0]), skip)
            if cls is not None and cls.child_by_field_name("body") is not None:
                self.container(cls.child_by_field_name("body"), f"{prefix}{name}.", bool(skip), depth + 1)

    @staticmethod
    def symbol(decl) -> tuple[str, str, object] | None:
        """(kind, name, class node or None) of a declaration that defines a function or class."""
        t = decl.type
        if t in ("function_declaration", "generator_function_declaration", "method_definition"):
            return "function", _name(decl), None
        if t in _JS_CLASSES:
            return "class", _name(decl), decl
        value, name = None, ""
        if t in ("lexical_declaration", "variable_declaration") and decl.named_child_count == 1:
            var = decl.named_children[0]
            value, name = var.child_by_field_name("value"), _text(var.child_by_field_name("name"))
        elif t == "expression_statement" and decl.named_child_count == 1 and \
                decl.named_children[0].type == "assignment_expression":
            assign = decl.named_children[0]
            value = assign.child_by_field_name("right")
            name = re.sub(r"^(?:module\.)?exports\.?|\.prototype\b", "", _text(assign.child_by_field_name("left")))
            name = name or _name(value) if value is not None else name
        if value is None or not name or not re.fullmatch(r"[\w$#.]+", name):
            return None
        if value.type in _JS_FUNCS:
            return "function", name, None
        return ("class", name, value) if value.type == "class" else None


class _Java(_Walker):
    comment_types = frozenset({"block_comment", "line_comment"})
    _classes = ("class_declaration", "record_declaration", "enum_declaration")
    _bodies = ("class_body", "interface_body", "enum_body", "enum_body_declarations", "ERROR")

    def container(self, node, prefix: str, private: bool, depth: int) -> None:
        if depth > MAX_DEPTH:
            return
        for child in node.named_children:
            t = child.type
            if t in self._bodies:
                self.container(child, prefix, private, depth + 1)
                continue
            if t not in (*self._classes, "interface_declaration", "method_declaration"):
                continue
            name, mods = _name(child), next((c for c in child.children if c.type == "modifiers"), None)
            mod_words = set(_text(mods).split()) if mods is not None else set()
            skip = "private" if private or "private" in mod_words else ""
            if not skip and mods is not None and any(_text(a.child_by_field_name("name")) in (
                    "Test", "ParameterizedTest") for a in mods.named_children if "annotation" in a.type):
                skip = "test"
            body = child.child_by_field_name("body")
            doc = self.doc_comment(child)
            if t != "interface_declaration" and body is not None and doc is not None:
                kind = "function" if t == "method_declaration" else "class"
                self.add(kind, prefix + name, child, doc, javadoc_examples(doc[0]), skip)
            if t != "method_declaration" and body is not None:
                self.container(body, f"{prefix}{name}.", bool(skip), depth + 1)


class _Cpp(_Walker):
    sep = "::"

    def container(self, node, prefix: str, private: bool, depth: int, access: str | None = None) -> None:
        if depth > MAX_DEPTH:
            return
        for child in node.named_children:
            t = child.type
            if t == "access_specifier":
                access = _text(child).strip()
                continue
            hidden = private or access in ("private", "protected")
            if t in _CPP_CONTAINERS:
                self.container(child.child_by_field_name("body") or child, prefix, hidden, depth + 1)
            elif t == "namespace_definition" and child.child_by_field_name("body") is not None:
                ns = _text(child.child_by_field_name("name"))
                self.container(child.child_by_field_name("body"), prefix,
                               hidden or ns.startswith("_") or ns.lower() in _PRIVATE_NAMESPACES or not ns,
                               depth + 1)
            else:
                self.declaration(child, prefix, hidden, depth)

    def declaration(self, anchor, prefix: str, private: bool, depth: int) -> None:
        decl = anchor
        while decl is not None and decl.type == "template_declaration":
            decl = next((c for c in reversed(decl.named_children) if c.type != "template_parameter_list"), None)
        if decl is not None and decl.type == "field_declaration" and decl.child_by_field_name("declarator") is None:
            decl = decl.child_by_field_name("type")  # a nested class: `struct B { … };`
        if decl is None:
            return
        if decl.type == "function_definition":
            body = decl.child_by_field_name("body")
            name = self.function_name(decl)
            if body is None or not name:
                return
            last = name.split("::")[-1]
            cls = prefix[:-2].split("::")[-1] if prefix else (name.split("::")[-2] if "::" in name else "")
            skip = "private" if private or last.startswith("_") else ""
            if not skip and ("operator" in last or last.startswith("~") or last == cls):
                skip = "special"
            doc = self.doc_comment(anchor)
            if doc is not None:
                self.add("function", prefix + name, anchor, doc, doxygen_examples(doc[0]), skip)
        elif decl.type in ("class_specifier", "struct_specifier") and decl.child_by_field_name("body") is not None:
            name = _text(decl.child_by_field_name("name"))
            if not re.fullmatch(r"\w+", name):
                return  # anonymous, or a specialisation `Foo<int>`
            skip = "private" if private or name.startswith("_") else ""
            doc = self.doc_comment(anchor)
            if doc is not None:
                self.add("class", prefix + name, anchor, doc, doxygen_examples(doc[0]), skip)
            default = "private" if decl.type == "class_specifier" else "public"
            self.container(decl.child_by_field_name("body"), f"{prefix}{name}::", bool(skip), depth + 1, default)

    @staticmethod
    def function_name(fn) -> str:
        d = fn.child_by_field_name("declarator")
        while d is not None and d.type in _CPP_DECLARATORS:
            d = d.child_by_field_name("declarator") or (d.named_children[-1] if d.named_child_count else None)
        if d is None or d.type != "function_declarator":
            return ""
        return re.sub(r"\s+", "", _text(d.child_by_field_name("declarator")))
