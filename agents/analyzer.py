#!/usr/bin/env python3
"""analyzer: static facts about a code base, for the Coditect mesh.

Runs under CPython 3.12 for WASI inside the sandbox (standard library only,
no subprocess, threads or network; writes nothing but OUT) and under any
CPython >= 3.9 on a host.

    analyzer.py [--root /workspace] [--out /output] [--max-file-bytes N]

Walks ROOT in sorted order, skipping `.git`, `__pycache__`, `node_modules`,
`.venv`, `venv`, every hidden file or folder (name starting with "."), and
whatever the `.gitignore` files met on the way exclude (a subset of git's
rules: `*`, `?`, `[...]`, `**`, a leading or inner `/` anchors, a trailing
`/` matches folders only, `!` re-includes). Binary files (a NUL byte in the
first 8 KiB) are left out of `files` and named in `skipped`; files larger
than --max-file-bytes (default 1 MiB) are listed in `files` with their line
count but not parsed, and named in `skipped` too.

Writes OUT/report.json (shape below), OUT/summary.md (a short human summary)
and prints one summary line. Everything is sorted; the same tree gives the
same bytes. report.json is plain JSON laid out one record per line.

    {"version": 1,
     "files":     [{"path", "language", "lines", "bytes"}],
     "modules":   [{"path", "module", "docstring"}],            # Python files
     "functions": [{"name", "qualname", "file", "line", "end_line", "signature",
                    "docstring", "complexity", "calls", "method", "async",
                    "decorators"}],
     "classes":   [{"name", "qualname", "file", "line", "end_line", "bases",
                    "methods", "docstring"}],
     "imports":   [{"file", "line", "module", "names"}],
     "todos":     [{"file", "line", "kind", "text"}],
     "tests":     [{"file", "module", "covers", "tests"}],
     "symbols":   [{"name", "kind", "file", "line", "language"}],
     "errors":    [{"file", "message"}],
     "skipped":   [{"path", "reason"}],
     "summary":   {"files", "lines", "bytes", "functions", "classes", "todos",
                   "tests", "test_files", "errors", "languages": {lang: files}}}

Python facts come from `ast` (functions, methods and nested functions;
`qualname` follows `__qualname__`, with `<locals>` for nested functions),
comments from `tokenize` (so a "TODO" inside a string is not one).

Cyclomatic complexity (McCabe-style, as radon and mccabe count decisions):
1, plus 1 for each `if`/`elif`, conditional expression, `for`/`async for`
(in comprehensions too), `while`, `except` handler and `case` of a `match`,
plus 1 for each `if` of a comprehension, plus (operands - 1) for each `and`/
`or` chain. `else`, `finally`, `with`, `assert` and `return` add nothing.
Nested functions and classes are not part of the enclosing function's count
or calls; lambdas are.

`calls` are the dotted names of the call sites in the function's own body
(`helper`, `math.sqrt`, `self.history.append`); calls on other expressions
(`f()()`, `super().x()`) are not named.

`imports`: one entry per imported module: `import a.b as c` gives module
"a.b" and names []; `from ..pkg import x, y` gives module "..pkg" and names
["x", "y"].

`tests`: Python files named `test*.py` or `*_test.py`. `tests` lists the
test functions by name as written (`test_x`, `Class.test_x` for methods of
`unittest.TestCase` subclasses and of `Test*` classes; a parametrized test
is one name). `covers` lists the project's non-test Python files that the
test file names (`test_ops.py` and `ops_test.py` cover every `ops.py` and
every package `ops/__init__.py`) or imports (`import calc.fib`,
`from calc.ops import add`, `from calc import ops`, relative imports),
resolved with the module names of the files: a file's module name is its
path from the first folder upward that has no `__init__.py`.

TODO markers: TODO, FIXME, XXX and HACK, upper case, as a word, inside a
comment; `text` is the rest of the comment after the marker (an optional
"(name)" and ":" dropped). For other languages comments are found by
per-line rules (`//` and `/* */` for the C family, `#` for shell, Ruby,
YAML, TOML, ..., `<!-- -->` for Markdown and HTML, `--` for SQL and Lua,
`;;` for WAT); strings are not understood there.

Symbols of other languages come from line regexes: Rust fn/struct/enum/
trait/impl/mod/type/macro_rules; JavaScript and TypeScript function/class/
arrow functions bound by const, let or var (plus interface/type/enum for
TypeScript); Go func (method with a receiver)/type; C and C++ function
definitions that start at column 0, struct/union/enum/class; Java and Kotlin
classes, methods and funs; Ruby class/module/def; shell functions;
Markdown headings. Python symbols are its functions, methods and classes.
"""

import argparse
import ast
import fnmatch
import io
import json
import os
import re
import sys
import time
import tokenize

VERSION = 1
DEFAULT_MAX_FILE_BYTES = 1 << 20
BINARY_PROBE = 8192
SKIP_DIRS = frozenset({".git", "__pycache__", "node_modules", ".venv", "venv"})
TEST_PATTERNS = ("test*.py", "*_test.py")
MAX_DOCSTRING = 2000

