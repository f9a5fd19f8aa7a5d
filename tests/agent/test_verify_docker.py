"""Selection by execution in the real hardened Docker sandbox: N candidates x M tests, one request
per candidate, with per-test outcomes, a per-test time limit and the outputs MBR-exec compares."""

from __future__ import annotations

import threading
import time

import pytest
from ragcoder.agent import CodeAgent
from ragcoder.agent.result import Attempt
from ragcoder.agent.select import assert_cases, drop_broken_tests, probes_for, run_candidate
from ragcoder.sandbox import ExecResult, Sandbox

from tests.fakes import fenced

pytestmark = pytest.mark.docker

CANDIDATES = [
    "def clip(x, lo, hi):\n    return max(lo, min(x, hi))\n",  # right
    "def clip(x, lo, hi):\n    return min(lo, max(x, hi))\n",  # wrong
    "def clip(x, lo, hi):\n    while x > hi:\n        pass\n    return max(x, lo)\n",  # hangs above hi
    "def clip(x, lo, hi)\n    return x\n",  # does not parse
]
TESTS = [
    "assert clip(5, 0, 10) == 5",
    "assert clip(-3, 0, 10) == 0",
    "assert clip(42, 0, 10) == 10",
    "assert clip(1, 2, 3, 4) == 2",  # raises TypeError for everyone
    "assert clip(0, 0, 0) == 0",
]


class CountingSandbox(Sandbox):
    """The Docker sandbox, counting the requests made to it. ``native``: test runs go to its run
    server, which starts the code afresh after a hang; else through ``Sandbox.run_tests`` as for a
    sandbox that only runs programs (one process for the code: after a hang, later cases are not
    run in that request)."""

    name = "counting"

    def __init__(self, inner: Sandbox, native: bool) -> None:
        self.inner, self.native, self.requests, self.lock = inner, native, 0, threading.Lock()

    def _count(self) -> None:
        with self.lock:
            self.requests += 1

    def run(self, code, *, stdin=None, files=None, timeout=None) -> ExecResult:
        self._count()
        return self.inner.run(code, stdin=stdin, files=files, timeout=timeout)

    def run_tests(self, code, tests, *, entry_point=None, timeout=None):
        if not self.native:
            return super().run_tests(code, tests, entry_point=entry_point, timeout=timeout)
        self._count()
        return self.inner.run_tests(code, tests, entry_point=entry_point, timeout=timeout)


# without the run server, each hang costs one more request: the hanging test, then its probe
@pytest.mark.parametrize(("native", "requests"), [(True, 4), (False, 6)], ids=["server", "programs-only"])
def test_n_candidates_by_m_tests_one_request_each(docker_sandbox, native: bool, requests: int) -> None:
    sandbox = CountingSandbox(docker_sandbox, native)
    tests = assert_cases(TESTS, "generated")
    probes = probes_for(tests, "clip")
    runs = [
        Attempt(1, "generate", code, ExecResult(), False, candidate=i + 1)
        for i, code in enumerate(CANDIDATES)
    ]
    started = time.perf_counter()
    for run in runs:
        run_candidate(sandbox, run, tests, probes, entry_point=None, test_timeout=0.5, timeout=10)
    elapsed = time.perf_counter() - started
    assert sandbox.requests == requests  # 4 x 5 pairs (and 5 probes each) in 4 requests on the server
    letters = {"pass": "P", "fail": "F", "error": "E", "timeout": "T"}
    matrix = ["".join(letters[r.statuses[t.name]] for t in tests) if r.statuses else "-" for r in runs]
    assert matrix == ["PPPEP", "FPFEP", "PPTEP", "-"]
    assert [r.passed for r in runs] == [True, True, True, False]  # no hard tests: loading is the check
    assert runs[3].result.error.name == "SyntaxError" and runs[3].report.error is not None
    assert runs[0].outputs == {
        "clip(5, 0, 10)": "5",
        "clip(-3, 0, 10)": "0",
        "clip(42, 0, 10)": "10",
        "clip(1, 2, 3, 4)": "raised TypeError",
        "clip(0, 0, 0)": "0",
    }
    assert runs[2].outputs["clip(42, 0, 10)"] == "timeout"
    assert "did not finish in time" in next(o.message for o in runs[2].report.outcomes if not o.passed)
    assert elapsed < 20, elapsed  # the hang cost its test's limit, not the whole run's
    drop_broken_tests(tests, runs)
    assert [t.dropped for t in tests] == ["", "", "", "it raised (or hung) for every candidate", ""]


def test_the_agent_picks_by_agreement_in_docker(docker_sandbox) -> None:
    from tests.agent.test_loop import sampling

    own = fenced("\n".join(TESTS))
    model = sampling(CANDIDATES[1], code=[CANDIDATES[0], CANDIDATES[0], CANDIDATES[3]], tests=[own])
    instruction = "Write a Python function `clip(x, lo, hi)` that limits x to the range [lo, hi]."
    result = CodeAgent(model, docker_sandbox, samples=4, test_prompts=1, test_timeout=0.5).invoke(instruction)
    assert result.code == CANDIDATES[0] and result.verdict == "self-tested"
    assert result.summary() == "4 candidates, 2 agree, 4/4 own tests: self-tested"
    assert [t.dropped != "" for t in result.test_cases] == [False, False, False, True, False]
