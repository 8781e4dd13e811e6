"""Tests of agents/planner.py (the agent behind builtin:planner), run on the host:

    python3 -m unittest discover -s agents/tests -v      (from the repository root)

The channel is faked as in test_coder.py: CHANNEL_DIR is a temporary folder
and _stdin a BytesIO holding the answer frame the node would send, so the
tests see the exact request the planner writes. The planner runs in-process
through main() against the calc fixture (tests/fixtures/pyprojects) and
small temporary inputs, and once as a script in a subprocess, installed as
/input/.coditect/planner.py next to coditect.py the way the node installs it.
"""

import ast
import contextlib
import importlib.util
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import tomllib
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
AGENTS = os.path.join(REPO, "agents")
PLANNER = os.path.join(AGENTS, "planner.py")
CODITECT = os.path.join(AGENTS, "coditect.py")
ANALYZER = os.path.join(AGENTS, "analyzer.py")
CALC = os.path.join(REPO, "tests", "fixtures", "pyprojects", "calc")


def load_planner():
    """planner.py as a fresh module; its coditect is planner.coditect."""
    spec = importlib.util.spec_from_file_location("coditect_planner_under_test", PLANNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


planner = load_planner()
coditect = planner.coditect


def frame(status, body):
    if isinstance(body, str):
        body = body.encode("utf-8")
    return b"%s %d\n" % (status.encode("ascii"), len(body)) + body


def llm_ok(content, model="test-model", tokens_in=100, tokens_out=20, finish_reason="stop"):
    return frame("ok", json.dumps({"content": content, "model": model, "tokens_in": tokens_in,
                                   "tokens_out": tokens_out, "finish_reason": finish_reason}))


def write_tree(root, files):
    for rel, text in files.items():
        path = os.path.join(root, *rel.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        mode = "wb" if isinstance(text, bytes) else "w"
        with open(path, mode, **({} if isinstance(text, bytes) else {"encoding": "utf-8"})) as f:
            f.write(text)


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def fenced(toml_text, before="Here is the plan.\n\n", after="\nThat is all.\n"):
    return before + "```toml\n" + textwrap.dedent(toml_text).lstrip("\n") + "```\n" + after


GOOD_TOML = r'''
name = "fib work"

[[task]]
id = "analyze"
module = "builtin:analyzer"
title = "Read the code base"
input = "Report the files, functions and tests."

[[task]]
id = "code"
module = "builtin:coder"
needs = ["analyze"]
title = "Add fib_memo's \"limit\" argument"
input = """In calc/fib.py give fib_memo(n, limit=None) a limit: raise ValueError("too big: %d" % n)
when n > limit.	Paths look like C:\\temp\\fib and "quotes" stay; naïve café ✓ 𝔽ib.
A line with a fence:
```python
fib_memo(5, limit=3)
```
Done."""

[[task]]
id = "docs"
module = "builtin:docs"
needs = ["analyze"]
title = "Document the limit in README.md"
input = 'Describe the limit in README.md (a literal \string).'

[[task]]
id = "test"
module = "builtin:tester"
needs = ["code", "docs"]
title = "Run the tests"
'''

GOOD_ANSWER = fenced(GOOD_TOML)

GOOD_TASKS = [
    {"id": "analyze", "module": "builtin:analyzer", "title": "Read the code base",
     "input": "Report the files, functions and tests."},
    {"id": "code", "module": "builtin:coder", "needs": ["analyze"], "title": 'Add fib_memo\'s "limit" argument',
     "input": 'In calc/fib.py give fib_memo(n, limit=None) a limit: raise ValueError("too big: %d" % n)\n'
              'when n > limit.\tPaths look like C:\\temp\\fib and "quotes" stay; naïve café ✓ 𝔽ib.\n'
              "A line with a fence:\n```python\nfib_memo(5, limit=3)\n```\nDone."},
    {"id": "docs", "module": "builtin:docs", "needs": ["analyze"], "title": "Document the limit in README.md",
     "input": "Describe the limit in README.md (a literal \\string)."},
    {"id": "test", "module": "builtin:tester", "needs": ["code", "docs"], "title": "Run the tests"},
]


def task_toml(ident, module="builtin:tester", needs=None, extra=""):
    text = '[[task]]\nid = "%s"\nmodule = "%s"\n' % (ident, module)
    if needs is not None:
        text += "needs = [%s]\n" % ", ".join('"%s"' % n for n in needs)
    return text + extra


class TempDirTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="agents-planner-test-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def path(self, *parts):
        return os.path.join(self.tmp, *parts)


class FakeChannel(TempDirTest):
    """coditect pointed at a temporary channel folder and a prepared stdin."""

    def setUp(self):
        super().setUp()
        self.channel = self.path("channel")
        os.mkdir(self.channel)
        self.stdin = io.BytesIO()
        self.patch(coditect, "CHANNEL_DIR", self.channel)
        self.patch(coditect, "_stdin", lambda: self.stdin)
        self.patch(coditect, "OUTPUT_DIR", self.path("output"))

    def patch(self, owner, name, value):
        old = getattr(owner, name)
        setattr(owner, name, value)
        self.addCleanup(setattr, owner, name, old)

    def answer_with(self, data):
        self.stdin = io.BytesIO(data)

    def request(self, name):
        with open(os.path.join(self.channel, name + ".request"), "rb") as f:
            return f.read()


# ====================================================================== pieces

class TomlWriting(unittest.TestCase):
    def test_basic_strings_round_trip(self):
        samples = ["", "plain", 'a "quoted" word', "back\\slash \\n not a newline", "line\nbreak\r\n",
                   "tab\there", "naïve ✓ 𝔽 日本", "\x00\x01\x1f\x7f\x08\x0c", "\u2028\u2029\ufeff", "'single'",
                   '"""triple"""', "''' and ```fences```", "#not a comment", "trailing backslash\\"]
        samples.append("".join(chr(c) for c in range(0, 0x250)))
        for text in samples:
            with self.subTest(text=text):
                written = planner.toml_string(text)
                self.assertNotIn("\n", written)
                self.assertEqual(tomllib.loads("v = " + written)["v"], text)

    def test_escapes_are_the_short_ones_and_uxxxx(self):
        self.assertEqual(planner.toml_string('a\\b"c\nd\te\rf\x01g\x7f'),
                         '"a\\\\b\\"c\\nd\\te\\rf\\u0001g\\u007F"')
        self.assertEqual(planner.toml_string("é✓"), '"é✓"')

    def test_random_strings_round_trip(self):
        rng = random.Random(7)
        alphabet = [chr(c) for c in range(0, 0x80)] + ["é", "✓", "𝔽", "\u00a0", "\u2028"]
        for _ in range(300):
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
            self.assertEqual(tomllib.loads("v = " + planner.toml_string(text))["v"], text, repr(text))

    def test_fragment_keys_in_order_and_absent_ones_left_out(self):
        tasks = [{"id": "a", "module": "builtin:analyzer", "needs": [], "title": None, "input": None},
                 {"id": "b", "module": "builtin:coder", "needs": ["a"], "title": "T", "input": "x\ny"}]
        self.assertEqual(planner.fragment_toml(tasks),
                         '[[task]]\nid = "a"\nmodule = "builtin:analyzer"\n\n'
                         '[[task]]\nid = "b"\nmodule = "builtin:coder"\nneeds = ["a"]\ntitle = "T"\n'
                         'input = "x\\ny"\n')

    def test_fit_title(self):
        self.assertEqual(planner.fit_title("  two\nlines\t\x07and\u202econtrols "), "two lines and controls")
        long = planner.fit_title("é" * 600)
        self.assertEqual(long, "é" * 256)
        self.assertEqual(len(planner.fit_title("a" * 1000).encode()), 512)


class ParseFragment(unittest.TestCase):
    def parse(self, answer, taken=()):
        return planner.parse_fragment(answer, taken)

    def bad(self, answer, taken=()):
        with self.assertRaises(planner.BadOutput) as caught:
            self.parse(answer, taken)
        return str(caught.exception)

    def test_good(self):
        tasks = self.parse(GOOD_ANSWER)
        self.assertEqual([t["id"] for t in tasks], ["analyze", "code", "docs", "test"])
        self.assertEqual(tasks[1]["input"], GOOD_TASKS[1]["input"])
        self.assertEqual(tasks[0]["needs"], [])

    def test_bare_fence_and_no_fence(self):
        body = task_toml("a") + task_toml("b", needs=["a"])
        self.assertEqual(len(self.parse("```\n" + body + "```\n")), 2)
        self.assertEqual(len(self.parse(body)), 2)
        self.assertEqual(len(self.parse("```TOML\n" + body + "```")), 2)

    def test_other_blocks_before_are_skipped(self):
        answer = "First:\n```python\nprint(1)\n```\n\n```toml\n" + task_toml("a") + "```\n```\nignored\n```\n"
        self.assertEqual([t["id"] for t in self.parse(answer)], ["a"])

    def test_a_bare_fence_inside_a_multiline_input(self):
        answer = ("```toml\n" + task_toml("c", "builtin:coder", extra='input = """fix\n```\ncode\n```\n"""\n')
                  + "```\n")
        self.assertEqual(self.parse(answer)[0]["input"], "fix\n```\ncode\n```\n")

    def test_name_is_dropped_and_needs_repeats_too(self):
        tasks = self.parse('name = "x"\n' + task_toml("a") + task_toml("b", needs=["a", "a"]))
        self.assertEqual(tasks[1]["needs"], ["a"])

    def test_ids_grammar(self):
        good = ["a", "A1", "9", "1.2.3", "x_y-z", "a" * 64, "0-start"]
        for ident in good:
            self.assertEqual(self.parse(task_toml(ident))[0]["id"], ident)
        for ident, needle in [("", "is empty"), ("a" * 65, "longer than 64"), ("-x", "does not start"),
                              (".x", "does not start"), ("_x", "does not start"), ("a b", "has a character"),
                              ("é", "does not start"), ("a/b", "has a character"), ("a:b", "has a character")]:
            with self.subTest(ident=ident):
                reason = self.bad(task_toml(ident))
                self.assertIn("`id`", reason)
                self.assertIn(needle, reason)

    def test_title_is_fitted(self):
        tasks = self.parse(task_toml("a", extra='title = "one\\ntwo"\n') + task_toml("b", extra='title = " "\n'))
        self.assertEqual((tasks[0]["title"], tasks[1]["title"]), ("one two", None))

    def test_taken_ids(self):
        self.assertIn("task `plan`: the id is taken in the mission", self.bad(task_toml("plan"), taken=["plan"]))

    def test_cycles(self):
        body = task_toml("a", needs=["c"]) + task_toml("b", needs=["a"]) + task_toml("c", needs=["b"])
        self.assertEqual(self.bad(body), "the needs form a cycle: a -> c -> b -> a")
        self.assertEqual(self.bad(task_toml("a", needs=["a"])), "task `a` needs itself")
        diamond = task_toml("a") + task_toml("b", needs=["a"]) + task_toml("c", needs=["a"]) \
            + task_toml("d", needs=["b", "c"])
        self.assertEqual(len(self.parse(diamond)), 4)

    def test_dependency_order(self):
        tasks = self.parse(task_toml("t", needs=["c"]) + task_toml("c", needs=["a"]) + task_toml("a")
                           + task_toml("d", needs=["a"]))
        self.assertEqual(planner.dependency_order(tasks), ["a", "c", "d", "t"])


# ====================================================================== the planner, end to end

class PlannerRun(FakeChannel):
    def run_planner(self, answer_frame, goal="Give fib_memo a limit, documented and tested.", workspace=CALC,
                    inputs=None, args=()):
        self.input = self.path("input")
        self.out = self.path("output")
        os.makedirs(self.out, exist_ok=True)
        os.makedirs(self.input, exist_ok=True)
        files = dict(inputs or {})
        if goal is not None:
            files["input.txt"] = goal
        write_tree(self.input, files)
        self.answer_with(answer_frame)
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = planner.main(["--workspace", workspace, "--input", self.input, "--out", self.out, *args],
                                argv0="planner.py")
        self.stdout, self.stderr = stdout.getvalue(), stderr.getvalue()
        return code

    def reset(self):
        shutil.rmtree(self.path("input"), True)
        shutil.rmtree(self.path("output"), True)
        for name in os.listdir(self.channel):
            os.remove(os.path.join(self.channel, name))

    def sent(self):
        request = json.loads(self.request("llm").decode("utf-8"))
        return request, request["messages"][0]["content"], request["messages"][1]["content"]

    def violation(self):
        return json.loads(read(os.path.join(self.out, "violation.json")))

    def assert_no_plan(self):
        self.assertFalse(os.path.exists(os.path.join(self.out, "subtasks.toml")))
        self.assertFalse(os.path.exists(os.path.join(self.out, "plan.json")))

    def test_good_answer_writes_the_fragment(self):
        code = self.run_planner(llm_ok(GOOD_ANSWER, "m1", 1500, 400))
        self.assertEqual(code, 0, self.stderr)
        text = read(os.path.join(self.out, "subtasks.toml"))
        self.assertEqual(tomllib.loads(text), {"task": GOOD_TASKS})
        self.assertTrue(text.startswith('[[task]]\nid = "analyze"\nmodule = "builtin:analyzer"\n'
                                        'title = "Read the code base"\n'), text)
        self.assertNotIn("name", tomllib.loads(text))
        self.assertIn('title = "Add fib_memo\'s \\"limit\\" argument"\n', text)
        self.assertIn("C:\\\\temp\\\\fib", text)
        self.assertIn("naïve café ✓ 𝔽ib", text)
        self.assertTrue([line for line in text.splitlines() if line.startswith("input = ")][1]
                        .startswith('input = "In calc/fib.py give fib_memo(n, limit=None)'))
        self.assertEqual(len([line for line in text.splitlines() if line.startswith("[[task]]")]), 4)
        plan = json.loads(read(os.path.join(self.out, "plan.json")))
        self.assertEqual(plan, {"tasks": [
            {"id": "analyze", "module": "builtin:analyzer", "needs": [], "title": "Read the code base"},
            {"id": "code", "module": "builtin:coder", "needs": ["analyze"], "title": 'Add fib_memo\'s "limit" argument'},
            {"id": "docs", "module": "builtin:docs", "needs": ["analyze"], "title": "Document the limit in README.md"},
            {"id": "test", "module": "builtin:tester", "needs": ["code", "docs"], "title": "Run the tests"}],
            "model": "m1", "tokens_in": 1500, "tokens_out": 400})
        self.assertEqual(self.stdout, "planner: 4 tasks (analyze -> code -> docs -> test); model m1, "
                                      "1500 tokens in, 400 out\n")
        self.assertEqual(read(os.path.join(self.out, "answer.md")), GOOD_ANSWER)
        self.assertFalse(os.path.exists(os.path.join(self.out, "violation.json")))
        self.assertEqual(sorted(os.listdir(self.out)), ["answer.md", "plan.json", "subtasks.toml"])

    def test_the_fragment_reparses_to_itself(self):
        self.run_planner(llm_ok(GOOD_ANSWER))
        text = read(os.path.join(self.out, "subtasks.toml"))
        again = planner.fragment_toml(planner.parse_fragment(text))
        self.assertEqual(again, text)

    def test_the_prompt(self):
        self.run_planner(llm_ok(GOOD_ANSWER))
        request, system, user = self.sent()
        self.assertEqual(request["purpose"], "planner")
        self.assertEqual(request["temperature"], 0.0)
        self.assertNotIn("max_tokens", request)
        self.assertEqual([m["role"] for m in request["messages"]], ["system", "user"])
        for needle in ("```toml", "[[task]]", '"builtin:analyzer"', '"builtin:coder"', '"builtin:tester"',
                       '"builtin:docs"', '"builtin:general"', "reads the code base", "runs the project's tests",
                       "writes or updates documentation", "any other change", "2 to 12 tasks",
                       "followed by a builtin:tester task that needs the last change",
                       "Tasks that change the same files must depend on each other",
                       "no `workspace`, `name`, `inputs`, `args`, `requires` or `limits`", "at most 64 characters",
                       "self-contained"):
            self.assertIn(needle, system)
        example = system[system.index("```toml\n") + 8:system.rindex("```")]
        self.assertEqual(len(planner.parse_fragment(example)), 3)
        self.assertTrue(user.startswith("# Goal\n\nGive fib_memo a limit, documented and tested."), user)
        self.assertIn("# Workspace files\n\n(8 files)\nREADME.md\ncalc/__init__.py\ncalc/fib.py\n", user)
        self.assertNotIn("rejected", user)
        self.assertNotIn("taken", user)
        self.assertTrue(user.endswith("that reaches the goal."))

    def test_the_reports_file_list_and_functions_go_into_the_prompt(self):
        report = {"files": [{"path": "src/app.py", "language": "python", "lines": 120, "bytes": 3000},
                            {"path": "src/util.rs", "language": "rust", "lines": 1, "bytes": 10},
                            {"path": "NOTES"}],
                  "functions": [{"name": "run", "qualname": "run", "file": "src/app.py", "line": 10,
                                 "signature": "run(argv: list) -> int", "docstring": "Run the app.\nMore."},
                                {"name": "stop", "qualname": "App.stop", "file": "src/app.py", "line": 40,
                                 "signature": "stop(self)"}],
                  "classes": [{"name": "App", "qualname": "App", "file": "src/app.py", "line": 30}],
                  "symbols": [{"name": "helper", "kind": "fn", "file": "src/util.rs", "line": 1}],
                  "tests": [{"file": "tests/test_app.py", "covers": ["src/app.py"], "tests": ["test_run", "test_stop"]}]}
        inputs = {"deps/analyze/report.json": json.dumps(report), "deps/analyze/summary.md": "x"}
        self.assertEqual(self.run_planner(llm_ok(GOOD_ANSWER.replace('"analyze"', '"read"')), inputs=inputs), 0,
                         self.stderr)
        user = self.sent()[2]
        self.assertIn("# Workspace files (from the analyzer's report)\n\n(3 files)\n"
                      "src/app.py (python, 120 lines)\nsrc/util.rs (rust, 1 line)\nNOTES\n", user)
        self.assertIn("src/app.py:10 run(argv: list) -> int - Run the app.\n"
                      "src/app.py:30 class App\nsrc/app.py:40 App.stop(self)\nsrc/util.rs:1 fn helper", user)
        self.assertIn("# Test files\n\ntests/test_app.py: 2 tests, covers src/app.py", user)
        self.assertNotIn("calc/fib.py", user)  # the report, not the workspace
        self.assertIn("# Task ids taken in the mission\n\nanalyze\n", user)

    def test_real_analyzer_report(self):
        deps = self.path("deps-out")
        proc = subprocess.run([sys.executable, ANALYZER, "--root", CALC, "--out", deps], capture_output=True,
                              text=True, timeout=120)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        inputs = {"deps/scan/report.json": read(os.path.join(deps, "report.json"))}
        self.assertEqual(self.run_planner(llm_ok(GOOD_ANSWER), inputs=inputs), 0, self.stderr)
        user = self.sent()[2]
        self.assertIn("calc/fib.py (python, 24 lines)", user)
        self.assertIn("calc/fib.py:17 fib_memo(n: int) -> int - Recursive, memoized Fibonacci.", user)
        self.assertIn("tests/test_fib.py: ", user)
        self.assertNotIn("calc/fib.py:17 function fib_memo", user)  # the symbol of a function is that function
        self.assertIn("lib.rs:10 struct Expr", user)

    def test_the_symbols_are_capped(self):
        report = {"files": [{"path": "big.py"}],
                  "functions": [{"name": "f%d" % i, "file": "big.py", "line": i + 1, "signature": "f%d()" % i}
                                for i in range(1000)]}
        self.run_planner(llm_ok(GOOD_ANSWER), inputs={"deps/x/report.json": json.dumps(report)})
        user = self.sent()[2]
        self.assertIn("big.py:400 f399()\n... and 600 more", user)
        self.assertNotIn("f400()", user)

    def test_a_report_without_files_falls_back_to_the_workspace(self):
        inputs = {"deps/a/report.json": json.dumps({"version": 1}), "deps/b/report.json": "not json"}
        self.run_planner(llm_ok(GOOD_ANSWER), inputs=inputs)
        self.assertIn("# Workspace files\n\n(8 files)\nREADME.md\n", self.sent()[2])

    def test_the_listing_is_capped(self):
        root = self.path("big")
        write_tree(root, {"f%04d.txt" % i: "" for i in range(450)})
        write_tree(root, {".hidden/x": "", "node_modules/y.js": "", "__pycache__/z.pyc": b"\0"})
        self.run_planner(llm_ok(GOOD_ANSWER), workspace=root)
        user = self.sent()[2]
        self.assertIn("(450 files)\nf0000.txt\n", user)
        self.assertIn("f0399.txt\n... and 50 more", user)
        self.assertNotIn("f0400.txt", user)
        self.assertNotIn("node_modules", user)

    def test_missing_workspace_is_empty(self):
        self.assertEqual(self.run_planner(llm_ok(GOOD_ANSWER), workspace=self.path("none")), 0)
        self.assertIn("(the workspace is empty)", self.sent()[2])

    def test_retry_puts_the_reason_into_the_prompt(self):
        retry = {"attempt": 2, "kind": "bad_model_output", "detail": "task `code` has the key `args`"}
        self.run_planner(llm_ok(GOOD_ANSWER), inputs={".coditect/retry.json": json.dumps(retry)})
        user = self.sent()[2]
        self.assertIn("# Your previous answer was rejected (attempt 2)", user)
        self.assertIn("What was wrong with it: task `code` has the key `args`", user)
        self.assertLess(user.index("# Goal"), user.index("rejected"))
        self.assertLess(user.index("rejected"), user.index("# Workspace files"))

    def test_retry_of_another_kind(self):
        retry = {"attempt": 1, "kind": "fragment", "detail": "task id `test` is taken in the mission"}
        self.run_planner(llm_ok(GOOD_ANSWER), inputs={".coditect/retry.json": json.dumps(retry)})
        self.assertIn("It failed with fragment: task id `test` is taken in the mission", self.sent()[2])

    def test_bad_answers_are_violations_naming_the_problem(self):
        tester = task_toml("test")
        cases = [
            ("I would first analyze the code, then change it.", "no ```toml block, and is not TOML itself"),
            (fenced("[[task]\nid = 'a'\n"), "the ```toml block is not valid TOML"),
            (fenced('[[task]]\nid = "a"\nmodule = "builtin:hacker"\n'),
             'task `a` has the `module` "builtin:hacker"; it must be one of builtin:analyzer'),
            (fenced('[[task]]\nid = "a"\nmodule = "coder"\n'), 'task `a` has the `module` "coder"'),
            (fenced(task_toml("a", extra='args = ["x"]\n')), "task `a` has the key `args`"),
            (fenced(task_toml("a", extra='[task.limits]\nfuel = 1\n')), "task `a` has the key `limits`"),
            (fenced(task_toml("a", extra='requires = ["gpu"]\n')), "task `a` has the key `requires`"),
            (fenced(task_toml("a") + task_toml("a")), "the id `a` is given to two tasks"),
            (fenced(task_toml("a", needs=["ghost"])), 'task `a` needs "ghost", which is not a task of the fragment'),
            (fenced(task_toml("a", needs=["b"]) + task_toml("b", needs=["a"])), "the needs form a cycle: a -> b -> a"),
            (fenced('name = "nothing"\n'), "the fragment has no [[task]] tables"),
            (fenced("task = []\n"), "the fragment has no [[task]] tables"),
            (fenced("".join(task_toml("t%d" % i) for i in range(33))), "the fragment has 33 tasks, more than 32"),
            (fenced(task_toml("bad id")), 'task 1 has the `id` "bad id", which has a character other than'),
            (fenced(task_toml("-x")), 'task 1 has the `id` "-x", which does not start with a letter or digit'),
            (fenced('workspace = "/etc"\n' + tester), "the top-level key `workspace`"),
            (fenced('max_fix_rounds = 3\n' + tester), "the top-level key `max_fix_rounds`"),
            (fenced('[task]\nid = "a"\nmodule = "builtin:tester"\n'), "`task` is not an array of tables"),
            (fenced("task = [1]\n"), "task 1 is not a table"),
            (fenced('[[task]]\nmodule = "builtin:tester"\n'), "task 1 has no `id`"),
            (fenced('[[task]]\nid = 7\nmodule = "builtin:tester"\n'), "task 1 has an `id` that is not a string: 7"),
            (fenced('[[task]]\nid = "a"\n'), "task `a` has no `module`"),
            (fenced(task_toml("a", extra='needs = "b"\n')), "task `a` has `needs` that are not a list of strings"),
            (fenced(task_toml("a", extra='needs = [1]\n')), "task `a` has `needs` that are not a list of strings"),
            (fenced(task_toml("a", extra="title = 3\n")), "task `a` has a `title` that is not a string"),
            (fenced(task_toml("a", extra="input = [\"x\"]\n")), "task `a` has an `input` that is not a string"),
            (fenced(task_toml("a", "builtin:coder")), "task `a` runs builtin:coder but has no `input`"),
            (fenced(task_toml("a", "builtin:docs", extra='input = "  "\n')), "task `a` runs builtin:docs but has no"),
            ("```toml\n" + tester, "the ```toml block is not closed"),
        ]
        for answer, needle in cases:
            with self.subTest(needle=needle):
                self.reset()
                self.assertEqual(self.run_planner(llm_ok(answer)), 0, self.stderr)
                violation = self.violation()
                self.assertEqual(violation["kind"], "bad_model_output")
                self.assertIn(needle, violation["message"])
                self.assertNotIn("\n", violation["message"])
                self.assert_no_plan()
                self.assertEqual(read(os.path.join(self.out, "answer.md")), answer)
                self.assertIn("bad model output", self.stderr)
                self.assertEqual(self.stdout, "")

    def test_taken_ids_are_refused(self):
        inputs = {"deps/test/out.txt": "done"}
        self.assertEqual(self.run_planner(llm_ok(GOOD_ANSWER), inputs=inputs), 0)
        self.assertIn("task `test`: the id is taken in the mission (test)", self.violation()["message"])
        self.assertIn("# Task ids taken in the mission\n\ntest\n", self.sent()[2])

    def test_cut_off_answer_says_so(self):
        self.run_planner(llm_ok("```toml\n[[task]]\nid = \"a\"\n", finish_reason="length"))
        self.assertEqual(self.violation()["message"],
                         "the ```toml block is not closed (the answer was cut off at the token limit)")

    def test_a_fragment_too_large_is_a_violation(self):
        body = "".join(task_toml("c%d" % i, "builtin:coder", extra='input = "%s"\n' % ("x" * 9000))
                       for i in range(30))
        self.assertEqual(self.run_planner(llm_ok(fenced(body))), 0)
        self.assertRegex(self.violation()["message"], r"^the fragment is \d+ bytes, more than 256 KiB$")
        self.assert_no_plan()

    def test_many_tasks_are_summarised(self):
        body = task_toml("t0") + "".join(task_toml("t%d" % i, needs=["t%d" % (i - 1)]) for i in range(1, 12))
        self.assertEqual(self.run_planner(llm_ok(fenced(body), model="")), 0, self.stderr)
        self.assertEqual(self.stdout, "planner: 12 tasks (t0 -> t1 -> t2 -> t3 -> t4 -> t5 -> t6 -> t7 -> ...); "
                                      "model ?, 100 tokens in, 20 out\n")
        self.assertEqual(len(tomllib.loads(read(os.path.join(self.out, "subtasks.toml")))["task"]), 12)

    def test_no_goal(self):
        for goal in (None, "  \n"):
            with self.subTest(goal=goal):
                self.reset()
                self.assertEqual(self.run_planner(llm_ok(GOOD_ANSWER), goal=goal), 2)
                self.assertIn("no goal", self.stderr)
                self.assertFalse(os.path.exists(os.path.join(self.channel, "llm.request")))
                self.assert_no_plan()

    def test_a_long_goal_is_cut(self):
        self.run_planner(llm_ok(GOOD_ANSWER), goal="g" * (300 << 10))
        user = self.sent()[2]
        self.assertIn("(the goal was cut at 256 KiB)", user)
        self.assertLess(len(user), (256 << 10) + 20000)

    def test_model_unavailable_is_a_violation(self):
        for kind in ("unavailable", "provider"):
            with self.subTest(kind=kind):
                self.reset()
                body = json.dumps({"kind": kind, "message": "circuit open"})
                self.assertEqual(self.run_planner(frame("error", body)), 0)
                self.assertEqual(self.violation(), {"kind": "llm_unavailable", "message": kind + ": circuit open"})
                self.assert_no_plan()

    def test_model_limits_are_task_errors(self):
        for kind in ("limit", "bad_request", "not_granted"):
            with self.subTest(kind=kind):
                self.reset()
                body = json.dumps({"kind": kind, "message": "max_llm_calls (3) spent"})
                self.assertEqual(self.run_planner(frame("error", body)), 3)
                self.assertIn(kind + ": max_llm_calls (3) spent", self.stderr)
                self.assertFalse(os.path.exists(os.path.join(self.out, "violation.json")))
                self.assert_no_plan()

    def test_not_granted_without_a_channel(self):
        self.patch(coditect, "CHANNEL_DIR", self.path("no-channel"))
        self.assertEqual(self.run_planner(llm_ok(GOOD_ANSWER)), 3)
        self.assertIn("not_granted: capability llm is not granted to this task", self.stderr)


# ====================================================================== as a script

class AsAScript(TempDirTest):
    def test_installed_as_planner_py_next_to_coditect_py(self):
        agent = self.path("input", ".coditect")
        channel = self.path("channel")
        out = self.path("output")
        for folder in (agent, channel, out):
            os.makedirs(folder)
        shutil.copy(PLANNER, os.path.join(agent, "planner.py"))
        source = read(CODITECT)
        self.assertIn('CHANNEL_DIR = "/coditect"\n', source)
        with open(os.path.join(agent, "coditect.py"), "w", encoding="utf-8") as f:
            f.write(source.replace('CHANNEL_DIR = "/coditect"\n', "CHANNEL_DIR = %r\n" % channel))
        write_tree(self.path("input"), {"input.txt": "Add a CHANGES file."})
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        env.pop("PYTHONPATH", None)
        answer = fenced(task_toml("changes", "builtin:general", extra='input = "Write CHANGES.txt"\n')
                        + task_toml("test", needs=["changes"]))
        proc = subprocess.run(
            [sys.executable, os.path.join(agent, "planner.py"), "--workspace", CALC, "--input", self.path("input"),
             "--out", out], input=llm_ok(answer), capture_output=True, timeout=120, env=env, cwd=self.tmp)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertTrue(proc.stdout.startswith(b"planner: 2 tasks (changes -> test); model test-model"), proc.stdout)
        self.assertEqual(tomllib.loads(read(os.path.join(out, "subtasks.toml"))), {"task": [
            {"id": "changes", "module": "builtin:general", "input": "Write CHANGES.txt"},
            {"id": "test", "module": "builtin:tester", "needs": ["changes"]}]})
        request = json.loads(read(os.path.join(channel, "llm.request")))
        self.assertEqual((request["purpose"], request["temperature"]), ("planner", 0.0))
        self.assertIn("Add a CHANGES file.", request["messages"][1]["content"])
        self.assertEqual(sorted(os.listdir(out)), ["answer.md", "plan.json", "subtasks.toml"])

    def test_no_goal_and_no_stdin_answer(self):
        proc = subprocess.run([sys.executable, PLANNER, "--workspace", CALC, "--input", self.path("nothing"),
                               "--out", self.path("out")], capture_output=True, text=True, timeout=120, cwd=self.tmp)
        self.assertEqual(proc.returncode, 2, proc.stderr)
        write_tree(self.path("in"), {"input.txt": "plan fib"})
        proc = subprocess.run([sys.executable, PLANNER, "--workspace", CALC, "--input", self.path("in"),
                               "--out", self.path("out")], capture_output=True, text=True, timeout=120,
                              cwd=self.tmp, stdin=subprocess.DEVNULL)
        self.assertEqual(proc.returncode, 3, proc.stderr)
        self.assertIn("not_granted", proc.stderr)

    def test_standard_library_only(self):
        if not hasattr(sys, "stdlib_module_names"):
            self.skipTest("needs Python 3.10+")
        banned = {"subprocess", "threading", "multiprocessing", "signal", "socket", "concurrent", "ctypes"}
        tree = ast.parse(read(PLANNER))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top == "coditect":
                    continue
                self.assertIn(top, sys.stdlib_module_names, "planner.py imports %s" % name)
                self.assertNotIn(top, banned, "planner.py imports %s" % name)


if __name__ == "__main__":
    unittest.main()