EXTENSIONS = {
    ".py": "python", ".pyi": "python", ".pyw": "python",
    ".rs": "rust",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".tsx": "typescript", ".mts": "typescript", ".cts": "typescript",
    ".go": "go",
    ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".hpp": "cpp", ".hh": "cpp", ".hxx": "cpp",
    ".java": "java",
    ".kt": "kotlin", ".kts": "kotlin",
    ".rb": "ruby",
    ".sh": "shell", ".bash": "shell", ".zsh": "shell",
    ".md": "markdown", ".markdown": "markdown",
    ".toml": "toml",
    ".yaml": "yaml", ".yml": "yaml",
    ".json": "json",
    ".wat": "wat", ".wast": "wat",
    ".html": "html", ".htm": "html", ".xml": "xml", ".svg": "xml",
    ".css": "css", ".scss": "css",
    ".sql": "sql",
    ".lua": "lua",
    ".swift": "swift",
    ".php": "php",
    ".cs": "csharp",
    ".scala": "scala",
    ".pl": "perl", ".pm": "perl",
    ".r": "r",
    ".ini": "ini", ".cfg": "ini",
    ".txt": "text", ".rst": "text",
}
FILENAMES = {
    "Makefile": "make", "makefile": "make", "GNUmakefile": "make",
    "Dockerfile": "dockerfile", "CMakeLists.txt": "cmake",
    "Cargo.lock": "toml", "Gemfile": "ruby", "Rakefile": "ruby",
}
SHEBANGS = (("python", "python"), ("bash", "shell"), ("/sh", "shell"), ("zsh", "shell"),
            ("node", "javascript"), ("ruby", "ruby"), ("perl", "perl"))

# Comment rules per language: (line comment markers, block comment (open, close) or None).
C_FAMILY = (("//",), ("/*", "*/"))
HASH = (("#",), None)
COMMENT_RULES = {
    "rust": C_FAMILY, "javascript": C_FAMILY, "typescript": C_FAMILY, "go": C_FAMILY,
    "c": C_FAMILY, "cpp": C_FAMILY, "java": C_FAMILY, "kotlin": C_FAMILY,
    "swift": C_FAMILY, "csharp": C_FAMILY, "scala": C_FAMILY, "php": (("//", "#"), ("/*", "*/")),
    "css": ((), ("/*", "*/")),
    "python": HASH, "shell": HASH, "ruby": HASH, "yaml": HASH, "toml": HASH, "make": HASH,
    "dockerfile": HASH, "cmake": HASH, "perl": HASH, "r": HASH, "ini": (("#", ";"), None),
    "markdown": ((), ("<!--", "-->")), "html": ((), ("<!--", "-->")), "xml": ((), ("<!--", "-->")),
    "sql": (("--",), ("/*", "*/")), "lua": (("--",), None), "wat": ((";;",), ("(;", ";)")),
}
TODO_RE = re.compile(r"\b(TODO|FIXME|XXX|HACK)\b(?:\([^)]*\))?:?\s*(.*)")
TODO_QUICK = re.compile(r"\b(?:TODO|FIXME|XXX|HACK)\b")

_ID = r"[A-Za-z_]\w*"
_JS_ID = r"[A-Za-z_$][\w$]*"
_RUST_VIS = r"(?:pub(?:\s*\([^)]*\))?\s+)?"
_JS_EXPORT = r"(?:export\s+(?:default\s+)?)?(?:declare\s+)?"
_JAVA_MODS = r"(?:(?:public|protected|private|static|final|abstract|sealed|non-sealed|strictfp)\s+)*"
_KT_MODS = (r"(?:(?:public|private|protected|internal|override|open|abstract|final|suspend|inline|"
            r"operator|infix|tailrec|external|data|sealed|enum|annotation|inner|value|expect|actual)\s+)*")

