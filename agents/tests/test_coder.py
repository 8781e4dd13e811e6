"""Tests of agents/coditect.py (the capability channel's guest side) and of
agents/coder.py (the coder, docs and general agent), run on the host:

    python3 -m unittest discover -s agents/tests -v      (from the repository root)

The channel is faked: CHANNEL_DIR is a temporary folder and _stdin a BytesIO
holding the answer frame the node would send, so the tests see the exact
request the agent writes. The coder runs in-process through main() against
the calc fixture (tests/fixtures/pyprojects) and small temporary projects,
and once as a script in a subprocess, installed as general.py the way the
node installs it.
"""

import ast
import contextlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
AGENTS = os.path.join(REPO, "agents")
CODER = os.path.join(AGENTS, "coder.py")
CODITECT = os.path.join(AGENTS, "coditect.py")
ANALYZER = os.path.join(AGENTS, "analyzer.py")
CALC = os.path.join(REPO, "tests", "fixtures", "pyprojects", "calc")


def load_coder():
    """coder.py as a fresh module; its coditect is coder.coditect."""
    spec = importlib.util.spec_from_file_location("coditect_coder_under_test", CODER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


coder = load_coder()
coditect = coder.coditect


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
        with open(path, mode) as f:
            f.write(text if isinstance(text, bytes) else textwrap.dedent(text))


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def fixture_text(rel):
    return read(os.path.join(CALC, *rel.split("/")))


class TempDirTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="agents-coder-test-")
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


# ====================================================================== coditect.py

class Channel(FakeChannel):
    def test_ok_frame_returns_the_body_and_the_request_is_written(self):
        self.answer_with(frame("ok", b"echo:hello"))
        self.assertEqual(coditect.call("echo", b"hello"), b"echo:hello")
        self.assertEqual(self.request("echo"), b"hello")

    def test_error_frame_raises_with_the_body_as_message(self):
        self.answer_with(frame("error", "it failed"))
        with self.assertRaises(coditect.CapabilityError) as caught:
            coditect.call("echo", "x")
        self.assertEqual(str(caught.exception), "it failed")
        self.assertNotIsInstance(caught.exception, coditect.LlmError)

    def test_end_of_stdin_is_not_granted(self):
        for data in (b"", b"ok 10\nshort", b"ok 1"):
            self.answer_with(data)
            with self.assertRaises(coditect.CapabilityError) as caught:
                coditect.call("echo", b"x")
            self.assertEqual(str(caught.exception), "capability echo is not granted to this task", data)

    def test_no_channel_folder_is_not_granted_without_reading_stdin(self):
        self.patch(coditect, "CHANNEL_DIR", self.path("missing"))

        def no_stdin():
            raise AssertionError("stdin was read")

        self.patch(coditect, "_stdin", no_stdin)
        with self.assertRaises(coditect.CapabilityError) as caught:
            coditect.call("echo", b"x")
        self.assertEqual(str(caught.exception), "capability echo is not granted to this task")
        self.assertFalse(os.path.exists(self.path("missing")))

    def test_names_are_checked(self):
        for name in ("", "Echo", "9x", "a b", "x/y", "a" * 65, "llm\n", None):
            with self.assertRaises(ValueError, msg=repr(name)):
                coditect.call(name, b"")
        self.answer_with(frame("ok", b""))
        self.assertEqual(coditect.call("llm.chat-2_" + "a" * 52, b""), b"")

    def test_malformed_headers(self):
        for data in (b"okay 5\nhello", b"ok -1\n", b"ok 05\nhello", b"ok 5 \nhello", b"ok " + b"9" * 70 + b"\n"):
            self.answer_with(data)
            with self.assertRaises(coditect.CapabilityError, msg=data) as caught:
                coditect.call("echo", b"x")
            self.assertNotIn("not granted", str(caught.exception))

    def test_oversized_answer_and_request_are_refused(self):
        self.answer_with(b"ok %d\n" % (coditect.MAX_RESPONSE_BYTES + 1))
        with self.assertRaisesRegex(coditect.CapabilityError, "over the 64 MiB limit"):
            coditect.call("echo", b"x")
        with self.assertRaisesRegex(coditect.CapabilityError, "over the 8 MiB limit"):
            coditect.call("echo", b"x" * (coditect.MAX_REQUEST_BYTES + 1))

    def test_frames_are_read_one_at_a_time(self):
        self.answer_with(frame("ok", b"one\n") + frame("error", b"two") + frame("ok", b""))
        self.assertEqual(coditect.call("a", b"1"), b"one\n")
        with self.assertRaisesRegex(coditect.CapabilityError, "^two$"):
            coditect.call("b", b"2")
        self.assertEqual(coditect.call("c", b"3"), b"")
        self.assertEqual((self.request("a"), self.request("b"), self.request("c")), (b"1", b"2", b"3"))

    def test_a_stream_that_returns_short_reads(self):
        class Trickle(io.RawIOBase):
            def __init__(self, data):
                self.data = data

            def readable(self):
                return True

            def read(self, size=-1):
                chunk, self.data = self.data[:1], self.data[1:]
                return chunk

        self.stdin = Trickle(frame("ok", b"slowly, byte by byte"))
        self.assertEqual(coditect.call("echo", b""), b"slowly, byte by byte")

    def test_defaults(self):
        module = importlib.util.module_from_spec(importlib.util.spec_from_file_location("c2", CODITECT))
        module.__spec__.loader.exec_module(module)
        self.assertIs(module._stdin(), sys.stdin.buffer)
        self.assertEqual((module.CHANNEL_DIR, module.OUTPUT_DIR), ("/coditect", "/output"))


