"""Tests of the Python agents (agents/analyzer.py, agents/tester.py) and of
tests/bench/gen_pyproject.py, run on the host:

    python3 -m unittest discover -s agents/tests -v      (from the repository root)

The agents run as subprocesses, as they would in the sandbox, against the
fixtures in tests/fixtures/pyprojects (whose facts FIXTURES.md lists) and
against small projects written to temporary folders.
"""

import ast
import importlib.util
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
ANALYZER = os.path.join(REPO, "agents", "analyzer.py")
TESTER = os.path.join(REPO, "agents", "tester.py")
GENERATOR = os.path.join(REPO, "tests", "bench", "gen_pyproject.py")
FIXTURES = os.path.join(REPO, "tests", "fixtures", "pyprojects")
CALC = os.path.join(FIXTURES, "calc")
CALC_FAILING = os.path.join(FIXTURES, "calc_failing")


def run(script, *args, timeout=300):
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONHASHSEED="0")
    env.pop("PYTHONPATH", None)
    return subprocess.run([sys.executable, script, *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


def write_tree(root, files):
    for rel, text in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        mode = "wb" if isinstance(text, bytes) else "w"
        with open(path, mode) as f:
            f.write(text if isinstance(text, bytes) else textwrap.dedent(text))


def load_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_tester_module():
    spec = importlib.util.spec_from_file_location("coditect_tester_under_test", TESTER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TempDirTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="agents-test-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def path(self, *parts):
        return os.path.join(self.tmp, *parts)


# ====================================================================== analyzer

class AnalyzerOnCalc(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="agents-analyzer-")
        cls.out = os.path.join(cls.tmp, "out")
        cls.proc = run(ANALYZER, "--root", CALC, "--out", cls.out)
        cls.report = load_json(os.path.join(cls.out, "report.json"))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, True)

    def test_exit_code_and_one_line_summary(self):
        self.assertEqual(self.proc.returncode, 0, self.proc.stderr)
        lines = self.proc.stdout.strip().splitlines()
        self.assertEqual(len(lines), 1, self.proc.stdout)
        self.assertTrue(lines[0].startswith("analyzer: 8 files"), lines[0])
        self.assertEqual(sorted(os.listdir(self.out)), ["report.json", "summary.md"])

    def test_top_level_keys(self):
        for key in ("version", "files", "modules", "functions", "classes", "imports", "todos", "tests",
                    "symbols", "errors", "summary"):
            self.assertIn(key, self.report)
        self.assertEqual(self.report["version"], 1)
        self.assertEqual(self.report["errors"], [])

    def test_summary(self):
        self.assertEqual(self.report["summary"], {
            "files": 8, "lines": 228, "bytes": 5514, "functions": 21, "classes": 2, "todos": 3, "tests": 8,
            "test_files": 2, "errors": 0, "skipped": 0,
            "languages": {"javascript": 1, "markdown": 1, "python": 5, "rust": 1}})

    def test_files(self):
        self.assertEqual([(f["path"], f["language"], f["lines"], f["bytes"]) for f in self.report["files"]], [
            ("README.md", "markdown", 11, 360), ("calc/__init__.py", "python", 7, 229),
            ("calc/fib.py", "python", 24, 604), ("calc/ops.py", "python", 71, 1966),
            ("lib.rs", "rust", 42, 891), ("tests/test_fib.py", "python", 28, 550),
            ("tests/test_ops.py", "python", 22, 504), ("tool.js", "javascript", 23, 410)])

    def test_modules(self):
        self.assertEqual([(m["path"], m["module"]) for m in self.report["modules"]], [
            ("calc/__init__.py", "calc"), ("calc/fib.py", "calc.fib"), ("calc/ops.py", "calc.ops"),
            ("tests/test_fib.py", "test_fib"), ("tests/test_ops.py", "test_ops")])
        docs = {m["module"]: m["docstring"] for m in self.report["modules"]}
        self.assertEqual(docs["calc.fib"], "Fibonacci numbers, iterative and memoized.")
        self.assertIsNone(docs["test_ops"])

    def test_functions(self):
        got = [(f["qualname"], f["file"], f["line"], f["end_line"], f["signature"], f["complexity"], f["method"])
               for f in self.report["functions"]]
        self.assertEqual(got, [
            ("fib", "calc/fib.py", 6, 13, "fib(n: int) -> int", 3, False),
            ("fib_memo", "calc/fib.py", 17, 19, "fib_memo(n: int) -> int", 2, False),
            ("fib_sequence", "calc/fib.py", 22, 24, "fib_sequence(count: int) -> list", 2, False),
            ("add", "calc/ops.py", 7, 9, "add(a: int, b: int) -> int", 1, False),
            ("sub", "calc/ops.py", 12, 14, "sub(a: int, b: int) -> int", 1, False),
            ("safe_div", "calc/ops.py", 17, 21, "safe_div(a: float, b: float, default: float=0.0) -> float", 2, False),
            ("mean", "calc/ops.py", 24, 29, "mean(values: Iterable[float]) -> float", 2, False),
            ("classify", "calc/ops.py", 32, 41, "classify(n: int) -> str", 5, False),
            ("Calculator.__init__", "calc/ops.py", 47, 48, "__init__(self) -> None", 1, True),
            ("Calculator.add", "calc/ops.py", 50, 54, "add(self, a: float, b: float) -> float", 1, True),
            ("Calculator.divide", "calc/ops.py", 56, 60, "divide(self, a: float, b: float) -> float", 1, True),
            ("Calculator.norm", "calc/ops.py", 62, 64, "norm(self) -> float", 2, True),
            ("Calculator.clear", "calc/ops.py", 66, 71, "clear(self) -> int", 1, True),
            ("test_fib_small", "tests/test_fib.py", 7, 10, "test_fib_small()", 1, False),
            ("test_fib_of_ten", "tests/test_fib.py", 13, 14, "test_fib_of_ten()", 1, False),
            ("test_fib_negative_raises", "tests/test_fib.py", 17, 19, "test_fib_negative_raises()", 1, False),
            ("test_fib_parametrized", "tests/test_fib.py", 23, 24, "test_fib_parametrized(n, expected)", 1, False),
            ("test_fib_sequence", "tests/test_fib.py", 27, 28, "test_fib_sequence()", 1, False),
            ("OpsTest.test_add", "tests/test_ops.py", 7, 8, "test_add(self)", 1, True),
            ("OpsTest.test_safe_div_by_zero", "tests/test_ops.py", 10, 11, "test_safe_div_by_zero(self)", 1, True),
            ("OpsTest.test_calculator_history", "tests/test_ops.py", 13, 18, "test_calculator_history(self)", 1, True),
        ])
        by_name = {f["qualname"]: f for f in self.report["functions"]}
        self.assertEqual(by_name["fib"]["calls"], ["ValueError", "range"])
        self.assertEqual(by_name["Calculator.add"]["calls"], ["add", "self.history.append"])
        self.assertEqual(by_name["Calculator.norm"]["calls"], ["math.sqrt", "sum"])
        self.assertEqual(by_name["fib_memo"]["decorators"], ["lru_cache(maxsize=None)"])
        self.assertEqual(by_name["add"]["docstring"], "Return the sum of a and b.")
        self.assertFalse(any(f["async"] for f in self.report["functions"]))
        for f in self.report["functions"]:
            self.assertEqual(set(f), {"name", "qualname", "file", "line", "end_line", "signature", "docstring",
                                      "complexity", "calls", "method", "async", "decorators"})

    def test_classes(self):
        classes = self.report["classes"]
        self.assertEqual([(c["name"], c["file"], c["line"], c["end_line"], c["bases"], c["methods"]) for c in classes], [
            ("Calculator", "calc/ops.py", 44, 71, [], ["__init__", "add", "divide", "norm", "clear"]),
            ("OpsTest", "tests/test_ops.py", 6, 18, ["unittest.TestCase"],
             ["test_add", "test_safe_div_by_zero", "test_calculator_history"])])
        self.assertEqual(classes[0]["docstring"], "A calculator that remembers every result it computed.")

    def test_todos(self):
        self.assertEqual(self.report["todos"], [
            {"file": "calc/ops.py", "line": 34, "kind": "TODO", "text": "describe multiples of ten separately"},
            {"file": "calc/ops.py", "line": 68, "kind": "FIXME", "text": "the count ignores results recorded by subclasses"},
            {"file": "tool.js", "line": 7, "kind": "TODO", "text": "honour the user's locale"}])

    def test_tests_and_what_they_cover(self):
        self.assertEqual(self.report["tests"], [
            {"file": "tests/test_fib.py", "module": "test_fib", "covers": ["calc/fib.py"],
             "tests": ["test_fib_small", "test_fib_of_ten", "test_fib_negative_raises", "test_fib_parametrized",
                       "test_fib_sequence"]},
            {"file": "tests/test_ops.py", "module": "test_ops", "covers": ["calc/ops.py"],
             "tests": ["OpsTest.test_add", "OpsTest.test_safe_div_by_zero", "OpsTest.test_calculator_history"]}])

    def test_imports(self):
        imports = self.report["imports"]
        self.assertEqual(len(imports), 10)
        self.assertIn({"file": "tests/test_ops.py", "line": 3, "module": "calc.ops",
                       "names": ["Calculator", "add", "safe_div"]}, imports)
        self.assertIn({"file": "calc/ops.py", "line": 3, "module": "math", "names": []}, imports)

    def test_symbols(self):
        other = [(s["name"], s["kind"], s["file"], s["line"], s["language"])
                 for s in self.report["symbols"] if s["language"] != "python"]
        self.assertEqual(other, [
            ("calc", "heading", "README.md", 1, "markdown"), ("Layout", "heading", "README.md", 6, "markdown"),
            ("Op", "enum", "lib.rs", 4, "rust"), ("Expr", "struct", "lib.rs", 10, "rust"),
            ("Eval", "trait", "lib.rs", 16, "rust"), ("eval", "function", "lib.rs", 17, "rust"),
            ("Eval for Expr", "impl", "lib.rs", 20, "rust"), ("eval", "function", "lib.rs", 21, "rust"),
            ("parse", "function", "lib.rs", 30, "rust"),
            ("formatNumber", "function", "tool.js", 6, "javascript"),
            ("parseNumber", "function", "tool.js", 11, "javascript"),
            ("History", "class", "tool.js", 13, "javascript")])
        python = [s for s in self.report["symbols"] if s["language"] == "python"]
        self.assertEqual(len(python), 23)
        self.assertEqual(sum(1 for s in python if s["kind"] == "method"), 8)
        self.assertEqual(len(self.report["symbols"]), 35)

    def test_summary_markdown(self):
        with open(os.path.join(self.out, "summary.md"), encoding="utf-8") as f:
            text = f.read()
        self.assertLess(len(text.splitlines()), 200)
        self.assertIn("| `classify` | calc/ops.py:32 | 5 |", text)
        self.assertIn("calc/ops.py:68 FIXME: the count ignores results recorded by subclasses", text)
        self.assertIn("| tests/test_fib.py | 5 | calc/fib.py |", text)

    def test_deterministic_and_the_failing_fixture_reads_the_same(self):
        out2 = os.path.join(self.tmp, "again")
        run(ANALYZER, "--root", CALC, "--out", out2)
        for name in ("report.json", "summary.md"):
            with open(os.path.join(self.out, name), "rb") as a, open(os.path.join(out2, name), "rb") as b:
                self.assertEqual(a.read(), b.read(), name)
        out3 = os.path.join(self.tmp, "failing")
        run(ANALYZER, "--root", CALC_FAILING, "--out", out3)
        self.assertEqual(load_json(os.path.join(out3, "report.json")), self.report)


class AnalyzerEdgeCases(TempDirTest):
    def analyze(self, files, *args):
        root = self.path("root")
        write_tree(root, files)
        out = self.path("out")
        proc = run(ANALYZER, "--root", root, "--out", out, *args)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        return load_json(os.path.join(out, "report.json"))

    def test_gitignore_hidden_and_skipped_folders(self):
        report = self.analyze({
            ".gitignore": "build/\n*.log\n!keep.log\n/top_only.py\n",
            "build/gen.py": "x = 1\n", "run.log": "log\n", "keep.log": "kept\n", "top_only.py": "x = 1\n",
            "sub/top_only.py": "x = 1\n", "sub/.gitignore": "local_*.txt\n", "sub/local_a.txt": "a\n",
            "local_b.txt": "b\n", ".hidden/a.py": "x = 1\n", ".dot.py": "x = 1\n",
            "node_modules/m/index.js": "x\n", "venv/lib.py": "x\n", ".venv/lib.py": "x\n",
            "__pycache__/a.py": "x\n", "pkg/__init__.py": "", "pkg/mod.py": "def f():\n    pass\n"})
        self.assertEqual([f["path"] for f in report["files"]],
                         ["keep.log", "local_b.txt", "pkg/__init__.py", "pkg/mod.py", "sub/top_only.py"])

    def test_binary_large_and_broken_files(self):
        report = self.analyze({
            "blob.dat": b"abc\0def", "big.py": "x = 1\n" * 50,
            "broken.py": "def f(:\n    pass  # TODO: still found\n", "good.py": "def g():\n    return 1\n"},
            "--max-file-bytes", "100")
        self.assertEqual([f["path"] for f in report["files"]], ["big.py", "broken.py", "good.py"])
        self.assertEqual(report["files"][0]["lines"], 50)
        self.assertEqual([s["path"] for s in report["skipped"]], ["big.py", "blob.dat"])
        self.assertEqual(report["skipped"][1]["reason"], "binary")
        self.assertEqual(len(report["errors"]), 1)
        self.assertEqual(report["errors"][0]["file"], "broken.py")
        self.assertTrue(report["errors"][0]["message"].startswith("syntax error at line 1:"), report["errors"])
        self.assertEqual([f["qualname"] for f in report["functions"]], ["g"])
        # not parsed, but still a module that tests can cover
        self.assertIn({"path": "big.py", "module": "big", "docstring": None}, report["modules"])
        self.assertEqual([(t["file"], t["kind"], t["text"]) for t in report["todos"]],
                         [("broken.py", "TODO", "still found")])

    def test_python_details(self):
        report = self.analyze({"m.py": '''\
            """Module doc."""
            import os.path as p, sys
            from . import sibling
            s = "# TODO: not a comment, a string"


            def outer(a, *args, b=2, **kw):
                def inner():
                    return helper(a)
                if a and b or kw:
                    pass
                while a:
                    try:
                        a -= 1
                    except ValueError:
                        pass
                    except (TypeError, KeyError):
                        pass
                return [x for x in args if x if x > 1]


            async def fetch(url: str) -> bytes:
                match url:
                    case "a":
                        return b"a"
                    case _:
                        return await get(url)  # HACK: no retries


            class A(Base, metaclass=Meta):
                class B:
                    def m(self):
                        lambda: self.n()
            '''})
        functions = {f["qualname"]: f for f in report["functions"]}
        self.assertEqual(sorted(functions), ["A.B.m", "fetch", "outer", "outer.<locals>.inner"])
        # 1 + if + (a and b or kw: 2 operands beyond the first) + while + 2 excepts + comprehension (for + 2 ifs)
        self.assertEqual(functions["outer"]["complexity"], 1 + 1 + 2 + 1 + 2 + 3)
        self.assertEqual(functions["outer"]["calls"], [])
        self.assertEqual(functions["outer.<locals>.inner"]["calls"], ["helper"])
        self.assertEqual(functions["outer"]["signature"], "outer(a, *args, b=2, **kw)")
        self.assertTrue(functions["fetch"]["async"])
        self.assertEqual(functions["fetch"]["complexity"], 3)
        self.assertEqual(functions["fetch"]["signature"], "fetch(url: str) -> bytes")
        self.assertTrue(functions["A.B.m"]["method"])
        self.assertEqual(functions["A.B.m"]["calls"], ["self.n"])
        self.assertFalse(functions["outer.<locals>.inner"]["method"])
        self.assertEqual([(c["qualname"], c["bases"]) for c in report["classes"]], [("A", ["Base"]), ("A.B", [])])
        self.assertEqual([(i["module"], i["names"]) for i in report["imports"]],
                         [("os.path", []), ("sys", []), (".", ["sibling"])])
        self.assertEqual([(t["line"], t["kind"], t["text"]) for t in report["todos"]], [(27, "HACK", "no retries")])
        self.assertEqual(report["modules"][0]["docstring"], "Module doc.")

    def test_coverage_by_name_and_by_import(self):
        report = self.analyze({
            "src/shop/__init__.py": "", "src/shop/cart.py": "def total():\n    return 0\n",
            "src/shop/tax.py": "RATE = 1\n", "src/shop/pricing/__init__.py": "",
            "src/shop/pricing/rules.py": "X = 1\n", "helpers.py": "",
            "tests/test_cart.py": "from shop import tax\nimport shop.pricing.rules\nimport os\n\ndef test_total():\n    pass\n",
            "tests/pricing_test.py": "from shop.cart import total\nimport helpers\nclass TestPricing:\n    def test_a(self):\n        pass\n    def helper(self):\n        pass\n",
            "tests/unit/__init__.py": "", "tests/unit/test_rel.py": "from . import conftest\n",
            "tests/unit/conftest.py": ""})
        covers = {t["file"]: t["covers"] for t in report["tests"]}
        self.assertEqual(covers["tests/test_cart.py"],
                         ["src/shop/cart.py", "src/shop/pricing/rules.py", "src/shop/tax.py"])
        self.assertEqual(covers["tests/pricing_test.py"],
                         ["helpers.py", "src/shop/cart.py", "src/shop/pricing/__init__.py"])
        # conftest.py is not a module to cover: `from . import conftest` names the package
        self.assertEqual(covers["tests/unit/test_rel.py"], ["tests/unit/__init__.py"])
        names = {t["file"]: t["tests"] for t in report["tests"]}
        self.assertEqual(names["tests/pricing_test.py"], ["TestPricing.test_a"])
        modules = {m["path"]: m["module"] for m in report["modules"]}
        self.assertEqual(modules["src/shop/pricing/rules.py"], "shop.pricing.rules")
        self.assertEqual(modules["tests/unit/test_rel.py"], "unit.test_rel")

    def test_other_languages(self):
        report = self.analyze({
            "main.go": "package main\n\n// TODO(bob): drop the global\ntype Server struct {\n}\n\n"
                       "func (s *Server) Start() error {\n\treturn nil\n}\n\nfunc main() {}\n",
            "util.c": "#include <stdio.h>\n/* HACK: fixed buffer\n * XXX second */\nstruct point {\n int x;\n};\n"
                      "static int helper(int a);\n\nstatic int\nhelper(int a)\n{\n    return a;\n}\n",
            "app.ts": "export interface Shape {}\nexport const make = async (n: number): Promise<string> => 'x';\n"
                      "export default class Circle {}\n",
            "tool.rb": "module Tools\n  class Runner\n    def run?(x) # FIXME: validate\n    end\n  end\nend\n",
            "run.sh": "#!/bin/sh\nsetup() {\n  true\n}\n", "script": "#!/usr/bin/env python3\nprint(1)\n",
            "Main.java": "public class Main {\n    public static void main(String[] args) {\n    }\n}\n",
            "conf.yaml": "a: 1 # TODO: yaml\n", "data.json": "{\"a\": \"TODO not a comment\"}\n"})
        symbols = [(s["file"], s["kind"], s["name"]) for s in report["symbols"]]
        for expected in [("main.go", "struct", "Server"), ("main.go", "method", "Start"),
                         ("main.go", "function", "main"), ("util.c", "struct", "point"),
                         ("util.c", "function", "helper"), ("app.ts", "interface", "Shape"),
                         ("app.ts", "function", "make"), ("app.ts", "class", "Circle"),
                         ("tool.rb", "module", "Tools"), ("tool.rb", "class", "Runner"),
                         ("tool.rb", "method", "run?"), ("run.sh", "function", "setup"),
                         ("Main.java", "class", "Main"), ("Main.java", "method", "main")]:
            self.assertIn(expected, symbols)
        self.assertEqual(sum(1 for s in symbols if s[:2] == ("util.c", "function")), 1)  # not the prototype
        languages = {f["path"]: f["language"] for f in report["files"]}
        self.assertEqual(languages["script"], "python")
        self.assertEqual(languages["run.sh"], "shell")
        self.assertEqual([(t["file"], t["line"], t["kind"], t["text"]) for t in report["todos"]], [
            ("conf.yaml", 1, "TODO", "yaml"), ("main.go", 3, "TODO", "drop the global"),
            ("tool.rb", 3, "FIXME", "validate"), ("util.c", 2, "HACK", "fixed buffer"),
            ("util.c", 3, "XXX", "second")])

    def test_missing_root(self):
        proc = run(ANALYZER, "--root", self.path("nope"), "--out", self.path("out"))
        self.assertEqual(proc.returncode, 2)


# ====================================================================== tester

class TesterOnFixtures(TempDirTest):
    NAMES = [
        "tests/test_fib.py::test_fib_small", "tests/test_fib.py::test_fib_of_ten",
        "tests/test_fib.py::test_fib_negative_raises", "tests/test_fib.py::test_fib_parametrized[3-2]",
        "tests/test_fib.py::test_fib_parametrized[5-5]", "tests/test_fib.py::test_fib_parametrized[7-13]",
        "tests/test_fib.py::test_fib_sequence", "tests/test_ops.py::OpsTest::test_add",
        "tests/test_ops.py::OpsTest::test_calculator_history", "tests/test_ops.py::OpsTest::test_safe_div_by_zero"]

    def test_calc_passes(self):
        out = self.path("out")
        proc = run(TESTER, "--root", CALC, "--out", out)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        self.assertEqual(os.listdir(out), ["tests.json"])
        report = load_json(os.path.join(out, "tests.json"))
        self.assertEqual({k: report[k] for k in ("passed", "failed", "errors", "skipped", "total")},
                         {"passed": 10, "failed": 0, "errors": 0, "skipped": 0, "total": 10})
        self.assertEqual([t["name"] for t in report["tests"]], self.NAMES)
        for test in report["tests"]:
            self.assertEqual(set(test), {"name", "file", "outcome", "message", "duration_ms"})
            self.assertEqual(test["outcome"], "passed")
            self.assertEqual(test["file"], test["name"].split("::")[0])
            self.assertIsInstance(test["duration_ms"], int)
        self.assertEqual(proc.stdout.strip().splitlines()[-1][:52],
                         "tester: 10 passed, 0 failed, 0 errors, 0 skipped of ")

    def test_calc_failing_fails_once(self):
        out = self.path("out")
        proc = run(TESTER, "--root", CALC_FAILING, "--out", out)
        self.assertEqual(proc.returncode, 1, proc.stdout + proc.stderr)
        self.assertEqual(sorted(os.listdir(out)), ["tests.json", "violation.json"])
        report = load_json(os.path.join(out, "tests.json"))
        self.assertEqual({k: report[k] for k in ("passed", "failed", "errors", "skipped", "total")},
                         {"passed": 9, "failed": 1, "errors": 0, "skipped": 0, "total": 10})
        self.assertEqual([t["name"] for t in report["tests"]], self.NAMES)
        failed = [t for t in report["tests"] if t["outcome"] != "passed"]
        self.assertEqual([t["name"] for t in failed], ["tests/test_fib.py::test_fib_of_ten"])
        self.assertTrue(failed[0]["message"].startswith("AssertionError: assert 55 == 56\n +  where 55 = fib(10)"),
                        failed[0]["message"])
        self.assertIn("tests/test_fib.py:14: in test_fib_of_ten", failed[0]["message"])
        self.assertEqual(load_json(os.path.join(out, "violation.json")),
                         {"kind": "tests_failed", "message": "1 of 10 tests failed: tests/test_fib.py::test_fib_of_ten"})
        self.assertIn("FAILED tests/test_fib.py::test_fib_of_ten", proc.stdout)


    def test_report_only_records_failures_without_failing(self):
        out = self.path("out")
        proc = run(TESTER, "--root", CALC_FAILING, "--out", out, "--report-only")
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        self.assertEqual(os.listdir(out), ["tests.json"])
        report = load_json(os.path.join(out, "tests.json"))
        self.assertEqual((report["passed"], report["failed"]), (9, 1))
        self.assertIn("--report-only", proc.stdout)


class TesterFeatures(TempDirTest):
    """One project that exercises the runner, the pytest stand-in and the failure paths."""

    PROJECT = {
        "pkg/__init__.py": "VALUE = 1\n\ndef greet(name):\n    return 'hello ' + name\n",
        "conftest.py": """\
            import pytest

            @pytest.fixture
            def base():
                return 10

            @pytest.fixture(scope="module")
            def counter():
                return {"n": 0}
            """,
        "tests/conftest.py": """\
            import pytest
            EVENTS = []

            @pytest.fixture
            def base(base):
                return base + 1

            @pytest.fixture
            def derived(base):
                return base * 2

            @pytest.fixture
            def resource():
                EVENTS.append("setup")
                yield "res"
                EVENTS.append("teardown")

            @pytest.fixture(autouse=True)
            def always():
                EVENTS.append("auto")

            @pytest.fixture
            def events():
                return EVENTS
            """,
        "tests/test_style.py": """\
            import os, sys, tempfile
            import pytest
            import pkg

            def test_fixture_override_and_chain(derived, base):
                assert (base, derived) == (11, 22)

            def test_yield_fixture(resource):
                assert resource == "res"

            def test_yield_teardown_ran(events):
                assert events.count("setup") == events.count("teardown") == 1
                assert events.count("auto") == 4  # tests/sub/test_dup.py ran first

            def test_unknown(no_such_fixture):
                pass

            def test_monkeypatch(monkeypatch):
                monkeypatch.setattr(pkg, "VALUE", 42)
                monkeypatch.setattr("pkg.greet", lambda n: "bye " + n)
                monkeypatch.setenv("AGENTS_TEST_X", "1")
                monkeypatch.setitem(pkg.__dict__, "NEW", 3)
                assert pkg.VALUE == 42 and pkg.greet("x") == "bye x" and os.environ["AGENTS_TEST_X"] == "1"

            def test_monkeypatch_undone():
                assert pkg.VALUE == 1 and pkg.greet("x") == "hello x"
                assert "AGENTS_TEST_X" not in os.environ and not hasattr(pkg, "NEW")

            def test_tmp_path(tmp_path):
                (tmp_path / "a.txt").write_text("hi")
                assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]

            def test_tempfile_is_private():
                with tempfile.TemporaryDirectory() as folder:
                    assert ".tester-tmp" in folder

            def test_capsys(capsys):
                print("out!")
                print("err!", file=sys.stderr)
                captured = capsys.readouterr()
                assert (captured.out, captured.err) == ("out!\\n", "err!\\n")

            @pytest.mark.skip(reason="not today")
            def test_skip_mark():
                assert False

            @pytest.mark.skipif(sys.version_info < (3,), reason="old")
            def test_skipif_false():
                pass

            @pytest.mark.skipif("sys.platform != 'nowhere'", reason="string condition")
            def test_skipif_string():
                pass

            def test_skip_call():
                pytest.skip("inside")

            @pytest.mark.xfail(reason="known bug")
            def test_xfail():
                assert 1 == 2

            @pytest.mark.xfail(reason="fixed now")
            def test_xpass():
                pass

            @pytest.mark.xfail(strict=True)
            def test_xpass_strict():
                pass

            @pytest.mark.xfail(raises=KeyError)
            def test_xfail_other_exception():
                raise ValueError("not a key error")

            def test_fail_call():
                pytest.fail("explicit failure")

            def test_sys_exit():
                sys.exit(3)

            def test_keyboard_interrupt():
                raise KeyboardInterrupt

            def test_prints_then_fails():
                print("debug output")
                assert [1, 2, 3] == [1, 2, 4]

            def test_raises_forms():
                info = pytest.raises(ZeroDivisionError, lambda: 1 / 0)
                assert info.type is ZeroDivisionError
                with pytest.raises((KeyError, ValueError), match="^bad") as info:
                    raise ValueError("bad value")
                assert "bad" in str(info.value)

            def test_raises_did_not_raise():
                with pytest.raises(ValueError):
                    pass

            def test_raises_match_fails():
                with pytest.raises(ValueError, match=r"^abc"):
                    raise ValueError("xyz")

            def test_approx():
                assert 0.1 + 0.2 == pytest.approx(0.3)
                assert [0.1 + 0.2, 1.0] == pytest.approx([0.3, 1.0])
                assert {"a": 0.1 + 0.2} == pytest.approx({"a": 0.3})
                assert 1.0 != pytest.approx(1.1)
                assert 100 == pytest.approx(101, rel=0.02)
                assert 1.0 == pytest.approx(1.05, abs=0.1)

            @pytest.mark.parametrize("a", [1, 2])
            @pytest.mark.parametrize("b", ["x", "y"])
            def test_stacked(a, b):
                assert a in (1, 2) and b in "xy"

            @pytest.mark.parametrize("v", [pytest.param(1, id="one"), pytest.param(2, marks=pytest.mark.xfail), 3],
                                     ids=["ignored", "two", "three"])
            def test_params(v):
                assert v != 2

            @pytest.mark.parametrize(["x", "y"], [(1, 1), (2, 2)], ids=lambda v: "v%s" % v)
            def test_list_argnames(x, y):
                assert x == y

            @pytest.mark.usefixtures("resource")
            def test_usefixtures():
                pass

            def test_request(request):
                assert request.node.name == "test_request"

            def test_module_scope_1(counter):
                counter["n"] += 1
                assert counter["n"] == 1

            def test_module_scope_2(counter):
                counter["n"] += 1
                assert counter["n"] == 2

            def test_assert_message():
                x = 3
                assert x > 5, "x too small"

            class TestThing:
                def setup_method(self, method):
                    self.value = 5

                @pytest.fixture
                def doubled(self):
                    return self.value * 2

                def test_value(self, doubled):
                    assert (self.value, doubled) == (5, 10)

                def test_fails(self):
                    assert self.value == 6

            class TestHasInit:
                def __init__(self):
                    pass

                def test_never_collected(self):
                    assert False

            def setup_module(module):
                module.READY = True

            def test_setup_module_ran():
                assert READY
            """,
        "tests/test_unit.py": """\
            import sys, unittest

            class Case(unittest.TestCase):
                @classmethod
                def setUpClass(cls):
                    cls.shared = [1]

                def test_shared(self):
                    self.assertEqual(self.shared, [1])

                def test_fail(self):
                    print("unittest output")
                    self.assertEqual(1, 2)

                def test_error(self):
                    raise RuntimeError("boom")

                @unittest.skip("nope")
                def test_skip(self):
                    pass

                @unittest.expectedFailure
                def test_expected_failure(self):
                    self.assertEqual(1, 2)

                @unittest.expectedFailure
                def test_unexpected_success(self):
                    pass

                def test_subtests(self):
                    for i in range(3):
                        with self.subTest(i=i):
                            self.assertLess(i, 2)

                def test_exit(self):
                    sys.exit(1)

                def test_interrupt(self):
                    raise KeyboardInterrupt

            class BrokenSetup(unittest.TestCase):
                @classmethod
                def setUpClass(cls):
                    raise ValueError("setup broke")

                def test_a(self):
                    pass
            """,
        "tests/test_broken_import.py": "import does_not_exist_anywhere\n\ndef test_x():\n    pass\n",
        "tests/test_syntax.py": "def test_x(:\n    pass\n",
        "tests/test_exit_at_import.py": "import sys\nsys.exit('bye')\n",
        "tests/test_module_skip.py": "import pytest\npytest.skip('whole module', allow_module_level=True)\n",
        "tests/sub/test_dup.py": "def test_in_sub():\n    assert True\n",
        "other/test_dup.py": "def test_in_other():\n    assert True\n",
        "other/helper_test.py": "def test_suffix_pattern():\n    pass\n",
    }

    EXPECTED = {
        "other/helper_test.py::test_suffix_pattern": "passed",
        "other/test_dup.py::test_in_other": "passed",
        "tests/sub/test_dup.py::test_in_sub": "passed",
        "tests/test_broken_import.py": "error",
        "tests/test_exit_at_import.py": "error",
        "tests/test_module_skip.py": "skipped",
        "tests/test_syntax.py": "error",
        "tests/test_style.py::test_fixture_override_and_chain": "passed",
        "tests/test_style.py::test_yield_fixture": "passed",
        "tests/test_style.py::test_yield_teardown_ran": "passed",
        "tests/test_style.py::test_unknown": "error",
        "tests/test_style.py::test_monkeypatch": "passed",
        "tests/test_style.py::test_monkeypatch_undone": "passed",
        "tests/test_style.py::test_tmp_path": "passed",
        "tests/test_style.py::test_tempfile_is_private": "passed",
        "tests/test_style.py::test_capsys": "passed",
        "tests/test_style.py::test_skip_mark": "skipped",
        "tests/test_style.py::test_skipif_false": "passed",
        "tests/test_style.py::test_skipif_string": "skipped",
        "tests/test_style.py::test_skip_call": "skipped",
        "tests/test_style.py::test_xfail": "xfailed",
        "tests/test_style.py::test_xpass": "xpassed",
        "tests/test_style.py::test_xpass_strict": "failed",
        "tests/test_style.py::test_xfail_other_exception": "failed",
        "tests/test_style.py::test_fail_call": "failed",
        "tests/test_style.py::test_sys_exit": "error",
        "tests/test_style.py::test_keyboard_interrupt": "error",
        "tests/test_style.py::test_prints_then_fails": "failed",
        "tests/test_style.py::test_raises_forms": "passed",
        "tests/test_style.py::test_raises_did_not_raise": "failed",
        "tests/test_style.py::test_raises_match_fails": "failed",
        "tests/test_style.py::test_approx": "passed",
        "tests/test_style.py::test_stacked[x-1]": "passed",
        "tests/test_style.py::test_stacked[x-2]": "passed",
        "tests/test_style.py::test_stacked[y-1]": "passed",
        "tests/test_style.py::test_stacked[y-2]": "passed",
        "tests/test_style.py::test_params[one]": "passed",
        "tests/test_style.py::test_params[two]": "xfailed",
        "tests/test_style.py::test_params[three]": "passed",
        "tests/test_style.py::test_list_argnames[v1-v1]": "passed",
        "tests/test_style.py::test_list_argnames[v2-v2]": "passed",
        "tests/test_style.py::test_usefixtures": "passed",
        "tests/test_style.py::test_request": "passed",
        "tests/test_style.py::test_module_scope_1": "passed",
        "tests/test_style.py::test_module_scope_2": "passed",
        "tests/test_style.py::test_assert_message": "failed",
        "tests/test_style.py::TestThing::test_value": "passed",
        "tests/test_style.py::TestThing::test_fails": "failed",
        "tests/test_style.py::test_setup_module_ran": "passed",
        "tests/test_unit.py::Case::test_shared": "passed",
        "tests/test_unit.py::Case::test_fail": "failed",
        "tests/test_unit.py::Case::test_error": "error",
        "tests/test_unit.py::Case::test_skip": "skipped",
        "tests/test_unit.py::Case::test_expected_failure": "xfailed",
        "tests/test_unit.py::Case::test_unexpected_success": "failed",
        "tests/test_unit.py::Case::test_subtests": "failed",
        "tests/test_unit.py::Case::test_exit": "error",
        "tests/test_unit.py::Case::test_interrupt": "error",
        "tests/test_unit.py::BrokenSetup::setUpClass": "error",
    }

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="agents-tester-")
        cls.root = os.path.join(cls.tmp, "root")
        write_tree(cls.root, cls.PROJECT)
        cls.out = os.path.join(cls.tmp, "out")
        cls.proc = run(TESTER, "--root", cls.root, "--out", cls.out)
        cls.report = load_json(os.path.join(cls.out, "tests.json"))
        cls.by_name = {t["name"]: t for t in cls.report["tests"]}

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, True)

    def message(self, name):
        return self.by_name[name]["message"]

    def test_every_outcome(self):
        got = {t["name"]: t["outcome"] for t in self.report["tests"]}
        self.assertEqual(got, self.EXPECTED)
        self.assertEqual(len(self.report["tests"]), len(self.EXPECTED))  # no duplicates

    def test_counts_and_exit(self):
        outcomes = list(self.EXPECTED.values())
        self.assertEqual(self.proc.returncode, 1)
        self.assertEqual(self.report["total"], len(outcomes))
        self.assertEqual(self.report["passed"], outcomes.count("passed") + outcomes.count("xpassed"))
        self.assertEqual(self.report["failed"], outcomes.count("failed"))
        self.assertEqual(self.report["errors"], outcomes.count("error"))
        self.assertEqual(self.report["skipped"], outcomes.count("skipped") + outcomes.count("xfailed"))
        self.assertEqual((self.report["xfailed"], self.report["xpassed"]), (3, 1))
        self.assertEqual(self.report["passed"] + self.report["failed"] + self.report["errors"]
                         + self.report["skipped"], self.report["total"])

    def test_out_holds_only_the_reports(self):
        self.assertEqual(sorted(os.listdir(self.out)), ["tests.json", "violation.json"])
        self.assertEqual([n for n in os.listdir(self.root) if n.startswith(".") or n == "__pycache__"], [])
        for folder, dirs, _ in os.walk(self.root):
            self.assertNotIn("__pycache__", dirs, folder)

    def test_violation(self):
        violation = load_json(os.path.join(self.out, "violation.json"))
        self.assertEqual(violation["kind"], "tests_failed")
        outcomes = list(self.EXPECTED.values())
        bad = outcomes.count("failed") + outcomes.count("error")
        self.assertTrue(violation["message"].startswith("%d of %d tests failed and %d errored: "
                                                        % (outcomes.count("failed"), len(outcomes), outcomes.count("error"))),
                        violation["message"])
        self.assertTrue(violation["message"].endswith(" and %d more" % (bad - 10)), violation["message"])
        with open(os.path.join(self.out, "violation.json"), "rb") as f:
            self.assertLess(len(f.read()), 1000)

    def test_assertion_messages(self):
        self.assertTrue(self.message("tests/test_style.py::test_prints_then_fails").startswith(
            "AssertionError: assert [1, 2, 3] == [1, 2, 4]\nAt index 2 diff: 3 != 4"))
        self.assertIn("--- captured stdout ---\ndebug output", self.message("tests/test_style.py::test_prints_then_fails"))
        self.assertTrue(self.message("tests/test_style.py::test_assert_message").startswith(
            "AssertionError: x too small\nassert 3 > 5\n +  where 3 = x"))
        self.assertTrue(self.message("tests/test_style.py::TestThing::test_fails").startswith(
            "AssertionError: assert 5 == 6\n +  where 5 = self.value"))
        self.assertIn("tests/test_style.py:", self.message("tests/test_style.py::TestThing::test_fails"))

    def test_other_messages(self):
        self.assertIn("fixture 'no_such_fixture' not found", self.message("tests/test_style.py::test_unknown"))
        self.assertTrue(self.message("tests/test_style.py::test_fail_call").startswith("Failed: explicit failure"))
        self.assertIn("SystemExit", self.message("tests/test_style.py::test_sys_exit"))
        self.assertIn("KeyboardInterrupt", self.message("tests/test_style.py::test_keyboard_interrupt"))
        self.assertIn("DID NOT RAISE ValueError", self.message("tests/test_style.py::test_raises_did_not_raise"))
        self.assertIn("Regex pattern did not match", self.message("tests/test_style.py::test_raises_match_fails"))
        self.assertIn("XPASS(strict)", self.message("tests/test_style.py::test_xpass_strict"))
        self.assertEqual(self.message("tests/test_style.py::test_skip_mark"), "not today")
        self.assertIn("No module named 'does_not_exist_anywhere'", self.message("tests/test_broken_import.py"))
        self.assertIn("SyntaxError", self.message("tests/test_syntax.py"))
        self.assertIn("SystemExit: bye", self.message("tests/test_exit_at_import.py"))
        self.assertIn("--- captured stdout ---\nunittest output", self.message("tests/test_unit.py::Case::test_fail"))
        self.assertIn("subtest (i=2)", self.message("tests/test_unit.py::Case::test_subtests"))
        self.assertIn("tests/test_unit.py:", self.message("tests/test_unit.py::Case::test_interrupt"))
        self.assertIn("setup broke", self.message("tests/test_unit.py::BrokenSetup::setUpClass"))
        for test in self.report["tests"]:
            self.assertLess(len(test["message"]), 2048 + 1024 + 64, test["name"])

    def test_stdout_lists_failures_and_ends_with_the_summary(self):
        lines = self.proc.stdout.strip().splitlines()
        self.assertIn("FAILED tests/test_style.py::TestThing::test_fails", lines)
        self.assertIn("ERROR tests/test_style.py::test_unknown", lines)
        self.assertTrue(lines[-1].startswith("tester: %d passed, " % self.report["passed"]), lines[-1])

    def test_paths_select_files_folders_and_node_ids(self):
        out = os.path.join(self.tmp, "selected")
        proc = run(TESTER, "--root", self.root, "--out", out, "tests/test_style.py::TestThing",
                   "tests/test_style.py::test_stacked", "other", "missing.py")
        report = load_json(os.path.join(out, "tests.json"))
        self.assertEqual([t["name"] for t in report["tests"]], [
            "missing.py", "other/helper_test.py::test_suffix_pattern", "other/test_dup.py::test_in_other",
            "tests/test_style.py::test_stacked[x-1]", "tests/test_style.py::test_stacked[x-2]",
            "tests/test_style.py::test_stacked[y-1]", "tests/test_style.py::test_stacked[y-2]",
            "tests/test_style.py::TestThing::test_value", "tests/test_style.py::TestThing::test_fails"])
        self.assertEqual(proc.returncode, 1)

    def test_pattern(self):
        out = os.path.join(self.tmp, "pattern")
        proc = run(TESTER, "--root", self.root, "--out", out, "--pattern", "*_dup.py")
        self.assertEqual(proc.returncode, 0, proc.stdout)
        report = load_json(os.path.join(out, "tests.json"))
        self.assertEqual([t["name"] for t in report["tests"]],
                         ["other/test_dup.py::test_in_other", "tests/sub/test_dup.py::test_in_sub"])
        self.assertFalse(os.path.exists(os.path.join(out, "violation.json")))


