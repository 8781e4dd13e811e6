#!/usr/bin/env python3
"""Writes a synthetic but varied Python project, for benchmarking the agents.

    python3 gen_pyproject.py OUT_DIR [LINES]      LINES defaults to 10000

OUT_DIR gets about LINES lines of Python: a few packages (one with a
subpackage) of modules with docstrings, type hints, constants, functions of
several shapes (branches, loops, comprehensions, recursion, try/except,
calls into earlier modules), classes (plain, dataclasses, subclasses,
properties), TODO/FIXME/HACK comments, plus README.md and pyproject.toml;
and tests/ with one test file per module, alternating unittest.TestCase
files and pytest-style files (plain asserts, parametrize, raises, approx,
Test classes with setup_method, fixtures from tests/conftest.py, tmp_path,
monkeypatch, capsys). Every test passes: expected values are computed by
importing the generated modules here and calling them.

The output depends only on LINES (a seeded random.Random; no hash-ordered
iteration), so the same LINES always gives the same bytes. OUT_DIR must be
empty or absent.
"""

import importlib
import os
import random
import sys

WORDS = [
    "atlas", "beacon", "cobalt", "delta", "ember", "fjord", "garnet", "harbor", "indigo", "juniper",
    "kestrel", "lumen", "meadow", "nimbus", "onyx", "prairie", "quartz", "raven", "sierra", "tundra",
    "umber", "vertex", "willow", "xenon", "yarrow", "zephyr", "alder", "basalt", "cedar", "dune",
    "eddy", "flint", "glacier", "heron", "iris", "jasper", "karst", "lichen", "marble", "nectar",
]
NOUNS = ["ledger", "parcel", "signal", "route", "sample", "bucket", "record", "window", "token", "batch",
         "vector", "gauge", "filter", "stream", "matrix", "cursor", "budget", "shard", "queue", "frame"]
VERBS = ["compute", "scale", "merge", "score", "count", "shift", "fold", "rank", "clip", "blend",
         "parse", "split", "weigh", "trace", "pack", "probe", "tally", "mix", "wrap", "sort"]
TODO_TEXTS = ["handle negative inputs explicitly", "cache this once profiling says so",
              "replace the magic number with a named constant", "document the rounding rule",
              "split this function when it grows", "support unicode case folding",
              "check the upper bound against the spec", "make the limit configurable"]
TEXTS = ["alpha beta gamma", "the quick brown fox", "one two three four five", "red green blue",
         "lorem ipsum dolor sit amet", "a bb ccc dddd", "mesh node task", "north south east west"]


class Module:
    def __init__(self, package, name):
        self.package, self.name = package, name
        self.lines = []
        self.cases = []  # dicts, see below
        self.int_funcs = []  # names of int -> int functions others may call
        self.imports = set()
        self.from_imports = []  # (module, name)

    @property
    def dotted(self):
        return self.package + "." + self.name


