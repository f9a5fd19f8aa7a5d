"""The run server, part 6 of 7: the judge of a test run.

A test run is two processes. The *judge* (this part; forked by the server, it never runs user
code) parses the tests and runs each case in its own namespace, where every name the tests use
but do not define is looked up in the *subject* (child.py: the process that loaded the user's
code) through the bridge (remote.py). The judge writes each case's verdict on its verdict
channel, fd 3: a pipe to the server that the subject closed before loading any user code. So the
code under test can neither write, read nor imitate a verdict: it can only answer calls.

If the subject ends (``os._exit``, a signal, a crash), the case that was running fails saying how
it ended and the next case gets a fresh subject (the code is loaded again).

Cases: each top-level ``assert``, each ``def test_*`` function, and ``check(entry_point)`` when
the tests define ``check`` (HumanEval style); every other statement is setup.
"""

import ast
import builtins
import contextlib
import json
import os
import re
import signal
import sys
import time

# --- names from the parts before this one: dropped when the parts are joined (workers.server_source)
from ragcoder.sandbox.server.base import WORK, _no_dump
from ragcoder.sandbox.server.child import _info_messages, spawn_subject
from ragcoder.sandbox.server.proxy import COMPARED_NOTE, TEST_FILE, BridgeError, SubjectGone
from ragcoder.sandbox.server.remote import Bridge

# ---

MAX_SUBJECT_RESTARTS = 20
_MESSAGE_CHARS = 2000
_NAME_CHARS = 1000  # a case is named by its source: an assert on a long literal is cut here
_ASSERT_OPS = {
    "Eq": "",
    "NotEq": "!= ",
    "Lt": "< ",
    "LtE": "<= ",
    "Gt": "> ",
    "GtE": ">= ",
    "Is": "is ",
    "IsNot": "is not ",
    "In": "in ",
    "NotIn": "not in ",
}


class Subject:
    """The process that loaded the user's code, and the judge's end of the bridge to it."""

    __module__ = "ragcoder.server"

    def __init__(self, code, forked=None):
        """``forked``: (pid, fd) of a subject forked between runs; else one is forked now."""
        self.code = code
        self.pid, self.fd = forked or spawn_subject()
        self.bridge = Bridge(self.fd, trusted=True)
        self.definitions = {}  # the code's functions, classes and modules, as loaded
        self.status = None

    def load(self):
        """Load the code: None when it loaded, else the error (name, value, traceback)."""
        try:
            definitions = self.bridge.request("load", self.code)
        except SubjectGone:
            return {
                "name": "ProcessEnded",
                "value": "the code ended its own process while loading (" + self.how_it_ended() + ")",
                "traceback": "",
            }
        except BaseException as exc:
            return error_info(exc)
        if isinstance(definitions, dict):
            self.definitions = {k: v for k, v in definitions.items() if isinstance(k, str)}
        return None

    def how_it_ended(self):
        """Wait briefly for the subject to end, stop it if it lingers, and say how it ended."""
        deadline = time.monotonic() + 0.2
        while self.status is None:
            with contextlib.suppress(ChildProcessError):
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self.status = status
                    break
            if time.monotonic() > deadline:
                self.close()
                return "it closed its end of the channel and was stopped"
            time.sleep(0.002)
        if os.WIFSIGNALED(self.status):
            return "killed by signal " + str(os.WTERMSIG(self.status))
        return "exit code " + str(os.WEXITSTATUS(self.status))

    def close(self, wait=True):
        """Stop the subject. ``wait=False`` at the end of a run in the server: closing the bridge
        ends it, and the server kills and reaps whatever is left."""
        self.bridge.closed = True
        with contextlib.suppress(OSError):
            os.close(self.fd)
        if self.status is None and wait:
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                self.status = os.waitpid(self.pid, 0)[1]


_MISSING = object()


class TestNamespace(dict):
    """The tests' globals: a name the tests do not define comes from the subject's globals (data
    copied, anything else as a proxy; its functions, classes and modules as they were when it
    loaded, other values as they are now). Builtin names always mean Python's builtins: code that
    redefines ``all``, ``len`` or ``isinstance`` does not change what the tests' asserts do."""

    __module__ = "ragcoder.server"

    def __missing__(self, name):
        if hasattr(builtins, name):
            raise KeyError(name)
        found = self.subject.definitions.get(name, _MISSING)
        if found is not _MISSING:
            return found
        try:
            return self.subject.bridge.request("global", name)
        except NameError:
            raise KeyError(name) from None


def error_info(exc):
    text = _text(exc)
    tb = getattr(exc, "remote_traceback", "") or ""
    return {"name": type(exc).__name__, "value": text, "traceback": tb}


