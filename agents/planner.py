#!/usr/bin/env python3
"""planner: breaks a goal into tasks for the Coditect mesh, with a language model.

The agent behind `builtin:planner`. Runs under CPython 3.12 for WASI inside
the sandbox (standard library only: no subprocess, threads or network; the
model is reached through the node's `llm` capability, see coditect.py) and
under any CPython >= 3.11 on a host (it needs `tomllib`).

    planner.py [--workspace /workspace] [--input /input] [--out /output]

The node installs this script as /input/.coditect/planner.py, next to
coditect.py.

Reads (every read capped; nothing but OUT is written):
- INPUT/input.txt: the goal (256 KiB at most). Missing or blank: exit 2.
- INPUT/deps/*/report.json: the first analyzer report (by dependency name),
  if any: its files, functions, classes, other symbols and tests go into
  the prompt. Without one (or without a file list in it) the prompt lists
  the workspace's files instead (walked in sorted order, skipping `.git`,
  `__pycache__`, `node_modules`, `.venv`, `venv` and hidden names; 400
  paths at most).
- INPUT/deps/*: the names of the planner's dependencies are task ids taken
  in the mission; the prompt says so and the fragment may not use them.
- INPUT/.coditect/retry.json: {"attempt", "kind", "detail"} when an earlier
  attempt failed (e.g. bad_model_output and what was wrong); the prompt
  says so and asks for a corrected answer.

The model is asked (purpose "planner", temperature 0) for a mission
fragment: one TOML document in a ```toml fenced block holding only
`[[task]]` tables with the keys id, module, needs, title and input.
parse_fragment() reads it strictly (see its docstring). Any problem is
violation `bad_model_output` with a one-line reason naming the task and key:
OUT/violation.json, exit 0 (the node retries the task with that reason in
retry.json).

Writes, on success:
- OUT/subtasks.toml: the fragment, normalised: one `[[task]]` table per
  task, in the model's order, keys in the order id, module, needs, title,
  input (needs, title and input left out when empty or absent), every
  string a TOML basic string, lists as ["a", "b"]. Titles are made one
  line (whitespace and control characters become single spaces, cut to
  512 bytes). The node adds these tasks to the running mission after the
  planner (the planner's dependents then also wait for them).
- OUT/plan.json: {"tasks": [{"id", "module", "needs", "title"}], "model",
  "tokens_in", "tokens_out"} (title null when there is none).
- OUT/answer.md: the model's answer (1 MiB at most; also written when the
  answer is rejected).
- one stdout line: `planner: 3 tasks (analyze -> code -> test); model M,
  N tokens in, K out` (the ids in dependency order, 8 at most, then ...).

Model errors: kind unavailable or provider is violation `llm_unavailable`
("unavailable: ..."), exit 0; limit, bad_request and not_granted are the
task's own error: a line on stderr, exit 3.

Exit codes: 0 done (or a violation reported in OUT/violation.json), 2 bad
arguments or no goal, 3 the model cannot be used for this task.
"""

import argparse
import json
import os
import re
import sys
import tomllib
import unicodedata

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
import coditect  # noqa: E402  (next to this script, in the sandbox and on a host)
from coditect import cut, ensure_dir, err, one_line, out  # noqa: E402

MODULES = ("builtin:analyzer", "builtin:coder", "builtin:tester", "builtin:docs", "builtin:general")
CHANGE_MODULES = frozenset({"builtin:coder", "builtin:docs", "builtin:general"})
TASK_KEYS = ("id", "module", "needs", "title", "input")
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
MAX_ID_CHARS = 64
MIN_TASKS = 1
MAX_TASKS = 32
MAX_TITLE_BYTES = 512
MAX_FRAGMENT_BYTES = 256 << 10
MAX_GOAL_BYTES = 256 << 10
MAX_LISTING = 400
MAX_SYMBOLS = 400
MAX_SYMBOL_CHARS = 24000
MAX_TESTS_LISTED = 100
MAX_SUMMARY_IDS = 8
EXIT_USAGE = 2