# Symbol rules: (regex matched at the start of the stripped line or of the raw line, kind, group).
# A kind of None takes the kind from the named group "kind".
SYMBOL_RULES = {
    "rust": [
        (re.compile(_RUST_VIS + r"(?:default\s+)?(?:(?:const|async|unsafe|extern(?:\s+\"[^\"]*\")?)\s+)*fn\s+(" + _ID + ")"), "function"),
        (re.compile(_RUST_VIS + r"struct\s+(" + _ID + ")"), "struct"),
        (re.compile(_RUST_VIS + r"union\s+(" + _ID + r")\s*[{<]"), "union"),
        (re.compile(_RUST_VIS + r"enum\s+(" + _ID + ")"), "enum"),
        (re.compile(_RUST_VIS + r"(?:unsafe\s+)?(?:auto\s+)?trait\s+(" + _ID + ")"), "trait"),
        (re.compile(r"(?:unsafe\s+)?impl(?:\s*<.*?>)?\s+([^{]+?)\s*(?:\bwhere\b[^{]*)?\{?\s*$"), "impl"),
        (re.compile(_RUST_VIS + r"mod\s+(" + _ID + ")"), "module"),
        (re.compile(_RUST_VIS + r"type\s+(" + _ID + ")"), "type"),
        (re.compile(r"macro_rules!\s*(" + _ID + ")"), "macro"),
    ],
    "javascript": [
        (re.compile(_JS_EXPORT + r"(?:async\s+)?function\s*\*?\s*(" + _JS_ID + ")"), "function"),
        (re.compile(_JS_EXPORT + r"(?:abstract\s+)?class\s+(" + _JS_ID + ")"), "class"),
        (re.compile(_JS_EXPORT + r"(?:const|let|var)\s+(" + _JS_ID + r")\s*(?::[^=]+)?=\s*(?:async\s+)?"
                    r"(?:function\b|\([^)]*\)\s*(?::[^=]+)?=>|" + _JS_ID + r"\s*=>)"), "function"),
    ],
    "go": [
        (re.compile(r"func\s+\([^)]*\)\s*(" + _ID + ")"), "method"),
        (re.compile(r"func\s+(" + _ID + ")"), "function"),
        (re.compile(r"type\s+(" + _ID + r")(?:\[[^\]]*\])?\s+struct\b"), "struct"),
        (re.compile(r"type\s+(" + _ID + r")(?:\[[^\]]*\])?\s+interface\b"), "interface"),
        (re.compile(r"type\s+(" + _ID + r")\b"), "type"),
    ],
    "java": [
        (re.compile(_JAVA_MODS + r"(?P<kind>class|interface|enum|record)\s+(" + _ID + ")"), None),
        (re.compile(r"(?:(?:public|protected|private|static|final|abstract|synchronized|native|default)\s+)+"
                    r"(?:<[^>]+>\s+)?[\w<>\[\]?,.]+(?:\s*<[^()]*>)?\s+(" + _ID + r")\s*\([^;]*$"), "method"),
    ],
    "kotlin": [
        (re.compile(_KT_MODS + r"fun\s+(?:<[^>]+>\s*)?(?:[\w.<>]+\.)?(" + _ID + ")"), "function"),
        (re.compile(_KT_MODS + r"(?P<kind>class|interface|object)\s+(" + _ID + ")"), None),
    ],
    "ruby": [
        (re.compile(r"def\s+(?:self\.)?([A-Za-z_]\w*[?!=]?)"), "method"),
        (re.compile(r"class\s+([A-Z][\w:]*)"), "class"),
        (re.compile(r"module\s+([A-Z][\w:]*)"), "module"),
    ],
    "shell": [
        (re.compile(r"function\s+([\w.:-]+)"), "function"),
        (re.compile(r"([A-Za-z_][\w.:-]*)\s*\(\s*\)"), "function"),
    ],
}
SYMBOL_RULES["typescript"] = SYMBOL_RULES["javascript"] + [
    (re.compile(_JS_EXPORT + r"interface\s+(" + _JS_ID + ")"), "interface"),
    (re.compile(_JS_EXPORT + r"type\s+(" + _JS_ID + r")\s*(?:<[^=]*>)?\s*="), "type"),
    (re.compile(_JS_EXPORT + r"(?:const\s+)?enum\s+(" + _JS_ID + ")"), "enum"),
]

C_KEYWORDS = frozenset({"if", "for", "while", "switch", "return", "sizeof", "else", "do",
                        "case", "goto", "typedef", "defined", "catch"})
C_FUNC_RE = re.compile(r"(?:[A-Za-z_][\w:<>,*&\s]*?[\s*&])?(~?[A-Za-z_][\w]*(?:::~?[A-Za-z_]\w*)*)\s*\(")
C_TYPE_RE = re.compile(r"(?:typedef\s+)?(?:template\s*<.*>\s*)?(struct|union|enum|class)\s+([A-Za-z_]\w*)\s*(?:final\s*)?(?::[^;{]*)?\{?\s*$")
C_NAMESPACE_RE = re.compile(r"namespace\s+([A-Za-z_][\w:]*)\s*\{?\s*$")
MD_HEADING_RE = re.compile(r"(#{1,6})\s+(.+?)\s*#*\s*$")


def parse_args(argv):
    parser = argparse.ArgumentParser(description="Static facts about a code base.")
    parser.add_argument("--root", default="/workspace", help="tree to analyze (default /workspace)")
    parser.add_argument("--out", default="/output", help="where report.json and summary.md go (default /output)")
    parser.add_argument("--max-file-bytes", type=int, default=DEFAULT_MAX_FILE_BYTES,
                        help="files larger than this are listed but not parsed (default 1 MiB)")
    return parser.parse_args(argv)


def dump_json(obj, f):
    """obj (a dict) as JSON with one record per line: top-level lists put
    each item on its own line, everything else is compact. It parses like
    any JSON, diffs line by line, and uses the C encoder (json.dump with
    indent= is pure Python, and several times slower)."""
    encode = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": ")).encode
    f.write("{")
    for index, (key, value) in enumerate(obj.items()):
        f.write(",\n" if index else "\n")
        f.write(encode(key) + ": ")
        if isinstance(value, list) and value:
            f.write("[\n  " + ",\n  ".join(encode(item) for item in value) + "\n ]")
        else:
            f.write(encode(value))
    f.write("\n}\n")


def ensure_dir(path):
    """os.makedirs without touching "/": under WASI stat("/") fails, and
    os.makedirs checks every ancestor."""
    path = os.path.abspath(path)
    missing = []
    while path and not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder)
        except FileExistsError:
            pass


# ---------------------------------------------------------------- walking

