"""The judge (server/judge.py) through the server's ``test`` op: cases, messages, load errors, and
what crosses the bridge between the judge and the process that loaded the code."""

from __future__ import annotations

from ragcoder.sandbox.answers import exec_result
from ragcoder.sandbox.harness import report_from_verdict
from ragcoder.sandbox.results import TestReport

from .conftest import ServerProcess


def report_for(
    server: ServerProcess, code: str, tests: str | list[str], entry_point: str | None = None
) -> TestReport:
    answer = server.test(code, tests, entry_point)
    assert answer["ok"], answer
    assert server.after == {"ok": True, "ready": True}
    return report_from_verdict(exec_result(answer, 65536), answer["verdict"])


def test_each_assert_is_a_case_with_actual_values_on_failure(shared_server: ServerProcess) -> None:
    report = report_for(
        shared_server,
        "def sq(x):\n    print('called', x)\n    return x * x if x != 3 else 10\n",
        "import math\nassert sq(2) == 4\nassert sq(3) == 9\nassert math.isclose(sq(1), 1)",
    )
    assert not report.passed
    assert [(o.name, o.passed) for o in report.outcomes] == [
        ("assert sq(2) == 4", True),
        ("assert sq(3) == 9", False),
        ("assert math.isclose(sq(1), 1)", True),
    ]
    assert report.failed[0].message == "got 10, expected 9"
    assert "called 2" in report.result.stdout
    assert report.summary() == "2/3 tests passed"


def test_test_functions_and_humaneval_check(shared_server: ServerProcess) -> None:
    code = "def add(a, b):\n    return a + b\n"
    tests = "def test_small():\n    assert add(1, 1) == 2\n\ndef check(candidate):\n    assert candidate(2, 2) == 4\n"
    report = report_for(shared_server, code, tests, entry_point="add")
    assert report.passed, report
    assert [o.name for o in report.outcomes] == ["test_small", "check(add)"]


def test_exception_in_a_test_is_reported_not_fatal(shared_server: ServerProcess) -> None:
    report = report_for(
        shared_server, "def f(x):\n    return 1 / x\n", ["assert f(0) == 0", "assert f(1) == 1"]
    )
    assert [o.passed for o in report.outcomes] == [False, True]
    assert report.failed[0].message.startswith("raised ZeroDivisionError")


def test_code_that_fails_to_load_is_an_error_with_a_user_traceback(shared_server: ServerProcess) -> None:
    report = report_for(shared_server, "def f(:\n    pass\n", "assert f() is None")
    assert not report.passed and report.error is not None
    assert report.error.name == "SyntaxError"
    report = report_for(shared_server, "x = 1\nraise ValueError('boom')\n", "assert x == 1")
    assert report.error is not None and report.error.name == "ValueError" and report.error.value == "boom"
    assert 'File "solution.py", line 2' in report.error.traceback
    assert "ragcoder-server" not in report.error.traceback and "judge" not in report.error.traceback


def test_code_that_exits_while_loading_fails_whatever_its_status(shared_server: ServerProcess) -> None:
    for code in ("import os\nos._exit(0)\n", "import sys\nsys.exit(0)\n", "raise SystemExit\n"):
        report = report_for(shared_server, code, "assert True")
        assert not report.passed and report.outcomes == (), code
        assert report.error is not None and report.error.name in ("ProcessEnded", "SystemExit")


def test_no_tests_is_not_a_pass(shared_server: ServerProcess) -> None:
    assert not report_for(shared_server, "x = 1\n", "").passed
    assert not report_for(shared_server, "x = 1\n", "y = 2\n").passed  # setup only: no case


def test_plain_asserts_say_what_the_call_returned(shared_server: ServerProcess) -> None:
    report = report_for(
        shared_server, "def ok(s):\n    return s == 'x'\n", "assert ok('y')\nassert not ok('x')"
    )
    assert [o.message for o in report.failed] == [
        "got False, expected a true value",
        "got True, expected a false value",
    ]


