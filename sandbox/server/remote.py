"""The run server, part 2 of 5: the object bridge between the judge and the code under test.

``run_tests`` runs in two processes. The *judge* (trusted: it never runs user code) executes the
test cases; the *subject*, its child, loads the user's code and answers the judge's requests
(look up a global, call, read an attribute, apply an operator) over a socketpair. Values cross as
data: None, bools, numbers, strings, bytes and the builtin containers are copied; any other object
stays where it lives and the other side holds a :class:`Remote` proxy whose every operation is a
request. So each assert is evaluated in the judge, and the verdict never passes through the
subject: the code under test answers calls (its job), it cannot report results.

The judge decodes only data and proxies from the subject (never pickles, never names to import).
What the subject may ask of the judge is narrow: call test-defined functions, read public
attributes of test-defined objects, apply operators, step iterators the tests passed it. Other
objects the tests pass are sent by name (builtins, stdlib functions and classes: the subject
imports its own) or pickled (the subject unpickles; it is untrusted anyway), else refused.
Messages: 4-byte big-endian length + JSON ``["q", op, args, released]``, ``["r", value]`` or
``["x", exception]``; requests nest (a call may call back) on one thread per side.
"""

import base64
import builtins
import contextlib
import importlib
import json
import math
import operator
import os
import pickle
import sys
import traceback
import types
import weakref

BRIDGE_MAX_MESSAGE = 64 << 20  # one answer (a 1M-element list of ints is about 8 MB)
_MAX_DEPTH = 60  # nesting copied as data; deeper parts stay remote (or are refused by the judge)
_INT_LIMIT = 1 << 60  # larger ints travel as hex: no float rounding, no 4300-digit str limit
TEST_FILE = "<tests>"  # the file name test code is compiled under: how the judge knows its own code
SERVER_FILE = "ragcoder-server"  # the file name the server program is compiled under


class BridgeError(Exception):
    """The other side broke the protocol or went away."""

    __module__ = "ragcoder.server"


class SubjectGone(BridgeError):
    """The process running the code under test ended (or closed its end)."""

    __module__ = "ragcoder.server"


def _op_enter(obj):
    return type(obj).__enter__(obj)


def _op_exit(obj, *args):
    return type(obj).__exit__(obj, *args)


OPS = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "truediv": operator.truediv,
    "floordiv": operator.floordiv, "mod": operator.mod, "pow": pow, "matmul": operator.matmul,
    "lshift": operator.lshift, "rshift": operator.rshift, "and": operator.and_,
    "or": operator.or_, "xor": operator.xor, "divmod": divmod,
    "iadd": operator.iadd, "isub": operator.isub, "imul": operator.imul,
    "itruediv": operator.itruediv, "ifloordiv": operator.ifloordiv, "imod": operator.imod,
    "ipow": operator.ipow, "imatmul": operator.imatmul, "ilshift": operator.ilshift,
    "irshift": operator.irshift, "iand": operator.iand, "ior": operator.ior, "ixor": operator.ixor,
    "eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "le": operator.le, "gt": operator.gt,
    "ge": operator.ge, "neg": operator.neg, "pos": operator.pos, "abs": abs, "invert": operator.invert,
    "bool": bool, "len": len, "hash": hash, "repr": repr, "str": str, "format": format, "int": int,
    "float": float, "complex": complex, "index": operator.index, "round": round,
    "trunc": math.trunc, "floor": math.floor, "ceil": math.ceil, "iter": iter, "next": next,
    "reversed": reversed, "contains": operator.contains, "getitem": operator.getitem,
    "setitem": operator.setitem, "delitem": operator.delitem, "enter": _op_enter, "exit": _op_exit,
    "isinstance": isinstance, "issubclass": issubclass, "dir": dir,
}  # fmt: skip
_JUDGE_SERVES = set(OPS) - {"isinstance", "issubclass", "dir"}  # what the subject may apply to test objects


def _test_defined(v):
    """Objects created by test code: the only ones whose behaviour the subject may invoke."""
    if isinstance(v, types.FunctionType):
        return v.__code__.co_filename == TEST_FILE
    if isinstance(v, types.MethodType):
        return _test_defined(v.__func__)
    if isinstance(v, (types.GeneratorType, types.CoroutineType)):
        code = getattr(v, "gi_code", None) or getattr(v, "cr_code", None)
        return code is not None and code.co_filename == TEST_FILE
    cls = v if isinstance(v, type) else type(v)
    return cls.__module__ == "__main__" and isinstance(cls.__dict__.get("__module__"), str)