class GitIgnore:
    """The .gitignore rules met while walking: each rule applies below its folder."""

    def __init__(self):
        self.rules = []  # (base "" or "a/b", regex, negate, dir_only)

    def add_file(self, base, text):
        for raw in text.splitlines():
            line = raw.rstrip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            if negate:
                line = line[1:]
            if line.startswith("\\"):
                line = line[1:]
            dir_only = line.endswith("/")
            line = line.rstrip("/")
            if not line:
                continue
            anchored = "/" in line
            line = line.lstrip("/")
            regex = _glob_regex(line, anchored)
            if regex is not None:
                self.rules.append((base, regex, negate, dir_only))

    def ignored(self, rel, is_dir):
        result = False
        for base, regex, negate, dir_only in self.rules:
            if dir_only and not is_dir:
                continue
            if base:
                if not rel.startswith(base + "/"):
                    continue
                sub = rel[len(base) + 1:]
            else:
                sub = rel
            if regex.match(sub):
                result = not negate
        return result


def _glob_regex(pattern, anchored):
    out = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                i += 2
                if i < n and pattern[i] == "/":
                    out.append("(?:.*/)?")
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:j].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body + "]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    body = "".join(out)
    # Unanchored patterns match a name at any depth; both match a folder's contents.
    prefix = "" if anchored else "(?:.*/)?"
    try:
        return re.compile(prefix + body + "(?:/.*)?$", re.S)
    except re.error:
        return None


def walk(root):
    """(files, package_dirs): files as sorted relative paths, '/'-separated."""
    files = []
    package_dirs = set()
    ignore = GitIgnore()
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        full_dir = os.path.join(root, rel_dir) if rel_dir else root
        try:
            entries = sorted(os.scandir(full_dir), key=lambda e: e.name)
        except OSError:
            continue
        names = {e.name for e in entries}
        if ".gitignore" in names:
            try:
                with open(os.path.join(full_dir, ".gitignore"), encoding="utf-8", errors="replace") as f:
                    ignore.add_file(rel_dir, f.read())
            except OSError:
                pass
        if "__init__.py" in names:
            package_dirs.add(rel_dir)
        subdirs = []
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            rel = rel_dir + "/" + name if rel_dir else name
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
                is_file = entry.is_file()
            except OSError:
                continue
            if is_dir:
                if name in SKIP_DIRS or ignore.ignored(rel, True):
                    continue
                subdirs.append(rel)
            elif is_file and not ignore.ignored(rel, False):
                files.append(rel)
        stack.extend(reversed(subdirs))
    files.sort()
    return files, package_dirs


def language_of(rel, head):
    name = rel.rsplit("/", 1)[-1]
    if name in FILENAMES:
        return FILENAMES[name]
    dot = name.rfind(".")
    if dot > 0:
        lang = EXTENSIONS.get(name[dot:].lower())
        if lang:
            return lang
    if head.startswith(b"#!"):
        first = head.split(b"\n", 1)[0].decode("latin-1")
        for needle, lang in SHEBANGS:
            if needle in first:
                return lang
    return "other"


def count_lines(data):
    if not data:
        return 0
    n = data.count(b"\n")
    return n if data.endswith(b"\n") else n + 1


# ---------------------------------------------------------------- Python

def module_name(rel, package_dirs):
    parts = rel.split("/")
    stem = parts[-1].rsplit(".", 1)[0]
    names = [] if stem == "__init__" else [stem]
    dirs = parts[:-1]
    while dirs and "/".join(dirs) in package_dirs:
        names.insert(0, dirs[-1])
        dirs.pop()
    return ".".join(names) if names else stem


def dotted(node):
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def clip_doc(doc):
    if doc is None:
        return None
    return doc if len(doc) <= MAX_DOCSTRING else doc[:MAX_DOCSTRING] + "…"


def _unparse(node):
    try:
        return ast.unparse(node)
    except Exception:  # very deep expressions
        return "…"


_FUNC_TYPES = (ast.FunctionDef, ast.AsyncFunctionDef)
_BRANCH_TYPES = tuple(t for t in (ast.If, ast.IfExp, ast.For, ast.AsyncFor, ast.While,
                                  ast.ExceptHandler, getattr(ast, "match_case", None)) if t)
_LEAF_TYPES = frozenset((ast.Name, ast.Constant, ast.Load, ast.Store, ast.Del, ast.alias, ast.Pass,
                         ast.arg, ast.Break, ast.Continue))
_AST = ast.AST
# Statements, and the nodes that hold statement lists (except handlers, match cases).
_STATEMENTS = tuple(t for t in (ast.stmt, ast.ExceptHandler, getattr(ast, "match_case", None)) if t)
_FIELDS = {}