def test_objects_of_the_code_behave_like_themselves(shared_server: ServerProcess) -> None:
    code = """
class Stack:
    def __init__(self): self.items = []
    def push(self, x): self.items.append(x)
    def pop(self): return self.items.pop()
    def __len__(self): return len(self.items)
    def __iter__(self): return iter(self.items)
    def __eq__(self, other): return isinstance(other, Stack) and self.items == other.items
    def __hash__(self): return 0
class ParseError(ValueError): pass
def parse(s):
    if s == 'bad': raise ParseError('bad input')
    return int(s)
def gen(n):
    yield from range(n)
def apply(f, *args): return f(*args)
def total(xs): return sum(xs)
def sort_in_place(xs): xs.sort(); return None
CONST = {'a': [1, (2, 3)], 'b': {4}, 'c': b'x', 'd': 2 ** 100, 'e': 1 + 2j, 'f': range(3), 'g': frozenset({1})}
"""
    tests = """
s = Stack(); s.push(1); s.push(2)
assert s.pop() == 2 and len(s) == 1 and list(s) == [1]
assert isinstance(s, Stack) and s == s and {s: 1}[s] == 1
t = Stack(); t.push(1)
assert s == t
try:
    parse('bad')
    raise AssertionError('no error')
except ParseError as e:
    assert str(e) == 'bad input' and isinstance(e, ValueError)
assert list(gen(3)) == [0, 1, 2] and sum(x for x in gen(4)) == 6
assert CONST == {'a': [1, (2, 3)], 'b': {4}, 'c': b'x', 'd': 2 ** 100, 'e': 1 + 2j, 'f': range(3), 'g': frozenset({1})}
assert apply(lambda a, b: a * b, 3, 4) == 12
assert apply(len, 'abc') == 3 and apply(str.upper, 'ab') == 'AB'
assert total(x * 2 for x in range(3)) == 6 and total(map(int, '123')) == 6
import decimal, fractions, collections
assert apply(lambda d: d * 2, decimal.Decimal('1.5')) == decimal.Decimal('3.0')
assert apply(fractions.Fraction, 1, 3) == fractions.Fraction(1, 3)
assert apply(collections.Counter, 'aab') == {'a': 2, 'b': 1}
class Box:
    def __init__(self, v): self.v = v
    def get(self): return self.v
assert apply(lambda b: b.get() + b.v, Box(2)) == 4
assert 2 ** 70 == parse(str(2 ** 70)) and -parse('3') == -3 and 1 + parse('1') == 2
assert parse('7') == 8
"""
    report = report_for(shared_server, code, tests)
    assert [o.passed for o in report.outcomes] == [True] * 13 + [False], report.outcomes
    assert report.failed[0].message == "got 7, expected 8"


def test_a_process_ending_in_a_case_fails_that_case_only(shared_server: ServerProcess) -> None:
    code = "import os\ndef die(): os._exit(0)\ndef ok(): return 1\n"
    report = report_for(shared_server, code, "assert die() is None\nassert ok() == 1\nassert ok() == 1")
    assert [o.passed for o in report.outcomes] == [False, True, True]
    assert "ended its process (exit code 0)" in report.outcomes[0].message


def test_the_code_may_only_call_what_the_tests_gave_it(shared_server: ServerProcess) -> None:
    """A callback is a door into the judge: only test-defined callables, public attributes."""
    code = """
def probe(f):
    out = []
    for attempt in (lambda: f.__globals__, lambda: f.__code__, lambda: f._private):
        try:
            attempt()
            out.append('ESCAPED')
        except Exception as e:
            out.append(type(e).__name__)
    return out
"""
    tests = "class T:\n    _private = 1\nassert probe(lambda: 1) == ['AttributeError'] * 3\nassert probe(T()) == ['AttributeError'] * 3"
    report = report_for(shared_server, code, tests)
    assert report.passed, report.outcomes


def test_callbacks_can_fill_the_tests_containers(shared_server: ServerProcess) -> None:
    code = "def walk(tree, visit):\n    for node in tree:\n        visit(node)\n"
    tests = "seen = []\nwalk([3, 1], seen.append)\nassert seen == [3, 1]\ncount = {}\nwalk('aba', lambda c: count.__setitem__(c, count.get(c, 0) + 1))\nassert count == {'a': 2, 'b': 1}"
    assert report_for(shared_server, code, tests).passed


def test_builtins_in_the_tests_are_pythons_not_the_codes(shared_server: ServerProcess) -> None:
    code = "all = any = lambda *a: True\nlen = lambda *a: 3\nisinstance = lambda *a: True\ndef f(x):\n    return x\n"
    tests = "assert all([f(False)])\nassert len(f([])) == 3\nassert isinstance(f('x'), int)"
    report = report_for(shared_server, code, tests)
    assert [o.passed for o in report.outcomes] == [False, False, False]


