"""Documented functions and classes of one source file, found with tree-sitter.

``extract(lang, path, source)`` (``lang`` a ``coderforge.data.languages`` name: python, javascript, typescript,
java, c++, c) returns every documented function, method and class as a :class:`Symbol`: code as written (doc
comment included, dedented), cleaned docstring, usage examples, and ``skip``, why it is not a seed candidate
("" when it is one). Documentation and examples per language:

* Python: the docstring (``inspect.cleandoc``); examples: its doctests (``doctest.DocTestParser``).
* JavaScript/TypeScript: a JSDoc ``/** … */`` above a function/class declaration, a method, ``const f = (…) => …``
  / function / class expressions or ``a.b = function …`` (CommonJS exports, prototype methods); examples:
  ``@example`` blocks.
* Java: a Javadoc ``/** … */`` above a class, record, enum or method with a body; examples: ``<pre>{@code …}</pre>``.
* C++ and C (C++ grammar): ``/** … */``, ``/*! … */`` or a run of ``///`` / ``//!`` lines (not ``///<``) above a
  function definition or a class/struct with a body; examples: Doxygen ``@code … @endcode``. Declaration macros
  (``ARROW_EXPORT``, ``_GLIBCXX_NOEXCEPT``, lines of upper-case macros, ``namespace std
  _GLIBCXX_VISIBILITY(default)``) are blanked (same byte offsets) before parsing.

"Above" means only whitespace, no blank line, in between. Symbols are searched at file level, in class bodies,
namespaces, ``extern "C"``, preprocessor blocks and ``ERROR`` regions, never in function bodies; methods are named
``Class.method`` (C++ ``Class::method``). Skips: ``private`` (leading ``_`` or ``#``, Java ``private``, C++
private/protected members and ``detail``/``internal`` namespaces, doc tags ``@private``/``@ignore``/``@internal``
(or ``\\internal``), members of private classes), ``special`` (constructors, destructors, operators), ``test``
(Python ``test*``/``Test*``, Java ``@Test``), ``syntax`` (parse errors in the symbol, or Python code that does not
compile as Python 3).
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
from itertools import takewhile

from coderforge.data.filters.syntax import error_bytes, parser_for

GRAMMARS = {"python": "python", "javascript": "javascript", "typescript": "typescript", "java": "java",
            "c++": "cpp", "c": "cpp"}
MAX_DEPTH = 64  # container nesting searched (namespaces in namespaces, preprocessor blocks …)
_PRIVATE_NAMESPACES = frozenset({"detail", "details", "internal", "impl", "anonymous"})
_JS_FUNCS = frozenset({"function_expression", "function", "arrow_function", "generator_function"})
_JS_CLASSES = frozenset({"class_declaration", "abstract_class_declaration", "class"})
_PY_TEST = re.compile(r"test(?:_|$)|Test(?:[A-Z_]|$)")
_PRIVATE_TAGS = re.compile(r"^[@\\](?:private|ignore|internal)\b", re.MULTILINE)
_JS_EXAMPLE = re.compile(r"^@example\b[^\n]*\n?(.*?)(?=^@\w|\Z)", re.MULTILINE | re.DOTALL)
_JAVA_PRE = re.compile(r"<pre>(.*?)</pre>", re.DOTALL | re.IGNORECASE)
_CPP_CODE = re.compile(r"[@\\]code(?:\{[^}\n]*\})?(.*?)[@\\]endcode", re.DOTALL)
_CPP_CONTAINERS = frozenset({"translation_unit", "declaration_list", "linkage_specification", "preproc_if",
                             "preproc_ifdef", "preproc_else", "preproc_elif", "preproc_elifdef", "ERROR"})
_CPP_DECLARATORS = frozenset({"pointer_declarator", "reference_declarator", "attributed_declarator",
                              "parenthesized_declarator"})

# C/C++ macros that hide declarations from the grammar (see the module docstring)
_M = rb"_?[A-Z][A-Z0-9_]+(?:\([^()\n]*\))?"
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
    parse_errors: int = 0  # bytes under ERROR nodes + MISSING nodes of the tree


def mask_macros(data: bytes) -> bytes:
    """``data`` with C/C++ declaration macros replaced by spaces (preprocessor lines untouched)."""
    out = bytearray(data)
    for s, e in [m.span(group) for rx, group in _MACRO_RULES for m in rx.finditer(data)]:
        out[s:e] = b" " * (e - s)
    for m in _PREPROCESSOR_LINE.finditer(data):
        out[m.start():m.end()] = data[m.start():m.end()]
    return bytes(out)


def extract(lang: str, path: str, source: str) -> Extraction:
    grammar = "tsx" if lang == "typescript" and path.lower().endswith(".tsx") else GRAMMARS.get(lang)
    if grammar is None:
        raise ValueError(f"no seed extraction for language {lang!r}")
    data = source.encode("utf-8", "surrogatepass")
    parsed = mask_macros(data) if grammar == "cpp" else data
    root = parser_for(grammar).parse(parsed).root_node
    walker = {"python": _Python, "java": _Java, "cpp": _Cpp}.get(grammar, _JavaScript)(data)
    walker.visit(root, "", False, 0)
    return Extraction(walker.found, sum(error_bytes(root)) if root.has_error else 0)


def _text(node) -> str:
    return node.text.decode("utf-8", "replace") if node is not None else ""


def _name(node) -> str:
    return _text(node.child_by_field_name("name"))


def clean_block_comment(text: str) -> str:
    """``/** … */`` (or ``/*! … */``) without its delimiters and leading ``*`` columns."""
    body = text[3:-2] if text.endswith("*/") else text[3:]
    first, *rest = body.split("\n")
    if all(ln.lstrip().startswith("*") for ln in rest if ln.strip()):  # a `*` column
        rest = [re.sub(r"^\s*\*(?: |(?=\S)|$)?", "", ln, count=1) for ln in rest]
    else:
        rest = textwrap.dedent("\n".join(rest)).split("\n")
    return _strip_doc("\n".join([first.strip(), *rest]))


def _is_line_doc(text: str) -> bool:
    return text.startswith(("///", "//!")) and not text.startswith(("////", "///<", "//!<"))


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
        first, *more = ex.source.rstrip("\n").split("\n")
        blocks += [">>> " + first, *("... " + m for m in more), *([ex.want.rstrip("\n")] if ex.want else [])]
    return "\n".join(blocks)


def _unwrap_pre(body: str) -> str:
    """The code of ``<pre>{@code …}</pre>`` (or of a plain ``<pre>`` block), HTML entities decoded."""
    if body.lstrip().startswith("{@code"):
        body = body.lstrip()[len("{@code"):].rsplit("}", 1)[0]
    return html.unescape(body)


_EXAMPLES = {  # comment style → (block pattern, cleanup of one block)
    "jsdoc": (_JS_EXAMPLE, lambda b: re.sub(r"^\s*```\w*\s*$|<caption>.*?</caption>", "", b,
                                            flags=re.MULTILINE | re.DOTALL)),
    "javadoc": (_JAVA_PRE, _unwrap_pre),
    "doxygen": (_CPP_CODE, lambda b: b),
}


def doc_examples(style: str, docstring: str) -> str:
    """The usage examples of a JSDoc / Javadoc / Doxygen docstring, blank-line separated."""
    rx, clean = _EXAMPLES[style]
    blocks = (textwrap.dedent(clean(m.group(1))).strip("\n").rstrip() for m in rx.finditer(docstring))
    return "\n\n".join(b for b in blocks if b.strip())


class _Walker:
    comment_types: frozenset[str] = frozenset({"comment"})
    line_docs = False  # whether runs of `///` / `//!` lines document a declaration
    style = "jsdoc"  # of the examples in the documentation

    def __init__(self, data: bytes):
        self.data = data
        self.found: list[Symbol] = []

    def visit(self, node, prefix: str, private: bool, depth: int, *more) -> None:
        if depth <= MAX_DEPTH:  # deeper nesting (pathological input) is not searched
            self.container(node, prefix, private, depth, *more)

    def code(self, start: int, end: int) -> str:
        """The source from ``start``'s line to ``end``, dedented (indentation kept relative)."""
        line_start = self.data.rfind(b"\n", 0, start) + 1
        if not self.data[line_start:start].strip():
            start = line_start
        text = self.data[start:end].decode("utf-8", "replace")
        out = textwrap.dedent(text)
        if out[:1] in (" ", "\t"):  # tabs and spaces mixed in the indentation
            out = textwrap.dedent(text.expandtabs(8))
        return out.strip("\n")

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
        lines = list(takewhile(_is_line_doc, map(_text, run))) if self.line_docs else []
        if not lines:
            return None
        return _strip_doc("\n".join(ln[3:] for ln in reversed(lines))), run[len(lines) - 1].start_byte

    def emit(self, kind: str, name: str, anchor, skip: str) -> None:
        """Record ``anchor`` (the declaration, wrappers included) when a doc comment is right above it."""
        doc = self.doc_comment(anchor)
        if doc is None:
            return
        if not skip and (_PRIVATE_TAGS.search(doc[0]) or anchor.has_error):
            skip = "syntax" if anchor.has_error else "private"
        self.found.append(Symbol(kind, name, self.code(doc[1], anchor.end_byte), doc[0],
                                 doc_examples(self.style, doc[0]), skip))