def analyze_python(rel, data, facts):
    """Adds the facts of one Python file to facts; returns (docstring, imports, tree)."""
    imports = []
    try:
        tree = ast.parse(data, filename=rel)
    except SyntaxError as exc:
        facts["errors"].append({"file": rel, "message": "syntax error at line %s: %s" % (exc.lineno, exc.msg)})
        python_todos(rel, data, facts, broken=True)
        return None, imports, None
    except (ValueError, RecursionError, MemoryError) as exc:
        facts["errors"].append({"file": rel, "message": "cannot parse: %s" % exc})
        return None, imports, None
    module_doc = clip_doc(ast.get_docstring(tree))
    functions, classes, symbols = facts["functions"], facts["classes"], facts["symbols"]
    # (node, function record or None, qualname prefix, scope kind)
    stack = [(node, None, "", "module") for node in reversed(tree.body)]
    while stack:
        node, fn, prefix, scope = stack.pop()
        kind = type(node)
        if kind in (ast.FunctionDef, ast.AsyncFunctionDef):
            qual = prefix + node.name
            is_method = scope == "class"
            returns = " -> " + _unparse(node.returns) if node.returns is not None else ""
            record = {
                "name": node.name,
                "qualname": qual,
                "file": rel,
                "line": node.lineno,
                "end_line": getattr(node, "end_lineno", node.lineno),
                "signature": "%s(%s)%s" % (node.name, _unparse(node.args), returns),
                "docstring": clip_doc(ast.get_docstring(node)),
                "complexity": 1,
                "calls": set(),
                "method": is_method,
                "async": kind is ast.AsyncFunctionDef,
                "decorators": [_unparse(d) for d in node.decorator_list],
            }
            functions.append(record)
            symbols.append({"name": node.name, "kind": "method" if is_method else "function",
                            "file": rel, "line": node.lineno, "language": "python"})
            # Decorators and defaults run in the enclosing scope.
            outer = node.decorator_list + node.args.defaults + [d for d in node.args.kw_defaults if d is not None]
            for child in reversed(outer):
                stack.append((child, fn, prefix, scope))
            for child in reversed(node.body):
                stack.append((child, record, qual + ".<locals>.", "function"))
            continue
        if kind is ast.ClassDef:
            qual = prefix + node.name
            record = {
                "name": node.name,
                "qualname": qual,
                "file": rel,
                "line": node.lineno,
                "end_line": getattr(node, "end_lineno", node.lineno),
                "bases": [_unparse(b) for b in node.bases],
                "methods": [s.name for s in node.body if isinstance(s, _FUNC_TYPES)],
                "docstring": clip_doc(ast.get_docstring(node)),
            }
            classes.append(record)
            symbols.append({"name": node.name, "kind": "class", "file": rel, "line": node.lineno,
                            "language": "python"})
            for child in reversed(node.decorator_list + node.bases + [k.value for k in node.keywords]):
                stack.append((child, fn, prefix, scope))
            for child in reversed(node.body):
                stack.append((child, None, qual + ".", "class"))
            continue
        if kind is ast.Import:
            for alias in node.names:
                imports.append({"file": rel, "line": node.lineno, "module": alias.name, "names": []})
            continue
        if kind is ast.ImportFrom:
            module = "." * (node.level or 0) + (node.module or "")
            imports.append({"file": rel, "line": node.lineno, "module": module,
                            "names": [a.name for a in node.names]})
            continue
        if fn is not None:
            if kind in _BRANCH_TYPES:
                fn["complexity"] += 1
            elif kind is ast.BoolOp:
                fn["complexity"] += len(node.values) - 1
            elif kind is ast.comprehension:
                fn["complexity"] += 1 + len(node.ifs)
            elif kind is ast.Call:
                name = dotted(node.func)
                if name:
                    fn["calls"].add(name)
        # The children, inlined (ast.iter_child_nodes is a generator, slow under WASI).
        # Outside a function only statements matter (defs and imports), so
        # expressions are not entered there.
        fields = _FIELDS.get(kind)
        if fields is None:
            fields = _FIELDS[kind] = tuple(f for f in kind._fields if f not in ("ctx", "type_comment"))
        for field in fields:
            value = getattr(node, field, None)
            if type(value) is list:
                for child in value:
                    if isinstance(child, _AST) and type(child) not in _LEAF_TYPES \
                            and (fn is not None or isinstance(child, _STATEMENTS)):
                        stack.append((child, fn, prefix, scope))
            elif isinstance(value, _AST) and type(value) not in _LEAF_TYPES \
                    and (fn is not None or isinstance(value, _STATEMENTS)):
                stack.append((value, fn, prefix, scope))
    facts["imports"].extend(imports)
    python_todos(rel, data, facts)
    return module_doc, imports, tree


def python_todos(rel, data, facts, broken=False):
    text = data.decode("utf-8", "replace")
    if not TODO_QUICK.search(text):
        return
    found = []
    if not broken:
        try:
            for tok in tokenize.tokenize(io.BytesIO(data).readline):
                if tok.type == tokenize.COMMENT:
                    found.append((tok.start[0], tok.string[1:]))
        except (tokenize.TokenError, SyntaxError, UnicodeDecodeError):
            found = None
    if broken or found is None:
        found = []
        for number, line in enumerate(text.split("\n"), 1):
            at = line.find("#")
            if at >= 0:
                found.append((number, line[at + 1:]))
    for number, comment in found:
        add_todo(facts, rel, number, comment)


def add_todo(facts, rel, number, comment):
    match = TODO_RE.search(comment)
    if match:
        text = match.group(2).strip()
        for closer in ("*/", "-->", ";)"):
            if text.endswith(closer):
                text = text[: -len(closer)].rstrip()
        facts["todos"].append({"file": rel, "line": number, "kind": match.group(1), "text": text})


# ---------------------------------------------------------------- other languages