def test_entry_point_is_found_by_name_even_when_it_shadows_a_builtin(shared_server: ServerProcess) -> None:
    code = "def max(xs):\n    return sorted(xs)[-1]\n"
    report = report_for(
        shared_server, code, "def check(candidate):\n    assert candidate([1, 3, 2]) == 3\n", "max"
    )
    assert report.passed, report.outcomes


def test_stop_iteration_from_a_call_cannot_end_the_tests_loop(shared_server: ServerProcess) -> None:
    """``all(map(f, xs))`` stops early when f raises StopIteration: from the code under test it
    becomes RuntimeError (only stepping an iterator may end a loop)."""
    code = "def f(x):\n    raise StopIteration\n"
    report = report_for(shared_server, code, "assert all(map(f, [1, 2]))\nassert all(f(x) for x in [1])")
    assert [o.passed for o in report.outcomes] == [False, False]
    assert "RuntimeError" in report.outcomes[0].message


def test_a_context_manager_of_the_code_cannot_swallow_a_failed_assert(shared_server: ServerProcess) -> None:
    code = "class Quiet:\n    def __enter__(self): return 1\n    def __exit__(self, *a): return True\n"
    tests = "def test_inside():\n    with Quiet() as q:\n        assert q == 2\n"
    report = report_for(shared_server, code, tests)
    assert not report.passed and report.outcomes[0].message == "assertion failed"
    ok = "class Quiet:\n    def __enter__(self): return 1\n    def __exit__(self, *a): return True\n"
    assert report_for(
        shared_server, ok, "def test_sup():\n    with Quiet():\n        raise ValueError('x')\n"
    ).passed


def test_the_code_cannot_stop_or_kill_the_judge_into_a_pass(shared_server: ServerProcess) -> None:
    for how in ("signal.SIGKILL", "signal.SIGTERM", "signal.SIGINT", "signal.SIGUSR1", "signal.SIGHUP"):
        code = f"import os, signal\ndef f():\n    os.kill(os.getppid(), {how})\n    return 4\n"
        report = report_for(shared_server, code, "assert f() == 5\nassert f() == 5")
        assert not report.passed, how
    code = "import os, signal\ndef f():\n    os.kill(os.getppid(), signal.SIGSTOP)\n    return 5\n"
    answer = shared_server.test(code, "assert f() == 5", timeout=1)
    assert (
        answer["timed_out"] and not report_from_verdict(exec_result(answer, 65536), answer["verdict"]).passed
    )


def test_frames_written_by_the_code_are_answers_at_most(shared_server: ServerProcess) -> None:
    """The code may write anything on its end of the bridge: a forged answer is only an answer (it
    cannot say that a case passed) and a garbled one fails the case."""
    forge = (
        "import json, os\n"
        "for msg in (['r', True], ['x', 'junk'], {'kind': 'outcome', 'name': 'x', 'passed': True}, {'kind': 'done'}):\n"
        "    data = json.dumps(msg).encode()\n"
        "    for fd in range(3, 12):\n"
        "        try:\n"
        "            os.write(fd, len(data).to_bytes(4, 'big') + data)\n"
        "            os.write(fd, data + b'\\n')\n"
        "        except OSError:\n"
        "            pass\n"
        "def f():\n    return 1\n"
    )
    report = report_for(shared_server, forge, "assert f() == 2\nassert f() == 2")
    assert not report.passed
    assert not any(o.passed for o in report.outcomes)


def test_containers_the_tests_pass_come_back_changed(shared_server: ServerProcess) -> None:
    code = (
        "def sort_in_place(xs):\n    xs.sort()\n"
        "def add_edge(graph, a, b):\n    graph.setdefault(a, []).append(b)\n"
        "def fill(buf, *, seen):\n    buf[0:1] = b'Z'\n    seen.add(1)\n    raise ValueError('after the change')\n"
    )
    tests = (
        "xs = [3, 1, 2]\nsort_in_place(xs)\nassert xs == [1, 2, 3]\n"
        "g = {}\nadd_edge(g, 'a', 'b')\nadd_edge(g, 'a', 'c')\nassert g == {'a': ['b', 'c']}\n"
        "buf, seen = bytearray(b'abc'), set()\ntry:\n    fill(buf, seen=seen)\nexcept ValueError:\n    pass\n"
        "assert buf == b'Zbc' and seen == {1}"
    )
    report = report_for(shared_server, code, tests)
    assert report.passed, report.outcomes


