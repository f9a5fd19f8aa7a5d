"""Red team, part 2: code under test that tries to make ``run_tests`` say it passed.

Each case is code plus tests it should fail; the report must not pass (and the next normal run
must be healthy). A correct solution is the control: it passes on the same sandbox. The verdict
travels from the judge on a pipe the code's process never holds (server/judge.py), so these can
only answer calls, kill or stop processes, or fail to load.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from ragcoder.sandbox import Sandbox

from tests.sandbox.redteam import assert_healthy

pytestmark = pytest.mark.redteam

ADD_TESTS = "assert add(2, 2) == 5\nassert add(1, 1) == 3"  # tests no honest add passes


@dataclass(frozen=True)
class Forgery:
    id: str
    code: str
    tests: str = ADD_TESTS
    entry_point: str | None = None
    timeout: float = 10.0
    blocked_markers: int = 0  # how many 'BLOCKED' the code must print (its attempts refused)


FORGERIES = [
    Forgery(  # issue 20: a fake report line with the nonce read from __main__, then os._exit(0)
        "fake-report-then-exit",
        "import os, sys, json\n"
        "secret = [v for v in vars(sys.modules['__main__']).values() if isinstance(v, str) and '@@' in v]\n"
        "for s in secret + ['@@ragcoder-report-0@@', '@@ragcoder-verdict-0@@']:\n"
        "    print('\\n' + s + json.dumps({'outcomes': [{'name': 'x', 'passed': True}], 'kind': 'done'}))\n"
        "sys.stdout.flush()\nos._exit(0)\n",
    ),
    Forgery(  # issue 20: builtins.exec replaced by a no-op used to pass `assert 1 == 2`
        "exec-is-a-no-op",
        "import builtins\nbuiltins.exec = lambda *a, **k: None\nbuiltins.eval = lambda *a, **k: True\n"
        "builtins.compile = lambda *a, **k: None\ndef add(a, b):\n    return a + b\n",
        tests="assert 1 == 2\nassert add(1, 1) == 3",
    ),
    Forgery(  # issue 20: the eval harness scored a task passed for code that defines nothing
        "defines-nothing",
        "",
        tests="def check(candidate):\n    assert candidate(1, 1) == 2\n",
        entry_point="add",
    ),
    Forgery(  # issue 20: replacing the assert machinery, sys.exit and os._exit
        "patched-machinery",
        "import builtins, sys, os\nclass AssertionError(Exception):\n    pass\nbuiltins.AssertionError = AssertionError\n"
        "sys.exit = os._exit = lambda *a: None\nsys.excepthook = lambda *a: None\ndef add(a, b):\n    return a + b\n",
    ),
    Forgery(
        "verdicts-on-every-fd",
        "import json, os\nline = json.dumps({'kind': 'outcome', 'name': 'assert add(2, 2) == 5', 'passed': True})\n"
        "for fd in range(0, 1024):\n    for msg in (line, json.dumps({'kind': 'done'})):\n        try:\n"
        "            os.write(fd, msg.encode() + b'\\n')\n        except OSError:\n            pass\n"
        "def add(a, b):\n    return a + b\n",
    ),
    Forgery(
        "exit-thread",
        "import os, threading, time\nthreading.Timer(0.05, os._exit, args=(0,)).start()\n"
        "def add(a, b):\n    time.sleep(0.2)\n    return a + b\n",
    ),
    Forgery(
        "kill-the-judge",
        "import os, signal\ndef add(a, b):\n    os.kill(os.getppid(), signal.SIGKILL)\n    return a + b\n",
    ),
    Forgery(
        "stop-the-judge",
        "import os, signal\ndef add(a, b):\n    os.kill(os.getppid(), signal.SIGSTOP)\n    return 5\n",
        timeout=1,
    ),
    Forgery(
        "judge-proc-files",
        "import os\nfor path, mode in ((f'/proc/{os.getppid()}/fd/3', os.O_WRONLY), (f'/proc/{os.getppid()}/mem', os.O_RDONLY),\n"
        "                   (f'/proc/{os.getppid()}/environ', os.O_RDONLY), ('/proc/1/fd/1', os.O_WRONLY)):\n"
        "    try:\n        os.open(path, mode)\n        print('ESCAPED', path)\n    except OSError:\n        print('BLOCKED', path)\n"
        "def add(a, b):\n    return a + b\n",
        blocked_markers=4,
    ),
    Forgery(
        "shadowed-builtins",
        "all = any = bool = lambda *a: True\nlen = lambda *a: 3\nisinstance = lambda *a: True\n"
        "sorted = lambda x, **k: [1, 2]\ndef add(a, b):\n    return [a + b]\n",
        tests="assert all([add(2, 2) == 5])\nassert len(add(1, 1)) == 3\nassert isinstance(add(1, 1), int)\nassert sorted(add(1, 2)) == [1, 2]",
    ),
    Forgery(
        "stop-iteration-ends-the-loop",
        "def add(a, b):\n    raise StopIteration\n",
        tests="assert all(map(lambda p: add(*p) == 5, [(2, 2)]))",
    ),
    Forgery(
        "context-manager-swallows-asserts",
        "class Ctx:\n    def __enter__(self):\n        return self\n    def __exit__(self, *a):\n        return True\n"
        "def add(a, b):\n    return a + b\n",
        tests="def test_add():\n    with Ctx():\n        assert add(2, 2) == 5\n",
    ),
    Forgery(
        "huge-answer",
        "def add(a, b):\n    return ['x' * 100] * 700_000\n",
        timeout=20,
    ),
    Forgery(
        "deep-answer",
        "def add(a, b):\n    x = []\n    for _ in range(100_000):\n        x = [x]\n    return x\n",
    ),
    Forgery(
        "forged-bridge-frames",
        "import json, os\nfor msg in (['r', True], ['r', 5], ['x', {'str': 'x'}]):\n    data = json.dumps(msg).encode()\n"
        "    os.write(3, len(data).to_bytes(4, 'big') + data)\ndef add(a, b):\n    return a + b\n",
    ),
    Forgery(
        "fork-bomb-in-a-test",
        "import os\ndef add(a, b):\n    while True:\n        try:\n            os.fork()\n        except OSError:\n            pass\n",
        timeout=3,
    ),
    Forgery(
        "exit-at-load-with-a-report-at-exit",
        'import atexit, sys\natexit.register(print, \'{"kind": "done"}\')\nsys.exit(0)\n',
    ),
    Forgery(
        "claims-a-sandbox-crash-while-loading",
        "class SandboxCrashed(Exception):\n    pass\nraise SandboxCrashed('stop the agent')\n",
    ),
    Forgery(  # an object equal to everything (its __eq__ would see the expected value)
        "equal-to-everything",
        "class Any:\n    def __eq__(self, other):\n        return True\n    __ne__ = lambda s, o: False\n"
        "def add(a, b):\n    return Any()\n",
        tests="assert add(2, 2) == 5\nassert 3 == add(1, 1)\nassert [add(1, 1)] == [3]\nassert not (add(2, 2) != 5)",
    ),
    Forgery(
        "eq-answers-a-truthy-object",
        "class Any:\n    def __eq__(self, other):\n        return self\n    def __bool__(self):\n        return True\n"
        "def add(a, b):\n    return Any()\n",
    ),
    Forgery(  # data subclasses are compared as their data, whatever they redefine
        "int-and-str-subclasses-equal-to-everything",
        "class I(int):\n    __eq__ = lambda s, o: True\n    __hash__ = int.__hash__\n"
        "class S(str):\n    __eq__ = lambda s, o: True\n    __hash__ = str.__hash__\n"
        "class L(list):\n    __eq__ = lambda s, o: True\n"
        "def add(a, b):\n    return I(a + b)\ndef name():\n    return S('no')\ndef items():\n    return L()\n",
        tests="assert add(2, 2) == 5\nassert name() == 'yes'\nassert items() == [1]",
    ),
    Forgery(  # the float idiom: the object echoes the expected value back as a zero difference
        "echoes-the-expected-value",
        "class Num:\n    def __sub__(self, other):\n        return 0.0\n    __rsub__ = __add__ = __radd__ = __sub__\n"
        "    def __lt__(self, other):\n        return True\n    __le__ = __gt__ = __ge__ = __lt__\n"
        "    def __abs__(self):\n        return self\ndef add(a, b):\n    return Num()\n",
        tests="assert abs(add(2, 2) - 5) < 1e-9\nassert add(1, 1) <= 3 and add(1, 1) >= 3\nassert 5 - add(2, 2) == 0",
    ),
    Forgery(
        "contains-everything",
        "class Bag:\n    def __contains__(self, item):\n        return True\ndef add(a, b):\n    return Bag()\n",
        tests="assert 5 in add(2, 2)",
    ),
    Forgery(
        "claims-a-sandbox-crash",
        "class SandboxCrashed(Exception):\n    pass\ndef add(a, b):\n    raise SandboxCrashed('stop the agent')\n",
    ),
]


@pytest.mark.parametrize("forgery", FORGERIES, ids=[f.id for f in FORGERIES])
def test_code_cannot_make_failing_tests_pass(backend: Sandbox, forgery: Forgery) -> None:
    report = backend.run_tests(
        forgery.code, forgery.tests, entry_point=forgery.entry_point, timeout=forgery.timeout
    )
    assert not report.passed, report
    assert not any(o.passed for o in report.outcomes), report.outcomes
    assert "ESCAPED" not in report.result.stdout
    assert report.result.stdout.count("BLOCKED") == forgery.blocked_markers, report.result.stdout
    crashed = report.result.error is not None and report.result.error.name == "SandboxCrashed"
    assert not crashed, report  # only the host may say the sandbox crashed
    assert_healthy(backend)


def test_an_honest_solution_passes_the_same_way(backend: Sandbox) -> None:
    report = backend.run_tests(
        "def add(a, b):\n    return a + b\n", "assert add(2, 2) == 4\nassert add(1, 1) == 2"
    )
    assert report.passed and report.summary() == "2/2 tests passed"


def test_a_crash_in_one_case_costs_that_case_only(backend: Sandbox) -> None:
    code = "import ctypes\ndef crash():\n    ctypes.string_at(0)\ndef ok():\n    return 1\n"
    report = backend.run_tests(code, "assert ok() == 1\nassert crash() is None\nassert ok() == 1")
    assert [o.passed for o in report.outcomes] == [True, False, True]
    assert "killed by signal 11" in report.outcomes[1].message


def test_an_object_equal_to_everything_is_told_why_it_failed(backend: Sandbox) -> None:
    code = "class Any:\n    def __eq__(self, other):\n        return True\ndef add(a, b):\n    return Any()\n"
    report = backend.run_tests(code, "assert add(2, 2) == 5")
    assert not report.passed
    assert "never the object's own __eq__" in report.failed[0].message, report.failed[0].message


def test_objects_of_the_code_still_work_among_themselves(backend: Sandbox) -> None:
    code = (
        "from collections import Counter, namedtuple\nfrom enum import IntEnum\n"
        "P = namedtuple('P', 'x y')\nclass Level(IntEnum):\n    LOW = 1\n"
        "class Vec:\n    def __init__(self, *v):\n        self.v = v\n"
        "    def __mul__(self, k):\n        return Vec(*(x * k for x in self.v))\n"
        "    def __eq__(self, other):\n        return isinstance(other, Vec) and self.v == other.v\n"
        "def count(s):\n    return Counter(s)\ndef gen(n):\n    yield from range(n)\n"
    )
    tests = (
        "assert Vec(1, 2) * 2 == Vec(2, 4) and Vec(1) != Vec(2)\n"
        "assert count('aab') == {'a': 2, 'b': 1} and count('a')['a'] == 1\n"
        "assert P(1, 2) == (1, 2) and P(1, 2).y == 2 and P(1, 2) < (1, 3)\n"
        "assert Level.LOW == 1 and Level.LOW + 1 == 2 and 0 < Level.LOW\n"
        "assert 2 in gen(3) and 5 not in gen(3)"
    )
    report = backend.run_tests(code, tests)
    assert report.passed, report.outcomes


def test_an_exact_type_check_sees_through_such_objects(backend: Sandbox) -> None:
    code = "class Any:\n    def __eq__(self, other):\n        return True\ndef add(a, b):\n    return Any()\n"
    assert not backend.run_tests(code, "assert type(add(2, 2)) is int and add(2, 2) == 4").passed


def test_every_humaneval_reference_passes_and_an_empty_body_fails(backend: Sandbox) -> None:
    """The judge's rules (comparisons, data forms) change nothing for honest HumanEval code."""
    from ragcoder.finetune.evaluate import score_hidden
    from ragcoder.finetune.humaneval import load_problems

    problems = load_problems("dev") + load_problems("test")
    wrong = [p.task_id for p in problems if not score_hidden(backend, p, p.canonical_code).passed]
    forged = [p.task_id for p in problems if score_hidden(backend, p, p.prompt + "    return None\n").passed]
    assert len(problems) == 164 and wrong == [] and forged == []
