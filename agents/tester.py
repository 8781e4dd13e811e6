#!/usr/bin/env python3
"""tester: discovers and runs a workspace's Python tests, for the Coditect mesh.

Runs under CPython 3.12 for WASI inside the sandbox (standard library only:
no subprocess, threads, signals or network; writes nothing but OUT) and under
any CPython >= 3.9 on a host.

    tester.py [--root /workspace] [--out /output] [--pattern 'test*.py'] [PATHS...]

Discovery: files named `test*.py` or `*_test.py` (or only --pattern when
given) anywhere under ROOT, skipping `.git`, `__pycache__`, `node_modules`,
`.venv`, `venv`, hidden files and folders and what `.gitignore` files
exclude. PATHS (relative to ROOT, or absolute) narrow the run to files,
folders or node ids (`tests/test_x.py::TestY::test_z`, a prefix of an id
selects all the ids below it, parametrized ones included).

Two kinds of tests in each file:
- unittest: what `unittest.TestLoader.loadTestsFromModule` finds (TestCase
  subclasses, `load_tests`), run as one suite per file so setUpClass and
  setUpModule work; ids `FILE::Class::test_method`.
- pytest style: module-level `test*` functions and `test*` methods of `Test*`
  classes that are not TestCase subclasses and have no `__init__` (one fresh
  instance per test); ids `FILE::test_func`, `FILE::TestClass::test_method`,
  with `[id]` for parametrized cases. xunit hooks: setup_module/
  teardown_module, setup_class/teardown_class, setup_method/teardown_method,
  setup_function/teardown_function.

When `import pytest` fails, a small stand-in module is installed as `pytest`:
raises (context manager and callable, `match=`), approx (numbers, sequences,
mappings), warns, mark.parametrize (one or more argnames, list of values or
tuples, `pytest.param(..., id=, marks=)`, `ids=` list or callable, stacked
marks make the product), mark.skip, mark.skipif (bools or strings), mark.xfail
(`raises=`, `strict=`, `run=`), mark.usefixtures, skip(), fail(), xfail(),
importorskip(), param() and fixture (function, yield fixtures, `autouse=`,
`name=`; a fixture may request fixtures). Fixtures are looked up in the
test's class, its module, then the `conftest.py` files from ROOT down to the
test's folder (nearer ones win), then the builtins: tmp_path (a fresh folder
under OUT/.tester-tmp), tmp_path_factory, tmpdir (a pathlib.Path here),
capsys, capfd (same as capsys), monkeypatch (setattr, delattr, setitem,
delitem, setenv, delenv, syspath_prepend, chdir; undone after the test) and
request (node.name, function, cls, instance, module, addfinalizer,
getfixturevalue). Fixture scopes: "function" is per test; "class" and
"module" are kept for the file; "package" and "session" for the run.
Fixtures with `params=` are not supported (the test is an error saying so).
An unknown fixture makes the test an error naming it. With the real pytest
installed, its marks, fixtures and outcome exceptions are read the same way.

Outcomes: "passed", "failed" (the test body raised: an assertion or any
other exception), "error" (setup, fixture or teardown failed, the module did
not import, or the test raised SystemExit, KeyboardInterrupt or another
BaseException), "skipped", "xfailed" (an expected failure happened) and
"xpassed" (an expected failure passed; a strict xfail that passes is
"failed"). In the totals xfailed counts as skipped and xpassed as passed, so
passed + failed + errors + skipped == total; tests.json also has the
separate "xfailed" and "xpassed" counts. unittest's expectedFailure maps to
xfailed; an unexpected success is failed, as unittest itself judges it.

Bare asserts in test files and conftest.py are rewritten at import (as
pytest does) so a failure shows the compared values: `assert fib(10) == 56`
fails with "AssertionError: assert 55 == 56" and "where 55 = fib(10)". Each
operand is still evaluated exactly once. A module whose docstring contains
PYTEST_DONT_REWRITE is left alone.

Imports follow pytest's "prepend" mode without a rootdir: from the test
file's folder walk up while the folder has `__init__.py`; the first folder
without one goes first on sys.path and the module is imported under its
dotted name from there. ROOT is on sys.path too. No bytecode is written.
After each file its test modules leave sys.modules (so two tests/test_x.py in
different folders do not clash); the project's modules stay imported.

Per test: {"name", "file", "outcome", "message", "duration_ms"}; "message"
is "" for a pass, else the failure text (exception, then the last frames in
the project's files, at most about 2 KiB), followed by at most 1 KiB of what
the test printed. Output of every test is captured. `tempfile` and TMPDIR
point into OUT/.tester-tmp while the tests run (the sandbox has no /tmp).

OUT/tests.json: {"passed", "failed", "errors", "skipped", "total", "xfailed",
"xpassed", "files", "duration_ms", "tests": [...]}. When a test failed or
errored OUT/violation.json is written too: {"kind": "tests_failed",
"message": "1 of 7 tests failed: tests/test_fib.py::test_fib_of_ten"} (at
most 10 names, under 1000 bytes) and the exit code is 1; otherwise 0 (no
tests found is 0 as well). With --report-only failures are recorded in
tests.json only, and the exit code is 0. OUT/.tester-tmp is removed at the end. The JSON
files are plain JSON written one test per line.

Limits: without threads or signals a test that never returns is stopped only
by the sandbox's own limits; fd-level capture is not possible (capfd is
capsys); async test functions are reported as skipped.
"""

import argparse
import ast
import contextlib
import enum
import fnmatch
import functools
import importlib
import importlib.machinery
import importlib.util
import inspect
import io
import itertools
import json
import linecache
import math
import os
import re
import shutil
import sys
import time
import traceback
import types
import unittest
import warnings

SKIP_DIRS = frozenset({".git", "__pycache__", "node_modules", ".venv", "venv"})
DEFAULT_PATTERNS = ("test*.py", "*_test.py")
MESSAGE_MAX = 2048
CAPTURE_MAX = 1024
VIOLATION_MAX = 1000
VIOLATION_NAMES = 10
TMP_NAME = ".tester-tmp"

_REAL_STDOUT = sys.stdout
_REAL_STDERR = sys.stderr
_NOTSET = object()


def out(text=""):
    try:
        _REAL_STDOUT.write(text + "\n")
        _REAL_STDOUT.flush()
    except (OSError, ValueError):  # a closed pipe must not lose tests.json
        pass


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


# ================================================================ pytest stand-in

class Skipped(unittest.SkipTest):
    """pytest.skip(): a skip, which unittest understands too."""


class Failed(BaseException):
    """pytest.fail(): a failure of the test."""


class XFailed(BaseException):
    """pytest.xfail(): the test is an expected failure."""


class Mark:
    def __init__(self, name, args=(), kwargs=None):
        self.name, self.args, self.kwargs = name, tuple(args), dict(kwargs or {})

    def __repr__(self):
        return "Mark(%r, %r, %r)" % (self.name, self.args, self.kwargs)


def _marks_of(obj):
    marks = getattr(obj, "pytestmark", [])
    if not isinstance(marks, (list, tuple)):
        marks = [marks]
    return [getattr(m, "mark", m) for m in marks]


class MarkDecorator:
    def __init__(self, mark):
        self.mark = mark
        self.name, self.args, self.kwargs = mark.name, mark.args, mark.kwargs

    def __call__(self, *args, **kwargs):
        if len(args) == 1 and not kwargs and (inspect.isclass(args[0]) or inspect.isfunction(args[0])
                                               or inspect.ismethod(args[0])):
            target = args[0]
            target.pytestmark = _marks_of(target) + [self.mark]
            return target
        return MarkDecorator(Mark(self.name, self.args + args, dict(self.kwargs, **kwargs)))

    def with_args(self, *args, **kwargs):
        return MarkDecorator(Mark(self.name, self.args + args, dict(self.kwargs, **kwargs)))


class MarkGenerator:
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return MarkDecorator(Mark(name))


class ParameterSet:
    def __init__(self, values, marks=(), id=None):
        self.values = tuple(values)
        marks = [marks] if isinstance(marks, (Mark, MarkDecorator)) else list(marks)
        self.marks = [getattr(m, "mark", m) for m in marks]
        self.id = id


def param(*values, marks=(), id=None):
    return ParameterSet(values, marks, id)


class FixtureSpec:
    def __init__(self, func, scope="function", autouse=False, name=None, params=None):
        self.func, self.scope, self.autouse, self.name, self.params = func, scope, autouse, name, params


def fixture(fixture_function=None, *, scope="function", params=None, autouse=False, ids=None, name=None):
    def wrap(func):
        func._coditect_fixture = FixtureSpec(func, scope if isinstance(scope, str) else "function",
                                             autouse, name, params)
        return func
    if fixture_function is not None and callable(fixture_function):
        return wrap(fixture_function)
    return wrap


def skip(reason="", *, allow_module_level=False, msg=None):
    raise Skipped(msg if msg is not None else reason)


def fail(reason="", pytrace=True, msg=None):
    raise Failed(msg if msg is not None else reason)


def xfail(reason=""):
    raise XFailed(reason)


skip.Exception = Skipped
fail.Exception = Failed
xfail.Exception = XFailed


def importorskip(modname, minversion=None, reason=None):
    try:
        module = importlib.import_module(modname)
    except ImportError as exc:
        raise Skipped(reason or "could not import %r: %s" % (modname, exc))
    if minversion is not None:
        version = getattr(module, "__version__", None)
        if version is None or _version_tuple(version) < _version_tuple(minversion):
            raise Skipped("module %r has __version__ %r, required is: %r" % (modname, version, minversion))
    return module