SYSTEM_PROMPT = """\
You plan software work for the Coditect mesh, a set of agents that change a code base. The goal \
below is one step of a running mission: break it into a small graph of tasks for the mesh's agents. \
Answer with exactly one TOML document in a ```toml fenced block, and nothing else of substance.

The document has only `[[task]]` tables, one per task, each with these keys and no others:
- `id`: the task's name: letters, digits, `.`, `_` and `-`, at most 64 characters, starting with a \
letter or digit; unique.
- `module`: the agent that runs the task, one of:
  - "builtin:analyzer": reads the code base and reports its files, functions, classes and tests; \
changes nothing. A task that needs it gets its report.
  - "builtin:coder": changes code (and its tests) as its `input` says.
  - "builtin:tester": runs the project's tests and reports which pass and which fail.
  - "builtin:docs": writes or updates documentation as its `input` says.
  - "builtin:general": any other change (configuration, data, scripts, ...) as its `input` says.
- `needs` (optional): the ids of tasks of this document that must finish first; a task sees the \
changes and reports of the tasks it needs.
- `title`: one line saying what the task does.
- `input`: the instructions for that task's agent, self-contained: the agent sees only this text, \
the workspace and what the tasks it needs left, not the goal or the other tasks. Name the files, \
functions and behaviour concerned. Required for coder, docs and general tasks. Write long \
instructions as a TOML multi-line string (\"\"\"...\"\"\").

Rules:
- 2 to 12 tasks; fewer when the goal is small.
- Every change (a builtin:coder, builtin:docs or builtin:general task) is followed by a \
builtin:tester task that needs the last change.
- Tasks that change the same files must depend on each other (one needs the other, directly or \
not); tasks that change different files may run side by side.
- No cycles: a task cannot need itself or a task that (directly or not) needs it.
- No other keys and no other tables: no `workspace`, `name`, `inputs`, `args`, `requires` or \
`limits`.

For example:

```toml
[[task]]
id = "analyze"
module = "builtin:analyzer"
title = "Read the code base"
input = "Report the files, functions and tests."

[[task]]
id = "fib-memo"
module = "builtin:coder"
needs = ["analyze"]
title = "Add a memoized fib to calc/fib.py"
input = \"\"\"In calc/fib.py add fib_memo(n), a memoized version of fib(n) with the same errors, \
and tests for it in tests/test_fib.py.\"\"\"

[[task]]
id = "test"
module = "builtin:tester"
needs = ["fib-memo"]
title = "Run the tests"
```"""


class BadOutput(Exception):
    """The model's answer is not a usable fragment; str(error) is the reason, one line."""


def shown(value, limit=60):
    """A value from the answer, quoted for a reason: one line, bounded."""
    if isinstance(value, str):
        return json.dumps(cut(value, limit), ensure_ascii=False)
    return cut(one_line(json.dumps(value, ensure_ascii=False, default=str)), limit)


# ---------------------------------------------------------------- inputs

def read_goal(input_dir):
    return coditect.read_input_text(os.path.join(input_dir, "input.txt"), MAX_GOAL_BYTES, "the goal")


def dependency_ids(input_dir):
    """The names under INPUT/deps: the planner's dependencies, task ids of the mission."""
    try:
        names = sorted(os.listdir(os.path.join(input_dir, "deps")))
    except OSError:
        return []
    return [name for name in names if ID_RE.match(name) and os.path.isdir(os.path.join(input_dir, "deps", name))]


# ---------------------------------------------------------------- the prompt

def _records(report, key):
    return [r for r in report.get(key) or () if isinstance(r, dict)] if isinstance(report.get(key), list) else []


def report_files(report):
    """[(path, description)] of the report's file list, or None without one."""
    if not isinstance(report.get("files"), list):
        return None
    files = []
    for record in _records(report, "files"):
        path = record.get("path")
        if not isinstance(path, str) or not path:
            continue
        facts = []
        if isinstance(record.get("language"), str) and record["language"]:
            facts.append(record["language"])
        lines = record.get("lines")
        if isinstance(lines, int) and not isinstance(lines, bool):
            facts.append("%d line%s" % (lines, "" if lines == 1 else "s"))
        files.append((path, facts))
    return files