class TesterSmallCases(TempDirTest):
    def run_tester(self, files, *args):
        root = self.path("root")
        write_tree(root, files)
        out = self.path("out")
        proc = run(TESTER, "--root", root, "--out", out, *args)
        return proc, load_json(os.path.join(out, "tests.json")), out

    def test_no_tests(self):
        proc, report, out = self.run_tester({"pkg/mod.py": "X = 1\n", ".gitignore": "build/\n", "build/test_x.py": "def test_x(): assert False\n"})
        self.assertEqual(proc.returncode, 0)
        self.assertEqual(report["tests"], [])
        self.assertEqual({k: report[k] for k in ("passed", "failed", "errors", "skipped", "total")},
                         {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "total": 0})
        self.assertIn("no tests found", proc.stdout)
        self.assertEqual(os.listdir(out), ["tests.json"])

    def test_long_output_and_messages_are_cut(self):
        proc, report, _ = self.run_tester({"test_long.py": """\
            def test_loud():
                print("x" * 10000)
                raise ValueError("y" * 10000)
            """})
        message = report["tests"][0]["message"]
        self.assertEqual(report["tests"][0]["outcome"], "failed")
        self.assertLess(len(message), 2048 + 1024 + 64)
        self.assertIn("--- captured stdout ---", message)
        self.assertEqual(proc.returncode, 1)

    def test_many_failures_name_ten(self):
        body = "".join("def test_f%02d():\n    assert %d == 0\n\n" % (i, i + 1) for i in range(25))
        _, report, out = self.run_tester({"test_many.py": body})
        self.assertEqual(report["failed"], 25)
        violation = load_json(os.path.join(out, "violation.json"))
        self.assertEqual(violation["message"].count("test_many.py::"), 10)
        self.assertTrue(violation["message"].startswith("25 of 25 tests failed: test_many.py::test_f00"))
        self.assertTrue(violation["message"].endswith(" and 15 more"))

    def test_package_tests_import_under_their_dotted_name(self):
        proc, report, _ = self.run_tester({
            "app/__init__.py": "", "app/core.py": "def f():\n    return 2\n",
            "app/tests/__init__.py": "", "app/tests/helpers.py": "EXPECTED = 2\n",
            "app/tests/test_core.py": "from . import helpers\nfrom app.core import f\n\n"
                                      "def test_f():\n    assert __name__ == 'app.tests.test_core'\n"
                                      "    assert f() == helpers.EXPECTED\n"})
        self.assertEqual([(t["name"], t["outcome"]) for t in report["tests"]],
                         [("app/tests/test_core.py::test_f", "passed")], report)
        self.assertEqual(proc.returncode, 0)

    def test_fixture_errors_and_teardown_errors(self):
        _, report, _ = self.run_tester({"test_fx.py": """\
            import pytest

            @pytest.fixture
            def broken():
                raise RuntimeError("fixture broke")

            @pytest.fixture
            def bad_teardown():
                yield 1
                raise RuntimeError("teardown broke")

            @pytest.fixture(params=[1, 2])
            def with_params(request):
                return request.param

            def test_broken(broken):
                pass

            def test_bad_teardown(bad_teardown):
                assert bad_teardown == 1

            def test_with_params(with_params):
                pass
            """})
        got = {t["name"].split("::")[1]: (t["outcome"], t["message"]) for t in report["tests"]}
        self.assertEqual(got["test_broken"][0], "error")
        self.assertIn("fixture broke", got["test_broken"][1])
        self.assertEqual(got["test_bad_teardown"][0], "error")
        self.assertIn("teardown broke", got["test_bad_teardown"][1])
        self.assertEqual(got["test_with_params"][0], "error")
        self.assertIn("params=", got["test_with_params"][1])


    def test_session_fixture_is_made_once_for_the_run(self):
        proc, report, _ = self.run_tester({
            "conftest.py": "import pytest\nCALLS = []\n\n@pytest.fixture(scope='session')\ndef conn():\n"
                           "    CALLS.append(1)\n    yield len(CALLS)\n",
            "tests/test_a.py": "def test_a(conn):\n    assert conn == 1\n",
            "tests/test_b.py": "def test_b(conn):\n    assert conn == 1\n"})
        self.assertEqual(proc.returncode, 0, proc.stdout)
        self.assertEqual(report["passed"], 2)