def _version_tuple(text):
    return tuple(int(p) if p.isdigit() else 0 for p in re.findall(r"\d+|[a-z]+", str(text)))


class ExceptionInfo:
    def __init__(self):
        self.type = self.value = self.tb = None

    def _fill(self, exc_type, value, tb):
        self.type, self.value, self.tb = exc_type, value, tb

    @property
    def typename(self):
        return self.type.__name__ if self.type else None

    def match(self, regexp):
        if not re.search(regexp, str(self.value)):
            raise AssertionError("Regex pattern did not match.\n Regex: %r\n Input: %r" % (regexp, str(self.value)))
        return True

    def errisinstance(self, exc):
        return isinstance(self.value, exc)

    def __repr__(self):
        return "<ExceptionInfo %s>" % (_short_repr(self.value) if self.type else "for raises contextmanager")


def _expected_name(expected):
    if isinstance(expected, tuple):
        return "(" + ", ".join(e.__name__ for e in expected) + ")"
    return getattr(expected, "__name__", repr(expected))


class RaisesContext:
    def __init__(self, expected, match):
        self.expected, self.match_expr = expected, match
        self.excinfo = ExceptionInfo()

    def __enter__(self):
        return self.excinfo

    def __exit__(self, exc_type, value, tb):
        if exc_type is None:
            raise Failed("DID NOT RAISE %s" % _expected_name(self.expected))
        if not issubclass(exc_type, self.expected):
            return False
        self.excinfo._fill(exc_type, value, tb)
        if self.match_expr is not None:
            self.excinfo.match(self.match_expr)
        return True


def raises(expected_exception, *args, match=None, **kwargs):
    if not args:
        if kwargs:
            raise TypeError("unexpected keyword arguments to raises(): %s" % ", ".join(sorted(kwargs)))
        return RaisesContext(expected_exception, match)
    func = args[0]
    if not callable(func):
        raise TypeError("%r object (type: %s) must be callable" % (func, type(func)))
    context = RaisesContext(expected_exception, match)
    with context:
        func(*args[1:], **kwargs)
    return context.excinfo


class WarningsChecker(warnings.catch_warnings):
    def __init__(self, expected=Warning, match=None):
        super().__init__(record=True)
        self.expected, self.match_expr = expected, match

    def __enter__(self):
        self.list = super().__enter__()
        warnings.simplefilter("always")
        return self.list

    def __exit__(self, exc_type, value, tb):
        super().__exit__(exc_type, value, tb)
        if exc_type is not None:
            return False
        for w in self.list:
            if issubclass(w.category, self.expected) and (
                    self.match_expr is None or re.search(self.match_expr, str(w.message))):
                return False
        raise Failed("DID NOT WARN. No warnings of type %s%s were emitted. Emitted: %s" % (
            _expected_name(self.expected),
            "" if self.match_expr is None else " matching %r" % self.match_expr,
            [str(w.message) for w in self.list]))


def warns(expected_warning=Warning, *args, match=None, **kwargs):
    checker = WarningsChecker(expected_warning, match)
    if not args:
        return checker
    with checker:
        return args[0](*args[1:], **kwargs)


def deprecated_call(*args, **kwargs):
    return warns((DeprecationWarning, PendingDeprecationWarning), *args, **kwargs)


class ApproxScalar:
    def __init__(self, expected, rel=None, abs=None, nan_ok=False):
        self.expected, self.rel, self.abs, self.nan_ok = expected, rel, abs, nan_ok

    def tolerance(self):
        absolute = 1e-12 if self.abs is None else self.abs
        if self.rel is None and self.abs is not None:
            return absolute
        relative = (1e-6 if self.rel is None else self.rel) * builtins_abs(self.expected)
        return max(relative, absolute)

    def __eq__(self, actual):
        expected = self.expected
        if isinstance(actual, (ApproxScalar, ApproxSequence, ApproxMapping)):
            return NotImplemented
        if actual == expected:
            return True
        if not isinstance(actual, (int, float, complex)) or isinstance(actual, bool) \
                or not isinstance(expected, (int, float, complex)) or isinstance(expected, bool):
            return False
        if isinstance(expected, float) and math.isnan(expected):
            return self.nan_ok and isinstance(actual, float) and math.isnan(actual)
        if isinstance(expected, float) and math.isinf(expected):
            return False
        try:
            return builtins_abs(expected - actual) <= self.tolerance()
        except (TypeError, OverflowError):
            return False

    def __ne__(self, actual):
        result = self.__eq__(actual)
        return result if result is NotImplemented else not result

    __hash__ = None

    def __repr__(self):
        if not isinstance(self.expected, (int, float, complex)) or isinstance(self.expected, bool):
            return repr(self.expected)
        try:
            return "%r ± %.1e" % (self.expected, self.tolerance())
        except (TypeError, ValueError):
            return repr(self.expected)


builtins_abs = abs


class ApproxSequence:
    def __init__(self, expected, **options):
        self.expected = expected
        self.items = [approx(v, **options) for v in expected]

    def __eq__(self, actual):
        try:
            if len(actual) != len(self.items) or isinstance(actual, (str, bytes)):
                return False
        except TypeError:
            return False
        return all(a == e for a, e in zip(actual, self.items))

    def __ne__(self, actual):
        return not self.__eq__(actual)

    __hash__ = None

    def __repr__(self):
        return "approx(%r)" % (self.items,)


class ApproxMapping:
    def __init__(self, expected, **options):
        self.expected = {k: approx(v, **options) for k, v in expected.items()}

    def __eq__(self, actual):
        try:
            if set(actual.keys()) != set(self.expected.keys()):
                return False
            return all(actual[k] == v for k, v in self.expected.items())
        except (AttributeError, TypeError):
            return False

    def __ne__(self, actual):
        return not self.__eq__(actual)

    __hash__ = None

    def __repr__(self):
        return "approx(%r)" % (self.expected,)


def approx(expected, rel=None, abs=None, nan_ok=False):
    if isinstance(expected, dict):
        return ApproxMapping(expected, rel=rel, abs=abs, nan_ok=nan_ok)
    if isinstance(expected, (list, tuple)):
        return ApproxSequence(expected, rel=rel, abs=abs, nan_ok=nan_ok)
    return ApproxScalar(expected, rel, abs, nan_ok)


class _Generic:
    """Names used in annotations (pytest.MonkeyPatch, pytest.CaptureFixture[str], ...)."""

    def __class_getitem__(cls, item):
        return cls


class CaptureResult(tuple):
    def __new__(cls, out, err):
        return tuple.__new__(cls, (out, err))

    out = property(lambda self: self[0])
    err = property(lambda self: self[1])


class CaptureFixture(_Generic):
    def __init__(self, capture):
        self._capture = capture

    def readouterr(self):
        return self._capture.take()

    @contextlib.contextmanager
    def disabled(self):
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _REAL_STDOUT, _REAL_STDERR
        try:
            yield
        finally:
            sys.stdout, sys.stderr = saved


class MonkeyPatch(_Generic):
    def __init__(self):
        self._attrs, self._items, self._env = [], [], []
        self._cwd = None
        self._syspath = None

    @classmethod
    @contextlib.contextmanager
    def context(cls):
        patch = cls()
        try:
            yield patch
        finally:
            patch.undo()

    @staticmethod
    def _resolve(dotted_name):
        parts = dotted_name.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            for attr in parts[cut:-1]:
                obj = getattr(obj, attr)
            return obj, parts[-1]
        raise AttributeError("cannot resolve %r" % dotted_name)

    def setattr(self, target, name, value=_NOTSET, raising=True):
        if value is _NOTSET:
            if not isinstance(target, str):
                raise TypeError("use setattr(target, name, value) or setattr('module.attr', value)")
            value = name
            target, name = self._resolve(target)
        old = getattr(target, name, _NOTSET)
        if raising and old is _NOTSET:
            raise AttributeError("%r has no attribute %r" % (target, name))
        if inspect.isclass(target):
            old = target.__dict__.get(name, _NOTSET)
        self._attrs.append((target, name, old))
        setattr(target, name, value)

    def delattr(self, target, name=_NOTSET, raising=True):
        if name is _NOTSET:
            target, name = self._resolve(target)
        if not hasattr(target, name):
            if raising:
                raise AttributeError(name)
            return
        old = getattr(target, name)
        if inspect.isclass(target):
            old = target.__dict__.get(name, _NOTSET)
        self._attrs.append((target, name, old))
        delattr(target, name)

    def setitem(self, mapping, name, value):
        self._items.append((mapping, name, mapping.get(name, _NOTSET)))
        mapping[name] = value

    def delitem(self, mapping, name, raising=True):
        if name not in mapping:
            if raising:
                raise KeyError(name)
            return
        self._items.append((mapping, name, mapping[name]))
        del mapping[name]

    def setenv(self, name, value, prepend=None):
        value = str(value)
        if prepend and name in os.environ:
            value = value + prepend + os.environ[name]
        self._env.append((name, os.environ.get(name)))
        os.environ[name] = value

    def delenv(self, name, raising=True):
        if name not in os.environ:
            if raising:
                raise KeyError(name)
            return
        self._env.append((name, os.environ.get(name)))
        del os.environ[name]

    def syspath_prepend(self, path):
        if self._syspath is None:
            self._syspath = list(sys.path)
        sys.path.insert(0, str(path))
        importlib.invalidate_caches()

    def chdir(self, path):
        if self._cwd is None:
            self._cwd = os.getcwd()
        os.chdir(str(path))

    def undo(self):
        for target, name, old in reversed(self._attrs):
            if old is _NOTSET:
                try:
                    delattr(target, name)
                except AttributeError:
                    pass
            else:
                setattr(target, name, old)
        self._attrs.clear()
        for mapping, name, old in reversed(self._items):
            if old is _NOTSET:
                mapping.pop(name, None)
            else:
                mapping[name] = old
        self._items.clear()
        for name, old in reversed(self._env):
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old
        self._env.clear()
        if self._syspath is not None:
            sys.path[:] = self._syspath
            self._syspath = None
        if self._cwd is not None:
            os.chdir(self._cwd)
            self._cwd = None