def _text(exc):
    try:
        return str(exc)[:_MESSAGE_CHARS]
    except BaseException:
        return "<unprintable " + type(exc).__name__ + ">"


def _segment(lines, node):
    """The source of a top-level ``node`` (``ast.get_source_segment`` splits the whole source on
    every call: quadratic over a long test file)."""
    first, last = node.lineno - 1, (node.end_lineno or node.lineno) - 1
    if node.end_col_offset is None or last >= len(lines):
        return ""
    if first == last:
        return lines[first].encode()[node.col_offset : node.end_col_offset].decode("utf-8", "replace")
    head = lines[first].encode()[node.col_offset :].decode("utf-8", "replace")
    tail = lines[last].encode()[: node.end_col_offset].decode("utf-8", "replace")
    return "".join([head, *lines[first + 1 : last], tail])


def _cases(src):
    tree = ast.parse(src, TEST_FILE)
    lines = re.findall(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$", src)  # line breaks as the parser counts them
    for node in tree.body:
        seg = (_segment(lines, node) or ast.unparse(node)).strip()
        if isinstance(node, ast.Assert):
            yield "assert", node, seg
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            yield "setup", node, seg
            yield "func", node, node.name
        else:
            yield "setup", node, seg


def _evaluate(node, ns):
    return eval(compile(ast.Expression(node), TEST_FILE, "eval"), ns)


def _assert_message(node, ns, exc):
    """For ``assert a == b``, say what ``a`` really was: the single most useful repair hint."""
    if _text(exc):
        return _text(exc)
    test = node.test
    if isinstance(test, ast.Compare) and len(test.ops) == 1:
        try:
            left = repr(_evaluate(test.left, ns))[:300]
            right = repr(_evaluate(test.comparators[0], ns))[:300]
        except BaseException as e:  # evaluating again raised: report that instead
            return "raised " + type(e).__name__ + ": " + _text(e)
        name = type(test.ops[0]).__name__
        return "got " + left + ", expected " + _ASSERT_OPS.get(name, name + " ") + right
    negated = isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not)
    try:
        value = repr(_evaluate(test.operand if negated else test, ns))[:300]
    except BaseException as e:
        return "raised " + type(e).__name__ + ": " + _text(e)
    return "got " + value + ", expected a " + ("false" if negated else "true") + " value"


def _failure(exc, subject):
    if isinstance(exc, SubjectGone):
        return "the code under test ended its process (" + subject.how_it_ended() + ")"
    if isinstance(exc, BridgeError):
        return "the code under test broke the test protocol (" + _text(exc) + ")"
    return "raised " + type(exc).__name__ + ": " + _text(exc)


def _noted(message, subject):
    """A failure where an object of the code met a test value says why it was not asked."""
    if subject.bridge.compared and COMPARED_NOTE not in message:
        return message + " (" + COMPARED_NOTE + ")"
    return message


def _verdict(buf):
    """The judge's verdict lines, as the answer's ``verdict``."""
    outcomes, load_error, done = [], None, False
    for msg in _info_messages(buf):
        kind = msg.get("kind")
        if kind == "outcome":
            outcomes.append(
                {
                    "name": str(msg.get("name", ""))[:2000],
                    "passed": msg.get("passed") is True,
                    "message": str(msg.get("message", ""))[:2000],
                }
            )
        elif kind == "load_error":
            load_error = {k: str(msg.get(k, ""))[:4000] for k in ("name", "value", "traceback")}
        elif kind == "done":
            done = True
    return {"outcomes": outcomes, "load_error": load_error, "done": done}


def _quiet_signals():
    """The judge ignores every catchable signal: a subject may kill it (a failure), not steer it."""
    for sig in signal.Signals:
        if sig not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD):
            with contextlib.suppress(OSError, ValueError):
                signal.signal(sig, signal.SIG_IGN)