def listing_lines(paths_and_facts, truncated=False):
    lines = ["(%d file%s%s)" % (len(paths_and_facts), "" if len(paths_and_facts) == 1 else "s",
                                ", more not counted" if truncated else "")]
    if not paths_and_facts:
        lines = ["(the workspace is empty)"]
    for path, facts in paths_and_facts[:MAX_LISTING]:
        lines.append("%s (%s)" % (path, ", ".join(facts)) if facts else path)
    if len(paths_and_facts) > MAX_LISTING:
        lines.append("... and %d more" % (len(paths_and_facts) - MAX_LISTING))
    return lines


def _line_of(record):
    line = record.get("line")
    return line if isinstance(line, int) and not isinstance(line, bool) else 0


def symbol_lines(report):
    """One line per function, class and other symbol of the report (a symbol
    at the line of a function or class is that one), by file and line,
    within MAX_SYMBOLS and MAX_SYMBOL_CHARS."""
    entries = []
    for record in _records(report, "functions"):
        name, path = record.get("name"), record.get("file")
        if not isinstance(name, str) or not isinstance(path, str):
            continue
        qualname = record.get("qualname") if isinstance(record.get("qualname"), str) else name
        signature = record.get("signature") if isinstance(record.get("signature"), str) else name + "(...)"
        if signature.startswith(name) and qualname != name:
            signature = qualname + signature[len(name):]
        text = signature
        doc = record.get("docstring")
        if isinstance(doc, str) and doc.strip():
            text += " - " + cut(one_line(doc.strip().splitlines()[0]), 100)
        entries.append((path, _line_of(record), text))
    for record in _records(report, "classes"):
        name, path = record.get("qualname") or record.get("name"), record.get("file")
        if isinstance(name, str) and isinstance(path, str):
            entries.append((path, _line_of(record), "class " + name))
    known = {(path, line) for path, line, _ in entries}
    for record in _records(report, "symbols"):
        name, path = record.get("name"), record.get("file")
        if isinstance(name, str) and isinstance(path, str) and (path, _line_of(record)) not in known:
            kind = record.get("kind") if isinstance(record.get("kind"), str) else "symbol"
            entries.append((path, _line_of(record), "%s %s" % (kind, name)))
    entries.sort(key=lambda e: (e[0], e[1], e[2]))
    lines, used = [], 0
    for index, (path, line, text) in enumerate(entries):
        entry = "%s:%d %s" % (path, line, one_line(text)) if line else "%s %s" % (path, one_line(text))
        if index >= MAX_SYMBOLS or used + len(entry) > MAX_SYMBOL_CHARS:
            lines.append("... and %d more" % (len(entries) - index))
            break
        lines.append(entry)
        used += len(entry) + 1
    return lines


def test_lines(report):
    lines = []
    records = _records(report, "tests")
    for index, record in enumerate(records):
        path = record.get("file")
        if not isinstance(path, str):
            continue
        if index >= MAX_TESTS_LISTED:
            lines.append("... and %d more test files" % (len(records) - index))
            break
        tests = record.get("tests") if isinstance(record.get("tests"), list) else []
        covers = [c for c in record.get("covers") or () if isinstance(c, str)] \
            if isinstance(record.get("covers"), list) else []
        entry = "%s: %d test%s" % (path, len(tests), "" if len(tests) == 1 else "s")
        if covers:
            entry += ", covers " + ", ".join(covers[:10]) + (", ..." if len(covers) > 10 else "")
        lines.append(entry)
    return lines


def context_sections(report, workspace):
    """The prompt's sections about the code base: from the report, else the walk."""
    files = report_files(report) if report is not None else None
    if files is None:
        paths, truncated = coditect.walk_workspace(workspace)
        return ["# Workspace files\n\n" + "\n".join(listing_lines([(p, []) for p in paths], truncated))]
    sections = ["# Workspace files (from the analyzer's report)\n\n" + "\n".join(listing_lines(files))]
    symbols = symbol_lines(report)
    if symbols:
        sections.append("# Functions, classes and other symbols\n\n" + "\n".join(symbols))
    tests = test_lines(report)
    if tests:
        sections.append("# Test files\n\n" + "\n".join(tests))
    return sections


