#!/usr/bin/env python3
"""coder: changes a workspace with a language model, for the Coditect mesh.

The agent behind `builtin:coder`, `builtin:docs` and `builtin:general`. Runs
under CPython 3.12 for WASI inside the sandbox (standard library only: no
subprocess, threads or network; the model is reached through the node's
`llm` capability, see coditect.py) and under any CPython >= 3.9 on a host.

    coder.py [--kind coder|docs|general] [--workspace /workspace] [--input /input]
             [--out /output] [--budget-tokens N]

Without --kind the kind is the script's name when that is docs.py or
general.py, else coder (the node installs this script as
/input/.coditect/coder.py, docs.py and general.py, next to coditect.py).

Reads (every read capped; nothing but OUT is written):
- INPUT/input.txt: the task's text (256 KiB at most).
- INPUT/deps/*/report.json: the first analyzer report, if any (files,
  functions, classes, symbols, tests); without one the workspace's Python
  files are scanned with `ast` (and a few line patterns for other languages).
- INPUT/.coditect/retry.json: {"attempt", "kind", "detail"} when an earlier
  attempt of this task failed, e.g. bad_model_output with what was wrong;
  the prompt says so and asks for a corrected answer.
- INPUT/failure/tests.json (the tester's format) and INPUT/failure/summary.txt:
  a fix round; the failing tests and their messages (8 KiB at most) go into
  the prompt, with the request to fix the code (or tests that contradict the
  task).
- WORKSPACE: walked in sorted order, skipping `.git`, `__pycache__`,
  `node_modules`, `.venv`, `venv` and hidden names; files over 1 MiB and
  binary files (a NUL byte in the first 8 KiB, or not UTF-8) are listed but
  never shown.

With neither task text nor a failure there is nothing to do: exit 2.

Which files the model sees in full, within --budget-tokens (default 24000;
a token is estimated as 4 characters), in this order:
  1. files the task or failure text names: by path (also at the end of a
     longer path such as /workspace/calc/fib.py), by dotted module name, by
     base name, then by stem (`fib` names calc/fib.py; a package's
     __init__.py has the package's name; stems shorter than 3 are ignored);
  2. files defining a function, class or other symbol the text names;
  3. the project modules those files import (Python, resolved like the
     analyzer: from the first folder upward without __init__.py, or from the
     root);
  4. their tests (test_STEM.*, STEM_test.*, STEM.test.*, STEM.spec.*, test
     files that import them, and what the report's `tests` says they cover);
  5. the other source and text files, smallest first (documentation first
     for the docs kind).
A file of 1-4 that does not fit is named as "relevant, not shown". The
prompt also lists every workspace path (at most 400).

The answer must give whole files, each in a fenced block whose info string
has `path=FILE` (```python path=calc/fib.py ... ```). parse_edits() reads it
strictly (see its docstring); an answer with no such block, an unclosed one,
a bad path (absolute, `..`, `.git/`, ...), the same path twice, more than 200
blocks or over 4 MiB, or a path that is a folder in the workspace, is
violation `bad_model_output` with the reason: OUT/violation.json, exit 0
(the node retries the task with that reason in retry.json).

Writes, on success: OUT/workspace/PATH for each changed file (a block equal
to the workspace's file is not written, and is listed as unchanged),
OUT/coder.json {"kind", "files", "unchanged", "model", "tokens_in",
"tokens_out", "finish_reason", "prompt_files"}, OUT/answer.md (the model's
answer, 1 MiB at most; also written when the answer is rejected) and one
stdout line: `coder: wrote 2 files (calc/fib.py, tests/test_fib.py); ...`.

Model errors: kind unavailable or provider is violation `llm_unavailable`
("unavailable: ..."), exit 0; limit, bad_request and not_granted are the
task's own error: a line on stderr, exit 3.

Exit codes: 0 done (or a violation reported in OUT/violation.json), 2 bad
arguments or nothing to do, 3 the model cannot be used for this task.
"""

import argparse
import ast
import json
import os
import re
import sys
import unicodedata

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
import coditect  # noqa: E402  (next to this script, in the sandbox and on a host)
from coditect import cut, ensure_dir, err, out, read_capped, read_text  # noqa: E402