def other_todos(rel, lang, text, facts):
    rules = COMMENT_RULES.get(lang)
    if rules is None or not TODO_QUICK.search(text):
        return
    line_markers, block = rules
    in_block = False
    for number, line in enumerate(text.split("\n"), 1):
        comments = []
        pos = 0
        while pos <= len(line):
            if in_block:
                end = line.find(block[1], pos)
                if end < 0:
                    comments.append(line[pos:])
                    break
                comments.append(line[pos:end])
                pos = end + len(block[1])
                in_block = False
                continue
            best, best_kind = -1, None
            for marker in line_markers:
                at = line.find(marker, pos)
                if at >= 0 and (best < 0 or at < best):
                    best, best_kind = at, marker
            if block:
                at = line.find(block[0], pos)
                if at >= 0 and (best < 0 or at < best):
                    best, best_kind = at, None
            if best < 0:
                break
            if best_kind is not None:
                comments.append(line[best + len(best_kind):])
                break
            in_block = True
            pos = best + len(block[0])
        for comment in comments:
            if TODO_QUICK.search(comment):
                add_todo(facts, rel, number, comment)
                break


def other_symbols(rel, lang, text, facts):
    symbols = facts["symbols"]
    if lang in ("c", "cpp"):
        c_symbols(rel, lang, text, symbols)
        return
    if lang == "markdown":
        fence = False
        for number, line in enumerate(text.split("\n"), 1):
            if line.lstrip().startswith(("```", "~~~")):
                fence = not fence
                continue
            if not fence and line.startswith("#"):
                match = MD_HEADING_RE.match(line)
                if match:
                    symbols.append({"name": match.group(2), "kind": "heading", "file": rel,
                                    "line": number, "language": lang})
        return
    rules = SYMBOL_RULES.get(lang)
    if not rules:
        return
    for number, line in enumerate(text.split("\n"), 1):
        stripped = line.lstrip()
        if not stripped or stripped[0] in "/*#\"'":
            continue
        for regex, kind in rules:
            match = regex.match(stripped)
            if match:
                name = match.group(match.lastindex if kind is None else 1)
                if kind is None:
                    kind = match.group("kind")
                if lang == "rust" and kind == "impl":
                    name = " ".join(name.split())
                symbols.append({"name": name, "kind": kind, "file": rel, "line": number, "language": lang})
                break


def c_symbols(rel, lang, text, symbols):
    lines = text.split("\n")
    in_block = False
    for index, line in enumerate(lines):
        if in_block:
            if "*/" in line:
                in_block = False
            continue
        if line.startswith("/*") and "*/" not in line:
            in_block = True
            continue
        if not line or line[0] in " \t#/*}{)":
            continue
        match = C_TYPE_RE.match(line)
        if match:
            kind = "struct" if match.group(1) in ("struct", "union") else match.group(1)
            symbols.append({"name": match.group(2), "kind": kind, "file": rel,
                            "line": index + 1, "language": lang})
            continue
        match = C_NAMESPACE_RE.match(line)
        if match:
            symbols.append({"name": match.group(1), "kind": "namespace", "file": rel,
                            "line": index + 1, "language": lang})
            continue
        match = C_FUNC_RE.match(line)
        if not match:
            continue
        name = match.group(1)
        if name in C_KEYWORDS or "=" in line[: match.start(1)]:
            continue
        # A definition reaches "{" before ";" within a few lines.
        rest = line[match.end():]
        for follow in lines[index + 1:index + 8]:
            if "{" in rest or ";" in rest:
                break
            rest += "\n" + follow
        brace, semi = rest.find("{"), rest.find(";")
        if brace >= 0 and (semi < 0 or brace < semi):
            symbols.append({"name": name, "kind": "function", "file": rel,
                            "line": index + 1, "language": lang})


# ---------------------------------------------------------------- tests and coverage

def is_test_file(rel):
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(name, p) for p in TEST_PATTERNS)


def test_stem(rel):
    stem = rel.rsplit("/", 1)[-1][:-3]
    if stem.startswith("test_"):
        return stem[5:]
    if stem.endswith("_test"):
        return stem[:-5]
    return stem[4:].lstrip("_")


def test_names(tree):
    """Test names of a parsed test module, in source order."""
    names = []
    classes = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            classes[node.name] = node

    def is_case(node, seen=()):
        for base in node.bases:
            text = dotted(base) or ""
            last = text.rsplit(".", 1)[-1]
            if last.endswith("TestCase"):
                return True
            if last in classes and last not in seen and is_case(classes[last], seen + (node.name,)):
                return True
        return False

    def methods(node, seen=()):
        own = [s.name for s in node.body if isinstance(s, _FUNC_TYPES) and s.name.startswith("test")]
        inherited = []
        for base in node.bases:
            last = (dotted(base) or "").rsplit(".", 1)[-1]
            if last in classes and last not in seen and last != node.name:
                inherited.extend(m for m in methods(classes[last], seen + (node.name,)) if m not in own)
        return inherited + own

    for node in tree.body:
        if isinstance(node, _FUNC_TYPES) and node.name.startswith("test"):
            names.append(node.name)
        elif isinstance(node, ast.ClassDef) and (is_case(node) or node.name.startswith("Test")):
            names.extend(node.name + "." + m for m in methods(node))
    return names