def build_messages(goal, retry, context, taken):
    sections = ["# Goal\n\n" + goal.strip()]
    if retry:
        sections.append(coditect.retry_section(
            retry, "one ```toml block with only [[task]] tables, as described above."))
    sections.extend(context)
    if taken:
        sections.append("# Task ids taken in the mission\n\n" + ", ".join(taken)
                        + "\n\nThese tasks have finished; do not use these ids, and do not need them.")
    sections.append("Answer with one ```toml block of [[task]] tables (id, module, needs, title, input) "
                    "that reaches the goal.")
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "\n\n".join(sections)}]


# ---------------------------------------------------------------- the answer

def toml_candidates(answer):
    """The texts the answer's TOML may be: the first ```toml (or bare ```)
    block closed at its first closing fence, then at each later one (an
    input may hold a bare ``` line); the whole answer when it has no such
    block. BadOutput when that block is not closed."""
    lines = answer.replace("\r\n", "\n").split("\n")
    i = 0
    while i < len(lines):
        opened = coditect.open_fence(lines[i])
        if opened is None or opened[1][0] != "`":
            i += 1
            continue
        fence, info = opened[1], opened[2].strip()
        closers = [j for j in range(i + 1, len(lines)) if coditect.closes_fence(lines[j], fence)]
        if info.lower() in ("", "toml"):
            if not closers:
                raise BadOutput("the ```toml block is not closed")
            return ["\n".join(lines[i + 1:j]) + "\n" for j in closers], True
        if not closers:
            break
        i = closers[0] + 1
    return [answer], False


def parse_toml(answer):
    """The answer's TOML as a dict (see toml_candidates)."""
    candidates, fenced = toml_candidates(answer)
    first_error = None
    for text in candidates:
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            if first_error is None:
                first_error = exc
    if fenced:
        raise BadOutput("the ```toml block is not valid TOML: %s" % one_line(first_error))
    raise BadOutput("the answer has no ```toml block, and is not TOML itself: %s" % one_line(first_error))


def fit_title(title):
    """One line of at most MAX_TITLE_BYTES bytes: control characters (and
    bidirectional overrides) become spaces, runs of whitespace one space."""
    clean = "".join(" " if unicodedata.category(c) in ("Cc", "Cs") or "\u202a" <= c <= "\u202e"
                    or "\u2066" <= c <= "\u2069" else c for c in title)
    clean = " ".join(clean.split())
    data = clean.encode("utf-8")
    if len(data) > MAX_TITLE_BYTES:
        clean = data[:MAX_TITLE_BYTES].decode("utf-8", "ignore").strip()
    return clean


def _name(task, index):
    """How a reason names a task: by its id once that is known to be good."""
    ident = task.get("id") if isinstance(task, dict) else None
    if isinstance(ident, str) and ID_RE.match(ident):
        return "task `%s`" % ident
    return "task %d" % (index + 1)


def check_task(task, index, taken):
    """The task normalised: {"id", "module", "needs", "title", "input"}
    (title and input None when absent); BadOutput naming the task and key."""
    if not isinstance(task, dict):
        raise BadOutput("task %d is not a table" % (index + 1))
    name = _name(task, index)
    for key in task:
        if key not in TASK_KEYS:
            raise BadOutput("%s has the key `%s`; a planned task has only %s"
                            % (name, key, ", ".join(TASK_KEYS)))
    if "id" not in task:
        raise BadOutput("%s has no `id`" % name)
    ident = task["id"]
    if not isinstance(ident, str):
        raise BadOutput("%s has an `id` that is not a string: %s" % (name, shown(ident)))
    if not ID_RE.match(ident):
        if not ident:
            why = "is empty"
        elif len(ident) > MAX_ID_CHARS:
            why = "is longer than %d characters" % MAX_ID_CHARS
        elif not re.match(r"[A-Za-z0-9]", ident):
            why = "does not start with a letter or digit"
        else:
            why = "has a character other than letters, digits, `.`, `_` and `-`"
        raise BadOutput("%s has the `id` %s, which %s" % (name, shown(ident), why))
    if ident in taken:
        raise BadOutput("task `%s`: the id is taken in the mission (%s)" % (ident, ", ".join(sorted(taken))))
    if "module" not in task:
        raise BadOutput("task `%s` has no `module`" % ident)
    module = task["module"]
    if not isinstance(module, str) or module not in MODULES:
        raise BadOutput("task `%s` has the `module` %s; it must be one of %s"
                        % (ident, shown(module), ", ".join(MODULES)))
    needs = task.get("needs", [])
    if not isinstance(needs, list) or not all(isinstance(n, str) for n in needs):
        raise BadOutput("task `%s` has `needs` that are not a list of strings: %s" % (ident, shown(needs)))
    unique = []
    for need in needs:
        if need not in unique:
            unique.append(need)
    title = task.get("title")
    if title is not None:
        if not isinstance(title, str):
            raise BadOutput("task `%s` has a `title` that is not a string: %s" % (ident, shown(title)))
        title = fit_title(title) or None
    text = task.get("input")
    if text is not None and not isinstance(text, str):
        raise BadOutput("task `%s` has an `input` that is not a string: %s" % (ident, shown(text)))
    if module in CHANGE_MODULES and not (text or "").strip():
        raise BadOutput("task `%s` runs %s but has no `input` saying what to change" % (ident, module))
    return {"id": ident, "module": module, "needs": unique, "title": title, "input": text}