class Generator:
    def __init__(self, lines):
        self.target = lines
        self.rng = random.Random("coditect-gen-pyproject-%d" % lines)
        self.modules = []
        self.used_names = set()
        self.func_count = 0
        self.test_count = 0

    # ------------------------------------------------------------ names

    def fresh(self, base):
        name = base
        n = 2
        while name in self.used_names:
            name = "%s_%d" % (base, n)
            n += 1
        self.used_names.add(name)
        return name

    def func_name(self):
        return self.fresh("%s_%s" % (self.rng.choice(VERBS), self.rng.choice(NOUNS)))

    def class_name(self):
        noun = self.rng.choice(NOUNS)
        return self.fresh(noun.capitalize() + self.rng.choice(["Store", "Tracker", "Pool", "Index", "Model", "Set"]))

    def maybe_todo(self, m, indent):
        if self.rng.random() < 0.18:
            kind = self.rng.choice(["TODO", "TODO", "FIXME", "HACK", "XXX"])
            m.lines.append("%s# %s: %s" % (" " * indent, kind, self.rng.choice(TODO_TEXTS)))

    # ------------------------------------------------------------ function templates

    def f_branch(self, m):
        name = self.func_name()
        a, b, c = self.rng.randint(2, 9), self.rng.randint(10, 40), self.rng.randint(1, 5)
        m.lines += [
            "def %s(x: int, y: int = %d) -> int:" % (name, c),
            '    """Combine x and y, treating small, even and large x differently."""',
        ]
        self.maybe_todo(m, 4)
        m.lines += [
            "    if x < 0:",
            "        return -x * y",
            "    elif x %% %d == 0 and x < %d:" % (a, b),
            "        return x // %d + y" % a,
            "    elif x >= %d:" % b,
            "        return x - y * %d" % c,
            "    return x * y + %d" % a,
            "", "",
        ]
        m.int_funcs.append(name)
        for x in self.rng.sample(range(-5, b + 10), 4):
            m.cases.append({"kind": "call", "func": name, "args": (x,)})
        m.cases.append({"kind": "call", "func": name, "args": (a * 2, 3)})
        return name

    def f_loop(self, m):
        name = self.func_name()
        k, mult = self.rng.randint(2, 6), self.rng.randint(2, 9)
        m.lines += [
            "def %s(n: int) -> int:" % name,
            '    """Sum over range(n): multiples of %d count %d times, others subtract one."""' % (k, mult),
            "    total = 0",
            "    for i in range(n):",
            "        if i %% %d == 0:" % k,
            "            total += i * %d" % mult,
            "        else:",
            "            total -= 1",
            "    return total",
            "", "",
        ]
        m.int_funcs.append(name)
        for n in self.rng.sample(range(0, 40), 3):
            m.cases.append({"kind": "call", "func": name, "args": (n,)})
        return name

    def f_string(self, m):
        name = self.func_name()
        k = self.rng.randint(2, 5)
        sep = self.rng.choice(["-", "_", "+", "."])
        m.lines += [
            "def %s(text: str) -> str:" % name,
            '    """Reverse words longer than %d characters, upper-case the rest, join with %r."""' % (k, sep),
            "    words = text.split()",
            "    return %r.join(w[::-1] if len(w) > %d else w.upper() for w in words)" % (sep, k),
            "", "",
        ]
        for text in self.rng.sample(TEXTS, 2):
            m.cases.append({"kind": "call", "func": name, "args": (text,)})
        m.cases.append({"kind": "fixture", "func": name, "fixture": "sample_text"})
        return name

    def f_filter(self, m):
        name = self.func_name()
        k, mod = self.rng.randint(2, 7), self.rng.randint(2, 5)
        m.lines += [
            "def %s(values: List[int]) -> List[int]:" % name,
            '    """Scale by %d every value not divisible by %d."""' % (k, mod),
            "    return [v * %d for v in values if v %% %d != 0]" % (k, mod),
            "", "",
        ]
        m.from_imports.append(("typing", "List"))
        m.cases.append({"kind": "call", "func": name, "args": ([self.rng.randint(0, 30) for _ in range(6)],)})
        m.cases.append({"kind": "fixture", "func": name, "fixture": "sample_numbers"})
        return name

    def f_histogram(self, m):
        name = self.func_name()
        k = self.rng.randint(2, 6)
        m.lines += [
            "def %s(items: Iterable[int]) -> Dict[int, int]:" % name,
            '    """Histogram of items modulo %d, keys in order."""' % k,
            "    counts: Dict[int, int] = {}",
            "    for item in items:",
            "        key = item %% %d" % k,
            "        counts[key] = counts.get(key, 0) + 1",
            "    return dict(sorted(counts.items()))",
            "", "",
        ]
        m.from_imports += [("typing", "Dict"), ("typing", "Iterable")]
        m.cases.append({"kind": "call", "func": name, "args": ([self.rng.randint(0, 50) for _ in range(9)],)})
        m.cases.append({"kind": "fixture", "func": name, "fixture": "sample_numbers"})
        return name

    def f_collatz(self, m):
        name = self.func_name()
        limit = self.rng.choice([50, 100, 200])
        m.lines += [
            "def %s(n: int) -> int:" % name,
            '    """Collatz steps from n down to 1, at most %d."""' % limit,
            "    steps = 0",
            "    while n > 1 and steps < %d:" % limit,
            "        n = n // 2 if n % 2 == 0 else 3 * n + 1",
            "        steps += 1",
            "    return steps",
            "", "",
        ]
        m.int_funcs.append(name)
        for n in self.rng.sample(range(1, 60), 3):
            m.cases.append({"kind": "call", "func": name, "args": (n,)})
        return name

    def f_parse(self, m):
        name = self.func_name()
        default = self.rng.randint(-9, -1)
        m.lines += [
            "def %s(text: str, default: int = %d) -> int:" % (name, default),
            '    """int(text) with surrounding spaces ignored, default when it is not a number."""',
            "    try:",
            "        return int(text.strip())",
            "    except ValueError:",
            "        return default",
            "", "",
        ]
        for text in [" 42 ", "seven", str(self.rng.randint(100, 999)), ""]:
            m.cases.append({"kind": "call", "func": name, "args": (text,)})
        return name

    def f_recursive(self, m):
        name = self.func_name()
        k = self.rng.randint(1, 3)
        m.lines += [
            "def %s(n: int) -> int:" % name,
            '    """n + (n - %d) + (n - %d) + ... down to zero."""' % (k, 2 * k),
            "    if n <= 0:",
            "        return 0",
            "    return n + %s(n - %d)" % (name, k),
            "", "",
        ]
        m.int_funcs.append(name)
        for n in self.rng.sample(range(0, 30), 3):
            m.cases.append({"kind": "call", "func": name, "args": (n,)})
        return name

    def f_validate(self, m):
        name = self.func_name()
        low, high = self.rng.randint(0, 5), self.rng.randint(50, 100)
        m.lines += [
            "def %s(value: int) -> int:" % name,
            '    """value clipped to nothing: ValueError outside [%d, %d], else value squared."""' % (low, high),
            "    if value < %d or value > %d:" % (low, high),
            "        raise ValueError(f\"value {value} out of range\")",
            "    return value * value",
            "", "",
        ]
        m.cases.append({"kind": "call", "func": name, "args": (low + 3,)})
        m.cases.append({"kind": "raises", "func": name, "args": (high + 1,), "exc": "ValueError",
                        "match": "out of range"})
        m.cases.append({"kind": "raises", "func": name, "args": (low - 1,), "exc": "ValueError",
                        "match": None})
        return name

    def f_float(self, m):
        name = self.func_name()
        k = self.rng.randint(2, 9)
        m.lines += [
            "def %s(x: float, y: float = %d.0) -> float:" % (name, k),
            '    """Distance of (x, y) from the origin, divided by %d."""' % k,
            "    return math.sqrt(x * x + y * y) / %d" % k,
            "", "",
        ]
        m.imports.add("math")
        for x in self.rng.sample(range(1, 20), 2):
            m.cases.append({"kind": "float", "func": name, "args": (x / 3,)})
        return name

    def f_compose(self, m, helpers):
        name = self.func_name()
        module, helper = self.rng.choice(helpers)
        c = self.rng.randint(1, 20)
        m.lines += [
            "def %s(x: int) -> int:" % name,
            '    """%s(x) from %s, plus %d, doubled when odd."""' % (helper, module.split(".")[-1], c),
            "    value = %s(abs(x) %% 25) + %d" % (helper, c),
            "    return value * 2 if value % 2 else value",
            "", "",
        ]
        m.from_imports.append((module, helper))
        m.int_funcs.append(name)
        for x in self.rng.sample(range(0, 30), 3):
            m.cases.append({"kind": "call", "func": name, "args": (x,)})
        return name

    def f_printer(self, m):
        name = self.func_name()
        m.lines += [
            "def %s(items: List[str]) -> int:" % name,
            '    """Print one numbered line per item; return how many were printed."""',
            "    for number, item in enumerate(items, 1):",
            "        print(f\"{number}. {item}\")",
            "    return len(items)",
            "", "",
        ]
        m.from_imports.append(("typing", "List"))
        words = self.rng.sample(NOUNS, 3)
        m.cases.append({"kind": "capsys", "func": name, "args": (words,)})
        return name

    def f_env(self, m):
        name = self.func_name()
        var = "GEN_%s_%d" % (m.name.upper(), self.rng.randint(1, 99))
        m.lines += [
            "def %s(default: str = \"unset\") -> str:" % name,
            '    """The %s environment variable, upper-cased, or default."""' % var,
            "    value = os.environ.get(%r)" % var,
            "    return value.upper() if value else default",
            "", "",
        ]
        m.imports.add("os")
        m.cases.append({"kind": "env", "func": name, "var": var, "value": self.rng.choice(NOUNS)})
        return name

    def f_file(self, m):
        name = self.func_name()
        m.lines += [
            "def %s(path: str) -> Tuple[int, int]:" % name,
            '    """(lines, words) of the text file at path."""',
            "    with open(path, encoding=\"utf-8\") as handle:",
            "        text = handle.read()",
            "    return len(text.splitlines()), len(text.split())",
            "", "",
        ]
        m.from_imports.append(("typing", "Tuple"))
        m.cases.append({"kind": "tmpfile", "func": name, "text": "\n".join(self.rng.sample(TEXTS, 3)) + "\n"})
        return name

    # ------------------------------------------------------------ class templates

    def c_counter(self, m):
        name = self.class_name()
        step = self.rng.randint(1, 5)
        m.lines += [
            "class %s:" % name,
            '    """Counts up in steps of %d and remembers its peak."""' % step,
            "",
            "    def __init__(self, start: int = 0) -> None:",
            "        self._value = start",
            "        self.peak = start",
            "",
            "    @property",
            "    def value(self) -> int:",
            '        """The current count."""',
            "        return self._value",
            "",
            "    def increment(self, times: int = 1) -> int:",
            '        """Step up `times` times; return the new value."""',
            "        for _ in range(times):",
            "            self._value += %d" % step,
            "        self.peak = max(self.peak, self._value)",
            "        return self._value",
            "",
            "    def reset(self) -> int:",
            '        """Back to zero; return the value before."""',
        ]
        self.maybe_todo(m, 8)
        m.lines += [
            "        before, self._value = self._value, 0",
            "        return before",
            "",
            "    def __repr__(self) -> str:",
            "        return f\"%s(value={self._value}, peak={self.peak})\"" % name,
            "", "",
        ]
        s = self.rng.randint(0, 10)
        m.cases.append({"kind": "snippet", "name": name.lower() + "_increment",
                        "setup": ["c = %s(%d)" % (name, s), "c.increment(%d)" % self.rng.randint(1, 4)],
                        "expr": "c.value", "uses": [name]})
        m.cases.append({"kind": "snippet", "name": name.lower() + "_reset",
                        "setup": ["c = %s(%d)" % (name, s), "c.increment()", "c.reset()"],
                        "expr": "(c.value, c.peak)", "uses": [name]})
        m.cases.append({"kind": "snippet", "name": name.lower() + "_repr",
                        "setup": ["c = %s(%d)" % (name, s)], "expr": "repr(c)", "uses": [name]})
        return name

    def c_inventory(self, m):
        name = self.class_name()
        m.lines += [
            "class %s:" % name,
            '    """Named quantities that never go below zero."""',
            "",
            "    def __init__(self) -> None:",
            "        self.items: Dict[str, int] = {}",
            "",
            "    def add(self, name: str, quantity: int = 1) -> int:",
            '        """Add quantity of name; return the new quantity."""',
            "        if quantity <= 0:",
            "            raise ValueError(\"quantity must be positive\")",
            "        self.items[name] = self.items.get(name, 0) + quantity",
            "        return self.items[name]",
            "",
            "    def remove(self, name: str, quantity: int = 1) -> int:",
            '        """Take away up to quantity; return what was really removed."""',
            "        have = self.items.get(name, 0)",
            "        taken = min(have, quantity)",
            "        if taken == have:",
            "            self.items.pop(name, None)",
            "        else:",
            "            self.items[name] = have - taken",
            "        return taken",
            "",
            "    def total(self) -> int:",
            '        """All quantities added up."""',
            "        return sum(self.items.values())",
            "",
            "    def names(self) -> List[str]:",
            '        """Names in alphabetical order."""',
            "        return sorted(self.items)",
            "", "",
        ]
        m.from_imports += [("typing", "Dict"), ("typing", "List")]
        a, b = self.rng.sample(NOUNS, 2)
        qa, qb = self.rng.randint(1, 9), self.rng.randint(1, 9)
        m.cases.append({"kind": "snippet", "name": name.lower() + "_total",
                        "setup": ["inv = %s()" % name, "inv.add(%r, %d)" % (a, qa), "inv.add(%r, %d)" % (b, qb),
                                  "inv.remove(%r, %d)" % (a, self.rng.randint(1, 12))],
                        "expr": "(inv.total(), inv.names())", "uses": [name]})
        m.cases.append({"kind": "snippet_raises", "name": name.lower() + "_rejects_zero",
                        "setup": ["inv = %s()" % name], "stmt": "inv.add(%r, 0)" % a, "exc": "ValueError",
                        "uses": [name]})
        return name

    def c_dataclass(self, m, base=None):
        name = self.class_name()
        k = self.rng.randint(2, 5)
        m.lines += [
            "@dataclass",
            "class %s:" % name,
            '    """A 2-D vector with a weight."""',
            "",
            "    x: float",
            "    y: float",
            "    weight: int = %d" % k,
            "",
            "    def norm(self) -> float:",
            '        """Euclidean length."""',
            "        return math.hypot(self.x, self.y)",
            "",
            "    def scaled(self, factor: float) -> \"%s\":" % name,
            '        """A copy scaled by factor (the weight is kept)."""',
            "        return %s(self.x * factor, self.y * factor, self.weight)" % name,
            "",
            "    def score(self) -> float:",
            '        """norm() times the weight, rounded to 3 places."""',
            "        return round(self.norm() * self.weight, 3)",
            "", "",
        ]
        m.imports.add("math")
        m.from_imports.append(("dataclasses", "dataclass"))
        x, y = self.rng.randint(1, 9), self.rng.randint(1, 9)
        m.cases.append({"kind": "snippet", "name": name.lower() + "_score",
                        "setup": ["v = %s(%d.0, %d.0)" % (name, x, y)], "expr": "v.score()", "uses": [name],
                        "float": True})
        m.cases.append({"kind": "snippet", "name": name.lower() + "_scaled",
                        "setup": ["v = %s(%d.0, %d.0).scaled(2)" % (name, x, y)], "expr": "(v.x, v.y, v.weight)",
                        "uses": [name]})
        if self.rng.random() < 0.6:
            sub = self.fresh(name + "Heavy")
            m.lines += [
                "class %s(%s):" % (sub, name),
                '    """A vector whose score counts double."""',
                "",
                "    def score(self) -> float:",
                "        return round(super().score() * 2, 3)",
                "", "",
            ]
            m.cases.append({"kind": "snippet", "name": sub.lower() + "_score",
                            "setup": ["v = %s(%d.0, %d.0)" % (sub, x, y)], "expr": "v.score()", "uses": [sub],
                            "float": True})
        return name

    # ------------------------------------------------------------ modules and packages

    def make_module(self, package, name, helpers):
        m = Module(package, name)
        body_start = len(m.lines)
        templates = [self.f_branch, self.f_loop, self.f_string, self.f_filter, self.f_histogram,
                     self.f_collatz, self.f_parse, self.f_recursive, self.f_validate, self.f_float,
                     self.f_printer, self.f_env, self.f_file]
        count = self.rng.randint(6, 10)
        for _ in range(count):
            if helpers and self.rng.random() < 0.3:
                self.f_compose(m, helpers)
            else:
                self.rng.choice(templates)(m)
            self.func_count += 1
        for _ in range(self.rng.randint(1, 2)):
            self.rng.choice([self.c_counter, self.c_inventory, self.c_dataclass])(m)
        body = m.lines[body_start:]
        header = ['"""%s: %s and %s helpers (generated)."""' % (m.dotted, self.rng.choice(NOUNS), self.rng.choice(NOUNS)), ""]
        for imp in sorted(m.imports):
            header.append("import %s" % imp)
        grouped = {}
        for module, item in m.from_imports:
            grouped.setdefault(module, set()).add(item)
        std = sorted(k for k in grouped if "." not in k)
        own = sorted(k for k in grouped if "." in k)
        for module in std:
            header.append("from %s import %s" % (module, ", ".join(sorted(grouped[module]))))
        if own:
            header.append("")
            for module in own:
                header.append("from %s import %s" % (module, ", ".join(sorted(grouped[module]))))
        header += ["", "LIMIT = %d" % self.rng.randint(10, 1000), "", ""]
        m.lines = header + body
        while m.lines and m.lines[-1] == "":
            m.lines.pop()
        m.lines.append("")
        return m

    def write(self, out_dir):
        """Writes package after package, each module with its test file at once
        (importing the module to learn the expected values), until the Python
        lines reach the target. Returns (lines, modules, tests written)."""
        sys.dont_write_bytecode = True
        sys.path.insert(0, out_dir)
        words = list(WORDS)
        self.rng.shuffle(words)
        total = 0
        helpers = []  # (dotted module, int -> int function)
        packages = []
        total += self._write(out_dir, "tests/conftest.py", self.conftest())
        while total < self.target or not self.modules:
            index = len(packages)
            package = words[index % len(words)] + ("" if index < len(words) else str(index // len(words)))
            packages.append(package)
            init = ['"""%s: generated package."""' % package, "", '__version__ = "0.%d.0"' % self.rng.randint(1, 9)]
            total += self._write(out_dir, package + "/__init__.py", init)
            subpackage = None
            if index % 2 == 0:
                subpackage = package + ".core"
                init = ['"""%s: generated subpackage."""' % subpackage]
                total += self._write(out_dir, package + "/core/__init__.py", init)
            count = self.rng.randint(3, 6)
            for number in range(count):
                if total >= self.target and number > 0:
                    break
                pkg = subpackage if subpackage and number >= count // 2 else package
                name = self.fresh("%s_%s" % (self.rng.choice(NOUNS), package[:3]))
                m = self.make_module(pkg, name, helpers[-12:])
                self.modules.append(m)
                helpers += [(m.dotted, f) for f in m.int_funcs]
                total += self._write(out_dir, m.dotted.replace(".", "/") + ".py", m.lines)
                importlib.invalidate_caches()
                module = importlib.import_module(m.dotted)
                style = "unittest" if len(self.modules) % 2 == 1 else "pytest"
                tests = self.test_file(m, module, style)
                total += self._write(out_dir, "tests/test_%s.py" % m.name, tests)
        sys.path.remove(out_dir)
        readme = ["# Generated project", "",
                  "Written by `tests/bench/gen_pyproject.py` for %d lines: %d packages, %d modules, "
                  "%d functions, %d tests." % (self.target, len(packages), len(self.modules), self.func_count,
                                               self.test_count), "",
                  "Run the tests with `python3 -m pytest tests` or the Coditect tester (`agents/tester.py`)."]
        self._write(out_dir, "README.md", readme)
        self._write(out_dir, "pyproject.toml", ["[project]", 'name = "generated"', 'version = "0.1.0"',
                                                'requires-python = ">=3.9"'])
        return total, len(self.modules), self.test_count

    @staticmethod
    def _write(out_dir, rel, lines):
        path = os.path.join(out_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        text = "\n".join(lines).rstrip("\n") + "\n"
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        return text.count("\n")

    def conftest(self):
        numbers = [self.rng.randint(0, 40) for _ in range(8)]
        return [
            '"""Shared fixtures for the generated tests."""',
            "",
            "import pytest",
            "",
            "",
            "@pytest.fixture",
            "def sample_numbers():",
            '    """A fixed list of small integers."""',
            "    return %r" % numbers,
            "",
            "",
            "@pytest.fixture",
            "def sample_text():",
            '    """A fixed sentence."""',
            "    return %r" % self.rng.choice(TEXTS),
            "",
            "",
            "@pytest.fixture",
            "def scratch_file(tmp_path):",
            '    """A path in a fresh folder, removed after the test."""',
            "    path = tmp_path / \"scratch.txt\"",
            "    yield path",
            "    if path.exists():",
            "        path.unlink()",
            "",
        ]

    # ------------------------------------------------------------ tests

    def expected(self, module, case):
        namespace = dict(vars(module))
        if case["kind"] in ("call", "float"):
            return getattr(module, case["func"])(*case["args"])
        if case["kind"] == "snippet":
            for line in case["setup"]:
                exec(line, namespace)
            return eval(case["expr"], namespace)
        return None

    def test_file(self, m, module, style):
        names = sorted({c["func"] for c in m.cases if "func" in c} | {u for c in m.cases for u in c.get("uses", ())})
        lines = ['"""Tests for %s (generated, %s style)."""' % (m.dotted, style), ""]
        if style == "unittest":
            lines += ["import io", "import os", "import tempfile", "import unittest", "from contextlib import redirect_stdout", ""]
        else:
            lines += ["import pytest", ""]
        lines.append("from %s import (" % m.dotted)
        lines += ["    %s," % n for n in names]
        lines += [")", "", ""]
        if style == "unittest":
            lines += self.unittest_body(m, module)
        else:
            lines += self.pytest_body(m, module)
        while lines and lines[-1] == "":
            lines.pop()
        lines.append("")
        return lines

    def unittest_body(self, m, module):
        cls = "".join(p.capitalize() for p in m.name.split("_")) + "Test"
        out = ["class %s(unittest.TestCase):" % cls]
        calls = {}
        for case in m.cases:
            if case["kind"] in ("call", "float"):
                calls.setdefault(case["func"], []).append(case)
        for func, cases in calls.items():
            out.append("    def test_%s(self):" % func)
            for case in cases:
                value = self.expected(module, case)
                if case["kind"] == "float":
                    out.append("        self.assertAlmostEqual(%s(%s), %r, places=7)" % (func, _args(case["args"]), value))
                else:
                    out.append("        self.assertEqual(%s(%s), %r)" % (func, _args(case["args"]), value))
            out.append("")
            self.test_count += 1
        for case in m.cases:
            kind = case["kind"]
            if kind == "raises":
                out += ["    def test_%s_rejects_%d(self):" % (case["func"], builtins_abs(case["args"][0])),
                        "        with self.assertRaises(%s):" % case["exc"],
                        "            %s(%s)" % (case["func"], _args(case["args"])), ""]
            elif kind == "snippet":
                value = self.expected(module, case)
                out += ["    def test_%s(self):" % case["name"]]
                out += ["        " + line for line in case["setup"]]
                if case.get("float"):
                    out += ["        self.assertAlmostEqual(%s, %r, places=6)" % (case["expr"], value), ""]
                else:
                    out += ["        self.assertEqual(%s, %r)" % (case["expr"], value), ""]
            elif kind == "snippet_raises":
                out += ["    def test_%s(self):" % case["name"]]
                out += ["        " + line for line in case["setup"]]
                out += ["        with self.assertRaises(%s):" % case["exc"], "            " + case["stmt"], ""]
            elif kind == "capsys":
                printed = _capture(getattr(module, case["func"]), case["args"])
                out += ["    def test_%s_prints(self):" % case["func"],
                        "        buffer = io.StringIO()",
                        "        with redirect_stdout(buffer):",
                        "            count = %s(%s)" % (case["func"], _args(case["args"])),
                        "        self.assertEqual(count, %d)" % len(case["args"][0]),
                        "        self.assertEqual(buffer.getvalue(), %r)" % printed, ""]
            elif kind == "env":
                out += ["    def test_%s_reads_environment(self):" % case["func"],
                        "        old = os.environ.pop(%r, None)" % case["var"],
                        "        try:",
                        "            self.assertEqual(%s(), \"unset\")" % case["func"],
                        "            os.environ[%r] = %r" % (case["var"], case["value"]),
                        "            self.assertEqual(%s(), %r)" % (case["func"], case["value"].upper()),
                        "        finally:",
                        "            os.environ.pop(%r, None)" % case["var"],
                        "            if old is not None:",
                        "                os.environ[%r] = old" % case["var"], ""]
            elif kind == "tmpfile":
                text = case["text"]
                out += ["    def test_%s_counts_a_file(self):" % case["func"],
                        "        with tempfile.TemporaryDirectory() as folder:",
                        "            path = os.path.join(folder, \"input.txt\")",
                        "            with open(path, \"w\", encoding=\"utf-8\") as handle:",
                        "                handle.write(%r)" % text,
                        "            self.assertEqual(%s(path), (%d, %d))" % (case["func"], len(text.splitlines()), len(text.split())),
                        ""]
            else:
                continue  # fixtures only in pytest-style files
            self.test_count += 1
        out += ["", 'if __name__ == "__main__":', "    unittest.main()"]
        return out

    def pytest_body(self, m, module):
        out = []
        calls = {}
        for case in m.cases:
            if case["kind"] == "call":
                calls.setdefault(case["func"], []).append(case)
        parametrized = False
        for func, cases in calls.items():
            values = [(c["args"], self.expected(module, c)) for c in cases]
            if not parametrized and len(cases) >= 3:
                parametrized = True
                if all(len(a) == 1 for a, _ in values):
                    params = ", ".join("(%r, %r)" % (a[0], v) for a, v in values)
                    out += ["@pytest.mark.parametrize(\"value, expected\", [%s])" % params,
                            "def test_%s(value, expected):" % func,
                            "    assert %s(value) == expected" % func, "", ""]
                else:
                    params = ", ".join("(%r, %r)" % (a, v) for a, v in values)
                    out += ["@pytest.mark.parametrize(\"args, expected\", [%s])" % params,
                            "def test_%s(args, expected):" % func,
                            "    assert %s(*args) == expected" % func, "", ""]
                self.test_count += len(values)
                continue
            out.append("def test_%s():" % func)
            out += ["    assert %s(%s) == %r" % (func, _args(a), v) for a, v in values]
            out += ["", ""]
            self.test_count += 1
        snippets = []
        for case in m.cases:
            kind = case["kind"]
            if kind == "float":
                out += ["def test_%s_%d():" % (case["func"], len(out)),
                        "    assert %s(%s) == pytest.approx(%r)" % (case["func"], _args(case["args"]), self.expected(module, case)),
                        "", ""]
            elif kind == "raises":
                match = ", match=%r" % case["match"] if case.get("match") else ""
                out += ["def test_%s_rejects_%d():" % (case["func"], builtins_abs(case["args"][0])),
                        "    with pytest.raises(%s%s):" % (case["exc"], match),
                        "        %s(%s)" % (case["func"], _args(case["args"])), "", ""]
            elif kind == "fixture":
                out += ["def test_%s_with_%s(%s):" % (case["func"], case["fixture"], case["fixture"]),
                        "    result = %s(%s)" % (case["func"], case["fixture"]),
                        "    assert result == %s(list(%s) if isinstance(%s, list) else %s)"
                        % (case["func"], case["fixture"], case["fixture"], case["fixture"]),
                        "    assert isinstance(result, (list, dict, str))", "", ""]
            elif kind == "capsys":
                printed = _capture(getattr(module, case["func"]), case["args"])
                out += ["def test_%s_prints(capsys):" % case["func"],
                        "    assert %s(%s) == %d" % (case["func"], _args(case["args"]), len(case["args"][0])),
                        "    assert capsys.readouterr().out == %r" % printed, "", ""]
            elif kind == "env":
                out += ["def test_%s_reads_environment(monkeypatch):" % case["func"],
                        "    monkeypatch.delenv(%r, raising=False)" % case["var"],
                        "    assert %s() == \"unset\"" % case["func"],
                        "    monkeypatch.setenv(%r, %r)" % (case["var"], case["value"]),
                        "    assert %s() == %r" % (case["func"], case["value"].upper()), "", ""]
            elif kind == "tmpfile":
                text = case["text"]
                out += ["def test_%s_counts_a_file(scratch_file):" % case["func"],
                        "    scratch_file.write_text(%r, encoding=\"utf-8\")" % text,
                        "    assert %s(str(scratch_file)) == (%d, %d)" % (case["func"], len(text.splitlines()), len(text.split())),
                        "", ""]
            elif kind in ("snippet", "snippet_raises"):
                snippets.append(case)
                continue
            else:
                continue
            self.test_count += 1
        if snippets:
            cls = "Test" + "".join(p.capitalize() for p in m.name.split("_"))
            out += ["class %s:" % cls, '    """Class behaviour, one fresh instance per test."""', "",
                    "    def setup_method(self):", "        self.checked = []", ""]
            for case in snippets:
                out.append("    def test_%s(self):" % case["name"])
                out += ["        " + line for line in case["setup"]]
                if case["kind"] == "snippet_raises":
                    out += ["        with pytest.raises(%s):" % case["exc"], "            " + case["stmt"]]
                elif case.get("float"):
                    out.append("        assert %s == pytest.approx(%r)" % (case["expr"], self.expected(module, case)))
                else:
                    out.append("        assert %s == %r" % (case["expr"], self.expected(module, case)))
                out += ["        assert self.checked == []", ""]
                self.test_count += 1
        return out


builtins_abs = abs


def _args(args):
    return ", ".join(repr(a) for a in args)


def _capture(func, args):
    import contextlib
    import io
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        func(*args)
    return buffer.getvalue()


def main(argv):
    if len(argv) < 2 or len(argv) > 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    out_dir = os.path.abspath(argv[1])
    lines = int(argv[2]) if len(argv) == 3 else 10000
    if lines < 100:
        print("gen_pyproject: LINES must be at least 100", file=sys.stderr)
        return 2
    if os.path.exists(out_dir) and os.listdir(out_dir):
        print("gen_pyproject: %s is not empty" % out_dir, file=sys.stderr)
        return 2
    total, modules, cases = Generator(lines).write(out_dir)
    print("gen_pyproject: %d Python lines, %d modules, %d test cases in %s" % (total, modules, cases, out_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