class _Python(_Walker):
    def container(self, node, prefix: str, private: bool, depth: int) -> None:
        for child in node.named_children:
            defn = child.child_by_field_name("definition") if child.type == "decorated_definition" else child
            if defn is None or defn.type not in ("function_definition", "class_definition"):
                continue
            name, is_class = _name(defn), defn.type == "class_definition"
            skip = "private" if private or name.startswith("_") else ""
            if not skip and _PY_TEST.match(name):
                skip = "test"
            body = defn.child_by_field_name("body")
            doc = self.docstring(body)
            if doc is not None:
                code = self.code(child.start_byte, child.end_byte)
                if not skip and (child.has_error or _quiet(compile, code, "<seed>", "exec", ast.PyCF_ONLY_AST, True)
                                 is None):
                    skip = "syntax"
                self.found.append(Symbol("class" if is_class else "function", prefix + name, code, doc,
                                         python_doctest(doc), skip))
            if is_class and body is not None:
                self.visit(body, f"{prefix}{name}.", bool(skip), depth + 1)

    @staticmethod
    def docstring(body) -> str | None:
        first = next((c for c in (body.named_children if body is not None else []) if c.type != "comment"), None)
        if first is not None and first.type == "expression_statement" and first.named_child_count == 1:
            first = first.named_children[0]  # grammar versions differ on this wrapper
        if first is None or first.type not in ("string", "concatenated_string"):
            return None
        value = _quiet(ast.literal_eval, _text(first))  # None for f-strings: not docstrings
        return inspect.cleandoc(value) if isinstance(value, str) else None