class FixtureRequest(_Generic):
    pass


class TempPathFactory(_Generic):
    def __init__(self, make):
        self._make = make

    def mktemp(self, basename="tmp", numbered=True):
        return self._make(basename)

    def getbasetemp(self):
        return self._make("base")


def build_pytest_shim():
    module = types.ModuleType("pytest", "A small stand-in for pytest, installed by the Coditect tester.")
    names = dict(
        raises=raises, approx=approx, warns=warns, deprecated_call=deprecated_call, mark=MarkGenerator(),
        param=param, fixture=fixture, yield_fixture=fixture, skip=skip, fail=fail, xfail=xfail,
        importorskip=importorskip, ExceptionInfo=ExceptionInfo, MonkeyPatch=MonkeyPatch,
        CaptureFixture=CaptureFixture, FixtureRequest=FixtureRequest, TempPathFactory=TempPathFactory,
        Mark=Mark, MarkDecorator=MarkDecorator, register_assert_rewrite=lambda *names: None,
        __version__="0.0.0+coditect-shim",
    )
    for name, value in names.items():
        setattr(module, name, value)
    return module


def install_pytest():
    """The real pytest when it imports, else the stand-in; returns (module, is_shim)."""
    try:
        import pytest as real  # noqa: F401
        return real, False
    except ImportError:
        shim = build_pytest_shim()
        sys.modules["pytest"] = shim
        return shim, True


# ================================================================ assertion rewriting

def _short_repr(value, limit=240):
    try:
        text = repr(value)
    except Exception as exc:  # noqa: BLE001 - a broken __repr__ must not hide the failure
        text = "<unprintable %s: %s>" % (type(value).__name__, exc)
    return text if len(text) <= limit else text[: limit - 15] + "…" + text[-12:]


def _diff_hint(op, left, right):
    if op != "==":
        return []
    try:
        if isinstance(left, (list, tuple, str)) and type(left) is type(right):
            for index, (a, b) in enumerate(zip(left, right)):
                if a != b:
                    return ["At index %d diff: %s != %s" % (index, _short_repr(a, 80), _short_repr(b, 80))]
            if len(left) != len(right):
                return ["%s has %d more items" % ("Left" if len(left) > len(right) else "Right",
                                                  builtins_abs(len(left) - len(right)))]
        if isinstance(left, dict) and isinstance(right, dict):
            hints = []
            differ = [k for k in left if k in right and left[k] != right[k]]
            if differ:
                hints.append("Differing items: " + ", ".join(
                    "%s: %s != %s" % (_short_repr(k, 40), _short_repr(left[k], 60), _short_repr(right[k], 60))
                    for k in differ[:3]))
            only_left = [k for k in left if k not in right]
            only_right = [k for k in right if k not in left]
            if only_left:
                hints.append("Left contains more keys: " + _short_repr(only_left, 120))
            if only_right:
                hints.append("Right contains more keys: " + _short_repr(only_right, 120))
            return hints
    except Exception:  # noqa: BLE001
        return []
    return []


def _source_at(where):
    """The source text at (path, lineno, col, end_lineno, end_col); None if unreadable.
    Columns are UTF-8 byte offsets, as ast gives them."""
    if not where:
        return None
    try:
        path, line, col, end_line, end_col = where
        lines = [linecache.getline(path, n).encode("utf-8") for n in range(line, end_line + 1)]
        if not lines or not lines[0]:
            return None
        if len(lines) == 1:
            text = lines[0][col:end_col]
        else:
            text = lines[0][col:] + b"".join(lines[1:-1]) + lines[-1][:end_col]
        text = " ".join(text.decode("utf-8", "replace").split())
        return text if len(text) <= 200 else text[:197] + "…"
    except Exception:  # noqa: BLE001
        return None


def _assert_compare(op, left, right, left_where, right_where, msg):
    left_src, right_src = _source_at(left_where), _source_at(right_where)
    lines = ["assert %s %s %s" % (_short_repr(left), op, _short_repr(right))]
    for value, src in ((left, left_src), (right, right_src)):
        if src is not None and src != _short_repr(value):
            lines.append(" +  where %s = %s" % (_short_repr(value, 120), src))
    lines += _diff_hint(op, left, right)
    text = "\n".join(lines)
    return text if msg is _NOTSET else "%s\n%s" % (msg, text)


def _assert_value(value, where, msg):
    src = _source_at(where)
    text = "assert %s" % _short_repr(value)
    if src is not None and src != _short_repr(value):
        text += "\n +  where %s = %s" % (_short_repr(value, 120), src)
    return text if msg is _NOTSET else "%s\n%s" % (msg, text)


_OPS = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
        ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in"}
_HELPERS = {"@ct_compare": _assert_compare, "@ct_value": _assert_value, "@ct_notset": _NOTSET}


_STMT_LISTS = ("body", "orelse", "finalbody")


class AssertRewriter:
    """`assert a OP b, msg` becomes: evaluate a and b once into temporaries,
    test, and on failure raise AssertionError with both values shown. Only
    statement lists are walked (asserts are statements), so the cost follows
    the number of statements, not of expression nodes."""

    def rewrite(self, tree):
        stack = [tree]
        while stack:
            node = stack.pop()
            for field in _STMT_LISTS:
                statements = getattr(node, field, None)
                if isinstance(statements, list) and statements and isinstance(statements[0], ast.stmt):
                    setattr(node, field, self._statements(statements, stack))
            stack.extend(getattr(node, "handlers", None) or ())
            stack.extend(getattr(node, "cases", None) or ())
        return tree

    def _statements(self, statements, stack):
        result = []
        for statement in statements:
            if isinstance(statement, ast.Assert):
                result.extend(self.rewrite_assert(statement))
            else:
                result.append(statement)
                stack.append(statement)
        return result

    def __init__(self, path=""):
        self.count = 0
        self.path = path

    def _where(self, node):
        """Where an operand's source is, read only if the assert fails."""
        if isinstance(node, ast.Constant) or not hasattr(node, "end_lineno"):
            return None
        return (self.path, node.lineno, node.col_offset, node.end_lineno, node.end_col_offset)

    def rewrite_assert(self, node):
        self.count += 1
        names = ["@ct_%d_%d" % (self.count, i) for i in range(2)]
        loc = {"lineno": node.lineno, "col_offset": node.col_offset,
               "end_lineno": getattr(node, "end_lineno", node.lineno),
               "end_col_offset": getattr(node, "end_col_offset", node.col_offset)}
        Name, Load, Store, Constant = ast.Name, ast.Load(), ast.Store(), ast.Constant
        load = lambda i: Name(id=names[i], ctx=Load, **loc)
        store = lambda i: Name(id=names[i], ctx=Store, **loc)
        msg = node.msg if node.msg is not None else Name(id="@ct_notset", ctx=Load, **loc)
        test = node.test
        if isinstance(test, ast.Compare) and len(test.ops) == 1 and type(test.ops[0]) in _OPS:
            body = [ast.Assign(targets=[store(0)], value=test.left, **loc),
                    ast.Assign(targets=[store(1)], value=test.comparators[0], **loc)]
            cond = ast.Compare(left=load(0), ops=test.ops, comparators=[load(1)], **loc)
            explain = ast.Call(func=Name(id="@ct_compare", ctx=Load, **loc), args=[
                Constant(_OPS[type(test.ops[0])], **loc), load(0), load(1),
                Constant(self._where(test.left), **loc), Constant(self._where(test.comparators[0]), **loc),
                msg], keywords=[], **loc)
            used = 2
        else:
            body = [ast.Assign(targets=[store(0)], value=test, **loc)]
            cond = load(0)
            explain = ast.Call(func=Name(id="@ct_value", ctx=Load, **loc),
                               args=[load(0), Constant(self._where(test), **loc), msg], keywords=[], **loc)
            used = 1
        fail = ast.Raise(exc=ast.Call(func=Name(id="AssertionError", ctx=Load, **loc), args=[explain],
                                      keywords=[], **loc), cause=None, **loc)
        body.append(ast.If(test=ast.UnaryOp(op=ast.Not(), operand=cond, **loc), body=[fail], orelse=[], **loc))
        body.append(ast.Assign(targets=[store(i) for i in range(used)], value=Constant(None, **loc), **loc))
        return body


def compile_test_source(data, path):
    tree = ast.parse(data, filename=path)
    doc = ast.get_docstring(tree) or ""
    if b"assert" in data and "PYTEST_DONT_REWRITE" not in doc:
        try:
            return compile(AssertRewriter(path).rewrite(tree), path, "exec", dont_inherit=True)
        except (SyntaxError, ValueError, TypeError, RecursionError):
            tree = ast.parse(data, filename=path)
    return compile(tree, path, "exec", dont_inherit=True)


class RewritingLoader(importlib.machinery.SourceFileLoader):
    """Loads a test module or conftest with its asserts rewritten (never from or to a .pyc)."""

    def get_code(self, fullname):
        path = self.get_filename(fullname)
        return compile_test_source(self.get_data(path), path)

    def exec_module(self, module):
        module.__dict__.update(_HELPERS)
        super().exec_module(module)