class Llm(FakeChannel):
    def test_request_and_answer(self):
        self.answer_with(llm_ok("hi there", "m1", 12, 3, "stop"))
        answer = coditect.llm([{"role": "system", "content": "be brief"}, {"role": "user", "content": "héllo"}],
                              max_tokens=50, temperature=0.25, purpose="coder")
        self.assertEqual(answer, coditect.Answer("hi there", "m1", 12, 3, "stop"))
        self.assertEqual((answer.content, answer.model, answer.tokens_in, answer.tokens_out, answer.finish_reason),
                         ("hi there", "m1", 12, 3, "stop"))
        request = json.loads(self.request("llm").decode("utf-8"))
        self.assertEqual(request, {"messages": [{"role": "system", "content": "be brief"},
                                                {"role": "user", "content": "héllo"}],
                                   "max_tokens": 50, "temperature": 0.25, "purpose": "coder"})

    def test_absent_keys_are_omitted_and_null_finish_reason(self):
        self.answer_with(frame("ok", json.dumps({"content": "", "model": "m", "tokens_in": 1, "tokens_out": 0,
                                                 "finish_reason": None})))
        answer = coditect.llm([{"role": "user", "content": "x"}])
        self.assertIsNone(answer.finish_reason)
        self.assertEqual(json.loads(self.request("llm")), {"messages": [{"role": "user", "content": "x"}]})

    def test_error_kinds(self):
        for kind in ("limit", "unavailable", "provider", "bad_request", "not_granted"):
            self.answer_with(frame("error", json.dumps({"kind": kind, "message": "because " + kind})))
            with self.assertRaises(coditect.LlmError) as caught:
                coditect.llm([{"role": "user", "content": "x"}])
            self.assertEqual((caught.exception.kind, caught.exception.message), (kind, "because " + kind))
            self.assertIsInstance(caught.exception, coditect.CapabilityError)

    def test_other_error_bodies(self):
        cases = [
            (b"circuit open", "provider", "circuit open"),
            (b"capability llm is not granted to this task", "not_granted", "capability llm is not granted to this task"),
            (b"the request is larger than 8 MiB", "bad_request", "the request is larger than 8 MiB"),
            (json.dumps({"kind": "weird", "message": "m"}).encode(), "provider", "weird: m"),
        ]
        for body, kind, message in cases:
            self.answer_with(frame("error", body))
            with self.assertRaises(coditect.LlmError) as caught:
                coditect.llm([{"role": "user", "content": "x"}])
            self.assertEqual((caught.exception.kind, caught.exception.message), (kind, message))

    def test_not_granted_and_garbage(self):
        self.answer_with(b"")
        with self.assertRaises(coditect.LlmError) as caught:
            coditect.llm([{"role": "user", "content": "x"}])
        self.assertEqual(caught.exception.kind, "not_granted")
        for body in (b"not json", b"[1]", b'{"model": "m"}'):
            self.answer_with(frame("ok", body))
            with self.assertRaises(coditect.LlmError) as caught:
                coditect.llm([{"role": "user", "content": "x"}])
            self.assertEqual(caught.exception.kind, "provider", body)
        self.patch(coditect, "CHANNEL_DIR", self.path("missing"))
        with self.assertRaises(coditect.LlmError) as caught:
            coditect.llm([{"role": "user", "content": "x"}])
        self.assertEqual(caught.exception.kind, "not_granted")

    def test_bad_messages(self):
        for messages in ([], [{"role": "tool", "content": "x"}], [{"role": "user"}], ["hi"]):
            with self.assertRaises(ValueError):
                coditect.llm(messages)
        with self.assertRaises(ValueError):
            coditect.llm([{"role": "user", "content": "x"}], max_tokens=0)
        self.assertFalse(os.path.exists(os.path.join(self.channel, "llm.request")))

    def test_report_violation(self):
        path = coditect.report_violation("bad_model_output", "no block")
        self.assertEqual(path, self.path("output", "violation.json"))
        self.assertEqual(json.loads(read(path)), {"kind": "bad_model_output", "message": "no block"})
        path = coditect.report_violation("llm_unavailable", "x" * 10000, output_dir=self.path("other"))
        self.assertEqual(len(json.loads(read(path))["message"]), coditect.MAX_VIOLATION_CHARS)