def _quiet(fn, *args):
    """``fn(*args)`` with warnings silenced, or None when it fails to parse."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(*args)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None


class _JavaScript(_Walker):
    def container(self, node, prefix: str, private: bool, depth: int) -> None:
        for child in node.named_children:
            if child.type == "ERROR":
                self.visit(child, prefix, private, depth + 1)
                continue
            decl = child.child_by_field_name("declaration") if child.type == "export_statement" else child
            found = self.symbol(decl) if decl is not None else None
            if found is None:
                continue
            kind, name, cls = found
            if not re.fullmatch(r"[\w$#.]+", name):
                continue  # computed names (`[Symbol.iterator]() {…}`)
            skip = "private" if private or name.lstrip(".").startswith(("_", "#")) else ""
            if child.type == "method_definition":
                mod = next((c for c in child.children if c.type == "accessibility_modifier"), None)
                skip = skip or ("private" if _text(mod) in ("private", "protected") else "")
                skip = skip or ("special" if name == "constructor" else "")
            self.emit(kind, prefix + name, child, skip)
            if cls is not None and cls.child_by_field_name("body") is not None:
                self.visit(cls.child_by_field_name("body"), f"{prefix}{name}.", bool(skip), depth + 1)

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
            if not name and value is not None:
                name = _name(value)  # `module.exports = function name(…)`
        if value is None or not name:
            return None
        if value.type in _JS_FUNCS:
            return "function", name, None
        return ("class", name, value) if value.type == "class" else None


class _Java(_Walker):
    comment_types = frozenset({"block_comment", "line_comment"})
    style = "javadoc"
    _classes = ("class_declaration", "record_declaration", "enum_declaration")
    _bodies = ("class_body", "interface_body", "enum_body", "enum_body_declarations", "ERROR")

    def container(self, node, prefix: str, private: bool, depth: int) -> None:
        for child in node.named_children:
            t = child.type
            if t in self._bodies:
                self.visit(child, prefix, private, depth + 1)
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
            if t != "interface_declaration" and body is not None:
                self.emit("function" if t == "method_declaration" else "class", prefix + name, child, skip)
            if t != "method_declaration" and body is not None:
                self.visit(body, f"{prefix}{name}.", bool(skip), depth + 1)


class _Cpp(_Walker):
    line_docs, style = True, "doxygen"

    def container(self, node, prefix: str, private: bool, depth: int, access: str | None = None) -> None:
        for child in node.named_children:
            t = child.type
            if t == "access_specifier":
                access = _text(child).strip()
                continue
            hidden = private or access in ("private", "protected")
            if t in _CPP_CONTAINERS:
                self.visit(child, prefix, hidden, depth + 1)
            elif t == "namespace_definition" and child.child_by_field_name("body") is not None:
                ns = _text(child.child_by_field_name("name"))
                self.visit(child.child_by_field_name("body"), prefix,
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
            self.emit("function", prefix + name, anchor, skip)
        elif decl.type in ("class_specifier", "struct_specifier") and decl.child_by_field_name("body") is not None:
            name = _text(decl.child_by_field_name("name"))
            if not re.fullmatch(r"\w+", name):
                return  # anonymous, or a specialisation `Foo<int>`
            skip = "private" if private or name.startswith("_") else ""
            self.emit("class", prefix + name, anchor, skip)
            default = "private" if decl.type == "class_specifier" else "public"
            self.visit(decl.child_by_field_name("body"), f"{prefix}{name}::", bool(skip), depth + 1, default)

    @staticmethod
    def function_name(fn) -> str:
        d = fn.child_by_field_name("declarator")
        while d is not None and d.type in _CPP_DECLARATORS:
            d = d.child_by_field_name("declarator") or (d.named_children[-1] if d.named_child_count else None)
        if d is None or d.type != "function_declarator":
            return ""
        return re.sub(r"\s+", "", _text(d.child_by_field_name("declarator")))