def import_rewritten(name, path):
    parent = name.rpartition(".")[0]
    if parent:
        importlib.import_module(parent)
    loader = RewritingLoader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    if parent and parent in sys.modules:
        setattr(sys.modules[parent], name.rpartition(".")[2], module)
    return module


# ================================================================ discovery

class GitIgnore:
    """The .gitignore rules met while walking: each rule applies below its folder."""

    def __init__(self):
        self.rules = []

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
            regex = _glob_regex(line.lstrip("/"), anchored)
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
    parts = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                i += 2
                if i < n and pattern[i] == "/":
                    parts.append("(?:.*/)?")
                    i += 1
                else:
                    parts.append(".*")
                continue
            parts.append("[^/]*")
        elif c == "?":
            parts.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j == -1:
                parts.append(re.escape(c))
            else:
                body = pattern[i + 1:j].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                parts.append("[" + body + "]")
                i = j
        else:
            parts.append(re.escape(c))
        i += 1
    try:
        return re.compile(("" if anchored else "(?:.*/)?") + "".join(parts) + "(?:/.*)?$", re.S)
    except re.error:
        return None


def walk(root, start=""):
    """Relative paths of the files under root/start, sorted, with the skip rules."""
    files = []
    ignore = GitIgnore()
    # .gitignore files above start still apply.
    if start:
        parts = start.split("/")
        for depth in range(len(parts)):
            base = "/".join(parts[:depth])
            path = os.path.join(root, base, ".gitignore") if base else os.path.join(root, ".gitignore")
            _read_ignore(ignore, base, path)
    stack = [start]
    while stack:
        rel_dir = stack.pop()
        full_dir = os.path.join(root, rel_dir) if rel_dir else root
        try:
            entries = sorted(os.scandir(full_dir), key=lambda e: e.name)
        except OSError:
            continue
        if any(e.name == ".gitignore" for e in entries):
            _read_ignore(ignore, rel_dir, os.path.join(full_dir, ".gitignore"))
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
                if name not in SKIP_DIRS and not ignore.ignored(rel, True):
                    subdirs.append(rel)
            elif is_file and not ignore.ignored(rel, False):
                files.append(rel)
        stack.extend(reversed(subdirs))
    return sorted(files)