# ====================================================================== parse_edits

FENCE = "```"


class ParseEdits(unittest.TestCase):
    def bad(self, text, needle):
        with self.assertRaises(coder.BadOutput) as caught:
            coder.parse_edits(text)
        self.assertIn(needle, str(caught.exception))
        self.assertNotIn("\n", str(caught.exception))
        return str(caught.exception)

    def test_good_blocks(self):
        text = ("Here is the fix.\n\n```python path=calc/fib.py\ndef fib(n):\n    return n\n```\n\n"
                "And a new test:\n\n```python path=./tests/test_new.py\nassert True\n```\nDone.\n")
        self.assertEqual(coder.parse_edits(text), [("calc/fib.py", "def fib(n):\n    return n\n"),
                                                   ("tests/test_new.py", "assert True\n")])

    def test_blocks_without_path_are_ignored(self):
        text = "```bash\npython -m pytest\n```\n```text path=notes.txt\nhi\n```\n```\n```python path=x.py\n```\n"
        # the bare ``` after notes.txt opens a block; the ```python line inside it has an info string,
        # so it cannot close it, and the last ``` does
        self.assertEqual(coder.parse_edits(text), [("notes.txt", "hi\n")])

    def test_quoted_paths_and_spacing(self):
        text = ('```markdown path="docs/user guide.md"\n# Guide\n```\n'
                "``` path='with space.txt' lang=x\nq\n```\n"
                "```   python   path=b.py   \nb = 1\n```   \n")
        self.assertEqual(coder.parse_edits(text), [("docs/user guide.md", "# Guide\n"), ("with space.txt", "q\n"),
                                                   ("b.py", "b = 1\n")])

    def test_tildes_and_longer_fences(self):
        text = ("~~~markdown path=README.md\n# Title\n\n```python\nprint(1)\n```\n~~~\n"
                "````markdown path=docs/x.md\n```\ninner\n```\n```` \n"
                "~~~~ path=t.txt\n~~~\nstill inside\n~~~~~\n")
        self.assertEqual(coder.parse_edits(text), [
            ("README.md", "# Title\n\n```python\nprint(1)\n```\n"),
            ("docs/x.md", "```\ninner\n```\n"),
            ("t.txt", "~~~\nstill inside\n")])

    def test_a_backtick_fence_is_not_closed_by_tildes_or_shorter_runs(self):
        self.bad("````python path=a.py\n```\n~~~~\n", "the block for a.py is not closed")

    def test_empty_and_blank_content(self):
        self.assertEqual(coder.parse_edits("```text path=empty.txt\n```\n"), [("empty.txt", "")])
        self.assertEqual(coder.parse_edits("```text path=blank.txt\n\n\n```"), [("blank.txt", "\n\n")])

    def test_indented_fences(self):
        text = "1. the file:\n\n   ```python path=a.py\n   x = 1\n     y = 2\n   ```\n    ```python path=b.py\n```\n"
        # the 4-space line is not a fence (code indentation), so only a.py is an edit
        self.assertEqual(coder.parse_edits(text), [("a.py", "x = 1\n  y = 2\n")])

    def test_crlf(self):
        self.assertEqual(coder.parse_edits("```py path=a.py\r\nx = 1\r\n```\r\n"), [("a.py", "x = 1\n")])

    def test_inline_backticks_are_not_fences(self):
        self.bad("use ```python path=a.py``` blocks\n", "no fenced block naming a path")

    def test_unclosed(self):
        self.bad("```python path=calc/fib.py\ndef fib(n):\n", "the block for calc/fib.py is not closed")

    def test_no_block(self):
        message = self.bad("I think the code is fine.", "no fenced block naming a path")
        self.assertEqual(message, "the answer has no fenced block naming a path (```LANG path=FILE)")
        self.bad("```python\nx = 1\n```\n", "no fenced block naming a path")
        self.bad("", "no fenced block naming a path")

    def test_bad_paths(self):
        cases = {
            "../x.py": "..", "a/../../x.py": "..", "a/./b.py": ". or ..", "/etc/passwd": "absolute",
            ".git/config": ".git/", "sub/.git/hooks/pre-commit": ".git/", ".GIT/x": ".git/",
            ".coditect/coder.py": ".coditect/", "a\\b.py": "backslash", "a//b.py": "empty component",
            "dir/": "empty component", "./": "empty component", '""': "empty path",
        }
        for path, needle in cases.items():
            info = "path=" + path
            message = self.bad("```python %s\nx\n```\n" % info, needle)
            if path not in ('""', "./"):
                self.assertIn(path.rstrip("/").split("/")[0].strip('"'), message)
        self.bad("```python path=\nx\n```\n", "empty path")
        self.bad("```python path=a\x01b\nx\n```\n", "control characters")
        self.bad("```python path=" + "a" * 4097 + "\nx\n```\n", "longer than 4096 bytes")

    def test_duplicate(self):
        self.bad("```py path=a.py\n1\n```\n```py path=./a.py\n2\n```\n", "the path a.py is given twice")

    def test_limits(self):
        many = "".join("```t path=f%d.txt\nx\n```\n" % i for i in range(201))
        self.bad(many, "more than 200 blocks")
        self.assertEqual(len(coder.parse_edits("".join("```t path=f%d.txt\nx\n```\n" % i for i in range(200)))), 200)
        big = "```t path=a.txt\n" + ("y" * 1023 + "\n") * 4096 + "```\n```t path=b.txt\nz\n```\n"
        self.bad(big, "larger than 4 MiB")