KINDS = ("coder", "docs", "general")
DEFAULT_BUDGET_TOKENS = 24000
CHARS_PER_TOKEN = 4
MAX_FILE_BYTES = 1 << 20
MAX_TASK_BYTES = 256 << 10
MAX_TESTS_JSON_BYTES = 8 << 20
MAX_SUMMARY_CHARS = 4096
MAX_FAILURE_CHARS = 8192
MAX_TEST_MESSAGE_CHARS = 1500
MAX_LISTING = 400
MAX_SCAN_BYTES = 8 << 20
MAX_EDITS = 200
MAX_EDIT_BYTES = 4 << 20
MAX_PATH_BYTES = 4096
MIN_STEM = 3
BINARY_PROBE = 8192
EXIT_USAGE = 2

LANGUAGES = {
    ".py": "python", ".pyi": "python", ".rs": "rust", ".js": "javascript", ".mjs": "javascript",
    ".cjs": "javascript", ".jsx": "jsx", ".ts": "typescript", ".tsx": "tsx", ".go": "go", ".c": "c",
    ".h": "c", ".cc": "cpp", ".cpp": "cpp", ".hpp": "cpp", ".java": "java", ".kt": "kotlin",
    ".rb": "ruby", ".sh": "sh", ".bash": "bash", ".md": "markdown", ".markdown": "markdown",
    ".rst": "rst", ".txt": "text", ".toml": "toml", ".yaml": "yaml", ".yml": "yaml", ".json": "json",
    ".html": "html", ".css": "css", ".sql": "sql", ".lua": "lua", ".wat": "wat", ".ini": "ini",
    ".cfg": "ini", ".xml": "xml", ".swift": "swift", ".php": "php", ".cs": "csharp", ".scala": "scala",
}
NAMED_TEXT_FILES = frozenset({"Makefile", "Dockerfile", "CMakeLists.txt", "Gemfile", "Rakefile",
                              "LICENSE", "README", "CHANGELOG", "NOTICE"})
DOC_EXTENSIONS = frozenset({".md", ".markdown", ".rst", ".txt"})
SYMBOL_LINE_RE = re.compile(
    r"^\s*(?:export\s+)?(?:pub(?:\([^)]*\))?\s+)?(?:async\s+)?(?:unsafe\s+)?"
    r"(?:fn|def|function|class|struct|enum|trait|interface|type|func|module)\s+([A-Za-z_]\w*)", re.M)
WORD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
PATHISH_RE = re.compile(r"[\w./\-]+")

SYSTEM_PROMPTS = {
    "coder": (
        "You are a careful software engineer changing the code base shown below. Make the change the "
        "task asks for, and only that: keep the project's style, structure and public names, keep its "
        "tests passing, and add or update tests when you change behaviour. Read the files you are "
        "given before you change them; do not invent modules or functions that are not there."),
    "docs": (
        "You are a technical writer documenting the project shown below. Write or update its "
        "documentation as the task asks, in Markdown unless the project uses another format: accurate "
        "to the code you are shown, concise, with short examples where they help. Change code only "
        "where the task asks for it (docstrings, comments)."),
    "general": (
        "You are a careful engineer making the change the task below asks for in the project shown: "
        "code, tests, documentation, configuration or data, whatever the task needs. Keep the "
        "project's conventions and change nothing the task does not need."),
}

ANSWER_FORMAT = """\
How to answer:
- Give every file you create or change whole, each in its own fenced block whose info string names \
the file's path relative to the workspace root, like this:

```python path=calc/fib.py
(the whole new content of calc/fib.py)
```

- The block's content replaces that file, or creates it if it is new. Nothing else in your answer is \
applied: no diffs, patches or partial edits, so never leave parts out ("...", "rest unchanged"). A \
file you do not give stays as it is; files cannot be deleted or renamed.
- Paths are relative to the workspace root ("calc/fib.py", not "/workspace/calc/fib.py"), use "/" \
between folders, never contain "..", and cannot be under .git/. Quote a path with spaces: \
path="docs/user guide.md".
- If a file's content has lines starting with ```, open and close its block with more backticks \
than any such line has (````), or with ~~~.
- Give each path once. Keep explanations short and outside the blocks; blocks without path= are \
ignored."""