def _builtin_iterator(v):
    """Iterators of builtin types (map, zip, enumerate, list_iterator, itertools...): stepping one
    only runs what it was built from, so the subject may drive it."""
    cls = type(v)
    return cls.__module__ in ("builtins", "itertools") and hasattr(cls, "__next__")


def _importable(v):
    """(module, qualname) when the subject can get the same object by importing it, else None."""
    if isinstance(v, types.ModuleType):
        return (v.__name__, "")
    owner = getattr(v, "__objclass__", None)  # str.upper and other method descriptors
    if owner is not None and isinstance(owner, type):
        module, qualname = owner.__module__, owner.__qualname__ + "." + getattr(v, "__name__", "")
    elif isinstance(v, (type, types.FunctionType, types.BuiltinFunctionType)):
        self_ = getattr(v, "__self__", None)
        if self_ is not None and not isinstance(self_, types.ModuleType):
            return None  # a method bound to an object: not reachable by name
        module, qualname = getattr(v, "__module__", None), getattr(v, "__qualname__", None)
    else:
        return None
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
        return None
    if module in ("__main__", "ragcoder.server"):
        return None
    try:
        found = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except Exception:
        return None
    return (module, qualname) if found is v else None


class Bridge:
    """One end of the socketpair. ``trusted`` is the judge's end (it applies the policy above)."""

    __module__ = "ragcoder.server"

    def __init__(self, fd, trusted, namespace=None):
        self.fd = fd
        self.trusted = trusted
        self.namespace = namespace  # the subject's globals (subject side only)
        self.exports = {}  # export id -> object the other side holds a proxy to
        self.export_ids = {}  # id(object) -> export id
        self.next_id = 1
        self.proxies = weakref.WeakValueDictionary()  # remote id -> Remote
        self.released = []  # remote ids whose proxy died, sent with the next request
        self.mirrors = {}  # subject class id -> local exception class (judge side)
        self.mirror_ids = {}  # local exception class -> subject class id
        self.loader = None  # subject side: runs the user's code (set by spawn_subject)
        self.closed = False
        self._buf = bytearray()
        self._made_ref = False

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
            raise SubjectGone("the other process closed the bridge") from exc

    def _read_exact(self, n):
        while len(self._buf) < n:
            try:
                chunk = os.read(self.fd, max(65536, n - len(self._buf)))
            except OSError:
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
        """Ask the other side; serve its nested requests meanwhile; return the decoded answer."""
        if self.closed:
            raise SubjectGone("the process running the code under test has ended")
        released, self.released = self.released, []
        self._send(["q", op, [self.encode(a) for a in args], released])
        while True:
            msg = self._recv()
            if msg[0] == "r" and len(msg) == 2:
                return self.decode(msg[1])
            if msg[0] == "x" and len(msg) == 2:
                raise self.decode_exception(msg[1])
            if msg[0] == "q":
                self.serve_one(msg)
                continue
            self.closed = True
            raise BridgeError("malformed answer")

    def serve_one(self, msg):
        try:
            if len(msg) != 4 or not isinstance(msg[1], str) or not isinstance(msg[2], list):
                raise BridgeError("malformed request")
            for rid in msg[3] if isinstance(msg[3], list) else ():
                obj = self.exports.pop(rid, None) if type(rid) is int else None
                if obj is not None:
                    self.export_ids.pop(id(obj), None)
            result = self.handle(msg[1], [self.decode(a) for a in msg[2]])
            reply = ["r", self.encode(result)]
        except SubjectGone:
            raise
        except BaseException as exc:  # every failure of the request goes back as data
            reply = ["x", self.encode_exception(exc)]
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
        if op == "load":
            return self.loader()
        if op == "names":
            return [name for name in self.namespace if isinstance(name, str)]
        if op == "op":
            return OPS[args[0]](*args[1:])
        raise BridgeError("unknown request " + repr(op))

    def _handle_for_subject(self, op, args):
        """The judge serving the subject: only what a callback from the code under test needs."""
        if op == "call" and len(args) == 3 and isinstance(args[2], dict):
            fn = args[0]
            if not (_test_defined(fn) and callable(fn)):
                raise PermissionError("the code under test may only call functions the tests gave it")
            return fn(*args[1], **args[2])
        if op == "getattr" and len(args) == 2 and isinstance(args[1], str):
            if args[1].startswith("_"):
                raise AttributeError(f"{args[1]} is not available to the code under test")
            return getattr(args[0], args[1])
        if op == "op" and args and args[0] in _JUDGE_SERVES:
            return OPS[args[0]](*args[1:])
        raise PermissionError(f"the code under test may not ask the judge for {op!r}")

    # -- values ---------------------------------------------------------------------------------
    def export(self, obj):
        key = id(obj)
        rid = self.export_ids.get(key)
        if rid is None or self.exports.get(rid) is not obj:
            rid = self.next_id
            self.next_id += 1
            self.exports[rid] = obj
            self.export_ids[key] = rid
        return rid

    def encode(self, v, depth=0):
        t = type(v)
        if v is None or t is bool or t is str or t is float:
            return v
        if t is int:
            return v if -_INT_LIMIT < v < _INT_LIMIT else ["I", format(v, "x")]
        if depth > _MAX_DEPTH:
            return self._by_reference(v)
        d = depth + 1
        if t is list or t is tuple:
            return ["L" if t is list else "T", *[self.encode(x, d) for x in v]]
        if t is dict or t is set or t is frozenset:
            before, self._made_ref = self._made_ref, False
            if t is dict:
                out = ["D", *[[self.encode(k, d), self.encode(x, d)] for k, x in v.items()]]
                keys_have_refs = self._made_ref and any(not _plain(k[0]) for k in out[1:])
            else:
                out = ["S" if t is set else "Z", *[self.encode(x, d) for x in v]]
                keys_have_refs = self._made_ref
            self._made_ref = before or self._made_ref
            if keys_have_refs and not self.trusted:
                return self._by_reference(v)  # the judge never hashes a proxy: keep it all remote
            return out
        if t is bytes or t is bytearray:
            return ["B" if t is bytes else "A", base64.b64encode(v).decode("ascii")]
        if t is complex:
            return ["C", v.real, v.imag]
        if t is range:
            return ["N", self.encode(v.start), self.encode(v.stop), self.encode(v.step)]
        if v is Ellipsis:
            return ["E"]
        return self._by_reference(v)

    def _by_reference(self, v):
        self._made_ref = True
        if isinstance(v, Remote) and object.__getattribute__(v, "_bridge") is self:
            return ["Y", object.__getattribute__(v, "_rid")]
        if not self.trusted:
            if isinstance(v, type) and issubclass(v, BaseException):
                return ["X", self.export(v), str(v.__module__), str(v.__qualname__), _builtin_bases(v)]
            return ["O", self.export(v)]
        if isinstance(v, type) and v in self.mirror_ids:
            return ["Y", self.mirror_ids[v]]
        if _test_defined(v) or _builtin_iterator(v):
            return ["O", self.export(v)]
        named = _importable(v)
        if named is not None:
            return ["G", named[0], named[1]]
        try:
            return ["P", base64.b64encode(pickle.dumps(v, protocol=4)).decode("ascii")]
        except Exception:
            raise TypeError(f"a {type(v).__name__} object cannot be passed to the code under test") from None

    def decode(self, x, depth=0):
        t = type(x)
        if x is None or t is bool or t is int or t is float or t is str:
            return x
        if t is not list or not x or type(x[0]) is not str or depth > _MAX_DEPTH + 5:
            raise BridgeError("malformed value")
        tag, rest, d = x[0], x[1:], depth + 1
        if tag == "L":
            return [self.decode(i, d) for i in rest]
        if tag == "T":
            return tuple(self.decode(i, d) for i in rest)
        if tag == "D":
            out = {}
            for pair in rest:
                if type(pair) is not list or len(pair) != 2:
                    raise BridgeError("malformed dict")
                out[self._key(pair[0], d)] = self.decode(pair[1], d)
            return out
        if tag in ("S", "Z"):
            items = [self._key(i, d) for i in rest]
            return set(items) if tag == "S" else frozenset(items)
        if tag in ("B", "A") and len(rest) == 1 and type(rest[0]) is str:
            data = base64.b64decode(rest[0], validate=True)
            return data if tag == "B" else bytearray(data)
        if tag == "C" and len(rest) == 2 and all(type(i) in (int, float) for i in rest):
            return complex(rest[0], rest[1])
        if tag == "N" and len(rest) == 3:
            start, stop, step = (self.decode(i, d) for i in rest)
            if all(type(i) is int for i in (start, stop, step)):
                return range(start, stop, step)
        if tag == "I" and len(rest) == 1 and type(rest[0]) is str and len(rest[0]) < 200_000:
            return int(rest[0], 16)
        if tag == "E" and not rest:
            return Ellipsis
        if tag == "O" and len(rest) == 1 and type(rest[0]) is int:
            return self._proxy(rest[0])
        if tag == "Y" and len(rest) == 1 and type(rest[0]) is int:
            if rest[0] in self.exports:
                return self.exports[rest[0]]
            for cls, cid in self.mirror_ids.items():
                if cid == rest[0]:
                    return cls
            raise BridgeError("unknown object id")
        if tag == "X" and len(rest) == 4 and self.trusted:
            return self._mirror(rest)
        if not self.trusted and tag == "G" and len(rest) == 2:
            found = importlib.import_module(rest[0])
            for part in rest[1].split(".") if rest[1] else ():
                found = getattr(found, part)
            return found
        if not self.trusted and tag == "P" and len(rest) == 1:
            return pickle.loads(base64.b64decode(rest[0]))
        raise BridgeError("malformed value")

    def _key(self, x, depth):
        value = self.decode(x, depth)
        if self.trusted and not _plain(x):
            raise BridgeError("a dict key or set item that is not data")
        return value

    def _proxy(self, rid):
        if rid in self.released:  # a proxy for it died while this answer was on its way
            self.released.remove(rid)
        proxy = self.proxies.get(rid)
        if proxy is None:
            proxy = Remote(self, rid)
            self.proxies[rid] = proxy
        return proxy

    # -- exceptions -----------------------------------------------------------------------------
    def encode_exception(self, exc):
        cls = type(exc)
        try:
            text = str(exc)
        except BaseException:
            text = "<exception str() failed>"
        try:
            args = self.encode(list(exc.args))
            if not _plain(args) or self.trusted:
                args = None
        except BaseException:
            args = None
        if self.trusted:  # the judge tells the subject no more than a builtin name and the text
            name = cls.__name__ if getattr(builtins, cls.__name__, None) is cls else "RuntimeError"
            return {"cls": ["X", 0, "builtins", name, [name]], "args": None, "str": text[:2000], "tb": ""}
        return {
            "cls": ["X", self.export(cls), str(cls.__module__), str(cls.__qualname__), _builtin_bases(cls)],
            "args": args,
            "str": text[:2000],
            "tb": user_traceback(exc),
        }

    def decode_exception(self, info):
        if not isinstance(info, dict) or not isinstance(info.get("str"), str):
            self.closed = True
            return BridgeError("malformed exception")
        cls_info = info.get("cls")
        if self.trusted:
            cls = (
                self._mirror(cls_info[1:]) if isinstance(cls_info, list) and len(cls_info) == 5 else Exception
            )
        else:
            cls = (
                getattr(builtins, str(cls_info[3]), RuntimeError)
                if isinstance(cls_info, list)
                else RuntimeError
            )
            if not (isinstance(cls, type) and issubclass(cls, BaseException)):
                cls = RuntimeError
        args = info.get("args")
        try:
            args = tuple(self.decode(args)) if isinstance(args, list) else (info["str"],)
        except BridgeError:
            args = (info["str"],)
        try:
            exc = cls(*args)
        except BaseException:
            exc = cls.__new__(cls)
            exc.args = args
        try:
            exc.remote_str = info["str"]
            exc.remote_traceback = str(info.get("tb", ""))[-4000:]
        except AttributeError:
            pass
        return exc

    def _mirror(self, info):
        """A local class standing for an exception class of the subject (same name, builtin base)."""
        cid, module, qualname, bases = info
        if not (type(cid) is int and isinstance(module, str) and isinstance(qualname, str)):
            raise BridgeError("malformed exception class")
        name = qualname.rsplit(".", 1)[-1][:200]
        if module == "builtins":
            found = getattr(builtins, name, None)
            if isinstance(found, type) and issubclass(found, BaseException):
                return found
        if cid in self.mirrors:
            return self.mirrors[cid]
        base = Exception
        for base_name in bases if isinstance(bases, list) else ():
            found = getattr(builtins, str(base_name), None)
            if isinstance(found, type) and issubclass(found, BaseException):
                base = found
                break
        try:
            cls = type(name, (base,), {"__module__": module[:200], "__str__": _mirror_str})
        except TypeError:  # a base that cannot be subclassed (e.g. bool-like): fall back
            cls = type(name, (Exception,), {"__module__": module[:200], "__str__": _mirror_str})
        self.mirrors[cid] = cls
        self.mirror_ids[cls] = cid
        return cls


