"""One table: file extensions and file names → language.

The 92 languages of Qwen2.5-Coder (recipe.md §4, names as printed there: ``c#``, ``c++``,
``common-lisp`` …) plus the data/markup types the heuristic filters treat by their own rules
(``xml``, ``text``, ``csv``, ``toml``, ``ini``, ``roff``, ``svg``, ``dot``, ``owl``, ``smt``).
``language_of(path)`` returns a language name or ``None`` (ingest drops such files with reason
``unknown_language``).
"""

from __future__ import annotations

import posixpath

# the 92 languages of recipe.md §4, in the order printed there
CODE_LANGUAGES: tuple[str, ...] = (
    "ada", "agda", "alloy", "antlr", "applescript", "assembly", "augeas", "awk", "batchfile", "bluespec", "c",
    "c#", "c++", "clojure", "cmake", "coffeescript", "common-lisp", "css", "cuda", "dart", "dockerfile",
    "elixir", "elm", "emacs-lisp", "erlang", "f#", "fortran", "glsl", "go", "groovy", "haskell", "html",
    "idris", "isabelle", "java", "java-server-pages", "javascript", "json", "julia", "jupyter-notebook",
    "kotlin", "lean", "literate-agda", "literate-coffeescript", "literate-haskell", "lua", "makefile", "maple",
    "markdown", "mathematica", "matlab", "objectc++", "ocaml", "pascal", "perl", "php", "powershell", "prolog",
    "protocol-buffer", "python", "r", "racket", "restructuredtext", "rmarkdown", "ruby", "rust", "sas", "scala",
    "scheme", "shell", "smalltalk", "solidity", "sparql", "sql", "stan", "standard-ml", "stata", "swift",
    "systemverilog", "tcl", "tcsh", "tex", "thrift", "typescript", "verilog", "vhdl", "visual-basic", "vue",
    "xslt", "yacc", "yaml", "zig",
)

# data / markup types with their own filter rules (StarCoder2 §2.1 language-specific rules)
DATA_LANGUAGES: tuple[str, ...] = ("xml", "text", "csv", "toml", "ini", "roff", "svg", "dot", "owl", "smt")