class BadOutput(Exception):
    """The model's answer cannot be applied; str(error) is the reason, one line."""


# ---------------------------------------------------------------- the workspace

class Workspace:
    """The workspace's files: sorted '/'-separated paths, sizes, and their
    text when it can be shown."""

    def __init__(self, root):
        self.root = root
        self.files = []
        self.sizes = {}
        self.package_dirs = set()
        self._text = {}
        entries, self.truncated = coditect.walk_workspace(root, with_sizes=True)
        for rel, size in entries:
            self.files.append(rel)
            self.sizes[rel] = size
            if rel.rsplit("/", 1)[-1] == "__init__.py":
                self.package_dirs.add(rel.rpartition("/")[0])

    def full(self, rel):
        return os.path.join(self.root, *rel.split("/"))

    def text(self, rel):
        """The file's text, or None: binary, not UTF-8, over 1 MiB, unreadable."""
        if rel in self._text:
            return self._text[rel]
        text = None
        if self.sizes.get(rel, MAX_FILE_BYTES + 1) <= MAX_FILE_BYTES:
            got = read_capped(self.full(rel), MAX_FILE_BYTES)
            if got is not None and got[1] and b"\0" not in got[0][:BINARY_PROBE]:
                try:
                    text = got[0].decode("utf-8")
                except UnicodeDecodeError:
                    text = None
        self._text[rel] = text
        return text


def stem_of(rel):
    """A file's stem for matching: `fib` for calc/fib.py, `calc` for
    calc/__init__.py."""
    parts = rel.split("/")
    name = parts[-1]
    stem = name.split(".", 1)[0] if not name.startswith(".") else name
    if stem == "__init__" and len(parts) > 1:
        return parts[-2]
    return stem


def module_names(rel, package_dirs):
    """Dotted names a Python file is imported by: from the first folder
    upward without __init__.py (as the analyzer), and from the root."""
    if not rel.endswith(".py"):
        return []
    parts = rel[:-3].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    if not parts:
        return []
    names = [".".join(parts)]
    folders = rel.split("/")[:-1]
    start = len(folders)
    while start > 0 and "/".join(folders[:start]) in package_dirs:
        start -= 1
    analyzer_style = ".".join(parts[start:])
    if analyzer_style and analyzer_style not in names:
        names.insert(0, analyzer_style)
    return names


def is_test_file(rel):
    name = rel.rsplit("/", 1)[-1]
    stem = name.split(".", 1)[0]
    return (stem.startswith("test") or stem.endswith("_test") or ".test." in name or ".spec." in name
            or name == "conftest.py")


def is_doc_file(rel):
    return os.path.splitext(rel)[1].lower() in DOC_EXTENSIONS or rel.rsplit("/", 1)[-1] in ("README", "CHANGELOG")


def is_source_like(rel):
    name = rel.rsplit("/", 1)[-1]
    return os.path.splitext(name)[1].lower() in LANGUAGES or name in NAMED_TEXT_FILES


def language_tag(rel):
    name = rel.rsplit("/", 1)[-1]
    if name in ("Makefile", "GNUmakefile"):
        return "make"
    if name == "Dockerfile":
        return "dockerfile"
    return LANGUAGES.get(os.path.splitext(name)[1].lower(), "text")


# ---------------------------------------------------------------- facts

class Facts:
    """Symbols (name -> files defining it) and test coverage (test file ->
    files it covers), from the analyzer's report or a scan."""

    def __init__(self):
        self.symbols = {}
        self.covers = {}

    def add_symbol(self, name, rel):
        if isinstance(name, str) and len(name) >= MIN_STEM and not name.startswith("__"):
            files = self.symbols.setdefault(name, [])
            if rel not in files:
                files.append(rel)


def facts_from_report(report, ws):
    facts = Facts()
    known = set(ws.files)
    for key in ("functions", "classes", "symbols"):
        for record in report.get(key) or ():
            if isinstance(record, dict) and record.get("file") in known:
                facts.add_symbol(record.get("name"), record["file"])
    for record in report.get("tests") or ():
        if isinstance(record, dict) and record.get("file") in known and isinstance(record.get("covers"), list):
            facts.covers[record["file"]] = {c for c in record["covers"] if c in known}
    return facts