def resolve_import(entry, own_module, is_package, modules):
    """Project files an import entry names."""
    module = entry["module"]
    level = len(module) - len(module.lstrip("."))
    name = module[level:]
    if level:
        base = own_module.split(".") if own_module else []
        if not is_package:
            base = base[:-1]
        if level > 1:
            base = base[: len(base) - (level - 1)] if level - 1 <= len(base) else []
        name = ".".join([p for p in base + ([name] if name else []) if p])
    found = []
    if entry["names"]:
        for sub in entry["names"]:
            candidate = name + "." + sub if name else sub
            if candidate in modules:
                found.extend(modules[candidate])
            elif name in modules:
                found.extend(modules[name])
    elif name in modules:
        found.extend(modules[name])
    return found


def test_coverage(python_files, module_of, trees, imports_of):
    modules = {}
    stems = {}
    for rel in python_files:
        if is_test_file(rel) or rel.rsplit("/", 1)[-1] == "conftest.py":
            continue
        modules.setdefault(module_of[rel], []).append(rel)
        parts = rel.split("/")
        stem = parts[-1][:-3] if parts[-1].endswith(".py") else parts[-1].rsplit(".", 1)[0]
        if stem == "__init__" and len(parts) > 1:
            stem = parts[-2]
        stems.setdefault(stem, []).append(rel)
    tests = []
    for rel in python_files:
        if not is_test_file(rel) or not rel.endswith(".py"):
            continue
        covers = set(stems.get(test_stem(rel), ()))
        own = module_of[rel]
        is_package = rel.endswith("/__init__.py")
        for entry in imports_of.get(rel, ()):
            covers.update(resolve_import(entry, own, is_package, modules))
        covers.discard(rel)
        tree = trees.get(rel)
        tests.append({"file": rel, "module": own, "covers": sorted(covers),
                      "tests": test_names(tree) if tree is not None else []})
    return tests


# ---------------------------------------------------------------- main analysis

def analyze(root, max_file_bytes):
    facts = {k: [] for k in ("files", "modules", "functions", "classes", "imports", "todos",
                             "symbols", "errors", "skipped")}
    files, package_dirs = walk(root)
    python_files, module_of, trees, imports_of = [], {}, {}, {}
    for rel in files:
        full = os.path.join(root, rel)
        try:
            with open(full, "rb") as f:
                head = f.read(BINARY_PROBE)
                if b"\0" in head:
                    facts["skipped"].append({"path": rel, "reason": "binary"})
                    continue
                size = os.fstat(f.fileno()).st_size
                if size > max_file_bytes:
                    lines = head.count(b"\n")
                    last = head[-1:]
                    while True:
                        chunk = f.read(1 << 20)
                        if not chunk:
                            break
                        lines += chunk.count(b"\n")
                        last = chunk[-1:]
                    if last and last != b"\n":
                        lines += 1
                    lang = language_of(rel, head)
                    facts["files"].append({"path": rel, "language": lang, "lines": lines, "bytes": size})
                    facts["skipped"].append({"path": rel, "reason": "larger than %d bytes (%d), not parsed"
                                             % (max_file_bytes, size)})
                    if lang == "python" and rel.endswith(".py"):
                        # Not parsed, but a module all the same: tests may cover it by name.
                        module = module_name(rel, package_dirs)
                        facts["modules"].append({"path": rel, "module": module, "docstring": None})
                        python_files.append(rel)
                        module_of[rel] = module
                    continue
                data = head + f.read()
        except OSError as exc:
            facts["errors"].append({"file": rel, "message": "cannot read: %s" % (exc.strerror or exc)})
            continue
        lang = language_of(rel, data[:BINARY_PROBE])
        facts["files"].append({"path": rel, "language": lang, "lines": count_lines(data), "bytes": len(data)})
        if lang == "python":
            doc, imports, tree = analyze_python(rel, data, facts)
            module = module_name(rel, package_dirs)
            facts["modules"].append({"path": rel, "module": module, "docstring": doc})
            python_files.append(rel)
            module_of[rel] = module
            imports_of[rel] = imports
            if tree is not None and is_test_file(rel):
                trees[rel] = tree
        else:
            text = data.decode("utf-8", "replace")
            other_todos(rel, lang, text, facts)
            other_symbols(rel, lang, text, facts)
    for fn in facts["functions"]:
        fn["calls"] = sorted(fn["calls"])
    tests = test_coverage(python_files, module_of, trees, imports_of)
    by_file_line = lambda r: (r["file"], r["line"])
    facts["functions"].sort(key=lambda r: (r["file"], r["line"], r["qualname"]))
    facts["classes"].sort(key=lambda r: (r["file"], r["line"], r["qualname"]))
    facts["imports"].sort(key=lambda r: (r["file"], r["line"], r["module"]))
    facts["todos"].sort(key=by_file_line)
    facts["symbols"].sort(key=lambda r: (r["file"], r["line"], r["name"], r["kind"]))
    facts["errors"].sort(key=lambda r: (r["file"], r["message"]))
    languages = {}
    for entry in facts["files"]:
        languages[entry["language"]] = languages.get(entry["language"], 0) + 1
    summary = {
        "files": len(facts["files"]),
        "lines": sum(f["lines"] for f in facts["files"]),
        "bytes": sum(f["bytes"] for f in facts["files"]),
        "functions": len(facts["functions"]),
        "classes": len(facts["classes"]),
        "todos": len(facts["todos"]),
        "tests": sum(len(t["tests"]) for t in tests),
        "test_files": len(tests),
        "errors": len(facts["errors"]),
        "skipped": len(facts["skipped"]),
        "languages": dict(sorted(languages.items())),
    }
    return {
        "version": VERSION,
        "files": facts["files"],
        "modules": facts["modules"],
        "functions": facts["functions"],
        "classes": facts["classes"],
        "imports": facts["imports"],
        "todos": facts["todos"],
        "tests": tests,
        "symbols": facts["symbols"],
        "errors": facts["errors"],
        "skipped": facts["skipped"],
        "summary": summary,
    }