class PytestStandIn(unittest.TestCase):
    """The stand-in's pieces, used directly."""

    @classmethod
    def setUpClass(cls):
        cls.t = load_tester_module()
        cls.pytest = cls.t.build_pytest_shim()

    def test_approx(self):
        approx = self.pytest.approx
        self.assertTrue(0.1 + 0.2 == approx(0.3))
        self.assertFalse(0.31 == approx(0.3))
        self.assertTrue([1.0000001, 2] == approx([1, 2]))
        self.assertFalse([1, 2, 3] == approx([1, 2]))
        self.assertTrue((1.0, 2.0) == approx((1, 2)))
        self.assertTrue({"a": 1.0000001} == approx({"a": 1}))
        self.assertFalse(float("nan") == approx(float("nan")))
        self.assertTrue(float("nan") == approx(float("nan"), nan_ok=True))
        self.assertTrue(float("inf") == approx(float("inf")))
        self.assertFalse("a" == approx(1))
        self.assertIn("±", repr(approx(1.0)))

    def test_raises(self):
        raises = self.pytest.raises
        with raises(ValueError, match="b.d") as info:
            raise ValueError("a bad thing")
        self.assertIs(info.type, ValueError)
        self.assertEqual(info.typename, "ValueError")
        info = raises(KeyError, {}.__getitem__, "k")
        self.assertIsInstance(info.value, KeyError)
        with self.assertRaises(self.t.Failed):
            with raises(ValueError):
                pass
        with self.assertRaises(TypeError):  # another exception goes through
            with raises(ValueError):
                raise TypeError("x")

    def test_parametrize_ids(self):
        mark = self.pytest.mark
        param = self.pytest.param

        @mark.parametrize("a, b", [(1, "x"), (2.5, None), param(3, object(), id="custom"), ([1], {})])
        def f(a, b):
            pass

        cases = self.t.expand_parametrize(self.t._marks_of(f))
        self.assertEqual([c[0] for c in cases], ["1-x", "2.5-None", "custom", "a3-b3"])
        self.assertEqual(cases[0][1], {"a": 1, "b": "x"})

        @mark.parametrize("n", [1, 1, 2])
        def g(n):
            pass

        self.assertEqual([c[0] for c in self.t.expand_parametrize(self.t._marks_of(g))], ["10", "11", "2"])
        self.assertEqual(self.t.expand_parametrize([self.t.Mark("parametrize", ("n", []))]), [])

    def test_marks_apply_to_functions_and_classes(self):
        mark = self.pytest.mark

        @mark.skipif(True, reason="r")
        @mark.xfail(strict=True)
        class C:
            pass

        self.assertEqual([(m.name, m.args, m.kwargs) for m in self.t._marks_of(C)],
                         [("xfail", (), {"strict": True}), ("skipif", (True,), {"reason": "r"})])

    def test_monkeypatch_undo(self):
        class Target:
            attr = 1
        patch = self.t.MonkeyPatch()
        patch.setattr(Target, "attr", 2)
        patch.setattr(Target, "added", 3, raising=False)
        data = {"k": 1}
        patch.setitem(data, "k", 2)
        patch.setitem(data, "new", 1)
        patch.delitem(data, "k")
        os.environ.pop("AGENTS_MP_TEST", None)
        patch.setenv("AGENTS_MP_TEST", "v")
        patch.undo()
        self.assertEqual(Target.attr, 1)
        self.assertFalse(hasattr(Target, "added"))
        self.assertEqual(data, {"k": 1})
        self.assertNotIn("AGENTS_MP_TEST", os.environ)