def judge(job, report, restarts=MAX_SUBJECT_RESTARTS, after_fork=None, reaped=True, forked=None):
    """Run ``job``'s tests against its code. ``report(dict)`` sends each verdict line: one
    ``load_error`` or one ``outcome`` per case, then ``done``. ``reaped``: something else (the
    server, PID 1 here) reaps the last subject, so the judge need not wait for it to die.
    ``forked``: a subject forked between runs (see child_main)."""
    subject = Subject(job["code"], forked)
    if after_fork is not None:
        after_fork()
    _quiet_signals()
    while WORK in sys.path:  # the judge imports nothing the run could have written
        sys.path.remove(WORK)
    sys.path_importer_cache.pop(WORK, None)
    tests = job.get("tests") or []
    entry = job.get("entry_point")
    problem = subject.load()
    if problem is not None:
        report({"kind": "load_error", **problem})
        report({"kind": "done"})
        return
    ns = TestNamespace({"__name__": "__main__", "__builtins__": builtins})
    ns.subject = subject

    def outcome(name, passed, message=""):
        name = name if len(name) <= _NAME_CHARS else name[: _NAME_CHARS - 3] + "..."
        report({"kind": "outcome", "name": name, "passed": passed, "message": message[:_MESSAGE_CHARS]})

    def fresh_subject():
        nonlocal subject, restarts
        subject.close()
        if restarts <= 0:
            return "not run: the code under test had ended its process"
        restarts -= 1
        subject = Subject(job["code"])
        ns.subject = subject
        problem = subject.load()
        return None if problem is None else "the code failed to load again: " + problem["value"]

    for src in tests if isinstance(tests, list) else [tests]:
        try:
            cases = list(_cases(str(src)))
        except (SyntaxError, ValueError) as exc:
            outcome(str(src).strip()[:200], False, "test does not parse: " + _text(exc))
            continue
        for kind, node, name in cases:
            if subject.bridge.closed:
                why = fresh_subject()
                if why is not None:
                    if kind != "setup":
                        outcome(name, False, why)
                    continue
            subject.bridge.compared = False
            try:
                exec(compile(ast.Module(body=[node], type_ignores=[]), TEST_FILE, "exec"), ns)
                if kind == "func":
                    ns[name]()
                if kind != "setup":
                    outcome(name, True)
            except AssertionError as exc:
                if kind == "assert":
                    message = _assert_message(node, ns, exc)
                else:
                    message = _text(exc) or "assertion failed"
                outcome(name, False, _noted(message, subject))
            except BaseException as exc:
                prefix = "setup " if kind == "setup" else ""
                message = _noted(prefix + _failure(exc, subject), subject)
                outcome(name[:200] if kind == "setup" else name, False, message)
    if entry and callable(dict.get(ns, "check")):
        name = "check(" + str(entry) + ")"
        if subject.bridge.closed:
            why = fresh_subject()
            if why is not None:
                outcome(name, False, why)
                report({"kind": "done"})
                return
        try:
            candidate = subject.bridge.request("global", str(entry))  # by name, builtin or not
        except NameError:
            outcome(name, False, "the code defines no " + str(entry))
            report({"kind": "done"})
            subject.close()
            return
        except BaseException as exc:
            outcome(name, False, _failure(exc, subject))
            report({"kind": "done"})
            subject.close()
            return
        subject.bridge.compared = False
        try:
            ns["check"](candidate)
            outcome(name, True)
        except BaseException as exc:
            failure = _failure(exc, subject) if isinstance(exc, BridgeError) else None
            outcome(name, False, _noted(failure or type(exc).__name__ + ": " + _text(exc), subject))
    report({"kind": "done"})
    subject.close(wait=not reaped)


def judge_main(job, forked=None):
    """A test run in the server: verdict lines go to fd 3, the server's pipe; never returns."""

    def report(msg):
        os.write(3, json.dumps(msg).encode("utf-8", "surrogatepass") + b"\n")

    os._exit(_finish(judge, job, report, forked=forked))


def _finish(run, *args, **kwargs):
    """Run the judge; its exit status (70 when the judge itself failed: no ``done`` was sent)."""
    status = 0
    try:
        run(*args, **kwargs)
    except BaseException as exc:
        status = 70
        with contextlib.suppress(BaseException):
            sys.stderr.write("sandbox judge failed: " + repr(exc) + "\n")
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            stream.flush()
    return status


def _read_exact(fd, n):
    data = b""
    while len(data) < n:
        chunk = os.read(fd, n - len(data))
        if not chunk:
            raise EOFError("stdin ended early")
        data += chunk
    return data


def judge_standalone():
    """For sandboxes without this server (``Sandbox.run_tests``'s default): the judge as an ordinary
    program. Its stdin holds the job (a decimal length line, then that many bytes of JSON), then a
    secret line, which the judge reads only after it forked the subject (whose stdin is /dev/null),
    so the secret never existed in the subject's memory. Verdict lines go to stdout after the
    secret. No subject restarts (a new one would be forked from a judge that knows the secret).
    Never returns."""
    _no_dump()
    secret = []

    def report(msg):
        sys.stdout.flush()
        os.write(1, b"\n" + secret[0] + json.dumps(msg).encode("utf-8", "surrogatepass") + b"\n")

    def read_secret():
        secret.append(_read_line(0))
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)

    try:
        size = int(_read_line(0))
        job = json.loads(_read_exact(0, size).decode("utf-8", "surrogatepass"))
    except BaseException:
        os._exit(70)
    os._exit(_finish(judge, job, report, restarts=0, after_fork=read_secret, reaped=False))


def _read_line(fd):
    line = b""
    while not line.endswith(b"\n"):
        line += _read_exact(fd, 1)
    return line.strip()
