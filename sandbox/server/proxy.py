"""The run server, part 2 of 7: the object bridge between the judge and the code under test
(this part: what crosses, what the judge serves, the proxy; ``codec.py``: values on the wire;
``remote.py``: the connection).

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

import importlib
import math
import operator
import traceback
import types

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


_DATA_BASES = (bool, int, float, complex, str, bytes, bytearray, tuple, list, dict, set, frozenset)


def _data_form(obj):
    """``[True, value]``: an object as the builtin data it subclasses (a Counter as its dict, a
    namedtuple as its tuple, an IntEnum as its int); ``[False, None]`` when it is no such thing."""
    for base in _DATA_BASES:
        if isinstance(obj, base):
            return [True, base(obj)]
    return [False, None]


def _op_enter(obj):
    return type(obj).__enter__(obj)


def _op_exit(obj, *args):
    return type(obj).__exit__(obj, *args)


OPS = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "truediv": operator.truediv,
    "floordiv": operator.floordiv,
    "mod": operator.mod,
    "pow": pow,
    "matmul": operator.matmul,
    "lshift": operator.lshift,
    "rshift": operator.rshift,
    "and": operator.and_,
    "or": operator.or_,
    "xor": operator.xor,
    "divmod": divmod,
    "iadd": operator.iadd,
    "isub": operator.isub,
    "imul": operator.imul,
    "itruediv": operator.itruediv,
    "ifloordiv": operator.ifloordiv,
    "imod": operator.imod,
    "ipow": operator.ipow,
    "imatmul": operator.imatmul,
    "ilshift": operator.ilshift,
    "irshift": operator.irshift,
    "iand": operator.iand,
    "ior": operator.ior,
    "ixor": operator.ixor,
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
    "neg": operator.neg,
    "pos": operator.pos,
    "abs": abs,
    "invert": operator.invert,
    "bool": bool,
    "len": len,
    "hash": hash,
    "repr": repr,
    "str": str,
    "format": format,
    "int": int,
    "float": float,
    "complex": complex,
    "index": operator.index,
    "round": round,
    "trunc": math.trunc,
    "floor": math.floor,
    "ceil": math.ceil,
    "iter": iter,
    "next": next,
    "reversed": reversed,
    "contains": operator.contains,
    "getitem": operator.getitem,
    "setitem": operator.setitem,
    "delitem": operator.delitem,
    "enter": _op_enter,
    "exit": _op_exit,
    "isinstance": isinstance,
    "issubclass": issubclass,
    "dir": dir,
    "data": _data_form,
}
_JUDGE_SERVES = set(OPS) - {
    "isinstance",
    "issubclass",
    "dir",
    "data",
}  # what the subject may apply to test objects


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


_DATA_TYPES = (list, dict, set, frozenset, bytearray, bytes, str, tuple)


def _bound_to_data(v):
    """A builtin method of a container the tests hold (``seen.append``): calling it only changes
    that container, so the code under test may call it back."""
    if not isinstance(v, types.BuiltinMethodType):
        return False
    owner = getattr(v, "__self__", None)
    return type(owner) in _DATA_TYPES or type(owner).__module__ == "collections"


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


def _mirror_str(self):
    text = self.__dict__.get("remote_str")
    return text if isinstance(text, str) else BaseException.__str__(self)


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


_COMPARISONS = frozenset(("eq", "ne", "lt", "le", "gt", "ge"))
_BINARY = frozenset("add sub mul truediv floordiv mod pow matmul lshift rshift and or xor divmod".split())  # noqa: SIM905
_GUARDED = _COMPARISONS | _BINARY | {"i" + name for name in _BINARY}
COMPARED_NOTE = (
    "an object of the code, not data, met a value of the tests: the judge decides that, never the"
    " object's own __eq__ or operators; return plain data (docs/security.md)"
)


def _of_the_code(bridge, value):
    return isinstance(value, Remote) and object.__getattribute__(value, "_bridge") is bridge


def _judged(bridge, name, operands, mine):
    """The judge's side of an operator between an object of the code (``operands[mine]``) and a
    value of the tests.

    Asked to compare itself with a value, an object would see that value and could answer "equal"
    to anything. So the judge asks for the object's data form, which it must give without seeing
    the value, and applies the operator itself. An object with no data form compares as unrelated
    objects do (``==`` is False, ``<`` a TypeError). Its arithmetic stays its own (``vector * 2``)
    as long as it answers with another object of the code: data made from the value is refused.
    """
    has_form, form = bridge.request("op", "data", operands[mine])
    if has_form is True:
        return OPS[name](*(form if i == mine else x for i, x in enumerate(operands)))
    if name in _COMPARISONS:
        bridge.compared = True
        return NotImplemented
    answer = bridge.request("op", name, *operands)
    if _of_the_code(bridge, answer):
        return answer
    bridge.compared = True
    raise TypeError("unsupported operand types: " + COMPARED_NOTE)


def _remote_op(name):
    guarded = name in _GUARDED

    def method(self, *args):
        bridge = object.__getattribute__(self, "_bridge")
        if guarded and bridge.trusted and not _of_the_code(bridge, args[0]):
            return _judged(bridge, name, (self, *args), 0)
        return bridge.request("op", name, self, *args)

    method.__name__ = "__" + name + "__"
    return method


def _reflected_op(name):
    def method(self, other):
        bridge = object.__getattribute__(self, "_bridge")
        if bridge.trusted and not _of_the_code(bridge, other):
            return _judged(bridge, name, (other, self), 1)
        return bridge.request("op", name, other, self)

    method.__name__ = "__r" + name + "__"
    return method


def _contains(self, item):
    """``item in obj``: for a value of the tests, the judge steps the object and compares itself
    (Python's rule for objects without ``__contains__``), so the object never sees the value."""
    bridge = object.__getattribute__(self, "_bridge")
    if not bridge.trusted or _of_the_code(bridge, item):
        return bridge.request("op", "contains", self, item)
    return any(x is item or x == item for x in iter(self))


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
        suppress = bridge.request("op", "exit", self, named, None, None)
        if exc_type is not None and issubclass(exc_type, AssertionError):
            return False  # the code under test never swallows a failed assert of the tests
        return suppress

    def __instancecheck__(self, obj):
        return object.__getattribute__(self, "_bridge").request("op", "isinstance", obj, self)

    def __subclasscheck__(self, cls):
        return object.__getattribute__(self, "_bridge").request("op", "issubclass", cls, self)

    def __reduce__(self):
        raise TypeError("an object of the code under test cannot be pickled here")


for _name in (
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "bool",
    "len",
    "iter",
    "next",
    "reversed",
    "getitem",
    "setitem",
    "delitem",
    "format",
    "index",
    "int",
    "float",
    "complex",
    "round",
    "trunc",
    "floor",
    "ceil",
    "neg",
    "pos",
    "abs",
    "invert",
    "enter",
    "dir",
):
    setattr(Remote, "__" + _name + "__", _remote_op(_name))
for _name in (
    "add",
    "sub",
    "mul",
    "truediv",
    "floordiv",
    "mod",
    "pow",
    "matmul",
    "lshift",
    "rshift",
    "and",
    "or",
    "xor",
    "divmod",
):
    setattr(Remote, "__" + _name + "__", _remote_op(_name))
    setattr(Remote, "__r" + _name + "__", _reflected_op(_name))
    if _name != "divmod":
        setattr(Remote, "__i" + _name + "__", _remote_op("i" + _name))
Remote.__contains__ = _contains
del _name