# ====================================================================== choosing files

class ChooseFiles(TempDirTest):
    def choose(self, root, text, budget=24000, report=None, kind="coder"):
        ws = coder.Workspace(root)
        facts = coder.facts_from_report(report, ws) if report is not None else coder.scan_facts(ws)
        shown, not_shown = coder.choose_files(ws, facts, text, budget, kind)
        return [rel for rel, _ in shown], not_shown

    def test_the_named_file_and_its_test_within_budget(self):
        shown, not_shown = self.choose(CALC, "fib_sequence(0) should return [] and fib must reject floats", 400)
        self.assertEqual(shown[:2], ["calc/fib.py", "tests/test_fib.py"])
        self.assertNotIn("calc/ops.py", shown)
        self.assertEqual(not_shown, [])
        total = sum(coder.file_cost(rel, fixture_text(rel)) for rel in shown)
        self.assertLessEqual(total, 400)

    def test_a_relevant_file_too_large_is_named_not_shown(self):
        shown, not_shown = self.choose(CALC, "Calculator.norm is wrong", 300)
        self.assertEqual(not_shown, ["calc/ops.py"])
        self.assertIn("tests/test_ops.py", shown)
        self.assertNotIn("calc/ops.py", shown)

    def test_paths_in_a_traceback_and_symbols(self):
        text = 'File "/workspace/calc/ops.py", line 60, in divide\nZeroDivisionError'
        self.assertEqual(self.choose(CALC, text)[0][:2], ["calc/ops.py", "tests/test_ops.py"])
        # a folder named in a path is not a mention of the package's __init__.py
        self.assertEqual(coder.named_files(coder.Workspace(CALC), text), ["calc/ops.py"])
        self.assertEqual(coder.named_files(coder.Workspace(CALC), "the calc package"), ["calc/__init__.py"])
        shown = self.choose(CALC, "safe_div should return the default")[0]
        self.assertEqual(shown[:2], ["calc/ops.py", "tests/test_ops.py"])
        shown = self.choose(CALC, "see the module calc.fib")[0]
        self.assertEqual(shown[0], "calc/fib.py")

    def test_the_report_names_symbols(self):
        report = {"files": [], "functions": [{"name": "frobnicate", "file": "tool.js", "line": 1}],
                  "classes": [], "todos": [],
                  "tests": [{"file": "tests/test_ops.py", "covers": ["tool.js"]}]}
        shown = self.choose(CALC, "frobnicate is slow", report=report)[0]
        self.assertEqual(shown[:2], ["tool.js", "tests/test_ops.py"])

    def test_local_imports_then_tests(self):
        root = self.path("ws")
        write_tree(root, {
            "app/__init__.py": "",
            "app/main.py": "from app import util\nfrom .models import User\nimport json\n\ndef run():\n    return util.go()\n",
            "app/util.py": "def go():\n    return 1\n",
            "app/models.py": "class User:\n    pass\n",
            "app/unrelated.py": "X = 1\n",
            "tests/test_main.py": "from app.main import run\n\ndef test_run():\n    assert run() == 1\n",
            "tests/test_util.py": "from app.util import go\n",
            "tests/check_misc.py": "import app.main\n",
            "big.py": "x = 1\n" * 5000,
            "image.png": b"\x89PNG\r\n\x1a\n\0\0\0",
            ".hidden/secret.py": "S = 1\n",
            "node_modules/lib/index.js": "x\n",
            "app/__pycache__/main.cpython-312.pyc": b"\0\0",
        })
        shown, _ = self.choose(root, "main.py: run() should log", 2000)
        self.assertEqual(shown[:5], ["app/main.py", "app/util.py", "app/models.py", "tests/test_main.py",
                                     "tests/test_util.py"])
        self.assertNotIn("big.py", shown)
        ws = coder.Workspace(root)
        self.assertEqual(ws.files, ["app/__init__.py", "app/main.py", "app/models.py", "app/unrelated.py",
                                    "app/util.py", "big.py", "image.png", "tests/check_misc.py",
                                    "tests/test_main.py", "tests/test_util.py"])
        self.assertIsNone(ws.text("image.png"))

    def test_docs_prefers_documentation(self):
        root = self.path("ws")
        write_tree(root, {"a.py": "x = 1\n", "docs/guide.md": "# Guide\n" + "text\n" * 40, "README.md": "# R\n"})
        shown = self.choose(root, "improve the wording", kind="docs")[0]
        self.assertEqual(shown, ["README.md", "docs/guide.md", "a.py"])
        shown = self.choose(root, "improve the wording", kind="coder")[0]
        self.assertEqual(shown, ["README.md", "a.py", "docs/guide.md"])

    def test_zero_budget_shows_nothing(self):
        shown, not_shown = self.choose(CALC, "fix fib", 0)
        self.assertEqual(shown, [])
        self.assertEqual(not_shown, ["calc/fib.py", "tests/test_fib.py"])