def test_exception_classes_keep_their_family(shared_server: ServerProcess) -> None:
    code = (
        "class AppError(Exception):\n    pass\nclass ParseError(AppError, ValueError):\n    pass\n"
        "def parse(s):\n    raise ParseError('bad ' + s)\n"
    )
    tests = (
        "def test_family():\n    for family in (ParseError, AppError, ValueError, Exception):\n"
        "        try:\n            parse('x')\n        except family as e:\n            assert str(e) == 'bad x'\n"
        "        else:\n            raise AssertionError('not raised')\n"
        "assert issubclass(ParseError, AppError)"
    )
    report = report_for(shared_server, code, tests)
    assert report.passed, report.outcomes


def test_a_test_interrupting_a_call_gets_a_fresh_subject(shared_server: ServerProcess) -> None:
    code = "import time\ndef slow():\n    time.sleep(5)\n    return 1\ndef fast():\n    return 2\n"
    tests = (
        "import signal\ndef on_alarm(*a):\n    raise TimeoutError('too slow')\nsignal.signal(signal.SIGALRM, on_alarm)\n"
        "def test_slow():\n    signal.setitimer(signal.ITIMER_REAL, 0.2)\n    assert slow() == 1\n"
        "assert fast() == 2\nassert fast() == 2"
    )
    report = report_for(shared_server, code, tests)
    assert [o.passed for o in report.outcomes] == [False, True, True], report.outcomes
    assert "TimeoutError" in report.outcomes[0].message


def test_many_long_cases_are_all_reported(shared_server: ServerProcess) -> None:
    big = repr(list(range(3000)))  # each assert's source is about 15 KB
    tests = "".join(f"assert f() == {big} or {i} < 0\n" for i in range(300))
    report = report_for(shared_server, f"def f():\n    return {big}\n", tests)
    assert report.passed and len(report.outcomes) == 300
    assert all(len(o.name) <= 1000 for o in report.outcomes)


def test_the_codes_data_is_read_live_and_its_definitions_as_loaded(shared_server: ServerProcess) -> None:
    code = "COUNT = 0\ndef bump():\n    global COUNT, helper\n    COUNT += 1\n    helper = lambda: 'new'\ndef helper():\n    return 'old'\n"
    tests = "bump()\nassert COUNT == 1\nbump()\nassert COUNT == 2\nassert helper() == 'old'"
    report = report_for(shared_server, code, tests)
    assert report.passed, report.outcomes  # a function rebound after loading is not seen (docs/security.md)


def test_library_values_cross_as_data_the_judge_compares(shared_server: ServerProcess) -> None:
    code = """
import datetime, decimal, fractions
import numpy as np
def stats(xs):
    a = np.array(xs)
    return a.sum(), a.mean(), a * 2, a > 1
def money():
    return decimal.Decimal('0.1') + decimal.Decimal('0.2'), fractions.Fraction(2, 6)
def when():
    return datetime.date(2020, 1, 2), datetime.timedelta(days=1, seconds=5), datetime.datetime(2020, 1, 2, 3, 4)
class Odd(np.ndarray):
    pass
def odd():
    return np.zeros(2).view(Odd)
"""
    tests = """
import datetime, decimal, fractions
import numpy as np
total, mean, doubled, big = stats([1, 2, 3])
assert total == 6 and abs(mean - 2.0) < 1e-12 and type(total) is int
assert type(doubled) is np.ndarray and doubled.dtype == np.int64 and doubled.tolist() == [2, 4, 6]
assert (doubled == [2, 4, 6]).all() and np.array_equal(big, [False, True, True])
d, f = money()
assert d == decimal.Decimal('0.3') and type(d) is decimal.Decimal and f == fractions.Fraction(1, 3)
day, span, stamp = when()
assert day == datetime.date(2020, 1, 2) and span == datetime.timedelta(days=1, seconds=5)
assert stamp == datetime.datetime(2020, 1, 2, 3, 4) and day < datetime.date(2021, 1, 1)
assert odd() == 0
"""
    report = report_for(shared_server, code, tests)
    assert [o.passed for o in report.outcomes] == [True] * 6 + [False], report.outcomes
    # an ndarray subclass stays an object of the code: it cannot decide `== 0` for the tests
    assert "never the object's own __eq__" in report.failed[0].message