def _mirror_str(self):
    text = self.__dict__.get("remote_str")
    return text if isinstance(text, str) else BaseException.__str__(self)


def _builtin_bases(cls):
    return [c.__name__ for c in cls.__mro__ if c.__module__ == "builtins" and issubclass(c, BaseException)]


def _plain(encoded):
    """True when an encoded value holds data only (no object handed by reference)."""
    if type(encoded) is not list:
        return True
    if encoded[0] in ("O", "Y", "X", "G", "P"):
        return False
    if encoded[0] == "D":
        return all(_plain(k) and _plain(v) for k, v in encoded[1:])
    return all(_plain(i) for i in encoded[1:])


def user_traceback(exc):
    """The exception's traceback without the server's own frames."""
    try:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != SERVER_FILE]
        text = "Traceback (most recent call last):\n" + "".join(traceback.format_list(frames))
        text += "".join(traceback.format_exception_only(type(exc), exc))
        return text[-4000:]
    except BaseException:
        return ""


def _remote_op(name):
    def method(self, *args):
        return object.__getattribute__(self, "_bridge").request("op", name, self, *args)

    method.__name__ = "__" + name + "__"
    return method


def _reflected_op(name):
    def method(self, other):
        return object.__getattribute__(self, "_bridge").request("op", name, other, self)

    method.__name__ = "__r" + name + "__"
    return method