# ====================================================================== the coder, end to end

GOOD_FIB = fixture_text("calc/fib.py").replace('raise ValueError("n must be non-negative")',
                                                'raise ValueError("n must be >= 0, got %d" % n)')
GOOD_TEST = fixture_text("tests/test_fib.py") + "\n\ndef test_fib_message():\n    pass\n"
GOOD_ANSWER = ("Here is the change.\n\n```python path=calc/fib.py\n" + GOOD_FIB + "```\n\n"
               "```python path=tests/test_fib.py\n" + GOOD_TEST + "```\n\n"
               "```bash\npython -m pytest\n```\n")


class CoderRun(FakeChannel):
    def run_coder(self, answer_frame, task="Make fib's error message name the value.", workspace=CALC,
                  inputs=None, args=(), argv0="coder.py"):
        self.input = self.path("input")
        self.out = self.path("output")
        os.makedirs(os.path.join(self.out, "workspace"))
        os.makedirs(self.input)
        files = dict(inputs or {})
        if task is not None:
            files["input.txt"] = task
        write_tree(self.input, files)
        self.answer_with(answer_frame)
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = coder.main(["--workspace", workspace, "--input", self.input, "--out", self.out, *args],
                              argv0=argv0)
        self.stdout, self.stderr = stdout.getvalue(), stderr.getvalue()
        return code

    def sent(self):
        request = json.loads(self.request("llm").decode("utf-8"))
        return request, request["messages"][0]["content"], request["messages"][1]["content"]

    def written(self):
        found = []
        for folder, _, names in os.walk(os.path.join(self.out, "workspace")):
            for name in names:
                found.append(os.path.relpath(os.path.join(folder, name), os.path.join(self.out, "workspace"))
                             .replace(os.sep, "/"))
        return sorted(found)

    def violation(self):
        return json.loads(read(os.path.join(self.out, "violation.json")))

    def test_good_answer_writes_the_files(self):
        code = self.run_coder(llm_ok(GOOD_ANSWER, "m1", 1500, 400))
        self.assertEqual(code, 0, self.stderr)
        self.assertEqual(self.written(), ["calc/fib.py", "tests/test_fib.py"])
        self.assertEqual(read(os.path.join(self.out, "workspace", "calc", "fib.py")), GOOD_FIB)
        self.assertEqual(read(os.path.join(self.out, "workspace", "tests", "test_fib.py")), GOOD_TEST)
        record = json.loads(read(os.path.join(self.out, "coder.json")))
        self.assertEqual(record["kind"], "coder")
        self.assertEqual(record["files"], ["calc/fib.py", "tests/test_fib.py"])
        self.assertEqual((record["model"], record["tokens_in"], record["tokens_out"]), ("m1", 1500, 400))
        self.assertEqual(record["prompt_files"][:2], ["calc/fib.py", "tests/test_fib.py"])
        self.assertEqual(sorted(record["prompt_files"]), sorted(
            ["README.md", "calc/__init__.py", "calc/fib.py", "calc/ops.py", "lib.rs", "tests/test_fib.py",
             "tests/test_ops.py", "tool.js"]))
        self.assertEqual(self.stdout.splitlines()[0].split(";")[0],
                         "coder: wrote 2 files (calc/fib.py, tests/test_fib.py)")
        self.assertEqual(len(self.stdout.splitlines()), 1)
        self.assertEqual(read(os.path.join(self.out, "answer.md")), GOOD_ANSWER)
        self.assertFalse(os.path.exists(os.path.join(self.out, "violation.json")))

    def test_the_prompt(self):
        self.run_coder(llm_ok(GOOD_ANSWER))
        request, system, user = self.sent()
        self.assertEqual(request["purpose"], "coder")
        self.assertEqual([m["role"] for m in request["messages"]], ["system", "user"])
        self.assertIn("software engineer", system)
        self.assertIn("```python path=calc/fib.py\n", system)
        self.assertIn("whole", system)
        self.assertTrue(user.startswith("# Task\n\nMake fib's error message name the value."))
        self.assertIn("```python path=calc/fib.py\n" + fixture_text("calc/fib.py") + "```", user)
        self.assertIn("```markdown path=README.md\n", user)
        self.assertIn("# Workspace files (8)\n\nREADME.md\ncalc/__init__.py\ncalc/fib.py\n", user)
        self.assertLess(user.index("path=calc/fib.py"), user.index("path=calc/ops.py"))
        self.assertNotIn("rejected", user)
        self.assertNotIn("Tests failed", user)

    def test_unchanged_files_are_not_written(self):
        answer = "```python path=calc/ops.py\n" + fixture_text("calc/ops.py") + "```\n```python path=calc/fib.py\n" + GOOD_FIB + "```\n"
        self.assertEqual(self.run_coder(llm_ok(answer)), 0)
        self.assertEqual(self.written(), ["calc/fib.py"])
        record = json.loads(read(os.path.join(self.out, "coder.json")))
        self.assertEqual((record["files"], record["unchanged"]), (["calc/fib.py"], ["calc/ops.py"]))
        self.assertIn("1 unchanged", self.stdout)

    def test_new_files_in_new_folders(self):
        answer = "```markdown path=docs/deep/usage.md\n# Usage\n```\n"
        self.assertEqual(self.run_coder(llm_ok(answer)), 0)
        self.assertEqual(self.written(), ["docs/deep/usage.md"])
        self.assertEqual(read(os.path.join(self.out, "workspace", "docs", "deep", "usage.md")), "# Usage\n")
        self.assertTrue(self.stdout.startswith("coder: wrote 1 file (docs/deep/usage.md);"), self.stdout)

    def test_bad_output_is_a_violation(self):
        code = self.run_coder(llm_ok("I would change fib, but I am not sure how."))
        self.assertEqual(code, 0)
        self.assertEqual(self.violation(), {
            "kind": "bad_model_output",
            "message": "the answer has no fenced block naming a path (```LANG path=FILE)"})
        self.assertEqual(self.written(), [])
        self.assertFalse(os.path.exists(os.path.join(self.out, "coder.json")))
        self.assertIn("bad model output", self.stderr)

    def test_bad_paths_are_violations_and_nothing_is_written(self):
        cases = [
            ("```python path=calc/fib.py\nx\n```\n```python path=../escape.py\nx\n```\n", "../escape.py"),
            ("```python path=calc\nx\n```\n", "the path calc is a folder in the workspace"),
            ("```python path=calc/fib.py/inner.py\nx\n```\n", "calc/fib.py, which is a file"),
            ("```python path=new\nx\n```\n```python path=new/a.py\nx\n```\n", "as a file and as a folder"),
        ]
        for answer, needle in cases:
            with self.subTest(answer=answer):
                shutil.rmtree(self.path("input"), True)
                shutil.rmtree(self.path("output"), True)
                self.assertEqual(self.run_coder(llm_ok(answer)), 0)
                violation = self.violation()
                self.assertEqual(violation["kind"], "bad_model_output")
                self.assertIn(needle, violation["message"])
                self.assertEqual(self.written(), [])

    def test_cut_off_answer_says_so(self):
        self.run_coder(llm_ok("```python path=calc/fib.py\ndef fib(n):\n", finish_reason="length"))
        self.assertEqual(self.violation()["message"],
                         "the block for calc/fib.py is not closed (the answer was cut off at the token limit)")

    def test_retry_puts_the_reason_into_the_prompt(self):
        retry = {"attempt": 2, "kind": "bad_model_output", "detail": "the block for calc/fib.py is not closed"}
        self.run_coder(llm_ok(GOOD_ANSWER), inputs={".coditect/retry.json": json.dumps(retry)})
        _, _, user = self.sent()
        self.assertIn("# Your previous answer was rejected (attempt 2)", user)
        self.assertIn("What was wrong with it: the block for calc/fib.py is not closed", user)
        self.assertLess(user.index("# Task"), user.index("rejected"))

    def test_retry_of_another_kind(self):
        retry = {"attempt": 1, "kind": "timeout", "detail": "ran for 60 s"}
        self.run_coder(llm_ok(GOOD_ANSWER), inputs={".coditect/retry.json": json.dumps(retry)})
        self.assertIn("It failed with timeout: ran for 60 s", self.sent()[2])

    def test_failure_tests_go_into_the_prompt(self):
        tests = {"passed": 9, "failed": 1, "errors": 0, "skipped": 0, "total": 10, "tests": [
            {"name": "tests/test_fib.py::test_fib_small", "outcome": "passed", "message": ""},
            {"name": "tests/test_fib.py::test_fib_of_ten", "outcome": "failed",
             "message": "AssertionError: assert 55 == 56\n +  where 55 = fib(10)\ntests/test_fib.py:14: in test_fib_of_ten"}]}
        inputs = {"failure/tests.json": json.dumps(tests),
                  "failure/summary.txt": "1 of 10 tests failed: tests/test_fib.py::test_fib_of_ten\n"}
        code = self.run_coder(llm_ok(GOOD_ANSWER), task="Add fib_memo's docs.", inputs=inputs,
                              args=("--budget-tokens", "400"))
        self.assertEqual(code, 0, self.stderr)
        _, _, user = self.sent()
        self.assertIn("# Tests failed after the last change\n\n1 of 10 tests failed: tests/test_fib.py::test_fib_of_ten", user)
        self.assertIn("Failing tests (9 passed, 1 failed, 0 errors):\n- tests/test_fib.py::test_fib_of_ten (failed)\n"
                      "    AssertionError: assert 55 == 56\n", user)
        self.assertNotIn("test_fib_small (passed)", user)
        self.assertIn("Fix the code so that these tests pass", user)
        record = json.loads(read(os.path.join(self.out, "coder.json")))
        self.assertEqual(sorted(record["prompt_files"][:2]), ["calc/fib.py", "tests/test_fib.py"])
        self.assertNotIn("calc/ops.py", record["prompt_files"])

    def test_failure_text_is_bounded(self):
        tests = {"passed": 0, "failed": 50, "errors": 0, "tests": [
            {"name": "tests/test_x.py::test_%d" % i, "outcome": "failed", "message": "E" * 5000} for i in range(50)]}
        self.run_coder(llm_ok(GOOD_ANSWER), inputs={"failure/tests.json": json.dumps(tests)})
        user = self.sent()[2]
        section = user[user.index("# Tests failed"):user.index("# Workspace files")]
        self.assertLess(len(section), 8192 + 2000)
        self.assertIn("more failing tests", section)

    def test_only_a_failure_is_enough(self):
        inputs = {"failure/summary.txt": "1 of 10 tests failed: tests/test_fib.py::test_fib_of_ten"}
        self.assertEqual(self.run_coder(llm_ok(GOOD_ANSWER), task=None, inputs=inputs), 0)
        self.assertIn("(no task text: fix the failures below)", self.sent()[2])

    def test_no_task_at_all(self):
        for task in (None, "  \n"):
            with self.subTest(task=task):
                shutil.rmtree(self.path("input"), True)
                shutil.rmtree(self.path("output"), True)
                self.assertEqual(self.run_coder(llm_ok(GOOD_ANSWER), task=task), 2)
                self.assertIn("no task text", self.stderr)
                self.assertFalse(os.path.exists(os.path.join(self.channel, "llm.request")))

    def test_model_unavailable_is_a_violation(self):
        for kind in ("unavailable", "provider"):
            with self.subTest(kind=kind):
                shutil.rmtree(self.path("input"), True)
                shutil.rmtree(self.path("output"), True)
                body = json.dumps({"kind": kind, "message": "circuit open"})
                self.assertEqual(self.run_coder(frame("error", body)), 0)
                self.assertEqual(self.violation(), {"kind": "llm_unavailable", "message": kind + ": circuit open"})

    def test_model_limits_are_task_errors(self):
        for kind in ("limit", "bad_request", "not_granted"):
            with self.subTest(kind=kind):
                shutil.rmtree(self.path("input"), True)
                shutil.rmtree(self.path("output"), True)
                body = json.dumps({"kind": kind, "message": "max_llm_calls (3) spent"})
                self.assertEqual(self.run_coder(frame("error", body)), 3)
                self.assertIn(kind + ": max_llm_calls (3) spent", self.stderr)
                self.assertFalse(os.path.exists(os.path.join(self.out, "violation.json")))

    def test_not_granted_without_a_channel(self):
        self.patch(coditect, "CHANNEL_DIR", self.path("no-channel"))
        self.assertEqual(self.run_coder(llm_ok(GOOD_ANSWER)), 3)
        self.assertIn("not_granted: capability llm is not granted to this task", self.stderr)

    def test_kinds_from_the_script_name_and_flag(self):
        answer = "```markdown path=README.md\n# calc\n\nBetter words.\n```\n"
        self.assertEqual(self.run_coder(llm_ok(answer), argv0="/input/.coditect/docs.py"), 0)
        request, system, _ = self.sent()
        self.assertEqual(request["purpose"], "docs")
        self.assertIn("technical writer", system)
        self.assertTrue(self.stdout.startswith("docs: wrote 1 file (README.md)"), self.stdout)
        self.assertEqual(json.loads(read(os.path.join(self.out, "coder.json")))["kind"], "docs")
        self.assertEqual([coder.default_kind(n) for n in ("general.py", "coder.py", "x.py", "general", "")],
                         ["general", "coder", "coder", "general", "coder"])
        shutil.rmtree(self.path("input"), True)
        shutil.rmtree(self.path("output"), True)
        self.run_coder(llm_ok(answer), argv0="docs.py", args=("--kind", "general"))
        self.assertEqual(self.sent()[0]["purpose"], "general")

    def test_analyzer_report_from_a_dependency(self):
        report = {"files": [], "functions": [{"name": "frobnicate", "file": "lib.rs", "line": 1}],
                  "classes": [], "todos": []}
        self.run_coder(llm_ok(GOOD_ANSWER), task="frobnicate the numbers",
                       inputs={"deps/analyze/report.json": json.dumps(report)}, args=("--budget-tokens", "300"))
        record = json.loads(read(os.path.join(self.out, "coder.json")))
        self.assertEqual(record["prompt_files"][0], "lib.rs")

    def test_real_analyzer_report(self):
        deps = self.path("deps-out")
        proc = subprocess.run([sys.executable, ANALYZER, "--root", CALC, "--out", deps], capture_output=True,
                              text=True, timeout=120)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        inputs = {"deps/analyze/report.json": read(os.path.join(deps, "report.json"))}
        self.run_coder(llm_ok(GOOD_ANSWER), task="classify(10) should say 'round'", inputs=inputs,
                       args=("--budget-tokens", "1000"))
        record = json.loads(read(os.path.join(self.out, "coder.json")))
        self.assertEqual(record["prompt_files"][:2], ["calc/ops.py", "tests/test_ops.py"])

    def test_contents_with_fences_get_longer_fences(self):
        root = self.path("ws")
        write_tree(root, {"guide.md": "# Guide\n\n```python\nprint(1)\n```\n"})
        self.run_coder(llm_ok("```markdown path=guide.md\n# Guide\n```\n"), workspace=root, task="tidy guide.md")
        user = self.sent()[2]
        self.assertIn("````markdown path=guide.md\n# Guide\n\n```python\nprint(1)\n```\n````", user)
        self.assertEqual(coder.parse_edits(user[user.index("````markdown"):]),
                         [("guide.md", "# Guide\n\n```python\nprint(1)\n```\n")])

    def test_missing_workspace_is_empty(self):
        code = self.run_coder(llm_ok("```text path=poem.txt\nroses\n```\n"), workspace=self.path("none"),
                              task="write a poem to poem.txt")
        self.assertEqual(code, 0, self.stderr)
        self.assertIn("(the workspace is empty)", self.sent()[2])
        self.assertEqual(self.written(), ["poem.txt"])