_EXT: dict[str, tuple[str, ...]] = {
    "ada": (".adb", ".ads", ".ada"),
    "agda": (".agda",),
    "alloy": (".als",),
    "antlr": (".g4", ".g"),
    "applescript": (".applescript", ".scpt"),
    "assembly": (".asm", ".s", ".nasm", ".a51", ".inc"),
    "augeas": (".aug",),
    "awk": (".awk", ".gawk", ".mawk", ".nawk"),
    "batchfile": (".bat", ".cmd"),
    "bluespec": (".bsv",),
    "c": (".c", ".h"),
    "c#": (".cs", ".csx"),
    "c++": (".cpp", ".cc", ".cxx", ".c++", ".hpp", ".hh", ".hxx", ".h++", ".ipp", ".tpp", ".inl"),
    "clojure": (".clj", ".cljs", ".cljc", ".edn"),
    "cmake": (".cmake",),
    "coffeescript": (".coffee", ".cson", ".iced"),
    "common-lisp": (".lisp", ".lsp", ".cl", ".asd", ".fasl"),
    "css": (".css",),
    "cuda": (".cu", ".cuh"),
    "dart": (".dart",),
    "dockerfile": (".dockerfile",),
    "elixir": (".ex", ".exs"),
    "elm": (".elm",),
    "emacs-lisp": (".el", ".emacs"),
    "erlang": (".erl", ".hrl", ".escript"),
    "f#": (".fs", ".fsi", ".fsx"),
    "fortran": (".f", ".f90", ".f95", ".f03", ".f08", ".for", ".f77", ".ftn"),
    "glsl": (".glsl", ".vert", ".frag", ".geom", ".comp", ".tesc", ".tese", ".vsh", ".fsh"),
    "go": (".go",),
    "groovy": (".groovy", ".gradle", ".gvy", ".gy", ".gsh"),
    "haskell": (".hs", ".hs-boot", ".hsc"),
    "html": (".html", ".htm", ".xhtml", ".inc.html"),
    "idris": (".idr",),
    "isabelle": (".thy",),
    "java": (".java",),
    "java-server-pages": (".jsp", ".jspf", ".tag"),
    "javascript": (".js", ".mjs", ".cjs", ".jsx", ".jsm"),
    "json": (".json", ".jsonc", ".geojson", ".jsonld", ".webmanifest", ".json5"),
    "julia": (".jl",),
    "jupyter-notebook": (".ipynb",),
    "kotlin": (".kt", ".kts", ".ktm"),
    "lean": (".lean",),
    "literate-agda": (".lagda",),
    "literate-coffeescript": (".litcoffee",),
    "literate-haskell": (".lhs",),
    "lua": (".lua",),
    "makefile": (".mk", ".mak", ".make"),
    "maple": (".mpl", ".mw"),
    "markdown": (".md", ".markdown", ".mdown", ".mkd", ".mkdn", ".ronn"),
    "mathematica": (".nb", ".wl", ".wls", ".mt", ".m.nb"),
    "matlab": (".m", ".matlab"),
    "objectc++": (".mm",),
    "ocaml": (".ml", ".mli", ".mll", ".mly"),
    "pascal": (".pas", ".pp", ".dpr", ".lpr", ".dfm"),
    "perl": (".pl", ".pm", ".t", ".pod", ".perl"),
    "php": (".php", ".php3", ".php4", ".php5", ".phtml", ".phps"),
    "powershell": (".ps1", ".psm1", ".psd1"),
    "prolog": (".pro", ".prolog", ".yap"),
    "protocol-buffer": (".proto",),
    "python": (".py", ".pyw", ".pyi", ".pyx", ".pxd", ".gyp", ".bzl"),
    "r": (".r", ".rd", ".rsx"),
    "racket": (".rkt", ".rktl", ".rktd", ".scrbl"),
    "restructuredtext": (".rst", ".rest"),
    "rmarkdown": (".rmd",),
    "ruby": (".rb", ".rake", ".gemspec", ".ru", ".rbw", ".podspec", ".thor"),
    "rust": (".rs",),
    "sas": (".sas",),
    "scala": (".scala", ".sc", ".sbt"),
    "scheme": (".scm", ".ss", ".sld", ".sls", ".sps"),
    "shell": (".sh", ".bash", ".zsh", ".ksh", ".bats", ".command", ".ebuild", ".eclass"),
    "smalltalk": (".st", ".cs.st"),
    "solidity": (".sol",),
    "sparql": (".sparql", ".rq"),
    "sql": (".sql", ".psql", ".ddl", ".pls", ".pkb", ".pks"),
    "stan": (".stan",),
    "standard-ml": (".sml", ".sig", ".fun"),
    "stata": (".do", ".ado", ".doh", ".ihlp", ".matah", ".sthlp"),
    "swift": (".swift",),
    "systemverilog": (".sv", ".svh"),
    "tcl": (".tcl", ".tk", ".itcl", ".adp"),
    "tcsh": (".tcsh", ".csh"),
    "tex": (".tex", ".sty", ".cls", ".bib", ".dtx", ".ins", ".ltx", ".bbx", ".cbx"),
    "thrift": (".thrift",),
    "typescript": (".ts", ".tsx", ".mts", ".cts"),
    "verilog": (".v", ".vh", ".veo"),
    "vhdl": (".vhd", ".vhdl", ".vho", ".vht"),
    "visual-basic": (".vb", ".vbs", ".bas", ".frm", ".vba", ".cls.vb"),
    "vue": (".vue",),
    "xslt": (".xsl", ".xslt"),
    "yacc": (".y", ".yacc", ".yy"),
    "yaml": (".yml", ".yaml", ".yaml-tmlanguage"),
    "zig": (".zig",),
    # data / markup
    "xml": (".xml", ".xsd", ".plist", ".pom", ".csproj", ".vcxproj", ".resx", ".xaml", ".wsdl", ".rss",
            ".atom", ".kml", ".gml", ".xib", ".storyboard", ".iml", ".xul", ".xlf", ".mxml", ".nuspec"),
    "svg": (".svg",),
    "text": (".txt", ".text"),
    "csv": (".csv", ".tsv", ".psv"),
    "toml": (".toml",),
    "ini": (".ini", ".cfg", ".conf", ".properties", ".editorconfig"),
    "roff": (".1", ".2", ".3", ".4", ".5", ".6", ".7", ".8", ".9", ".man", ".roff", ".me", ".ms", ".mdoc"),
    "dot": (".dot", ".gv"),
    "owl": (".owl",),
    "smt": (".smt2", ".smt"),
}