def scan_facts(ws):
    """Symbols without a report: Python by `ast`, other source by line patterns."""
    facts = Facts()
    budget = MAX_SCAN_BYTES
    for rel in ws.files:
        if not is_source_like(rel) or ws.sizes[rel] > budget:
            continue
        text = ws.text(rel)
        if text is None:
            continue
        budget -= ws.sizes[rel]
        if rel.endswith(".py"):
            tree = parse_python(text)
            if tree is not None:
                for node in ast.walk(tree):
                    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        facts.add_symbol(node.name, rel)
                continue
        if not is_doc_file(rel):
            for match in SYMBOL_LINE_RE.finditer(text):
                facts.add_symbol(match.group(1), rel)
    return facts


def parse_python(text):
    try:
        return ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


# ---------------------------------------------------------------- task inputs

def read_failure(input_dir):
    """The fix round's text (summary, then the failing tests and their
    messages, at most MAX_FAILURE_CHARS), or "" when there is none."""
    folder = os.path.join(input_dir, "failure")
    parts = []
    summary = read_text(os.path.join(folder, "summary.txt"), MAX_SUMMARY_CHARS * 4)
    if summary and summary.strip():
        parts.append(cut(summary.strip(), MAX_SUMMARY_CHARS))
    report = coditect.read_json(os.path.join(folder, "tests.json"), MAX_TESTS_JSON_BYTES, "coder")
    if isinstance(report, dict):
        tests = [t for t in report.get("tests") or () if isinstance(t, dict)
                 and t.get("outcome") in ("failed", "error")]
        counts = []
        for key in ("passed", "failed", "errors"):
            if isinstance(report.get(key), int):
                counts.append("%d %s" % (report[key], key))
        lines = ["Failing tests (%s):" % ", ".join(counts) if counts else "Failing tests:"]
        used = len(lines[0])
        for index, test in enumerate(tests):
            message = cut(str(test.get("message") or "").strip(), MAX_TEST_MESSAGE_CHARS)
            entry = "- %s (%s)" % (str(test.get("name") or "?"), test["outcome"])
            if message:
                entry += "\n" + "\n".join("    " + line for line in message.splitlines())
            if used + len(entry) > MAX_FAILURE_CHARS and index:
                lines.append("- ... and %d more failing tests" % (len(tests) - index))
                break
            lines.append(entry)
            used += len(entry) + 1
        if tests:
            parts.append("\n".join(lines))
    return "\n\n".join(parts)


# ---------------------------------------------------------------- choosing files

def mentions(text):
    """(words, paths, dotted, plain), each mapping to its first position:
    every identifier; path-like tokens and each of their '/'-suffixes;
    dotted prefixes of tokens with dots but no '/'; tokens with neither
    (the words that can name a stem: `calc` in calc/fib.py names a folder,
    not calc/__init__.py)."""
    words, paths, dotted, plain = {}, {}, {}, {}
    for match in WORD_RE.finditer(text):
        words.setdefault(match.group(), match.start())
    for match in PATHISH_RE.finditer(text):
        token = match.group().rstrip(".-")
        position = match.start()
        if not token:
            continue
        piece = token.lstrip("/")
        while piece:
            paths.setdefault(piece, position)
            slash = piece.find("/")
            if slash < 0:
                break
            piece = piece[slash + 1:]
        if "/" in token:
            continue
        if "." in token:
            pieces = token.split(".")
            for end in range(1, len(pieces) + 1):
                dotted.setdefault(".".join(pieces[:end]), position)
        else:
            plain.setdefault(token, position)
    return words, paths, dotted, plain


def named_files(ws, text):
    """Files the text names: by path, module, base name, then stem."""
    _, paths, dotted, plain = mentions(text)
    ranked = []
    for rel in ws.files:
        base = rel.rsplit("/", 1)[-1]
        stem = stem_of(rel)
        if rel in paths:
            ranked.append((0, paths[rel], rel))
            continue
        found = [dotted[m] for m in module_names(rel, ws.package_dirs) if "." in m and m in dotted]
        if found:
            ranked.append((0, min(found), rel))
        elif base in paths:
            ranked.append((1, paths[base], rel))
        elif len(stem) >= MIN_STEM and stem in plain:
            ranked.append((2, plain[stem], rel))
    ranked.sort()
    return [rel for _, _, rel in ranked]