# ====================================================================== as a script

class AsAScript(TempDirTest):
    def test_installed_as_general_py_next_to_coditect_py(self):
        agent = self.path("input", ".coditect")
        channel = self.path("channel")
        out = self.path("output")
        for folder in (agent, channel, os.path.join(out, "workspace")):
            os.makedirs(folder)
        shutil.copy(CODER, os.path.join(agent, "general.py"))
        source = read(CODITECT)
        self.assertIn('CHANNEL_DIR = "/coditect"\n', source)
        with open(os.path.join(agent, "coditect.py"), "w", encoding="utf-8") as f:
            f.write(source.replace('CHANNEL_DIR = "/coditect"\n', "CHANNEL_DIR = %r\n" % channel))
        write_tree(self.path("input"), {"input.txt": "Add a CHANGES file."})
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        env.pop("PYTHONPATH", None)
        proc = subprocess.run(
            [sys.executable, os.path.join(agent, "general.py"), "--workspace", CALC, "--input", self.path("input"),
             "--out", out], input=llm_ok("```text path=CHANGES.txt\n1.0.1: nothing yet\n```\n"),
            capture_output=True, timeout=120, env=env, cwd=self.tmp)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertTrue(proc.stdout.startswith(b"general: wrote 1 file (CHANGES.txt)"), proc.stdout)
        self.assertEqual(read(os.path.join(out, "workspace", "CHANGES.txt")), "1.0.1: nothing yet\n")
        request = json.loads(read(os.path.join(channel, "llm.request")))  # no host here to take it away
        self.assertEqual(request["purpose"], "general")
        self.assertIn("Add a CHANGES file.", request["messages"][1]["content"])
        self.assertEqual(sorted(os.listdir(out)), ["answer.md", "coder.json", "workspace"])

    def test_no_stdin_answer_means_not_granted(self):
        proc = subprocess.run([sys.executable, CODER, "--workspace", CALC, "--input", self.path("nothing"),
                               "--out", self.path("out")], capture_output=True, text=True, timeout=120, cwd=self.tmp)
        self.assertEqual(proc.returncode, 2, proc.stderr)
        write_tree(self.path("in"), {"input.txt": "fix fib"})
        proc = subprocess.run([sys.executable, CODER, "--workspace", CALC, "--input", self.path("in"),
                               "--out", self.path("out")], capture_output=True, text=True, timeout=120,
                              cwd=self.tmp, stdin=subprocess.DEVNULL)
        self.assertEqual(proc.returncode, 3, proc.stderr)
        self.assertIn("not_granted", proc.stderr)

    def test_standard_library_only(self):
        if not hasattr(sys, "stdlib_module_names"):
            self.skipTest("needs Python 3.10+")
        banned = {"subprocess", "threading", "multiprocessing", "signal", "socket", "concurrent", "ctypes"}
        for script in (CODER, CODITECT):
            tree = ast.parse(read(script))
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
                    self.assertIn(top, sys.stdlib_module_names, "%s imports %s" % (script, name))
                    self.assertNotIn(top, banned, "%s imports %s" % (script, name))


if __name__ == "__main__":
    unittest.main()