def find_cycle(tasks):
    """A cycle of needs as [id, ..., id] (first == last), or None."""
    needs = {t["id"]: t["needs"] for t in tasks}
    state = {}
    for start in needs:
        if start in state:
            continue
        path, stack = [start], [iter(needs[start])]
        state[start] = 1
        while stack:
            step = next(stack[-1], None)
            if step is None:
                state[path.pop()] = 2
                stack.pop()
                continue
            if state.get(step) == 1:
                return path[path.index(step):] + [step]
            if step not in state:
                state[step] = 1
                path.append(step)
                stack.append(iter(needs[step]))
    return None


def dependency_order(tasks):
    """The ids, each after the tasks it needs (ties in the fragment's order)."""
    left = {t["id"]: set(t["needs"]) for t in tasks}
    order = []
    while left:
        ready = [t["id"] for t in tasks if t["id"] in left and not left[t["id"]]]
        if not ready:  # a cycle; parse_fragment refuses these first
            ready = [t["id"] for t in tasks if t["id"] in left]
        for ident in ready:
            del left[ident]
            order.append(ident)
        for pending in left.values():
            pending.difference_update(ready)
    return order


def parse_fragment(answer, taken=()):
    """[task] of the answer's fragment, in its order, each {"id", "module",
    "needs", "title", "input"}; BadOutput when it is not a usable fragment.

    The TOML is the first ```toml (or bare ```) fenced block, else the whole
    answer (see toml_candidates). Its top-level keys may be `task`, an array
    of tables, and `name`, which is dropped. 1 to 32 tasks, each with only
    the keys id, module, needs, title and input: id (required) a string of
    letters, digits, `.`, `_` and `-`, at most 64 characters, starting with
    a letter or digit, unique, not one of `taken`; module (required) one of
    MODULES; needs a list of strings naming other tasks of the fragment
    (repeats dropped), without cycles; title a string (fitted to one line);
    input a string, not blank for coder, docs and general tasks."""
    document = parse_toml(answer)
    for key in document:
        if key not in ("task", "name"):
            raise BadOutput("the fragment has the top-level key `%s`; it may have only [[task]] tables" % key)
    items = document.get("task", [])
    if not isinstance(items, list):
        raise BadOutput("`task` is not an array of tables: write each task as a [[task]] table")
    if len(items) < MIN_TASKS:
        raise BadOutput("the fragment has no [[task]] tables")
    if len(items) > MAX_TASKS:
        raise BadOutput("the fragment has %d tasks, more than %d" % (len(items), MAX_TASKS))
    taken = set(taken)
    tasks, seen = [], set()
    for index, item in enumerate(items):
        task = check_task(item, index, taken)
        if task["id"] in seen:
            raise BadOutput("the id `%s` is given to two tasks" % task["id"])
        seen.add(task["id"])
        tasks.append(task)
    for task in tasks:
        for need in task["needs"]:
            if need == task["id"]:
                raise BadOutput("task `%s` needs itself" % need)
            if need not in seen:
                raise BadOutput("task `%s` needs %s, which is not a task of the fragment" % (task["id"], shown(need)))
    cycle = find_cycle(tasks)
    if cycle:
        raise BadOutput("the needs form a cycle: %s" % " -> ".join(cycle))
    return tasks