def defining_files(facts, text):
    """Files defining a symbol the text names, in the order the text names them."""
    words = mentions(text)[0]
    ranked = {}
    for name, position in words.items():
        for rel in facts.symbols.get(name, ()):
            if rel not in ranked or position < ranked[rel]:
                ranked[rel] = position
    return [rel for rel, _ in sorted(ranked.items(), key=lambda kv: (kv[1], kv[0]))]


class ModuleIndex:
    """Dotted module name -> the workspace's Python files."""

    def __init__(self, ws):
        self.ws = ws
        self.files = {}
        self.own = {}
        self._imports = {}
        for rel in ws.files:
            names = module_names(rel, ws.package_dirs)
            if names:
                self.own[rel] = names[0]
            for name in names:
                self.files.setdefault(name, [])
                if rel not in self.files[name]:
                    self.files[name].append(rel)

    def imports_of(self, rel):
        """The workspace files a Python file imports (direct imports only)."""
        if rel not in self._imports:
            self._imports[rel] = self._find_imports(rel) if rel.endswith(".py") else []
        return self._imports[rel]

    def _find_imports(self, rel):
        text = self.ws.text(rel)
        tree = parse_python(text) if text is not None else None
        if tree is None:
            return []
        found = []
        own = self.own.get(rel, "")
        package = own if rel.endswith("__init__.py") else own.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    found.extend(self.files.get(alias.name, ()))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".") if package else []
                    parts = parts[:len(parts) - (node.level - 1)] if node.level - 1 <= len(parts) else []
                    base = ".".join(p for p in parts + ([base] if base else []) if p)
                for alias in node.names:
                    candidate = base + "." + alias.name if base else alias.name
                    if candidate in self.files:
                        found.extend(self.files[candidate])
                    elif base in self.files:
                        found.extend(self.files[base])
        result = []
        for dep in found:
            if dep != rel and dep not in result:
                result.append(dep)
        return result


def tests_of(ws, index, facts, rel):
    """Test files of a non-test file: by name, by what they import, by the report."""
    if is_test_file(rel):
        return []
    stem = stem_of(rel)
    found = []
    for candidate in ws.files:
        if candidate == rel or not is_test_file(candidate):
            continue
        name = candidate.rsplit("/", 1)[-1]
        cstem = name.split(".", 1)[0]
        if (cstem in ("test_" + stem, stem + "_test", "test" + stem)
                or name.startswith(stem + ".test.") or name.startswith(stem + ".spec.")):
            found.append(candidate)
        elif rel in facts.covers.get(candidate, ()):
            found.append(candidate)
        elif candidate.endswith(".py") and rel.endswith(".py") and ws.sizes[candidate] <= MAX_FILE_BYTES \
                and rel in index.imports_of(candidate):
            found.append(candidate)
    return found


def file_cost(rel, text):
    """Estimated tokens of a file shown in the prompt (its block included)."""
    return (len(text) + len(rel) + 32) // CHARS_PER_TOKEN + 1


def choose_files(ws, facts, text, budget_tokens, kind="coder"):
    """(shown, not_shown): shown is [(path, text)] in prompt order within the
    budget; not_shown the relevant files (tiers 1-4) that did not fit or
    cannot be shown."""
    order, seen = [], set()

    def add(rels):
        for rel in rels:
            if rel not in seen:
                seen.add(rel)
                order.append(rel)

    add(named_files(ws, text))
    add(defining_files(facts, text))
    index = ModuleIndex(ws)
    for rel in list(order):
        add(index.imports_of(rel))
    for rel in list(order):
        add(tests_of(ws, index, facts, rel))
    shown, not_shown = [], []
    left = budget_tokens
    for rel in order:
        content = ws.text(rel)
        if content is None:
            not_shown.append(rel)
            continue
        cost = file_cost(rel, content)
        if cost > left:
            not_shown.append(rel)
            continue
        shown.append((rel, content))
        left -= cost
    rest = [rel for rel in ws.files if rel not in seen and is_source_like(rel)]
    if kind == "docs":
        rest.sort(key=lambda rel: (not is_doc_file(rel), ws.sizes[rel], rel))
    else:
        rest.sort(key=lambda rel: (ws.sizes[rel], rel))
    for rel in rest:
        if file_cost(rel, "") + ws.sizes[rel] // CHARS_PER_TOKEN > left:
            if kind == "docs":
                continue
            break
        content = ws.text(rel)
        if content is None:
            continue
        cost = file_cost(rel, content)
        if cost <= left:
            shown.append((rel, content))
            left -= cost
    return shown, not_shown