def _read_ignore(ignore, base, path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            ignore.add_file(base, f.read())
    except OSError:
        pass


def discover(root, patterns, paths):
    """{relative file: set of selected node ids, or None for all}, in file order."""
    def matches(rel):
        name = rel.rsplit("/", 1)[-1]
        return name.endswith(".py") and any(fnmatch.fnmatchcase(name, p) for p in patterns)

    selected = {}
    if not paths:
        for rel in walk(root):
            if matches(rel):
                selected[rel] = None
        return selected, []
    missing = []
    for raw in paths:
        path, _, node = raw.partition("::")
        full = path if os.path.isabs(path) else os.path.join(root, path)
        full = os.path.normpath(full)
        rel = os.path.relpath(full, root).replace(os.sep, "/")
        if rel == ".":
            rel = ""
        if rel.startswith("../"):
            missing.append(raw)
            continue
        if os.path.isdir(full):
            for sub in walk(root, rel):
                if matches(sub):
                    selected.setdefault(sub, None)
        elif os.path.isfile(full):
            if node:
                current = selected.get(rel, set())
                if current is not None:
                    current.add(rel + "::" + node)
                    selected[rel] = current
                elif rel not in selected:
                    selected[rel] = {rel + "::" + node}
            else:
                selected[rel] = None
        else:
            missing.append(raw)
    return dict(sorted(selected.items())), missing


def is_selected(name, selection):
    if selection is None:
        return True
    for wanted in selection:
        if name == wanted or name.startswith(wanted + "::") or name.startswith(wanted + "["):
            return True
    return False


def prepend_location(full):
    """(folder to put on sys.path, dotted module name) as pytest's prepend mode has it."""
    folder, name = os.path.split(full)
    names = [name[:-3]]
    while os.path.isfile(os.path.join(folder, "__init__.py")):
        folder, package = os.path.split(folder)
        names.insert(0, package)
        if not package:
            break
    return folder, ".".join(n for n in names if n)


# ================================================================ reporting helpers

class Capture:
    """Per-test stdout/stderr capture."""

    def __init__(self):
        self.out, self.err = io.StringIO(), io.StringIO()
        self.saved = None

    def start(self):
        self.saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = self.out, self.err

    def stop(self):
        if self.saved is not None:
            sys.stdout, sys.stderr = self.saved
            self.saved = None

    def take(self):
        result = CaptureResult(self.out.getvalue(), self.err.getvalue())
        for stream in (self.out, self.err):
            stream.seek(0)
            stream.truncate()
        return result

    def text(self):
        out_text, err_text = self.out.getvalue(), self.err.getvalue()
        parts = []
        if out_text:
            parts.append("--- captured stdout ---\n" + out_text)
        if err_text:
            parts.append("--- captured stderr ---\n" + err_text)
        text = "\n".join(parts)
        if len(text) > CAPTURE_MAX:
            text = text[: CAPTURE_MAX - 20] + "\n… (output cut)"
        return text


class Reporter:
    def __init__(self, root):
        self.root = os.path.realpath(root)
        self.tests = []
        self.tester_file = os.path.realpath(os.path.abspath(__file__)) if "__file__" in globals() else None

    def in_project(self, filename):
        if not filename or filename.startswith("<"):
            return False
        real = os.path.realpath(filename)
        if self.tester_file and real == self.tester_file:
            return False
        return real == self.root or real.startswith(self.root.rstrip("/") + "/")

    def relpath(self, filename):
        real = os.path.realpath(filename)
        try:
            return os.path.relpath(real, self.root).replace(os.sep, "/")
        except ValueError:
            return filename

    def format_exception(self, exc_type, value, tb, limit=MESSAGE_MAX):
        """The exception line(s), then the last frames in the project's files."""
        try:
            head = "".join(traceback.format_exception_only(exc_type, value)).rstrip()
        except Exception:  # noqa: BLE001
            head = exc_type.__name__
        frames = []
        if isinstance(value, SyntaxError):
            tb = None  # the location is in the exception text; the frames are the importer's
        for frame, lineno in traceback.walk_tb(tb):
            code = frame.f_code
            if self.in_project(code.co_filename):
                line = linecache.getline(code.co_filename, lineno).strip()
                frames.append("%s:%d: in %s\n    %s" % (self.relpath(code.co_filename), lineno, code.co_name, line))
        if not frames and tb is not None:
            # Not one frame in the project (an import error of a missing module, say):
            # show the last frames whatever they are.
            extracted = [f for f in traceback.extract_tb(tb)
                         if not f.filename.startswith("<frozen") and not (
                             self.tester_file and os.path.realpath(f.filename) == self.tester_file)][-3:]
            frames = ["%s:%d: in %s\n    %s" % (f.filename, f.lineno, f.name, (f.line or "").strip())
                      for f in extracted]
        budget = limit
        if len(head) > budget * 2 // 3:
            head = head[: budget * 2 // 3] + "…"
        budget -= len(head) + 2
        kept = []
        for text in reversed(frames[-8:]):
            if len(text) + 1 > budget:
                break
            kept.insert(0, text)
            budget -= len(text) + 1
        if len(kept) < len(frames):
            kept.insert(0, "… (%d earlier frames)" % (len(frames) - len(kept)))
        return head + ("\n\n" + "\n".join(kept) if kept else "")

    def add(self, name, file, outcome, message="", duration=0.0, capture=None):
        if outcome not in ("passed", "skipped", "xfailed", "xpassed") and capture is not None:
            captured = capture.text()
            if captured:
                message = (message + "\n\n" if message else "") + captured
        self.tests.append({"name": name, "file": file, "outcome": outcome, "message": message,
                           "duration_ms": int(round(duration * 1000))})


# ================================================================ unittest

class RecordingResult(unittest.TestResult):
    """Records one entry per test of a suite, with its own output captured."""

    def __init__(self, reporter, rel, selection, outcome_types):
        super().__init__()
        self.reporter, self.rel, self.selection = reporter, rel, selection
        self.skip_types, self.fail_types, self.xfail_types = outcome_types
        self.current = None

    def test_name(self, test):
        if isinstance(test, unittest.TestCase) and hasattr(test, "_testMethodName") \
                and type(test).__name__ not in ("_FailedTest", "ModuleImportFailure"):
            return "%s::%s::%s" % (self.rel, type(test).__name__, test._testMethodName)
        description = getattr(test, "description", None) or str(test)
        match = re.match(r"(\w+) \((.+)\)", description)
        if match:
            where = match.group(2).rsplit(".", 1)[-1]
            if match.group(1) in ("setUpModule", "tearDownModule"):
                return "%s::%s" % (self.rel, match.group(1))
            return "%s::%s::%s" % (self.rel, where, match.group(1))
        if hasattr(test, "_testMethodName"):
            return "%s::%s" % (self.rel, test._testMethodName)
        return "%s::%s" % (self.rel, description)

    def startTest(self, test):
        super().startTest(test)
        capture = Capture()
        self.current = {"test": test, "name": self.test_name(test), "outcome": None, "message": "",
                        "capture": capture, "start": time.perf_counter(), "subfailures": []}
        capture.start()

    def _finish(self, record):
        record["capture"].stop()
        outcome, message = record["outcome"], record["message"]
        if record["subfailures"]:
            if outcome in (None, "passed"):
                outcome = "failed"
            message = "\n\n".join(([message] if message else []) + record["subfailures"])
        if outcome is None:
            outcome = "passed"
        if len(message) > MESSAGE_MAX:
            message = message[: MESSAGE_MAX - 12] + "\n… (cut)"
        self.reporter.add(record["name"], self.rel, outcome, message,
                          time.perf_counter() - record["start"], record["capture"])

    def stopTest(self, test):
        record, self.current = self.current, None
        if record is not None:
            self._finish(record)
        super().stopTest(test)

    def _record(self, test, outcome, message):
        record = self.current
        if record is None or record["test"] is not test:
            # setUpClass/tearDownClass/setUpModule errors arrive outside startTest/stopTest.
            name = self.test_name(test)
            self.reporter.add(name, self.rel, outcome, message)
            return
        if record["outcome"] in (None, "passed") or outcome == "error":
            record["outcome"], record["message"] = outcome, message
        elif message:
            record["message"] += "\n\n" + message

    def _classify(self, err, default):
        exc_type, value, tb = err
        if issubclass(exc_type, self.skip_types):
            return "skipped", str(value)
        if issubclass(exc_type, self.xfail_types):
            return "xfailed", str(value)
        if issubclass(exc_type, self.fail_types):
            return "failed", self.reporter.format_exception(exc_type, value, tb)
        if issubclass(exc_type, KeyboardInterrupt):
            return "error", self.reporter.format_exception(exc_type, value, tb)
        return default, self.reporter.format_exception(exc_type, value, tb)

    def addSuccess(self, test):
        super().addSuccess(test)
        self._record(test, "passed", "")

    def addError(self, test, err):
        super().addError(test, err)
        outcome, message = self._classify(err, "error")
        self._record(test, outcome, message)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        outcome, message = self._classify(err, "failed")
        self._record(test, outcome, message)

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._record(test, "skipped", reason)

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._record(test, "xfailed", self.reporter.format_exception(*err))

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._record(test, "failed", "unexpected success: the test is marked expectedFailure but passed")

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None and self.current is not None:
            outcome, message = self._classify(err, "error")
            if outcome in ("failed", "error"):
                self.current["subfailures"].append("subtest %s: %s" % (subtest._subDescription(), message))


class Interrupted(Exception):
    """A KeyboardInterrupt raised by a unittest test, as an error of that test."""


def _guard_interrupt(test):
    """Wrap a TestCase's test method, setUp and tearDown so KeyboardInterrupt
    (which unittest lets through) becomes an error of that test."""
    for attr in (getattr(test, "_testMethodName", None), "setUp", "tearDown"):
        if not attr:
            continue
        func = getattr(type(test), attr, None)
        if not callable(func) or inspect.iscoroutinefunction(func):
            continue

        def make(func):
            @functools.wraps(func)
            def guarded(self, *args, **kwargs):
                try:
                    return func(self, *args, **kwargs)
                except KeyboardInterrupt as exc:
                    # Keep the test's frames so the message shows where it happened.
                    raise Interrupted("the test raised KeyboardInterrupt").with_traceback(exc.__traceback__) from None
            return guarded
        try:
            setattr(test, attr, types.MethodType(make(func), test))
        except (AttributeError, TypeError):
            pass


def _flatten(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from _flatten(item)
        else:
            yield item


def _filter_suite(suite, keep):
    """A copy of suite without the tests keep() rejects (nested suites kept for class fixtures)."""
    result = type(suite)() if isinstance(suite, unittest.TestSuite) else unittest.TestSuite()
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            result.addTest(_filter_suite(item, keep))
        elif keep(item):
            result.addTest(item)
    return result


# ================================================================ pytest-style collection

def fixture_spec(obj):
    """(function, scope, autouse, name or None, params) when obj is a fixture, else None."""
    spec = getattr(obj, "_coditect_fixture", None)
    if isinstance(spec, FixtureSpec):
        return spec.func, spec.scope, spec.autouse, spec.name, spec.params
    marker = getattr(obj, "_fixture_function_marker", None)  # pytest >= 8.4
    if marker is not None and hasattr(obj, "_fixture_function"):
        return (obj._fixture_function, getattr(marker, "scope", "function"), getattr(marker, "autouse", False),
                getattr(marker, "name", None), getattr(marker, "params", None))
    try:
        marker = getattr(obj, "_pytestfixturefunction", None)  # pytest < 8.4
    except Exception:  # noqa: BLE001
        marker = None
    if marker is not None:
        func = getattr(getattr(obj, "__pytest_wrapped__", None), "obj", obj)
        return (func, getattr(marker, "scope", "function"), getattr(marker, "autouse", False),
                getattr(marker, "name", None), getattr(marker, "params", None))
    return None


class FixtureDef:
    def __init__(self, name, func, scope, autouse, params, where, builtin=False):
        self.name, self.func, self.scope, self.autouse, self.params = name, func, scope, autouse, params
        self.where, self.builtin = where, builtin
        scope = scope if isinstance(scope, str) else "function"
        self.level = {"function": "function", "class": "file", "module": "file",
                      "package": "session", "session": "session"}.get(scope, "function")


def fixtures_in(namespace, where):
    found = []
    for attr, obj in list(vars(namespace).items()):
        spec = fixture_spec(obj)
        if spec is None:
            continue
        func, scope, autouse, name, params = spec
        found.append(FixtureDef(name or attr, func, scope, autouse, params, where))
    return found


class Item:
    def __init__(self, name, func_name, func, cls, callspec, marks, error=None):
        self.name, self.func_name, self.func, self.cls = name, func_name, func, cls
        self.callspec, self.marks, self.error = callspec, marks, error


def _id_for(value, argname, index):
    if isinstance(value, str):
        return value if value.isascii() and value.isprintable() else value.encode("unicode_escape").decode("ascii")
    if value is None or isinstance(value, (bool, int, float, complex)):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("ascii", "backslashreplace")
    if isinstance(value, re.Pattern):
        return value.pattern
    if inspect.isclass(value) or inspect.isfunction(value):
        return getattr(value, "__name__", argname + str(index))
    if isinstance(value, enum.Enum):
        return str(value)
    return "%s%d" % (argname, index)


def expand_parametrize(marks):
    """[(id or None, callspec dict, extra marks)] or raises ValueError; [] means 'no values'."""
    cases = [(None, {}, [])]
    for mark in marks:
        if mark.name != "parametrize":
            continue
        args, kwargs = list(mark.args), dict(mark.kwargs)
        argnames = args[0] if args else kwargs.pop("argnames")
        argvalues = args[1] if len(args) > 1 else kwargs.pop("argvalues")
        ids = args[3] if len(args) > 3 else kwargs.get("ids")
        if isinstance(argnames, str):
            names = [n.strip() for n in argnames.split(",") if n.strip()]
            force_tuple = len(names) == 1
        else:
            names, force_tuple = list(argnames), False
        argvalues = list(argvalues)
        if not argvalues:
            return []
        this = []
        for index, value in enumerate(argvalues):
            if type(value).__name__ == "ParameterSet" and hasattr(value, "values"):
                values, pmarks, pid = tuple(value.values), list(getattr(value, "marks", ())), value.id
            elif force_tuple:
                values, pmarks, pid = (value,), [], None
            else:
                values, pmarks, pid = tuple(value), [], None
            if len(values) != len(names):
                raise ValueError("parametrize: %r has %d values for %d names %r"
                                 % (value, len(values), len(names), names))
            if pid is None and ids is not None:
                if callable(ids):
                    parts = []
                    for v, n in zip(values, names):
                        got = ids(v)
                        parts.append(str(got) if got is not None else _id_for(v, n, index))
                    pid = "-".join(parts)
                else:
                    ids = list(ids)
                    if index < len(ids) and ids[index] is not None:
                        pid = str(ids[index])
            if pid is None:
                pid = "-".join(_id_for(v, n, index) for v, n in zip(values, names))
            this.append((pid, dict(zip(names, values)), [getattr(m, "mark", m) for m in pmarks]))
        cases = [(("%s-%s" % (old_id, new_id)) if old_id is not None else new_id,
                  dict(old_spec, **new_spec), old_marks + new_marks)
                 for (old_id, old_spec, old_marks), (new_id, new_spec, new_marks) in itertools.product(cases, this)]
    # Duplicate ids get a running suffix, as pytest does.
    counts = {}
    for case in cases:
        counts[case[0]] = counts.get(case[0], 0) + 1
    seen = {}
    unique = []
    for case_id, spec, extra in cases:
        if case_id is not None and counts[case_id] > 1:
            n = seen.get(case_id, 0)
            seen[case_id] = n + 1
            case_id = "%s%d" % (case_id, n)
        unique.append((case_id, spec, extra))
    return unique


def collect_items(module, rel, is_fixture):
    items = []
    module_marks = _marks_of(module)

    def expand(base_name, func_name, func, cls, marks):
        if getattr(func, "__test__", True) is False:
            return
        try:
            cases = expand_parametrize(marks)
        except Exception as exc:  # noqa: BLE001
            items.append(Item(base_name, func_name, func, cls, {}, marks,
                              error="bad parametrize: %s: %s" % (type(exc).__name__, exc)))
            return
        if not cases:
            items.append(Item(base_name + "[NOTSET]", func_name, func, cls, {},
                              marks + [Mark("skip", (), {"reason": "got empty parameter set"})]))
            return
        for case_id, spec, extra in cases:
            name = base_name if case_id is None else "%s[%s]" % (base_name, case_id)
            items.append(Item(name, func_name, func, cls, spec, marks + extra))

    for attr, obj in list(vars(module).items()):
        if attr.startswith("test") and inspect.isfunction(obj) and not is_fixture(obj):
            expand("%s::%s" % (rel, attr), attr, obj, None, _marks_of(obj) + module_marks)
        elif attr.startswith("Test") and inspect.isclass(obj) and not issubclass(obj, unittest.TestCase):
            if getattr(obj, "__test__", True) is False:
                continue
            if any("__init__" in vars(c) for c in obj.__mro__[:-1]):
                continue  # pytest does not collect classes with a constructor
            class_marks = [m for c in obj.__mro__[:-1] for m in _marks_of(c)]
            seen = set()
            for klass in obj.__mro__[:-1]:
                for name, member in vars(klass).items():
                    if name in seen or not name.startswith("test"):
                        continue
                    seen.add(name)
                    func = member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
                    if not callable(func) or inspect.isclass(func) or is_fixture(member):
                        continue
                    # Own marks of a method (class marks are inherited through pytestmark on the class).
                    own = [m for m in _marks_of(func) if m not in class_marks]
                    expand("%s::%s::%s" % (rel, attr, name), name, func, obj,
                           own + class_marks + module_marks)
    return items


# ================================================================ the runner

class Runner:
    def __init__(self, root, out_dir, pytest_module, is_shim):
        self.root = os.path.normpath(os.path.abspath(root))
        self.out_dir = out_dir
        self.tmp_root = os.path.join(out_dir, TMP_NAME)
        self.tmp_count = 0
        self.reporter = Reporter(self.root)
        self.pytest = pytest_module
        self.is_shim = is_shim
        skip_types = [unittest.SkipTest, Skipped]
        fail_types = [Failed]
        xfail_types = [XFailed]
        if not is_shim:
            for target, func in ((skip_types, "skip"), (fail_types, "fail"), (xfail_types, "xfail")):
                exc = getattr(getattr(pytest_module, func, None), "Exception", None)
                if isinstance(exc, type):
                    target.append(exc)
        self.skip_types, self.fail_types, self.xfail_types = tuple(skip_types), tuple(fail_types), tuple(xfail_types)
        self.conftests = {}  # folder -> (module or None, error message or None)
        self.session_cache, self.session_finalizers = {}, []
        self.file_cache, self.file_finalizers = {}, []
        self.builtins = self._builtin_fixtures()
        self.files_run = 0

    # ------------------------------------------------------------ builtin fixtures

    def make_tmp(self, hint="tmp"):
        self.tmp_count += 1
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", hint)[:40] or "tmp"
        import pathlib
        path = os.path.join(self.tmp_root, "%s%d" % (safe, self.tmp_count))
        ensure_dir(path)
        return pathlib.Path(path)

    def _builtin_fixtures(self):
        runner = self

        def tmp_path(request):
            return runner.make_tmp(request.node.func_name)

        def tmp_path_factory():
            return TempPathFactory(runner.make_tmp)

        def capsys(request):
            return CaptureFixture(request._item_capture)

        def monkeypatch():
            patch = MonkeyPatch()
            yield patch
            patch.undo()

        def request(request):
            return request

        table = {"tmp_path": tmp_path, "tmpdir": tmp_path, "tmp_path_factory": tmp_path_factory,
                 "capsys": capsys, "capfd": capsys, "capsysbinary": capsys, "monkeypatch": monkeypatch,
                 "request": request}
        defs = {}
        for name, func in table.items():
            scope = "session" if name == "tmp_path_factory" else "function"
            defs[name] = FixtureDef(name, func, scope, False, None, "builtin", builtin=True)
        return defs

    # ------------------------------------------------------------ conftest

    def conftest_chain(self, rel_dir):
        """Conftest modules from the root down to rel_dir; raises RuntimeError if one failed."""
        chain = []
        parts = [p for p in rel_dir.split("/") if p] if rel_dir else []
        for depth in range(len(parts) + 1):
            folder = "/".join(parts[:depth])
            if folder not in self.conftests:
                self.conftests[folder] = self._load_conftest(folder)
            module, error = self.conftests[folder]
            if error:
                raise RuntimeError("%s/conftest.py failed to import:\n%s" % (folder or ".", error))
            if module is not None:
                chain.append(module)
        return chain

    def _load_conftest(self, folder):
        full = os.path.join(self.root, folder, "conftest.py") if folder else os.path.join(self.root, "conftest.py")
        if not os.path.isfile(full):
            return None, None
        base, name = prepend_location(full)
        if base not in sys.path:
            sys.path.insert(0, base)
        existing = sys.modules.get(name)
        if existing is not None and os.path.realpath(getattr(existing, "__file__", "") or "") != os.path.realpath(full):
            name = "conftest_%d" % len(self.conftests)
        capture = Capture()
        capture.start()
        try:
            return import_rewritten(name, full), None
        except BaseException:  # noqa: BLE001 - a conftest may do anything at import
            exc_type, value, tb = sys.exc_info()
            return None, self.reporter.format_exception(exc_type, value, tb)
        finally:
            capture.stop()

    # ------------------------------------------------------------ one file

    def run_file(self, rel, selection):
        self.files_run += 1
        full = os.path.join(self.root, rel)
        base, name = prepend_location(full)
        if base not in sys.path:
            sys.path.insert(0, base)
        before = set(sys.modules)
        capture = Capture()
        start = time.perf_counter()
        try:
            chain = self.conftest_chain(os.path.dirname(rel))
        except RuntimeError as exc:
            self.reporter.add(rel, rel, "error", str(exc)[:MESSAGE_MAX], time.perf_counter() - start)
            return
        capture.start()
        try:
            module = import_rewritten(name, full)
        except self.skip_types as exc:
            capture.stop()
            self.reporter.add(rel, rel, "skipped", "module skipped: %s" % exc, time.perf_counter() - start)
            self._forget_modules(before, name)
            return
        except BaseException:  # noqa: BLE001 - SystemExit at import is the file's error too
            capture.stop()
            exc_type, value, tb = sys.exc_info()
            message = "cannot import %s: %s" % (rel, self.reporter.format_exception(exc_type, value, tb))
            self.reporter.add(rel, rel, "error", message, time.perf_counter() - start, capture)
            self._forget_modules(before, name)
            return
        finally:
            capture.stop()
        self.file_cache, self.file_finalizers = {}, []
        try:
            self._run_unittest(module, rel, selection)
            self._run_pytest_style(module, rel, selection, chain)
        finally:
            self._finalize(self.file_finalizers, rel, "module-scoped fixture teardown")
            self.file_cache, self.file_finalizers = {}, []
            self._forget_modules(before, name)

    def _forget_modules(self, before, name):
        patterns = self.patterns
        for added in set(sys.modules) - before:
            module = sys.modules.get(added)
            filename = os.path.basename(getattr(module, "__file__", None) or "")
            if added == name or (filename.endswith(".py") and any(fnmatch.fnmatchcase(filename, p) for p in patterns)):
                sys.modules.pop(added, None)

    def _finalize(self, finalizers, rel, what):
        while finalizers:
            finalizer = finalizers.pop()
            capture = Capture()
            capture.start()
            try:
                finalizer()
            except BaseException:  # noqa: BLE001
                capture.stop()
                exc_type, value, tb = sys.exc_info()
                self.reporter.add("%s::%s" % (rel, what.replace(" ", "_")), rel, "error",
                                  "%s failed: %s" % (what, self.reporter.format_exception(exc_type, value, tb)))
            finally:
                capture.stop()

    # ------------------------------------------------------------ unittest part

    def _run_unittest(self, module, rel, selection):
        loader = unittest.TestLoader()
        try:
            suite = loader.loadTestsFromModule(module)
        except BaseException:  # noqa: BLE001
            exc_type, value, tb = sys.exc_info()
            self.reporter.add(rel + "::load_tests", rel, "error", self.reporter.format_exception(exc_type, value, tb))
            return
        result = RecordingResult(self.reporter, rel, selection, (self.skip_types, self.fail_types, self.xfail_types))
        suite = _filter_suite(suite, lambda test: is_selected(result.test_name(test), selection))
        tests = list(_flatten(suite))
        if not tests:
            return
        for test in tests:
            _guard_interrupt(test)
        outer = Capture()  # output of setUpClass and friends
        outer.start()
        cwd = os.getcwd()
        try:
            suite.run(result)
        except BaseException:  # noqa: BLE001 - KeyboardInterrupt from a class fixture, say
            exc_type, value, tb = sys.exc_info()
            if result.current is not None:
                record = result.current
                result.current = None
                record["outcome"] = "error"
                record["message"] = self.reporter.format_exception(exc_type, value, tb)
                result._finish(record)
            else:
                self.reporter.add(rel + "::suite", rel, "error", self.reporter.format_exception(exc_type, value, tb))
        finally:
            outer.stop()
            _restore_cwd(cwd)

    # ------------------------------------------------------------ pytest part

    def _run_pytest_style(self, module, rel, selection, chain):
        is_fixture = lambda obj: fixture_spec(obj) is not None
        items = [item for item in collect_items(module, rel, is_fixture) if is_selected(item.name, selection)]
        if not items:
            return
        registry = {}  # name -> [FixtureDef] low to high priority
        for name, definition in self.builtins.items():
            registry.setdefault(name, []).append(definition)
        for conf in chain:
            for definition in fixtures_in(conf, getattr(conf, "__file__", "conftest.py")):
                registry.setdefault(definition.name, []).append(definition)
        for definition in fixtures_in(module, rel):
            registry.setdefault(definition.name, []).append(definition)
        module_error = self._xunit_call(module, ("setup_module", "setUpModule"), module)
        class_errors, class_started = {}, []
        try:
            for index, item in enumerate(items):
                if module_error:
                    self.reporter.add(item.name, rel, "error", "setup_module failed: " + module_error)
                    continue
                if item.cls is not None and item.cls not in class_errors:
                    class_errors[item.cls] = self._xunit_call(item.cls, ("setup_class",), None)
                    class_started.append(item.cls)
                if item.cls is not None and class_errors[item.cls]:
                    self.reporter.add(item.name, rel, "error", "setup_class failed: " + class_errors[item.cls])
                else:
                    self._run_item(item, module, rel, registry)
                # teardown_class after the class's last item
                if item.cls is not None and all(later.cls is not item.cls for later in items[index + 1:]):
                    if not class_errors.get(item.cls):
                        error = self._xunit_call(item.cls, ("teardown_class",), None)
                        if error:
                            self.reporter.add("%s::%s::teardown_class" % (rel, item.cls.__name__), rel, "error",
                                              "teardown_class failed: " + error)
        finally:
            if not module_error:
                error = self._xunit_call(module, ("teardown_module", "tearDownModule"), module)
                if error:
                    self.reporter.add(rel + "::teardown_module", rel, "error", "teardown_module failed: " + error)

    def _xunit_call(self, owner, names, arg):
        """Calls the first of names found on owner; the formatted error or None."""
        for name in names:
            func = getattr(owner, name, None) if not isinstance(owner, types.ModuleType) else vars(owner).get(name)
            if func is None or not callable(func):
                continue
            if isinstance(owner, types.ModuleType) and name in ("setUpModule", "tearDownModule"):
                # unittest already runs these for TestCase classes of the module
                if any(inspect.isclass(v) and issubclass(v, unittest.TestCase) for v in vars(owner).values()):
                    return None
            capture = Capture()
            capture.start()
            try:
                if arg is not None and _positional_count(func) >= 1:
                    func(arg)
                else:
                    func()
            except BaseException:  # noqa: BLE001
                capture.stop()
                return self.reporter.format_exception(*sys.exc_info())
            finally:
                capture.stop()
            return None
        return None

    def _run_item(self, item, module, rel, registry):
        capture = Capture()
        start = time.perf_counter()
        marks = item.marks
        add = lambda outcome, message="": self.reporter.add(item.name, rel, outcome, message,
                                                            time.perf_counter() - start, capture)
        if item.error:
            add("error", item.error)
            return
        # skip / skipif
        for mark in marks:
            if mark.name == "skip":
                reason = mark.kwargs.get("reason", mark.args[0] if mark.args else "unconditional skip")
                add("skipped", str(reason))
                return
            if mark.name == "skipif":
                try:
                    hit, reason = self._condition(mark, module)
                except Exception as exc:  # noqa: BLE001
                    add("error", "skipif condition failed: %s: %s" % (type(exc).__name__, exc))
                    return
                if hit:
                    add("skipped", reason)
                    return
        xfail_mark = None
        for mark in marks:
            if mark.name == "xfail":
                try:
                    hit, reason = self._condition(mark, module, default=True)
                except Exception as exc:  # noqa: BLE001
                    add("error", "xfail condition failed: %s: %s" % (type(exc).__name__, exc))
                    return
                if hit:
                    xfail_mark = (mark, reason)
                    break
        if xfail_mark and xfail_mark[0].kwargs.get("run", True) is False:
            add("xfailed", "[NOTRUN] " + xfail_mark[1])
            return
        if inspect.iscoroutinefunction(item.func):
            add("skipped", "async test functions are not supported (no asyncio plugin)")
            return

        finalizers = []
        cache = {}
        cwd = os.getcwd()
        outcome, message = None, ""
        instance = None
        capture.start()
        try:
            # ---- setup
            try:
                if item.cls is not None:
                    instance = item.cls()
                    func = getattr(instance, item.func_name)
                    setup = getattr(instance, "setup_method", None)
                    if callable(setup):
                        setup(func) if _positional_count(setup) >= 1 else setup()
                        teardown = getattr(instance, "teardown_method", None)
                        if callable(teardown):
                            finalizers.append(lambda: teardown(func) if _positional_count(teardown) >= 1 else teardown())
                    elif callable(getattr(instance, "teardown_method", None)):
                        teardown = instance.teardown_method
                        finalizers.append(lambda: teardown(func) if _positional_count(teardown) >= 1 else teardown())
                    local_defs = fixtures_in(item.cls, item.name)
                else:
                    func = item.func
                    setup = vars(module).get("setup_function")
                    if callable(setup):
                        setup(func) if _positional_count(setup) >= 1 else setup()
                    teardown = vars(module).get("teardown_function")
                    if callable(teardown):
                        finalizers.append(lambda: teardown(func) if _positional_count(teardown) >= 1 else teardown())
                    local_defs = []
                full_registry = registry
                if local_defs:
                    full_registry = {k: list(v) for k, v in registry.items()}
                    for definition in local_defs:
                        definition.instance = instance
                        full_registry.setdefault(definition.name, []).append(definition)
                resolver = Resolver(self, item, module, instance, full_registry, cache, finalizers, capture)
                names = [d.name for defs in full_registry.values() for d in defs[-1:] if d.autouse]
                for mark in marks:
                    if mark.name == "usefixtures":
                        names.extend(mark.args)
                kwargs = {}
                for name in names:
                    resolver.get(name)
                for name in _argnames(func):
                    if name in item.callspec:
                        kwargs[name] = item.callspec[name]
                    else:
                        kwargs[name] = resolver.get(name)
                for name, value in item.callspec.items():
                    if name not in kwargs and _accepts(func, name):
                        kwargs[name] = value
            except FixtureLookupError as exc:
                outcome, message = "error", str(exc)
            except self.skip_types as exc:
                outcome, message = "skipped", str(exc)
            except BaseException:  # noqa: BLE001
                outcome, message = "error", "error in setup: " + self.reporter.format_exception(*sys.exc_info())
            # ---- call
            if outcome is None:
                try:
                    func(**kwargs)
                    outcome = "passed"
                except self.skip_types as exc:
                    outcome, message = "skipped", str(exc)
                except self.xfail_types as exc:
                    outcome, message = "xfailed", str(exc)
                except self.fail_types as exc:
                    outcome = "failed"
                    message = self.reporter.format_exception(type(exc), exc, exc.__traceback__)
                except Exception as exc:  # noqa: BLE001
                    outcome = "failed"
                    message = self.reporter.format_exception(type(exc), exc, exc.__traceback__)
                    if xfail_mark is not None:
                        raises_ = xfail_mark[0].kwargs.get("raises")
                        if raises_ is None or isinstance(exc, raises_):
                            outcome, message = "xfailed", xfail_mark[1] or message
                except BaseException as exc:  # noqa: BLE001 - SystemExit, KeyboardInterrupt, ...
                    outcome = "error"
                    message = "the test raised %s: %s" % (
                        type(exc).__name__, self.reporter.format_exception(type(exc), exc, exc.__traceback__))
                if outcome == "passed" and xfail_mark is not None:
                    if xfail_mark[0].kwargs.get("strict", False):
                        outcome, message = "failed", "[XPASS(strict)] " + xfail_mark[1]
                    else:
                        outcome, message = "xpassed", xfail_mark[1]
        finally:
            # ---- teardown
            teardown_error = None
            while finalizers:
                finalizer = finalizers.pop()
                try:
                    finalizer()
                except BaseException:  # noqa: BLE001
                    if teardown_error is None:
                        teardown_error = self.reporter.format_exception(*sys.exc_info())
            capture.stop()
            _restore_cwd(cwd)
        if teardown_error is not None and outcome in ("passed", "skipped", "xfailed", "xpassed", None):
            outcome, message = "error", "error in teardown: " + teardown_error
        elif teardown_error is not None:
            message += "\n\nerror in teardown: " + teardown_error
        if len(message) > MESSAGE_MAX:
            message = message[: MESSAGE_MAX - 12] + "\n… (cut)"
        add(outcome or "error", message)

    def _condition(self, mark, module, default=False):
        reason = str(mark.kwargs.get("reason", ""))
        conditions = list(mark.args)
        if "condition" in mark.kwargs:
            conditions.append(mark.kwargs["condition"])
        if not conditions:
            return default, reason
        for condition in conditions:
            if isinstance(condition, str):
                import platform
                namespace = {"os": os, "sys": sys, "platform": platform, "config": None}
                namespace.update(vars(module))
                value = eval(condition, namespace)  # noqa: S307 - pytest's documented behaviour
                if value:
                    return True, reason or "condition: " + condition
            elif condition:
                return True, reason
        return False, reason

    # ------------------------------------------------------------ whole run

    def run(self, selected):
        for rel, selection in selected.items():
            self.run_file(rel, selection)
        self._finalize(self.session_finalizers, "session", "session-scoped fixture teardown")


def _restore_cwd(cwd):
    try:
        if os.getcwd() != cwd:
            os.chdir(cwd)
    except OSError:
        try:
            os.chdir(cwd)
        except OSError:
            pass


def _positional_count(func):
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return 0
    return sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def _argnames(func):
    """Fixture names a test or fixture asks for: parameters without defaults."""
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is p.empty]


def _accepts(func, name):
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


class FixtureLookupError(Exception):
    pass


class Node:
    def __init__(self, item):
        self.name = item.name.rsplit("::", 1)[-1]
        self.nodeid = item.name
        self.func_name = item.func_name
        self._marks = item.marks
        self.keywords = {m.name: m for m in item.marks}

    def get_closest_marker(self, name, default=None):
        for mark in self._marks:
            if mark.name == name:
                return mark
        return default

    def iter_markers(self, name=None):
        return (m for m in self._marks if name is None or m.name == name)


class Request(FixtureRequest):
    def __init__(self, resolver, fixturename, finalizers):
        self._resolver = resolver
        self.fixturename = fixturename
        self._finalizers = finalizers
        item = resolver.item
        self.node = Node(item)
        self.function = item.func
        self.cls = item.cls
        self.instance = resolver.instance
        self.module = resolver.module
        self.config = None
        self.scope = "function"
        self._item_capture = resolver.capture

    def addfinalizer(self, finalizer):
        self._finalizers.append(finalizer)

    def getfixturevalue(self, name):
        return self._resolver.get(name)

    def applymarker(self, marker):
        self.node._marks.append(getattr(marker, "mark", marker))


class Resolver:
    """Fixture values for one test, with per-scope caches and finalizers."""

    def __init__(self, runner, item, module, instance, registry, cache, finalizers, capture):
        self.runner, self.item, self.module, self.instance = runner, item, module, instance
        self.registry, self.cache, self.finalizers, self.capture = registry, cache, finalizers, capture
        self.active = []

    def _pick(self, name, below=None):
        defs = self.registry.get(name)
        if not defs:
            return None, None
        index = len(defs) - 1 if below is None else below - 1
        if index < 0:
            return None, None
        return defs[index], index

    def get(self, name, below=None):
        if name == "request" and below is None:
            return Request(self, self.active[-1] if self.active else None, self.finalizers)
        definition, index = self._pick(name, below)
        if definition is None:
            available = sorted(self.registry)
            raise FixtureLookupError("fixture %r not found (requested by %s)\navailable fixtures: %s"
                                     % (name, self.active[-1] if self.active else self.item.name,
                                        ", ".join(available)))
        if definition.params is not None:
            raise FixtureLookupError("fixture %r has params=, which this tester does not support" % name)
        if definition.level == "session":
            cache, finalizers = self.runner.session_cache, self.runner.session_finalizers
        elif definition.level == "file":
            cache, finalizers = self.runner.file_cache, self.runner.file_finalizers
        else:
            cache, finalizers = self.cache, self.finalizers
        key = (definition.name, definition.func)  # stable across files, unlike a FixtureDef's id()
        if key in cache:
            return cache[key][1]
        if name in self.active and below is None:
            raise FixtureLookupError("recursive dependency involving fixture %r" % name)
        self.active.append(name)
        try:
            func = definition.func
            instance = getattr(definition, "instance", None)
            if instance is not None and not isinstance(func, (staticmethod,)) and _argnames(func)[:1] == ["self"]:
                func = types.MethodType(func, instance)
            kwargs = {}
            for arg in _argnames(func):
                if arg == "request":
                    kwargs[arg] = Request(self, name, finalizers)
                elif arg == name:
                    kwargs[arg] = self.get(arg, below=index)  # overriding fixture asks for the one it overrides
                else:
                    kwargs[arg] = self.get(arg)
            value = func(**kwargs)
            if inspect.isgenerator(value):
                generator = value
                value = next(generator)

                def finish(generator=generator, name=name):
                    try:
                        next(generator)
                    except StopIteration:
                        return
                    raise RuntimeError("fixture %r yielded more than once" % name)
                finalizers.append(finish)
            cache[key] = (definition, value)
            return value
        finally:
            self.active.pop()


# ================================================================ main

def parse_args(argv):
    parser = argparse.ArgumentParser(description="Discover and run a workspace's Python tests.")
    parser.add_argument("--root", default="/workspace", help="tree to test (default /workspace)")
    parser.add_argument("--out", default="/output", help="where tests.json goes (default /output)")
    parser.add_argument("--pattern", action="append", default=None,
                        help="test file name pattern (repeatable; default test*.py and *_test.py)")
    parser.add_argument("--report-only", action="store_true",
                        help="record failures in tests.json but do not fail (no violation.json, exit 0):"
                             " for a step that shows a bug before it is fixed")
    parser.add_argument("paths", nargs="*", help="files, folders or node ids to run (default: all)")
    return parser.parse_args(argv)


def summarize(tests):
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "xfailed": 0, "xpassed": 0}
    for test in tests:
        outcome = test["outcome"]
        if outcome == "passed":
            counts["passed"] += 1
        elif outcome == "failed":
            counts["failed"] += 1
        elif outcome == "error":
            counts["errors"] += 1
        elif outcome == "skipped":
            counts["skipped"] += 1
        elif outcome == "xfailed":
            counts["skipped"] += 1
            counts["xfailed"] += 1
        elif outcome == "xpassed":
            counts["passed"] += 1
            counts["xpassed"] += 1
    return counts


def violation_message(tests, counts):
    bad = [t["name"] for t in tests if t["outcome"] in ("failed", "error")]
    total = len(tests)
    if counts["errors"] and counts["failed"]:
        head = "%d of %d tests failed and %d errored: " % (counts["failed"], total, counts["errors"])
    elif counts["errors"]:
        head = "%d of %d tests errored: " % (counts["errors"], total)
    else:
        head = "%d of %d tests failed: " % (counts["failed"], total)
    shown = []
    for name in bad[:VIOLATION_NAMES]:
        if len(name) > 200:
            name = name[:197] + "…"
        candidate = head + ", ".join(shown + [name])
        if len((candidate + " and %d more" % len(bad)).encode("utf-8")) > VIOLATION_MAX - 100:
            break
        shown.append(name)
    message = head + ", ".join(shown)
    if len(shown) < len(bad):
        message += " and %d more" % (len(bad) - len(shown))
    return message


def use_private_tempdir(tmp_root):
    """Point tempfile (and TMPDIR) at a folder under OUT/.tester-tmp: the
    sandbox has no /tmp, and the tests' temporary files then go away with
    the rest of .tester-tmp."""
    import tempfile
    folder = os.path.join(tmp_root, "tempfile")
    try:
        ensure_dir(folder)
    except OSError:
        return
    os.environ["TMPDIR"] = folder
    tempfile.tempdir = folder


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    sys.dont_write_bytecode = True
    root = os.path.normpath(os.path.abspath(args.root))
    if not os.path.isdir(root):
        out("tester: %s is not a folder" % root)
        return 2
    out_dir = os.path.abspath(args.out)
    ensure_dir(out_dir)
    patterns = tuple(args.pattern) if args.pattern else DEFAULT_PATTERNS
    # The tester's own folder must not shadow the project's modules (host runs).
    here = os.path.dirname(os.path.realpath(os.path.abspath(__file__))) if "__file__" in globals() else None
    if here and sys.path and os.path.realpath(sys.path[0] or ".") == here and here != os.path.realpath(root):
        sys.path.pop(0)
    if root not in sys.path:
        sys.path.insert(0, root)
    pytest_module, is_shim = install_pytest()
    selected, missing = discover(root, patterns, args.paths)
    runner = Runner(root, out_dir, pytest_module, is_shim)
    use_private_tempdir(runner.tmp_root)
    runner.patterns = patterns
    for raw in missing:
        runner.reporter.add(raw, raw.partition("::")[0], "error", "no such file or folder under the root: %s" % raw)
    try:
        runner.run(selected)
    except BaseException:  # noqa: BLE001 - whatever happens, write what we have
        sys.stdout, sys.stderr = _REAL_STDOUT, _REAL_STDERR
        runner.reporter.add("tester", "", "error", "the tester itself failed: " + traceback.format_exc()[-MESSAGE_MAX:])
    finally:
        sys.stdout, sys.stderr = _REAL_STDOUT, _REAL_STDERR
        shutil.rmtree(runner.tmp_root, ignore_errors=True)
    tests = runner.reporter.tests
    counts = summarize(tests)
    elapsed = int(round((time.perf_counter() - started) * 1000))
    report = {"passed": counts["passed"], "failed": counts["failed"], "errors": counts["errors"],
              "skipped": counts["skipped"], "total": len(tests), "xfailed": counts["xfailed"],
              "xpassed": counts["xpassed"], "files": len(selected), "duration_ms": elapsed,
              "pytest": "stand-in" if is_shim else getattr(pytest_module, "__version__", "installed"),
              "tests": tests}
    with open(os.path.join(out_dir, "tests.json"), "w", encoding="utf-8") as f:
        dump_json(report, f)
    violation_path = os.path.join(out_dir, "violation.json")
    bad = counts["failed"] + counts["errors"]
    for test in tests:
        if test["outcome"] in ("failed", "error"):
            out("%s %s" % ("FAILED" if test["outcome"] == "failed" else "ERROR", test["name"]))
            for line in test["message"].splitlines():
                out("    " + line)
    if not tests:
        out("tester: no tests found under %s (%d test files)" % (root, len(selected)))
    else:
        out("tester: %d passed, %d failed, %d errors, %d skipped of %d tests in %d files (%d ms)"
            % (counts["passed"], counts["failed"], counts["errors"], counts["skipped"], len(tests),
               len(selected), elapsed))
    if bad and args.report_only:
        out("tester: --report-only, so the %d failing test(s) are recorded, not fatal" % bad)
    elif bad:
        with open(violation_path, "w", encoding="utf-8") as f:
            json.dump({"kind": "tests_failed", "message": violation_message(tests, counts)}, f, ensure_ascii=False)
            f.write("\n")
        return 1
    try:
        os.remove(violation_path)
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