def _md(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def summary_markdown(report):
    s = report["summary"]
    out = ["# Code base summary", ""]
    out.append("%d files, %d lines, %d functions, %d classes, %d TODOs, %d tests in %d test files, %d errors."
               % (s["files"], s["lines"], s["functions"], s["classes"], s["todos"], s["tests"],
                  s["test_files"], s["errors"]))
    out += ["", "## Languages", "", "| language | files | lines |", "| --- | ---: | ---: |"]
    lines_by_lang = {}
    for f in report["files"]:
        lines_by_lang[f["language"]] = lines_by_lang.get(f["language"], 0) + f["lines"]
    for lang, count in sorted(s["languages"].items(), key=lambda kv: (-kv[1], kv[0])):
        out.append("| %s | %d | %d |" % (lang, count, lines_by_lang.get(lang, 0)))
    functions = report["functions"]
    if functions:
        out += ["", "## Most complex functions", "", "| function | file:line | complexity | lines |",
                "| --- | --- | ---: | ---: |"]
        ranked = sorted(functions, key=lambda f: (-f["complexity"], f["file"], f["line"]))[:10]
        for f in ranked:
            out.append("| `%s` | %s:%d | %d | %d |" % (_md(f["qualname"]), _md(f["file"]), f["line"],
                                                      f["complexity"], f["end_line"] - f["line"] + 1))
        out += ["", "## Largest functions", "", "| function | file:line | lines |", "| --- | --- | ---: |"]
        ranked = sorted(functions, key=lambda f: (-(f["end_line"] - f["line"]), f["file"], f["line"]))[:10]
        for f in ranked:
            out.append("| `%s` | %s:%d | %d |" % (_md(f["qualname"]), _md(f["file"]), f["line"],
                                                 f["end_line"] - f["line"] + 1))
    if report["todos"]:
        out += ["", "## TODOs", ""]
        for t in report["todos"][:20]:
            out.append("- %s:%d %s: %s" % (t["file"], t["line"], t["kind"], _md(t["text"])))
        if len(report["todos"]) > 20:
            out.append("- … and %d more" % (len(report["todos"]) - 20))
    if report["tests"]:
        out += ["", "## Test files", "", "| test file | tests | covers |", "| --- | ---: | --- |"]
        for t in report["tests"][:40]:
            covers = ", ".join(t["covers"][:6]) + (" …" if len(t["covers"]) > 6 else "")
            out.append("| %s | %d | %s |" % (_md(t["file"]), len(t["tests"]), _md(covers) or "—"))
        if len(report["tests"]) > 40:
            out.append("")
            out.append("… and %d more test files." % (len(report["tests"]) - 40))
    if report["errors"]:
        out += ["", "## Errors", ""]
        for e in report["errors"][:20]:
            out.append("- %s: %s" % (e["file"], _md(e["message"])))
        if len(report["errors"]) > 20:
            out.append("- … and %d more" % (len(report["errors"]) - 20))
    if report["skipped"]:
        out += ["", "## Skipped", ""]
        for e in report["skipped"][:10]:
            out.append("- %s: %s" % (e["path"], e["reason"]))
        if len(report["skipped"]) > 10:
            out.append("- … and %d more" % (len(report["skipped"]) - 10))
    out.append("")
    return "\n".join(out)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    root = os.path.normpath(args.root)
    if not os.path.isdir(root):
        print("analyzer: %s is not a folder" % root, file=sys.stderr)
        return 2
    report = analyze(root, args.max_file_bytes)
    ensure_dir(args.out)
    with open(os.path.join(args.out, "report.json"), "w", encoding="utf-8") as f:
        dump_json(report, f)
    with open(os.path.join(args.out, "summary.md"), "w", encoding="utf-8") as f:
        f.write(summary_markdown(report))
    s = report["summary"]
    langs = ", ".join("%s %d" % kv for kv in sorted(s["languages"].items(), key=lambda kv: (-kv[1], kv[0])))
    print("analyzer: %d files (%s), %d lines, %d functions, %d classes, %d TODOs, %d tests in %d files, "
          "%d errors, %d ms" % (s["files"], langs or "none", s["lines"], s["functions"], s["classes"],
                                s["todos"], s["tests"], s["test_files"], s["errors"],
                                round((time.perf_counter() - started) * 1000)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