# ---------------------------------------------------------------- the prompt

def fence_for(content):
    """A backtick fence longer than any run of backticks in content."""
    longest = max((len(run) for run in re.findall(r"`{3,}", content)), default=0)
    return "`" * max(3, longest + 1)


def info_path(rel):
    if re.search(r"[\s\"']", rel):
        return 'path="%s"' % rel if '"' not in rel else "path='%s'" % rel
    return "path=" + rel


def file_block(rel, content):
    fence = fence_for(content)
    body = content if content.endswith("\n") or not content else content + "\n"
    return "%s%s %s\n%s%s" % (fence, language_tag(rel), info_path(rel), body, fence)


def listing_section(ws):
    lines = ["# Workspace files (%d%s)" % (len(ws.files), "+" if ws.truncated else ""), ""]
    if not ws.files:
        lines.append("(the workspace is empty)")
    lines.extend(ws.files[:MAX_LISTING])
    if len(ws.files) > MAX_LISTING:
        lines.append("... and %d more" % (len(ws.files) - MAX_LISTING))
    return "\n".join(lines)


def build_messages(kind, task, failure, retry, ws, shown, not_shown):
    system = SYSTEM_PROMPTS[kind] + "\n\n" + ANSWER_FORMAT
    sections = ["# Task\n\n" + (task.strip() or "(no task text: fix the failures below)")]
    if retry:
        sections.append(coditect.retry_section(
            retry, "give each file you change whole, in a fenced block whose info string has path=FILE, "
            "as described above."))
    if failure:
        sections.append("# Tests failed after the last change\n\n" + failure + "\n\n"
                        "Fix the code so that these tests pass. If a test is wrong according to the task, "
                        "fix the test instead.")
    sections.append(listing_section(ws))
    if not_shown:
        sections.append("# Relevant files not shown (too large or not text)\n\n" + "\n".join(not_shown)
                        + "\n\nDo not rewrite a file you have not been shown unless the task needs it.")
    if shown:
        sections.append("# Files\n\n" + "\n\n".join(file_block(rel, content) for rel, content in shown))
    sections.append("Answer with the whole content of each file you create or change, each in a block "
                    "opened by ```LANG path=FILE.")
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(sections)}]


# ---------------------------------------------------------------- the answer

PATH_TOKEN_RE = re.compile(r"""(?:^|\s)path=(?:"([^"]*)"|'([^']*)'|(\S*))""")


def _path_in_info(info):
    """The value of the info string's path= token, or None without one."""
    match = PATH_TOKEN_RE.search(info)
    if not match:
        return None
    for group in match.groups():
        if group is not None:
            return group
    return ""


