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


@pytest.mark.xfail(
    strict=True,
    reason="documented limit (docs/security.md): an assert on an object of the code is decided by that object's methods",
)
def test_an_object_equal_to_everything(backend: Sandbox) -> None:
    code = "class Any:\n    def __eq__(self, other):\n        return True\ndef add(a, b):\n    return Any()\n"
    assert not backend.run_tests(code, "assert add(2, 2) == 5").passed


def test_an_exact_type_check_sees_through_such_objects(backend: Sandbox) -> None:
    code = "class Any:\n    def __eq__(self, other):\n        return True\ndef add(a, b):\n    return Any()\n"
    assert not backend.run_tests(code, "assert type(add(2, 2)) is int and add(2, 2) == 4").passed