class Remote:
    """A proxy for an object living in the other process: every operation is a request."""

    __module__ = "ragcoder.server"
    __slots__ = ("__weakref__", "_bridge", "_rid")

    def __init__(self, bridge, rid):
        object.__setattr__(self, "_bridge", bridge)
        object.__setattr__(self, "_rid", rid)

    def __getattr__(self, name):
        if name in ("_bridge", "_rid"):
            raise AttributeError(name)
        return object.__getattribute__(self, "_bridge").request("getattr", self, name)

    def __setattr__(self, name, value):
        object.__getattribute__(self, "_bridge").request("setattr", self, name, value)

    def __delattr__(self, name):
        object.__getattribute__(self, "_bridge").request("delattr", self, name)

    def __call__(self, *args, **kwargs):
        return object.__getattribute__(self, "_bridge").request("call", self, list(args), kwargs)

    def __del__(self):
        try:
            bridge = object.__getattribute__(self, "_bridge")
            if not bridge.closed:
                bridge.released.append(object.__getattribute__(self, "_rid"))
        except Exception:
            pass

    def __repr__(self):
        try:
            text = object.__getattribute__(self, "_bridge").request("op", "repr", self)
        except Exception:
            text = None
        return text if type(text) is str else "<object of the code under test>"

    def __str__(self):
        try:
            text = object.__getattribute__(self, "_bridge").request("op", "str", self)
        except Exception:
            text = None
        return text if type(text) is str else "<object of the code under test>"

    def __hash__(self):
        return object.__getattribute__(self, "_bridge").request("op", "hash", self)

    def __exit__(self, exc_type, exc, tb):
        bridge = object.__getattribute__(self, "_bridge")
        named = exc_type if exc_type is None or _importable(exc_type) else Exception
        return bridge.request("op", "exit", self, named, None, None)

    def __instancecheck__(self, obj):
        return object.__getattribute__(self, "_bridge").request("op", "isinstance", obj, self)

    def __subclasscheck__(self, cls):
        return object.__getattribute__(self, "_bridge").request("op", "issubclass", cls, self)

    def __reduce__(self):
        raise TypeError("an object of the code under test cannot be pickled here")


for _name in (
    "eq", "ne", "lt", "le", "gt", "ge", "bool", "len", "iter", "next", "reversed", "contains",
    "getitem", "setitem", "delitem", "format", "index", "int", "float", "complex", "round",
    "trunc", "floor", "ceil", "neg", "pos", "abs", "invert", "enter", "dir",
):  # fmt: skip
    setattr(Remote, "__" + _name + "__", _remote_op(_name))
for _name in (
    "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "lshift", "rshift",
    "and", "or", "xor", "divmod",
):  # fmt: skip
    setattr(Remote, "__" + _name + "__", _remote_op(_name))
    setattr(Remote, "__r" + _name + "__", _reflected_op(_name))
    if _name != "divmod":
        setattr(Remote, "__i" + _name + "__", _remote_op("i" + _name))
del _name