def check_path(value):
    """The workspace-relative path a block names, or BadOutput saying why not."""
    if not value:
        raise BadOutput("a block has an empty path=")
    unprintable = any(unicodedata.category(c) in ("Cc", "Cs") for c in value)
    shown = ascii(value[:200]) if unprintable else value[:200]
    if len(value.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise BadOutput("the path %s... is longer than %d bytes" % (shown[:80], MAX_PATH_BYTES))
    if unprintable:
        raise BadOutput("the path %s has control characters" % shown)
    if "\\" in value:
        raise BadOutput("the path %s has a backslash; separate folders with /" % shown)
    if value.startswith("/"):
        raise BadOutput("the path %s is absolute; paths are relative to the workspace root" % shown)
    path = value
    while path.startswith("./"):
        path = path[2:]
    parts = path.split("/")
    if not path or "" in parts:
        raise BadOutput("the path %s has an empty component (// or a trailing /)" % shown)
    if ".." in parts or "." in parts:
        raise BadOutput("the path %s has a . or .. component; paths stay inside the workspace" % shown)
    if any(part.lower() == ".git" for part in parts):
        raise BadOutput("the path %s is under .git/, which cannot be changed" % shown)
    if parts[0] == ".coditect":
        raise BadOutput("the path %s is under .coditect/, which cannot be changed" % shown)
    return path


def parse_edits(text):
    """[(path, content)] of the answer's edit blocks, in order; BadOutput
    when the answer cannot be applied.

    A fence opens at a line of >= 3 backticks or >= 3 tildes (indented by at
    most 3 spaces) followed by an info string (with backticks, no backtick
    in it); it closes at a line of the same character, at least as many,
    indented by at most 3 spaces, with nothing after it but spaces and tabs.
    Blocks whose info string has a `path=VALUE` token (VALUE may be quoted
    with " or ') are edits; other blocks are skipped whole. The content is
    the lines between the fences (CRLF read as LF, up to the fence's own
    indentation removed from each, as Markdown does) joined with "\\n", plus
    a final newline when not empty."""
    lines = text.replace("\r\n", "\n").split("\n")
    edits, seen, total = [], set(), 0
    i = 0
    while i < len(lines):
        opened = coditect.open_fence(lines[i])
        if opened is None:
            i += 1
            continue
        indent, fence, info = opened
        end = i + 1
        while end < len(lines) and not coditect.closes_fence(lines[end], fence):
            end += 1
        value = _path_in_info(info)
        if value is None:
            i = end + 1
            continue
        path = check_path(value)
        if end >= len(lines):
            raise BadOutput("the block for %s is not closed" % path)
        if path in seen:
            raise BadOutput("the path %s is given twice" % path)
        if len(edits) >= MAX_EDITS:
            raise BadOutput("the answer has more than %d blocks naming a path" % MAX_EDITS)
        body = [_dedent(line, indent) for line in lines[i + 1:end]]
        content = "\n".join(body)
        if content:
            content += "\n"
        total += len(content.encode("utf-8", "replace"))
        if total > MAX_EDIT_BYTES:
            raise BadOutput("the answer's files are larger than %d MiB in all" % (MAX_EDIT_BYTES >> 20))
        seen.add(path)
        edits.append((path, content))
        i = end + 1
    if not edits:
        raise BadOutput("the answer has no fenced block naming a path (```LANG path=FILE)")
    return edits


def _dedent(line, indent):
    strip = 0
    while strip < indent and strip < len(line) and line[strip] == " ":
        strip += 1
    return line[strip:]


def check_against_workspace(ws_root, edits):
    """BadOutput when an edit cannot be written over the workspace: its path
    is a folder there, needs a folder that is a file there, or is both a
    file and a folder among the edits."""
    paths = {path for path, _ in edits}
    for path, _ in edits:
        parts = path.split("/")
        if os.path.isdir(os.path.join(ws_root, *parts)):
            raise BadOutput("the path %s is a folder in the workspace" % path)
        for end in range(1, len(parts)):
            prefix = "/".join(parts[:end])
            if prefix in paths:
                raise BadOutput("the path %s is given as a file and as a folder (of %s)" % (prefix, path))
            full = os.path.join(ws_root, *parts[:end])
            if os.path.lexists(full) and not os.path.isdir(full):
                raise BadOutput("the path %s needs the folder %s, which is a file in the workspace"
                                % (path, prefix))


def same_as_workspace(ws_root, path, data):
    full = os.path.join(ws_root, *path.split("/"))
    try:
        if os.path.getsize(full) != len(data):
            return False
        with open(full, "rb") as f:
            return f.read(len(data) + 1) == data
    except OSError:
        return False


def apply_edits(ws_root, out_dir, edits):
    """(written, unchanged): writes each changed file to OUT/workspace/PATH."""
    check_against_workspace(ws_root, edits)
    target_root = os.path.join(out_dir, "workspace")
    written, unchanged = [], []
    for path, content in edits:
        data = content.encode("utf-8", "replace")
        if same_as_workspace(ws_root, path, data):
            unchanged.append(path)
            continue
        target = os.path.join(target_root, *path.split("/"))
        ensure_dir(os.path.dirname(target))
        with open(target, "wb") as f:
            f.write(data)
        written.append(path)
    return written, unchanged


# ---------------------------------------------------------------- main

def default_kind(argv0):
    name = os.path.basename(argv0 or "")
    if name.endswith(".py"):
        name = name[:-3]
    return name if name in ("docs", "general") else "coder"


def parse_args(argv, argv0):
    parser = argparse.ArgumentParser(prog=os.path.basename(argv0 or "coder.py"),
                                     description="Changes a workspace with a language model.")
    parser.add_argument("--kind", choices=KINDS, default=None,
                        help="coder, docs or general (default: from the script's name, else coder)")
    parser.add_argument("--workspace", default="/workspace", help="the project, read-only (default /workspace)")
    parser.add_argument("--input", default="/input", help="the task's inputs (default /input)")
    parser.add_argument("--out", default="/output", help="where changes and coder.json go (default /output)")
    parser.add_argument("--budget-tokens", type=int, default=DEFAULT_BUDGET_TOKENS,
                        help="tokens of file contents in the prompt (default %d)" % DEFAULT_BUDGET_TOKENS)
    args = parser.parse_args(argv)
    if args.kind is None:
        args.kind = default_kind(argv0)
    if args.budget_tokens < 0:
        parser.error("--budget-tokens must not be negative")
    return args


def read_task(input_dir):
    return coditect.read_input_text(os.path.join(input_dir, "input.txt"), MAX_TASK_BYTES, "the task text")


def summary_line(kind, written, unchanged, answer):
    names = ", ".join(written[:10]) + (", ..." if len(written) > 10 else "")
    line = "%s: wrote %d file%s" % (kind, len(written), "" if len(written) == 1 else "s")
    if written:
        line += " (%s)" % names
    if unchanged:
        line += ", %d unchanged" % len(unchanged)
    return line + "; model %s, %d tokens in, %d out" % (answer.model or "?", answer.tokens_in, answer.tokens_out)


def main(argv=None, argv0=None):
    argv0 = sys.argv[0] if argv0 is None else argv0
    args = parse_args(sys.argv[1:] if argv is None else argv, argv0)
    kind = args.kind
    out_dir = os.path.abspath(args.out)
    task = read_task(args.input)
    retry = coditect.read_retry(args.input, "coder")
    failure = read_failure(args.input)
    if not task.strip() and not failure:
        err("%s: no task text in %s and no failure to fix" % (kind, os.path.join(args.input, "input.txt")))
        return EXIT_USAGE
    ws = Workspace(args.workspace)
    report = coditect.find_report(args.input, "coder")
    facts = facts_from_report(report, ws) if report is not None else scan_facts(ws)
    match_text = "\n".join([task, failure, retry["detail"] if retry else ""])
    shown, not_shown = choose_files(ws, facts, match_text, args.budget_tokens, kind)
    messages = build_messages(kind, task, failure, retry, ws, shown, not_shown)
    ensure_dir(out_dir)
    answer, code = coditect.ask_llm(messages, out_dir, kind, purpose=kind)
    if answer is None:
        return code
    coditect.write_answer(out_dir, answer.content)
    try:
        edits = parse_edits(answer.content)
        written, unchanged = apply_edits(args.workspace, out_dir, edits)
    except BadOutput as exc:
        return coditect.report_bad_output(str(exc), answer, out_dir, kind)
    record = {"kind": kind, "files": written, "unchanged": unchanged, "model": answer.model,
              "tokens_in": answer.tokens_in, "tokens_out": answer.tokens_out,
              "finish_reason": answer.finish_reason, "prompt_files": [rel for rel, _ in shown]}
    with open(os.path.join(out_dir, "coder.json"), "w", encoding="utf-8") as f:
        json.dump(record, f, ensure_ascii=False)
        f.write("\n")
    out(summary_line(kind, written, unchanged, answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
