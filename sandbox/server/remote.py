"""The run server, part 4 of 7: the bridge's connection: framing, nested requests, and what each
side answers (see ``proxy.py``)."""

import contextlib
import json
import os
import sys

# --- names from the parts before this one: dropped when the parts are joined (workers.server_source)
from ragcoder.sandbox.server.codec import Codec
from ragcoder.sandbox.server.proxy import (
    _JUDGE_SERVES,
    BRIDGE_MAX_MESSAGE,
    OPS,
    BridgeError,
    SubjectGone,
    _bound_to_data,
    _test_defined,
)

# ---


class Bridge(Codec):
    """One end of the socketpair. ``trusted`` is the judge's end (it applies the policy)."""

    __module__ = "ragcoder.server"

    def __init__(self, fd, trusted, namespace=None):
        super().__init__(trusted)
        self.fd = fd
        self.namespace = namespace  # the subject's globals (subject side only)
        self.loader = None  # subject side: runs the user's code (child.load_solution)
        self._buf = bytearray()

    # -- framing --------------------------------------------------------------------------------
    def _send(self, msg):
        for stream in (sys.stdout, sys.stderr):  # what this side printed comes before the answer
            with contextlib.suppress(BaseException):
                stream.flush()
        data = json.dumps(msg, separators=(",", ":")).encode("utf-8", "surrogatepass")
        view = memoryview(len(data).to_bytes(4, "big") + data)
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError as exc:
            self.closed = True
            if exc.errno is None:  # raised by a signal handler of the tests, not by the socket
                raise
            raise SubjectGone("the other process closed the bridge") from exc

    def _read_exact(self, n):
        while len(self._buf) < n:
            try:
                chunk = os.read(self.fd, max(65536, n - len(self._buf)))
            except OSError as exc:
                if exc.errno is None:  # raised by a signal handler of the tests, not by the socket
                    raise
                chunk = b""
            if not chunk:
                self.closed = True
                raise SubjectGone("the other process closed the bridge")
            self._buf += chunk
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def _recv(self):
        size = int.from_bytes(self._read_exact(4), "big")
        if size > BRIDGE_MAX_MESSAGE:
            self.closed = True
            raise BridgeError(f"an answer of {size} bytes is over the {BRIDGE_MAX_MESSAGE}-byte limit")
        try:
            msg = json.loads(self._read_exact(size).decode("utf-8", "surrogatepass"))
        except (ValueError, RecursionError) as exc:
            self.closed = True
            raise BridgeError("unreadable message: " + type(exc).__name__) from None
        if not isinstance(msg, list) or not msg or msg[0] not in ("q", "r", "x"):
            self.closed = True
            raise BridgeError("malformed message")
        return msg

    # -- requests -------------------------------------------------------------------------------
    def request(self, op, *args):
        """Ask the other side; serve its nested requests meanwhile; return the decoded answer.

        A call's list, dict, set and bytearray arguments travel as copies; the answer brings back
        what the callee left in them, written into the originals (``sort_in_place(xs)`` works)."""
        if self.closed:
            raise SubjectGone("the process running the code under test has ended")
        released, self.released = self.released, []
        targets = _mutable_arguments(args) if op == "call" else []
        msg = ["q", op, [self.encode(a) for a in args], released]
        if targets:
            msg.append([where for where, _ in targets])
        self._send(msg)
        try:
            answer = self._await_answer(targets)
        except BaseException:
            # interrupted mid-wait (a test's own alarm, a broken message): the answer would come
            # to the wrong request, so this bridge is done (the judge starts a fresh subject)
            self.closed = True
            raise
        return self._result(op, args, answer)

    def _result(self, op, args, answer):
        if answer[0] == "r":
            return self.decode(answer[1])
        exc = self.decode_exception(answer[1])
        stepping = op == "op" and args and args[0] == "next"
        if self.trusted and not stepping and isinstance(exc, (StopIteration, StopAsyncIteration)):
            # only stepping an iterator may end a loop of the tests (as PEP 479 for generators)
            raise RuntimeError("the code under test raised " + type(exc).__name__) from exc
        raise exc

    def _await_answer(self, targets):
        while True:
            msg = self._recv()
            if msg[0] in ("r", "x") and len(msg) in (2, 3):
                if len(msg) == 3 and targets:
                    self._write_back(targets, msg[2])
                return msg
            if msg[0] != "q":
                raise BridgeError("malformed answer")
            self.serve_one(msg)

    def _write_back(self, targets, contents):
        if not isinstance(contents, list) or len(contents) != len(targets):
            raise BridgeError("malformed write-back")
        for (_, original), encoded in zip(targets, contents, strict=True):
            new = self.decode(encoded)
            if type(new) is not type(original) and not (type(original) is bytearray and type(new) is bytes):
                raise BridgeError("malformed write-back")
            if type(original) in (list, bytearray):
                original[:] = new
            else:
                original.clear()
                original.update(new)

    def serve_one(self, msg):
        back = []
        try:
            if len(msg) not in (4, 5) or not isinstance(msg[1], str) or not isinstance(msg[2], list):
                raise BridgeError("malformed request")
            for rid in msg[3] if isinstance(msg[3], list) else ():
                obj = self.exports.pop(rid, None) if type(rid) is int else None
                if obj is not None:
                    self.export_ids.pop(id(obj), None)
            args = [self.decode(a) for a in msg[2]]
            if len(msg) == 5 and msg[1] == "call":
                back = [_argument(args, where) for where in msg[4]]
            result = self.handle(msg[1], args)
            reply = ["r", self.encode(result)]
        except SubjectGone:
            raise
        except BaseException as exc:  # every failure of the request goes back as data
            reply = ["x", self.encode_exception(exc)]
        if back:
            with contextlib.suppress(BaseException):  # else the caller's containers stay as they were
                reply.append([self.encode(obj) for obj in back])
        self._send(reply)

    def serve_forever(self):
        """The subject's loop: answer until the judge closes its end."""
        while True:
            try:
                msg = self._recv()
            except BridgeError:
                return
            if msg[0] != "q":
                return
            self.serve_one(msg)

    def handle(self, op, args):
        if self.trusted:
            return self._handle_for_subject(op, args)
        if op == "call":
            fn, pos, kw = args
            return fn(*pos, **kw)
        if op == "getattr":
            return getattr(args[0], args[1])
        if op == "setattr":
            return setattr(args[0], args[1], args[2])
        if op == "delattr":
            return delattr(args[0], args[1])
        if op == "global":
            try:
                return self.namespace[args[0]]
            except KeyError:
                raise NameError(f"name {args[0]!r} is not defined") from None
        if op == "op":
            return OPS[args[0]](*args[1:])
        if op == "load":
            return self.loader(args[0], self.namespace)
        raise BridgeError("unknown request " + repr(op))

    def _handle_for_subject(self, op, args):
        """The judge serving the subject: only what a callback from the code under test needs."""
        if op == "call" and len(args) == 3 and isinstance(args[2], dict):
            fn = args[0]
            if not ((_test_defined(fn) or _bound_to_data(fn)) and callable(fn)):
                raise PermissionError("the code under test may only call functions the tests gave it")
            return fn(*args[1], **args[2])
        if op == "getattr" and len(args) == 2 and isinstance(args[1], str):
            if args[1].startswith("_"):
                raise AttributeError(f"{args[1]} is not available to the code under test")
            return getattr(args[0], args[1])
        if op == "op" and args and args[0] in _JUDGE_SERVES:
            return OPS[args[0]](*args[1:])
        raise PermissionError(f"the code under test may not ask the judge for {op!r}")


_MUTABLE = (list, dict, set, bytearray)


def _mutable_arguments(args):
    """[(where, object)] of a call's list, dict, set and bytearray arguments (``args`` is the
    request's (callable, positional, keyword))."""
    if len(args) != 3 or not isinstance(args[1], list) or not isinstance(args[2], dict):
        return []
    found = [(["p", i], a) for i, a in enumerate(args[1]) if type(a) in _MUTABLE]
    found += [(["k", k], a) for k, a in args[2].items() if type(a) in _MUTABLE]
    return found


def _argument(args, where):
    """The decoded argument at ``where`` (["p", index] or ["k", name]) of a call request."""
    if not (isinstance(where, list) and len(where) == 2 and len(args) == 3):
        raise BridgeError("malformed write-back request")
    kind, key = where
    if kind == "p" and type(key) is int and isinstance(args[1], list) and 0 <= key < len(args[1]):
        return args[1][key]
    if kind == "k" and isinstance(key, str) and isinstance(args[2], dict) and key in args[2]:
        return args[2][key]
    raise BridgeError("malformed write-back request")
