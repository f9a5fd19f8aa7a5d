"""The run server, part 3 of 7: values on the bridge's wire (see ``proxy.py``).

Data (None, bools, numbers, strings, bytes, the builtin containers) is copied as tagged JSON;
other objects are sent by reference (the receiver gets a :class:`Remote`). The judge's side
decodes only data and references; the subject's side may also get objects by name or pickled.
"""

import base64
import builtins
import importlib
import pickle
import re
import sys
import weakref

# --- names from the parts before this one: dropped when the parts are joined (workers.server_source)
from ragcoder.sandbox.server.proxy import (
    _INT_LIMIT,
    _MAX_DEPTH,
    BridgeError,
    Remote,
    _bound_to_data,
    _builtin_iterator,
    _importable,
    _mirror_str,
    _plain,
    _test_defined,
    user_traceback,
)

# ---

_VALUE_TAGS = ("NP", "DEC", "FR", "DT", "TD")
_ARRAY_ITEMS = 1 << 20  # larger arrays stay objects of the code (data is copied whole)
_ARRAY_DTYPE = re.compile(r"[<>|=]?(?:[biufc]\d{1,2}|U\d{1,6})")


class Codec:
    """Encoding and decoding for one end of the bridge; ``trusted`` is the judge's end."""

    __module__ = "ragcoder.server"

    def __init__(self, trusted):
        self.trusted = trusted
        self.exports = {}  # export id -> object the other side holds a proxy to
        self.export_ids = {}  # id(object) -> export id
        self.next_id = 1
        self.proxies = weakref.WeakValueDictionary()  # remote id -> Remote
        self.released = []  # remote ids whose proxy died, sent with the next request
        self.mirrors = {}  # subject class id -> local exception class (judge side)
        self.mirror_ids = {}  # local exception class -> subject class id
        self.closed = False
        self.compared = False  # judge side: a case met an object of the code with a test value
        self._made_ref = False

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
        if not self.trusted:
            value = self._value(v, t, d)
            if value is not None:
                return value
        return self._by_reference(v)

    def _value(self, v, t, depth):
        """Common library values as data the judge rebuilds with its own classes, so that the
        judge, not the object, decides how they compare (proxy._judged). Exact types only: a
        subclass may redefine comparing, so it stays an object of the code."""
        module = t.__module__
        if module == "numpy":
            np = sys.modules.get("numpy")
            if np is None:
                return None
            if isinstance(v, np.generic) and v.dtype.kind in "biufc":
                return self.encode(v.item(), depth)
            if t is np.ndarray and v.dtype.kind in "biufcU" and v.size <= _ARRAY_ITEMS:
                return ["NP", v.dtype.str, list(v.shape), self.encode(v.ravel().tolist(), depth)]
        elif module == "decimal" and t.__name__ == "Decimal":
            return ["DEC", str(v)]
        elif module == "fractions" and t.__name__ == "Fraction":
            return ["FR", self.encode(v.numerator), self.encode(v.denominator)]
        elif module == "datetime" and t.__name__ in ("datetime", "date", "time"):
            return ["DT", t.__name__, v.isoformat()]
        elif module == "datetime" and t.__name__ == "timedelta":
            return ["TD", v.days, v.seconds, v.microseconds]
        return None

    def _rebuild(self, tag, rest, depth):
        """The judge's side of ``_value``: its own objects, made from data only."""
        try:
            if tag == "NP" and len(rest) == 3 and _ARRAY_DTYPE.fullmatch(str(rest[0])):
                shape = rest[1]
                if type(shape) is list and len(shape) <= 32 and all(type(n) is int for n in shape):
                    np = importlib.import_module("numpy")
                    flat = self.decode(rest[2], depth)
                    if type(flat) is list:
                        return np.array(flat, dtype=np.dtype(rest[0])).reshape(shape)
            elif tag == "DEC" and len(rest) == 1 and type(rest[0]) is str and len(rest[0]) < 5000:
                return importlib.import_module("decimal").Decimal(rest[0])
            elif tag == "FR" and len(rest) == 2:
                num, den = self.decode(rest[0], depth), self.decode(rest[1], depth)
                if type(num) is int and type(den) is int and den > 0:
                    return importlib.import_module("fractions").Fraction(num, den)
            elif tag == "DT" and len(rest) == 2 and rest[0] in ("datetime", "date", "time"):
                if type(rest[1]) is str and len(rest[1]) < 100:
                    return getattr(importlib.import_module("datetime"), rest[0]).fromisoformat(rest[1])
            elif tag == "TD" and len(rest) == 3 and all(type(n) is int for n in rest):
                return importlib.import_module("datetime").timedelta(*rest)
        except (ValueError, TypeError, ArithmeticError, OverflowError):
            pass
        raise BridgeError("malformed value")

    def _by_reference(self, v):
        self._made_ref = True
        if isinstance(v, Remote) and object.__getattribute__(v, "_bridge") is self:
            return ["Y", object.__getattribute__(v, "_rid")]
        if not self.trusted:
            if isinstance(v, type) and issubclass(v, BaseException):
                return self._exception_class(v)
            return ["O", self.export(v)]
        if isinstance(v, type) and v in self.mirror_ids:
            return ["Y", self.mirror_ids[v]]
        if _test_defined(v) or _builtin_iterator(v) or _bound_to_data(v):
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
        if tag in _VALUE_TAGS and self.trusted:
            return self._rebuild(tag, rest, d)
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
            "cls": self._exception_class(cls),
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

    def _exception_class(self, cls, depth=0):
        """An exception class by reference, with its bases: builtin ones by name, others alike."""
        bases = []
        if cls.__module__ != "builtins" and depth < 20:
            for base in cls.__bases__:
                if isinstance(base, type) and issubclass(base, BaseException):
                    named = base.__module__ == "builtins"
                    bases.append(base.__name__ if named else self._exception_class(base, depth + 1))
        return ["X", self.export(cls), str(cls.__module__), str(cls.__qualname__), bases]

    def _mirror(self, info, depth=0):
        """A local class standing for an exception class of the subject: same name, and bases that
        stand for its bases (so ``except ParseError`` catches a subclass of it, as there)."""
        cid, module, qualname, bases = info
        if not (type(cid) is int and isinstance(module, str) and isinstance(qualname, str)) or depth > 20:
            raise BridgeError("malformed exception class")
        name = qualname.rsplit(".", 1)[-1][:200]
        if module == "builtins":
            found = getattr(builtins, name, None)
            if isinstance(found, type) and issubclass(found, BaseException):
                return found
        if cid in self.mirrors:
            return self.mirrors[cid]
        parents = []
        for base in bases if isinstance(bases, list) else ():
            if isinstance(base, list) and len(base) == 5 and base[0] == "X":
                parents.append(self._mirror(base[1:], depth + 1))
            elif isinstance(base, str):
                found = getattr(builtins, base, None)
                if isinstance(found, type) and issubclass(found, BaseException):
                    parents.append(found)
        namespace = {"__module__": module[:200], "__str__": _mirror_str}
        try:
            cls = type(name, tuple(parents) or (Exception,), namespace)
        except TypeError:  # bases Python will not combine (layout, MRO): keep the name at least
            cls = type(name, (Exception,), namespace)
        self.mirrors[cid] = cls
        self.mirror_ids[cls] = cid
        return cls