# whole file names (lower-cased), checked before extensions
_NAMES: dict[str, str] = {
    "makefile": "makefile", "gnumakefile": "makefile", "bsdmakefile": "makefile", "kbuild": "makefile",
    "dockerfile": "dockerfile", "containerfile": "dockerfile",
    "cmakelists.txt": "cmake",
    "rakefile": "ruby", "gemfile": "ruby", "guardfile": "ruby", "podfile": "ruby", "vagrantfile": "ruby",
    "brewfile": "ruby", "capfile": "ruby", "fastfile": "ruby",
    "build": "python", "build.bazel": "python", "workspace": "python", "sconstruct": "python",
    "sconscript": "python", "wscript": "python", "snakefile": "python",
    "jenkinsfile": "groovy",
    "emakefile": "erlang", "rebar.config": "erlang",
    ".bashrc": "shell", ".bash_profile": "shell", ".zshrc": "shell", ".profile": "shell", "pkgbuild": "shell",
    "configure": "shell", "gradlew": "shell",
    ".emacs": "emacs-lisp", "cask": "emacs-lisp",
    ".cshrc": "tcsh", ".tcshrc": "tcsh",
    "package.json": "json", "composer.lock": "json", ".babelrc": "json", ".eslintrc": "json", "tsconfig.json": "json",
    "readme": "text", "todo": "text", "notes": "text", "license": "text", "copying": "text", "authors": "text",
    "changelog": "text", "requirements.txt": "text", "install": "text", "news": "text",
    "pipfile": "toml", "cargo.lock": "toml",
    ".gitignore": "ini", ".gitattributes": "ini", ".gitmodules": "ini",
}

# language-name aliases accepted from external metadata (The Stack's ``lang`` column, user configs)
ALIASES: dict[str, str] = {
    "c-sharp": "c#", "csharp": "c#", "c_sharp": "c#", "cpp": "c++", "cplusplus": "c++", "fsharp": "f#",
    "f-sharp": "f#", "objective-c++": "objectc++", "bash": "shell", "sh": "shell", "js": "javascript",
    "ts": "typescript", "py": "python", "golang": "go", "jsp": "java-server-pages", "jupyter": "jupyter-notebook",
    "rst": "restructuredtext", "asm": "assembly", "emacs lisp": "emacs-lisp", "common lisp": "common-lisp",
    "protobuf": "protocol-buffer", "protocol buffer": "protocol-buffer", "visual basic": "visual-basic",
    "vb": "visual-basic", "standard ml": "standard-ml", "sml": "standard-ml", "plain text": "text",
    "tex/latex": "tex", "latex": "tex", "system verilog": "systemverilog", "batch": "batchfile",
    "docker": "dockerfile", "make": "makefile", "yml": "yaml", "md": "markdown", "c++-header": "c++",
}

EXTENSIONS: dict[str, str] = {}
for _lang, _exts in _EXT.items():
    for _e in _exts:
        EXTENSIONS.setdefault(_e, _lang)
FILENAMES = dict(_NAMES)
KNOWN_LANGUAGES: frozenset[str] = frozenset(CODE_LANGUAGES) | frozenset(DATA_LANGUAGES)

# languages whose files are prose or data rather than program text
MARKUP_OR_DATA: frozenset[str] = frozenset(DATA_LANGUAGES) | {
    "html", "json", "yaml", "markdown", "restructuredtext", "tex", "rmarkdown", "jupyter-notebook",
}


def language_of(path: str) -> str | None:
    """Language of a file from its name (whole-name table first, then the longest known suffix)."""
    name = posixpath.basename(path.replace("\\", "/")).lower()
    if not name:
        return None
    if name in FILENAMES:
        return FILENAMES[name]
    if name.startswith("dockerfile.") or name.endswith(".dockerfile"):
        return "dockerfile"
    if name.startswith("makefile.") or name.startswith("gnumakefile."):
        return "makefile"
    # longest suffix first: "x.cs.st" → smalltalk, "x.d.ts" → typescript via ".ts"
    parts = name.split(".")
    for i in range(1, len(parts)):
        lang = EXTENSIONS.get("." + ".".join(parts[i:]))
        if lang:
            return lang
    return None


def canonical_language(name: str | None) -> str | None:
    """A language name from metadata mapped onto the table's names, or ``None`` when unknown."""
    if not name:
        return None
    key = name.strip().lower()
    if key in KNOWN_LANGUAGES:
        return key
    return ALIASES.get(key)