# ====================================================================== both agents

class StandardLibraryOnly(unittest.TestCase):
    def test_agents_import_only_the_standard_library(self):
        if not hasattr(sys, "stdlib_module_names"):
            self.skipTest("needs Python 3.10+")
        for script in (ANALYZER, TESTER, GENERATOR):
            with open(script, encoding="utf-8") as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top == "pytest":
                        continue  # only tried, the stand-in takes over without it
                    self.assertIn(top, sys.stdlib_module_names, "%s imports %s" % (script, name))
            banned = {"subprocess", "threading", "multiprocessing", "signal", "socket", "concurrent"}
            imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
            imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
            if script != GENERATOR:
                self.assertEqual(imported & banned, set(), script)


class GeneratedProject(TempDirTest):
    def test_generator_is_deterministic_and_every_test_passes(self):
        first, second = self.path("a"), self.path("b")
        proc = run(GENERATOR, first, "1500")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        run(GENERATOR, second, "1500")
        files = []
        for folder, dirs, names in os.walk(first):
            dirs.sort()
            for name in sorted(names):
                rel = os.path.relpath(os.path.join(folder, name), first)
                files.append(rel)
                with open(os.path.join(first, rel), "rb") as a, open(os.path.join(second, rel), "rb") as b:
                    self.assertEqual(a.read(), b.read(), rel)
        self.assertNotIn("__pycache__", "".join(files))
        lines = 0
        for rel in files:
            if rel.endswith(".py"):
                with open(os.path.join(first, rel), encoding="utf-8") as f:
                    lines += sum(1 for _ in f)
        self.assertGreaterEqual(lines, 1500)
        self.assertLess(lines, 1500 * 1.3)
        self.assertTrue(any(rel.startswith("tests" + os.sep + "test_") for rel in files))

        out = self.path("tested")
        proc = run(TESTER, "--root", first, "--out", out)
        self.assertEqual(proc.returncode, 0, proc.stdout[-3000:])
        report = load_json(os.path.join(out, "tests.json"))
        self.assertGreater(report["total"], 50)
        self.assertEqual(report["passed"], report["total"])

        out = self.path("analyzed")
        proc = run(ANALYZER, "--root", first, "--out", out)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        analysis = load_json(os.path.join(out, "report.json"))
        self.assertEqual(analysis["errors"], [])
        self.assertGreater(analysis["summary"]["functions"], 50)
        self.assertGreater(analysis["summary"]["classes"], 3)
        self.assertGreater(len(analysis["tests"]), 5)

    def test_generator_refuses_a_non_empty_folder(self):
        write_tree(self.path("full"), {"x.txt": "x"})
        self.assertEqual(run(GENERATOR, self.path("full"), "200").returncode, 2)


if __name__ == "__main__":
    unittest.main()