# ---------------------------------------------------------------- writing TOML

_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def toml_string(text):
    """text as a TOML basic string."""
    parts = []
    for c in text:
        if c in _ESCAPES:
            parts.append(_ESCAPES[c])
        elif c < " " or c == "\x7f":
            parts.append("\\u%04X" % ord(c))
        elif "\ud800" <= c <= "\udfff":  # not in a str from tomllib; never written raw
            parts.append("\\uFFFD")
        else:
            parts.append(c)
    return '"' + "".join(parts) + '"'


def toml_list(items):
    return "[" + ", ".join(toml_string(item) for item in items) + "]"


def fragment_toml(tasks):
    """The normalised fragment: [[task]] tables, keys in TASK_KEYS order."""
    tables = []
    for task in tasks:
        lines = ["[[task]]", "id = " + toml_string(task["id"]), "module = " + toml_string(task["module"])]
        if task["needs"]:
            lines.append("needs = " + toml_list(task["needs"]))
        if task.get("title") is not None:
            lines.append("title = " + toml_string(task["title"]))
        if task.get("input") is not None:
            lines.append("input = " + toml_string(task["input"]))
        tables.append("\n".join(lines) + "\n")
    return "\n".join(tables)


# ---------------------------------------------------------------- main

def parse_args(argv, argv0):
    parser = argparse.ArgumentParser(prog=os.path.basename(argv0 or "planner.py"),
                                     description="Breaks a goal into tasks with a language model.")
    parser.add_argument("--workspace", default="/workspace", help="the project, read-only (default /workspace)")
    parser.add_argument("--input", default="/input", help="the task's inputs (default /input)")
    parser.add_argument("--out", default="/output", help="where subtasks.toml and plan.json go (default /output)")
    return parser.parse_args(argv)


def summary_line(tasks, answer):
    order = dependency_order(tasks)
    shown_ids = " -> ".join(order[:MAX_SUMMARY_IDS]) + (" -> ..." if len(order) > MAX_SUMMARY_IDS else "")
    return "planner: %d task%s (%s); model %s, %d tokens in, %d out" % (
        len(tasks), "" if len(tasks) == 1 else "s", shown_ids, answer.model or "?", answer.tokens_in,
        answer.tokens_out)


def main(argv=None, argv0=None):
    argv0 = sys.argv[0] if argv0 is None else argv0
    args = parse_args(sys.argv[1:] if argv is None else argv, argv0)
    out_dir = os.path.abspath(args.out)
    goal = read_goal(args.input)
    if not goal.strip():
        err("planner: no goal in %s" % os.path.join(args.input, "input.txt"))
        return EXIT_USAGE
    retry = coditect.read_retry(args.input, "planner")
    taken = dependency_ids(args.input)
    context = context_sections(coditect.find_report(args.input, "planner"), args.workspace)
    messages = build_messages(goal, retry, context, taken)
    ensure_dir(out_dir)
    answer, code = coditect.ask_llm(messages, out_dir, "planner", purpose="planner", temperature=0)
    if answer is None:
        return code
    coditect.write_answer(out_dir, answer.content)
    try:
        tasks = parse_fragment(answer.content, taken)
        text = fragment_toml(tasks)
        size = len(text.encode("utf-8"))
        if size > MAX_FRAGMENT_BYTES:
            raise BadOutput("the fragment is %d bytes, more than %d KiB" % (size, MAX_FRAGMENT_BYTES >> 10))
    except BadOutput as exc:
        return coditect.report_bad_output(str(exc), answer, out_dir, "planner")
    with open(os.path.join(out_dir, "subtasks.toml"), "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    record = {"tasks": [{"id": t["id"], "module": t["module"], "needs": t["needs"], "title": t["title"]}
                        for t in tasks],
              "model": answer.model, "tokens_in": answer.tokens_in, "tokens_out": answer.tokens_out}
    with open(os.path.join(out_dir, "plan.json"), "w", encoding="utf-8") as f:
        json.dump(record, f, ensure_ascii=False)
        f.write("\n")
    out(summary_line(tasks, answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
