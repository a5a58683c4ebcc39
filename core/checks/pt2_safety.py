"""Checks an uploaded `torch.export` program (`.pt2`) before anything loads it: what torch would unpickle,
evaluate or load from the archive. Standard library only: the gateway never imports torch. Reading the
program's inputs, outputs and operators is core/checks/pt2_signature.py.

Why a checker at all: `torch.export.load` is not safe on untrusted files (torch 2.13, verified):
- `torch/_export/serde/serialize.py: deserialize_torch_artifact` loads the sample inputs (and legacy
  state-dict/constants members) with `torch.load(weights_only=True)` and, when that fails, retries with
  `weights_only=False` - a full unpickle that runs whatever the pickle calls.
- `torch/export/pt2_archive/_package.py: _load_state_dict / _load_constants` unpickle every payload marked
  `use_pickle` with `torch.load(weights_only=False)` directly, `opaque_obj_*` constants with `pickle.loads`
  and `custom_obj_*` constants with the TorchScript unpickler.
- `load_pt2` dlopens AOTInductor shared libraries found under `data/aotinductor/`.
- `ExportedProgramDeserializer._parse_sym_expr` hands every `expr_str` of model.json to `sympy.sympify`,
  which is `eval`, and computes as it parses (10**(10**10) never returns).
- `load_pt2 / _load_exported_programs` deserializes every member under models/ as a program.
So: every member torch could unpickle must pass `check_pickle` (a strict subset of what the weights-only
unpickler accepts, so the unsafe retry is never reached), AOTInductor members are refused, models/ holds
models/model.json only, and every `expr_str` must be a plain sympy expression whose numbers are bounded.
Bounds on the zip itself, and on the work over all members (MAX_PARSED_BYTES, MAX_PICKLE_OPS), keep the
check cheap: small members escape the compression-ratio limit, so many of them could add up to anything.
"""

from __future__ import annotations

import ast
import decimal
import fnmatch
import fractions
import io
import json
import math
import pickletools
import re
import stat
import struct
import tarfile
import tokenize
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from core.errors import ErrorCode, InvalidModel

MAX_MEMBERS = 100_000
MAX_JSON_BYTES = 64 * 1024 * 1024  # models/model.json and the two payload configs, each
MAX_PICKLE_BYTES = 64 * 1024 * 1024  # one pickle read into memory (sample inputs are a few KiB)
MAX_RATIO = 200  # uncompressed / compressed, for members over RATIO_FLOOR (zip bombs)
RATIO_FLOOR = 1024 * 1024
MAX_PICKLES_PER_MEMBER = 8  # legacy torch.save files are a short run of pickles
# Per archive, over all members: members under RATIO_FLOOR escape the ratio limit, so without totals a
# small upload of many small members costs the checker any amount of memory or CPU.
MAX_PARSED_BYTES = 96 * 1024 * 1024  # decompressed JSON and pickles read to be parsed: one model.json of
#   up to MAX_JSON_BYTES and room besides (a large transformer's model.json is a few MB, inputs a few KB)
MAX_PICKLE_OPS = 1_000_000  # pickle opcodes run: ~35 per tensor, and a .pt2's pickles hold few tensors
#   (sample inputs; storages are separate members); 1 to 3.5 s of CPU at the limit, by opcode
MAX_EXPR_CHARS = 4096
MAX_EXPR_BITS = 4096  # the largest number a symbolic expression may stand for (sizes are int64)
MAX_EXPR_DEPTH = 64  # nesting of an expression (torch writes a handful of levels)
MAX_LATTICE_ARGS = 16  # arguments of Max and Min in an expression: sympy compares them pairwise, in worse
#   than quadratic time (100 took 5 s, 300 did not finish in 20 s); torch writes Max(1, x)

# ----------------------------------------------------------------------------------------------------
# Pickles
#
# The allowlist is a small subset of torch/_weights_only_unpickler.py `_get_allowed_globals`: what
# torch.save writes for tensors, parameters, state dicts and the plain containers of sample inputs.
# Each global has a role; a global may appear only in its role (a callee is never stored as data).
# ----------------------------------------------------------------------------------------------------

# Callables REDUCE may call, with the kind of value they return.
_CALLEES: dict[str, str] = {
    "collections.OrderedDict": "odict",  # state dicts and the backward_hooks argument of tensors
    "torch._utils._rebuild_tensor_v2": "tensor",
    "torch._utils._rebuild_tensor_v3": "tensor",  # dtypes without a typed storage (uint16, float8, ...)
    "torch._utils._rebuild_parameter": "tensor",
    "torch._utils._rebuild_parameter_with_state": "tensor",
    "torch._tensor._rebuild_from_type_v2": "tensor",  # a tensor with attributes; its args are checked
    "torch.Size": "value",
    "torch.device": "value",
    "builtins.set": "value",
    "builtins.complex": "value",
    "_codecs.encode": "value",  # how protocol 2 writes bytes
}
# Classes NEWOBJ may instantiate (cls.__new__(cls, *args)).
_NEWOBJ: dict[str, str] = {"collections.OrderedDict": "odict", "torch.Size": "value"}
# The storage class inside a persistent id ("storage", <class>, key, location, numel).
_STORAGE_TYPES = frozenset(
    [f"torch.{t}Storage" for t in ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char",
                                   "Byte", "Bool", "ComplexFloat", "ComplexDouble")]
    + ["torch.storage.UntypedStorage"]
)
# The type argument of torch._tensor._rebuild_from_type_v2 (no tensor subclasses).
_REBUILD_TYPES = frozenset({"torch.Tensor", "torch.nn.parameter.Parameter"})
# Plain values, allowed anywhere: dtypes (immutable singletons).
_VALUE_GLOBALS = frozenset(
    f"torch.{d}" for d in ("float32", "float64", "float16", "bfloat16", "int8", "int16", "int32", "int64",
                           "uint8", "uint16", "uint32", "uint64", "bool", "complex64", "complex128",
                           "float8_e4m3fn", "float8_e5m2")
)
ALLOWED_GLOBALS = frozenset(_CALLEES) | frozenset(_NEWOBJ) | _STORAGE_TYPES | _REBUILD_TYPES | _VALUE_GLOBALS
# Protocol 2 writes Python 2 module names; torch (and pickle's fix_imports) map them the same way.
_PY2_MODULES = {"__builtin__": "builtins"}

# Exactly the opcodes torch's weights-only unpickler implements. Anything else (STACK_GLOBAL, MEMOIZE,
# FRAME, SHORT_BINUNICODE, INST, OBJ, EXT*, ...) makes torch.load(weights_only=True) fail, and the
# export loader then retries with a full unpickle - so it is refused here, whatever it would do.
_STRUCTURE_OPS = frozenset([
    "PROTO", "STOP", "MARK", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_TUPLE", "EMPTY_LIST", "EMPTY_DICT",
    "EMPTY_SET", "NONE", "NEWTRUE", "NEWFALSE", "BININT", "BININT1", "BININT2", "BINFLOAT", "LONG1",
    "BINUNICODE", "SHORT_BINSTRING", "BINGET", "LONG_BINGET", "BINPUT", "LONG_BINPUT", "APPEND", "APPENDS",
    "SETITEM", "SETITEMS",
])
_RISKY_OPS = frozenset({"GLOBAL", "REDUCE", "NEWOBJ", "BUILD", "BINPERSID"})
_SCALAR_OPS = frozenset(["NONE", "NEWTRUE", "NEWFALSE", "BININT", "BININT1", "BININT2", "BINFLOAT", "LONG1"])
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


class _Refused(Exception):
    """A reason a pickle is refused; turned into InvalidModel with the member's name."""


class _OutOfOps(Exception):
    """The archive's pickles ran more than MAX_PICKLE_OPS opcodes."""


class _Budget:
    """What checking one archive may still cost, over all its members: decompressed bytes read to be
    parsed, and pickle opcodes run."""

    def __init__(self):
        self.bytes_left = MAX_PARSED_BYTES
        self.ops_left = MAX_PICKLE_OPS

    def take_bytes(self, n: int, where: str) -> None:
        self.bytes_left -= n
        if self.bytes_left < 0:
            raise InvalidModel(
                f"{where}: checking the archive means parsing more than {MAX_PARSED_BYTES} bytes of JSON and "
                "pickles; a torch.export.save archive holds far less", code=ErrorCode.archive_too_large)


@dataclass(frozen=True)
class _Global:
    name: str

    @property
    def is_data(self) -> bool:  # a dtype may be stored as a value; callees and classes may not
        return self.name in _VALUE_GLOBALS


@dataclass(slots=True)  # not frozen: 3x faster to make, and a pickle may make a million (never mutated)
class _Tuple:
    items: tuple
    holds_global: bool  # a non-data global somewhere inside (nested tuples included)


@dataclass(frozen=True)
class _Val:
    kind: str  # list, dict, odict, set, tensor, storage, value


_VALUE = _Val("value")  # one shared instance: a pickle may push a million of them


def _holds_global(v) -> bool:
    return (isinstance(v, _Global) and not v.is_data) or (isinstance(v, _Tuple) and v.holds_global)


def _make_tuple(items) -> _Tuple:
    items = tuple(items)
    return _Tuple(items, any(map(_holds_global, items)))


class _PickleMachine:
    """Runs a pickle symbolically: the same stack, metastack and memo as torch's weights-only unpickler,
    holding only what a check needs (globals by name, strings, tuples, and the kind of everything else)."""

    def __init__(self, data: bytes):
        self.data = data
        self.stack: list = []
        self.metastack: list[list] = []
        self.memo: dict[int, object] = {}

    # -- stack helpers ------------------------------------------------------------------------------
    def pop(self):
        if not self.stack:
            raise _Refused("malformed pickle (stack underflow)")
        return self.stack.pop()

    def top(self):
        if not self.stack:
            raise _Refused("malformed pickle (stack underflow)")
        return self.stack[-1]

    def pop_mark(self) -> list:
        if not self.metastack:
            raise _Refused("malformed pickle (no MARK)")
        items, self.stack = self.stack, self.metastack.pop()
        return items

    @staticmethod
    def plain(value, what: str):
        if _holds_global(value):
            raise _Refused(f"a callable or class is stored as data in {what}")
        return value

    # -- the run ------------------------------------------------------------------------------------
    def run(self, stream: io.BytesIO, ops_left: int) -> int:
        """Checks one pickle, from the stream's position up to and including its STOP; returns the number
        of opcodes it ran, stopping at more than `ops_left` (walking an opcode costs a few microseconds,
        and one byte is an opcode: NONE)."""
        for count, (op, arg, pos) in enumerate(_ops(stream), 1):
            if count > ops_left:
                raise _OutOfOps
            name = op.name
            if name == "STOP":
                self.plain(self.pop(), "the result")
                return count
            if name in _STRUCTURE_OPS:
                self.structure(name, arg)
            elif name in _RISKY_OPS:
                getattr(self, "op_" + name.lower())(arg, pos)
            else:
                raise _Refused(f"opcode {name}{self.stack_global_hint(name)} is not accepted by "
                               "torch.load(weights_only=True)")
        raise _Refused("malformed pickle (no STOP)")

    def stack_global_hint(self, name: str) -> str:
        """For the message only: the module.name a STACK_GLOBAL would import, when plainly pushed."""
        if name == "STACK_GLOBAL" and len(self.stack) >= 2 and all(isinstance(v, str) for v in self.stack[-2:]):
            return f" ({self.stack[-2]}.{self.stack[-1]})"
        return ""

    def structure(self, name: str, arg) -> None:
        if name in _SCALAR_OPS:  # numbers, None, booleans: the commonest opcodes, tested first
            self.stack.append(_VALUE)
        elif name == "MARK":
            self.metastack.append(self.stack)
            self.stack = []
        elif name == "TUPLE":
            items = self.pop_mark()  # before touching self.stack: pop_mark replaces it
            self.stack.append(_make_tuple(items))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            if len(self.stack) < n:
                raise _Refused("malformed pickle (stack underflow)")
            items = self.stack[-n:]
            del self.stack[-n:]
            self.stack.append(_make_tuple(items))
        elif name == "EMPTY_TUPLE":
            self.stack.append(_make_tuple(()))
        elif name in ("EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET"):
            self.stack.append(_Val(name[6:].lower()))
        elif name in ("BINUNICODE", "SHORT_BINSTRING"):
            self.stack.append(arg)
        elif name in ("BINPUT", "LONG_BINPUT"):
            self.memo[arg] = self.top()
        elif name in ("BINGET", "LONG_BINGET"):
            if arg not in self.memo:
                raise _Refused(f"malformed pickle (memo {arg} is unset)")
            self.stack.append(self.memo[arg])
        elif name in ("APPEND", "APPENDS", "SETITEM", "SETITEMS"):
            self.fill(name)
        # PROTO: nothing to do

    def fill(self, name: str) -> None:
        """APPEND(S) only into lists, SETITEM(S) only into dicts, as torch checks at load time."""
        if name == "APPEND":
            items = [self.pop()]
        elif name == "SETITEM":
            items = [self.pop(), self.pop()]
        else:
            items = self.pop_mark()
            if name == "SETITEMS" and len(items) % 2:
                raise _Refused("malformed pickle (odd SETITEMS)")
        for item in items:
            self.plain(item, name)
        want = ("list",) if name.startswith("APPEND") else ("dict", "odict")
        target = self.top()
        if not (isinstance(target, _Val) and target.kind in want):
            raise _Refused(f"{name} into something that is not a {want[0]}")

    # -- the risky opcodes --------------------------------------------------------------------------
    def op_global(self, arg, pos) -> None:
        full = _global_name(self.data, pos, arg)
        if full not in ALLOWED_GLOBALS:
            raise _Refused(f"GLOBAL {full} is not allowed")
        self.stack.append(_Global(full))

    def op_reduce(self, arg, pos) -> None:
        args, func = self.pop(), self.top()
        if not (isinstance(func, _Global) and func.name in _CALLEES):
            raise _Refused(f"REDUCE calls {_describe(func)}, which is not an allowed callable")
        if not isinstance(args, _Tuple):
            raise _Refused(f"REDUCE of {func.name} without an argument tuple")
        if func.name == "torch._tensor._rebuild_from_type_v2":
            _check_rebuild_from_type(args)
        else:
            self.plain(args, f"the arguments of {func.name}")
        self.stack[-1] = _Val(_CALLEES[func.name])

    def op_newobj(self, arg, pos) -> None:
        args, cls = self.pop(), self.pop()
        if not (isinstance(cls, _Global) and cls.name in _NEWOBJ):
            raise _Refused(f"NEWOBJ of {_describe(cls)}, which is not an allowed class")
        if not isinstance(args, _Tuple):
            raise _Refused(f"NEWOBJ of {cls.name} without an argument tuple")
        self.plain(args, f"the arguments of {cls.name}")
        self.stack.append(_Val(_NEWOBJ[cls.name]))

    def op_build(self, arg, pos) -> None:
        self.plain(self.pop(), "BUILD state")
        target = self.top()
        # torch builds only Tensor, Parameter and OrderedDict (and allowlisted types we do not use)
        if not (isinstance(target, _Val) and target.kind in ("tensor", "odict")):
            raise _Refused(f"BUILD on {_describe(target)}; only tensors and OrderedDicts may be built")

    def op_binpersid(self, arg, pos) -> None:
        pid = self.pop()
        # torch.load's persistent ids: ("storage", <storage class>, key, location, numel)
        ok = (
            isinstance(pid, _Tuple) and len(pid.items) == 5 and pid.items[0] == "storage"
            and isinstance(pid.items[1], _Global) and pid.items[1].name in _STORAGE_TYPES
            and isinstance(pid.items[2], str) and isinstance(pid.items[3], str)
            and pid.items[4] == _VALUE
        )
        if not ok:
            raise _Refused("a persistent id other than a tensor storage reference")
        self.stack.append(_Val("storage"))


def _ops(stream: io.BytesIO):
    try:
        yield from pickletools.genops(stream)
    except (ValueError, EOFError, struct.error) as e:  # pickletools' way of saying "not a pickle"
        raise _Refused(f"malformed pickle ({e})") from None


def _global_name(data: bytes, pos: int, parsed: str) -> str:
    """The GLOBAL's module.name, read from the raw bytes the way torch reads them (two lines of UTF-8),
    and required to agree with pickletools' reading, so no escaping trick can tell the two apart."""
    try:
        end1 = data.index(b"\n", pos + 1)
        end2 = data.index(b"\n", end1 + 1)
        module, name = data[pos + 1:end1].decode(), data[end1 + 1:end2].decode()
    except (ValueError, UnicodeDecodeError):
        raise _Refused("malformed GLOBAL") from None
    if f"{module} {name}" != parsed or not (_DOTTED.fullmatch(module) and _DOTTED.fullmatch(name)):
        raise _Refused(f"GLOBAL with an odd name {(module + '.' + name)[:80]!r}")
    return f"{_PY2_MODULES.get(module, module)}.{name}"


def _check_rebuild_from_type(args: _Tuple) -> None:
    """_rebuild_from_type_v2(func, new_type, args, state) calls func(*args): func must be a tensor
    rebuild function and new_type a plain Tensor or Parameter (torch would accept any allowlisted one)."""
    items = args.items
    ok = (
        len(items) == 4
        and isinstance(items[0], _Global) and _CALLEES.get(items[0].name) == "tensor"
        and items[0].name != "torch._tensor._rebuild_from_type_v2"
        and isinstance(items[1], _Global) and items[1].name in _REBUILD_TYPES
        and isinstance(items[2], _Tuple) and not _holds_global(items[2]) and not _holds_global(items[3])
    )
    if not ok:
        raise _Refused("torch._tensor._rebuild_from_type_v2 with arguments other than a plain tensor's")


def _describe(v) -> str:
    if isinstance(v, _Global):
        return v.name
    if isinstance(v, _Val):
        return f"a {v.kind}"
    return type(v).__name__ if not isinstance(v, _Tuple) else "a tuple"


def check_pickle(data: bytes, where: str, budget: _Budget | None = None) -> None:
    """Raises InvalidModel(code=ErrorCode.unsafe_pickle) unless every opcode / global in the pickle is one that
    torch.load(weights_only=True) would accept (a strict subset of torch's own allowlist is fine).

    `data` may hold a short run of pickles (legacy torch.save files are several); all must pass and
    nothing may follow them. Its opcodes are taken from `budget` (the archive's; a fresh one if none)."""
    budget = budget if budget is not None else _Budget()
    stream = io.BytesIO(data)
    try:
        if not data:
            raise _Refused("empty pickle")
        for _ in range(MAX_PICKLES_PER_MEMBER):
            budget.ops_left -= _PickleMachine(data).run(stream, budget.ops_left)
            if stream.tell() == len(data):
                return
        raise _Refused(f"more than {MAX_PICKLES_PER_MEMBER} pickles, or data after the last one "
                       "(the legacy torch.save format is not accepted)")
    except _OutOfOps:
        # archive_too_large, not unsafe_pickle: the opcodes may all be harmless; it is a bound on the
        # work, like the byte limits, and the way out is the same (a plain torch.export.save archive)
        raise InvalidModel(
            f"{where}: the archive's pickles hold more than {MAX_PICKLE_OPS} opcodes; sample inputs and "
            "state dicts written by torch.export.save hold far fewer", code=ErrorCode.archive_too_large) from None
    except _Refused as e:
        raise InvalidModel(
            f"{where}: {e}. Pickles in an upload may hold only tensors, parameters, state dicts and plain "
            "containers (what torch.load(weights_only=True) accepts; torch.export.load would otherwise "
            "fall back to an unsafe load). Re-export with torch.export.export(...) and torch.export.save, "
            "with plain tensors as example inputs and no custom objects.",
            code=ErrorCode.unsafe_pickle,
        ) from None


# ----------------------------------------------------------------------------------------------------
# The zip archive
# ----------------------------------------------------------------------------------------------------

def _unsafe(msg: str) -> InvalidModel:
    return InvalidModel(msg, code=ErrorCode.unsafe_archive)


def _check_name(name: str, where: str) -> None:
    """No absolute paths, no `..`/`.` parts, no backslashes or NULs: names that could escape a folder
    or be read differently by torch's zip reader (miniz) and Python's."""
    parts = name.rstrip("/").split("/")
    if (not name or name.startswith("/") or re.match(r"[A-Za-z]:", name) or "\\" in name or "\0" in name
            or any(p in ("", ".", "..") for p in parts)):
        raise _unsafe(f"{where}: the member name {name[:200]!r} is not a plain relative path")


def _check_entry_kind(info: zipfile.ZipInfo, where: str) -> None:
    mode = info.external_attr >> 16
    if info.create_system == 3 and stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
        raise _unsafe(f"{where}: member {info.filename!r} is {kind}")
    if info.flag_bits & 0x1:
        raise _unsafe(f"{where}: member {info.filename!r} is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise _unsafe(f"{where}: member {info.filename!r} uses a compression torch cannot read")


def _checked_entries(zf: zipfile.ZipFile, max_bytes: int, where: str) -> list[zipfile.ZipInfo]:
    """Every entry's name and kind, the total declared size, compression ratios and overlaps."""
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise _unsafe(f"{where}: {len(infos)} members; the limit is {MAX_MEMBERS}")
    seen: set[str] = set()
    total = 0
    for info in infos:
        _check_name(info.filename, where)
        _check_entry_kind(info, where)
        if info.filename in seen:  # zipfile reads the last copy, torch's reader may read the first
            raise _unsafe(f"{where}: member {info.filename!r} appears twice")
        seen.add(info.filename)
        total += info.file_size
        if total > max_bytes:
            raise InvalidModel(f"{where}: expands to more than {max_bytes} bytes", code=ErrorCode.archive_too_large)
        if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise InvalidModel(
                f"{where}: member {info.filename!r} expands {info.file_size // max(info.compress_size, 1)}x "
                f"(limit {MAX_RATIO}x); zip bombs are refused", code=ErrorCode.archive_too_large)
    _check_no_overlap(infos, where)
    return infos


def _check_no_overlap(infos: list[zipfile.ZipInfo], where: str) -> None:
    """Each member's data must end before the next local header: overlapping members are a zip-bomb
    trick and a way to show two readers different bytes. 30 bytes is the fixed local header size."""
    spans = sorted((i.header_offset, i.header_offset + 30 + len(i.orig_filename) + i.compress_size, i.filename)
                   for i in infos)
    for (_, end, name), (start, _, _) in zip(spans, spans[1:], strict=False):
        if end > start:
            raise _unsafe(f"{where}: member {name!r} overlaps the next one")


def _read(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, where: str, n: int | None = None) -> bytes:
    """A member's bytes (the first `n` only, when given), refusing members over `limit`."""
    if n is None and info.file_size > limit:
        raise InvalidModel(f"{where}: {info.filename!r} is {info.file_size} bytes; the limit for this kind "
                           f"of member is {limit}", code=ErrorCode.archive_too_large)
    try:
        with zf.open(info) as f:
            return f.read(n if n is not None else limit + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as e:
        raise InvalidModel(f"{where}: member {info.filename!r} could not be read ({e})",
                           code=ErrorCode.not_pt2) from None


def _read_parsed(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, where: str, budget: _Budget) -> bytes:
    """A member read whole to be parsed, its size taken from the archive's budget before any of it is
    decompressed (zipfile returns no more than the size a member declares)."""
    budget.take_bytes(info.file_size, where)
    return _read(zf, info, limit, where)


def _is_zip(head: bytes) -> bool:
    """torch.serialization._is_zipfile's test exactly: anything else torch.load reads as tar or pickle."""
    return head.startswith(b"PK\x03\x04")


def _is_pickle(head: bytes) -> bool:
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _check_torch_save(zf: zipfile.ZipFile, info: zipfile.ZipInfo, max_bytes: int, budget: _Budget,
                      where: str) -> None:
    """A member torch may `torch.load`: a torch.save zip (its pickles checked) or bare pickles."""
    if info.file_size == 0:  # torch treats empty sample inputs as none
        return
    head = _read(zf, info, 0, where, n=8)
    if _is_zip(head):
        _check_nested_zip(zf, info, max_bytes, budget, where)
        return
    data = _read_parsed(zf, info, MAX_PICKLE_BYTES, where, budget)
    if _is_tar(data):
        # torch.load tries the legacy .tar format before bare pickles; with weights_only=False (the
        # fallback) it unpickles the tar's members fully. A tar that also parses as a pickle is refused.
        raise _unsafe(f"{where} is a tar archive (the legacy torch.save format), which torch.load "
                      "unpickles without restriction; re-save with torch.export.save")
    check_pickle(data, where, budget)


def _is_tar(data: bytes) -> bool:
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            return tar.next() is not None
    except (tarfile.TarError, EOFError, ValueError, OSError):
        return False


def _check_nested_zip(zf: zipfile.ZipFile, info: zipfile.ZipInfo, max_bytes: int, budget: _Budget,
                      where: str) -> None:
    """A torch.save (or TorchScript) zip inside the archive: depth 2, nothing deeper is opened. torch
    unpickles only its `.pkl` members; the rest is raw storage bytes."""
    # In a deflated member, every backward seek (to the central directory at the end, then to each member
    # the central directory lists, in any order) decompresses it again from its start: taken as bytes read.
    reinflate = info.file_size if info.compress_type != zipfile.ZIP_STORED else 0
    try:
        budget.take_bytes(reinflate, where)
        with zf.open(info) as f, zipfile.ZipFile(f) as inner:
            infos = _checked_entries(inner, max_bytes, where)
            names = [i.filename for i in infos]
            # torch.load hands a zip holding constants.pkl to torch.jit.load, which runs TorchScript code
            if any(n.rsplit("/", 1)[-1] == "constants.pkl" or "/code/" in f"/{n}" for n in names):
                raise _unsafe(f"{where} is a TorchScript archive, which torch.load would run with "
                              "torch.jit.load; export the model with torch.export instead")
            for i in infos:
                if i.filename.endswith(".pkl"):
                    budget.take_bytes(reinflate, where)
                    pickle_where = f"{where}/{i.filename}"
                    data = _read_parsed(inner, i, MAX_PICKLE_BYTES, pickle_where, budget)
                    check_pickle(data, pickle_where, budget)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as e:
        raise _unsafe(f"{where} starts like a zip but cannot be read as one ({e})") from None


# Members torch.export.load may unpickle, by name relative to the archive folder (the legacy names are
# those of the older layout torch/export/__init__.py `load` still reads). Payloads listed as `use_pickle`
# in the payload configs are added per archive.
_UNPICKLED = (
    "data/sample_inputs/*",
    "data/weights/*.pt",
    "data/constants/*.pt",
    "data/constants/custom_obj_*",
    "data/constants/opaque_obj_*",
    "*serialized_state_dict.*",
    "*serialized_constants.*",
    "*serialized_example_inputs.*",
    "*.pt",
    "*.pth",
    "*.pkl",
)


# ----------------------------------------------------------------------------------------------------
# model.json and the payload configs
# ----------------------------------------------------------------------------------------------------

# Names allowed in a symbolic expression: sympy classes as sympy.srepr writes them, torch's sympy
# functions (the deserializer's `sympy_functions`), constants, assumption keywords, and torch's symbol names.
_SYMPY_FUNCTIONS = frozenset([
    "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Mod", "Max", "Min", "Abs", "sign", "floor",
    "ceiling", "sqrt", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "Equality", "Unequality", "StrictLessThan",
    "LessThan", "StrictGreaterThan", "GreaterThan", "And", "Or", "Not", "Xor", "Piecewise", "ExprCondPair",
    "Infinity", "NegativeInfinity", "ComplexInfinity", "NaN", "BooleanTrue", "BooleanFalse", "One", "Zero",
    "NegativeOne", "Half", "IntInfinity", "NegativeIntInfinity", "FloorDiv", "ModularIndexing", "Where",
    "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow",
    "FloatTrueDiv", "IntTrueDiv", "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt",
    "RoundToInt", "RoundDecimal", "ToFloat", "Identity",
])
_SYMPY_CONSTANTS = frozenset(["true", "false", "oo", "zoo", "nan", "int_oo"])
_SYMPY_KEYWORDS = frozenset([
    "integer", "positive", "negative", "nonnegative", "nonpositive", "real", "finite", "infinite", "zero",
    "nonzero", "even", "odd", "rational", "commutative", "extended_real", "precision", "evaluate",
])
_SYMPY_NAMES = _SYMPY_FUNCTIONS | _SYMPY_CONSTANTS | _SYMPY_KEYWORDS | {"True", "False", "None"}
_SYMBOL = re.compile(r"(?:s|u|ps|zf|zuf)\d+")  # torch.utils._sympy.symbol prefixes used by export
_SYMPY_STRING = re.compile(r"'[A-Za-z0-9_.+\-]*'")  # Symbol('s3', ...), Float('1.5', precision=53)
_SYMPY_OPS = frozenset(["(", ")", ",", "=", "+", "-", "*", "/"])

# sympy computes what it can while sympify parses: 10**(10**10) never returns. So every expression gets an
# upper bound on the bits of any number sympy may compute from it, by what each function makes of its
# arguments' bits. Powers and shifts need a literal exponent: with a symbol there, any value could come.
_POWERS = frozenset(["Pow", "PowByNatural", "FloatPow"])  # exponent x the base's bits
_SHIFTS = frozenset(["LShift", "RShift"])  # the base's bits + the shift
_PRODUCTS = frozenset([  # the sum of the arguments' bits (quotients too: dividing by 1/y multiplies by y)
    "Mul", "Rational", "FloorDiv", "CleanDiv", "CeilDiv", "IntTrueDiv", "FloatTrueDiv", "Mod", "PythonMod",
    "ModularIndexing",
])
# Every other function (sums, Max/Min, comparisons, roundings, Piecewise, ...): its largest argument's
# bits plus a carry. Bounds only grow towards the root, so the root's is checked.
_SYMBOL_BITS = 64  # torch's symbols stand for int64 sizes (or doubles)
_FLOAT_PRECISION = 53  # sympy's default for Float, in bits
_NO_VALUE = object()

_NOT_PLAIN = "is not a plain sympy expression; torch.export.load would evaluate it as Python code"
_UNBOUNDED = (f"sympy would compute numbers of more than {MAX_EXPR_BITS} bits when torch.export.load parses it "
              "(10**(10**10) never finishes)")


class _ExprRefused(Exception):
    """Why a symbolic expression is refused: the words that follow it in the message."""


def _check_sym_expr(expr, where: str) -> None:
    """`expr_str` is evaluated by sympy.sympify (eval): only calls of allowlisted sympy names on numbers,
    quoted symbol names and symbols; no attribute access, subscripts, lambdas or other names. And the
    numbers sympy computes while parsing it are bounded (MAX_EXPR_BITS, MAX_EXPR_DEPTH)."""
    try:
        if not (isinstance(expr, str) and len(expr) <= MAX_EXPR_CHARS and _tokens_ok(expr)):
            raise _ExprRefused(_NOT_PLAIN)
        tree = _parse(expr)
        if _bits(tree, expr, 1) > MAX_EXPR_BITS:
            raise _ExprRefused(f"is too large: {_UNBOUNDED}")
        if _lattice_args(tree) > MAX_LATTICE_ARGS:
            raise _ExprRefused(f"has more than {MAX_LATTICE_ARGS} arguments of Max and Min, which sympy compares "
                               "pairwise, in worse than quadratic time, when torch.export.load parses it")
    except _ExprRefused as e:
        raise InvalidModel(f"{where}: the symbolic shape expression {str(expr)[:120]!r} {e}",
                           code=ErrorCode.unsafe_graph) from None


def _tokens_ok(expr: str) -> bool:
    try:
        return all(_token_ok(tok) for tok in tokenize.generate_tokens(io.StringIO(expr).readline))
    except (tokenize.TokenError, SyntaxError):
        return False


def _parse(expr: str) -> ast.expr:
    try:
        return ast.parse(expr, mode="eval").body  # parsing runs nothing
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        raise _ExprRefused(_NOT_PLAIN) from None


def _bits(node: ast.AST, expr: str, depth: int) -> int:
    """An upper bound on the bits of any number (numerator or denominator) sympy may compute for `node`;
    what has no bound, or is not sympy's grammar, is refused."""
    if depth > MAX_EXPR_DEPTH:
        raise _ExprRefused(f"is nested more than {MAX_EXPR_DEPTH} deep (torch writes a few levels); refused "
                           "before sympy parses it")
    if isinstance(node, ast.Call):
        return _call_bits(node, expr, depth)
    if isinstance(node, ast.Constant):
        return _constant_bits(node, expr)
    if isinstance(node, ast.Name) and node.id in _SYMPY_CONSTANTS:
        return 1
    if isinstance(node, ast.Name) and _SYMBOL.fullmatch(node.id):  # sympify makes a Symbol of it
        return _SYMBOL_BITS
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        return _bits(node.operand, expr, depth + 1)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
        sides = _bits(node.left, expr, depth + 1), _bits(node.right, expr, depth + 1)
        return sum(sides) if isinstance(node.op, (ast.Mult, ast.Div)) else max(sides) + 1
    if isinstance(node, ast.Tuple):  # Piecewise((value, condition), ...)
        return max((_bits(e, expr, depth + 1) for e in node.elts), default=1)
    raise _ExprRefused(_NOT_PLAIN)


def _lattice_args(tree: ast.expr) -> int:
    """All arguments of all Max and Min calls (sympy flattens nested ones into one)."""
    return sum(len(n.args) for n in ast.walk(tree)
               if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in ("Max", "Min"))


def _call_bits(node: ast.Call, expr: str, depth: int) -> int:
    name = node.func.id if isinstance(node.func, ast.Name) else None
    if name not in _SYMPY_FUNCTIONS:
        raise _ExprRefused(_NOT_PLAIN)
    precision = _keywords(node, name)
    args = node.args
    if name in ("Symbol", "Float") and len(args) == 1 and _is_str(args[0]):
        return _SYMBOL_BITS if name == "Symbol" else _float_bits(args[0].value, precision)
    bits = [_bits(arg, expr, depth + 1) for arg in args]
    if name in ("Symbol", "Float"):
        if name == "Symbol" or len(args) != 1:
            raise _ExprRefused(_NOT_PLAIN)
        return bits[0] + precision
    if name in _POWERS or name in _SHIFTS:
        exponent = _literal(args[1]) if len(args) == 2 else None
        if exponent is None or abs(exponent) > MAX_EXPR_BITS:
            raise _ExprRefused(f"has a power or shift whose exponent is not a literal number up to "
                               f"{MAX_EXPR_BITS}: {_UNBOUNDED}")
        times = max(1, math.ceil(abs(exponent)))
        return max(bits[0] * times if name in _POWERS else bits[0] + times, bits[1])
    if name in _PRODUCTS:
        return max(1, sum(bits))
    return max(bits, default=1) + (len(bits) - 1).bit_length()  # a sum of n: log2(n) more bits


def _keywords(node: ast.Call, name: str) -> int:
    """Assumptions (integer=True, ...) and evaluate= take True, False or None; Float's precision (its
    result) a bounded int: mpmath works at that many bits."""
    precision = _FLOAT_PRECISION
    for kw in node.keywords:
        value = kw.value.value if isinstance(kw.value, ast.Constant) else _NO_VALUE
        if kw.arg == "precision" and name == "Float" and type(value) is int and value > 0:
            if value > MAX_EXPR_BITS:
                raise _ExprRefused(f"asks for a precision of {value} bits: {_UNBOUNDED}")
            precision = value
        elif kw.arg not in _SYMPY_KEYWORDS or kw.arg == "precision" or not (value is None or type(value) is bool):
            raise _ExprRefused(_NOT_PLAIN)
    return precision


def _constant_bits(node: ast.Constant, expr: str) -> int:
    value = node.value
    if value is None or type(value) is bool:
        return 1
    if type(value) is int:
        return max(1, abs(value).bit_length())
    if type(value) is float:  # sympify makes Float('<the literal>') of it
        return _float_bits(ast.get_source_segment(expr, node) or "", _FLOAT_PRECISION)
    raise _ExprRefused(_NOT_PLAIN)  # a string outside Symbol/Float, a complex number


def _float_bits(text: str, precision: int) -> int:
    """Float(text): made exact (Rational, Integer), its digits and decimal exponent count as well as its
    precision - Float('1e-300') is a 1000-bit fraction, Float('1e100000000') a 330-million-bit integer."""
    try:
        number = decimal.Decimal(text)
    except decimal.InvalidOperation:
        raise _ExprRefused(_NOT_PLAIN) from None
    if not number.is_finite():
        raise _ExprRefused(_NOT_PLAIN)
    digits = len(number.as_tuple().digits) + abs(number.adjusted())
    return precision + math.ceil(digits * math.log2(10))


def _is_str(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) is str


def _literal(node: ast.AST) -> int | float | fractions.Fraction | None:
    """The value of a literal number - 2, -1, Integer(-1), Float('0.5'), Rational(1, 2) - else None."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        value = _literal(node.operand)
        return -value if value is not None and isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value if math.isfinite(node.value) else None
    name = node.func.id if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) else None
    args = node.args if name else []
    if name == "Float" and len(args) == 1 and _is_str(args[0]):
        try:
            value = float(args[0].value)
        except ValueError:
            return None
        return value if math.isfinite(value) else None
    if name == "Integer" and len(args) == 1:
        return _literal(args[0])
    if name == "Rational" and len(args) == 2:
        p, q = _literal(args[0]), _literal(args[1])
        return fractions.Fraction(p, q) if type(p) is int and type(q) is int and q else None
    return None


def _token_ok(tok: tokenize.TokenInfo) -> bool:
    if tok.type == tokenize.NAME:
        return tok.string in _SYMPY_NAMES or bool(_SYMBOL.fullmatch(tok.string))
    if tok.type == tokenize.STRING:
        return bool(_SYMPY_STRING.fullmatch(tok.string))
    if tok.type == tokenize.OP:
        return tok.string in _SYMPY_OPS
    return tok.type in (tokenize.NUMBER, tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER)


def _walk_exprs(doc, where: str) -> None:
    """Every `expr_str` anywhere in a JSON document (iterative: the document may be deeply nested)."""
    checked: set[str] = set()  # the same expressions recur across tensors: each is checked once
    todo = [doc]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            expr = node.get("expr_str")
            if "expr_str" in node and not (isinstance(expr, str) and expr in checked):
                _check_sym_expr(expr, where)
                checked.add(expr)
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)


def _read_json(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str, budget: _Budget):
    raw = _read_parsed(zf, info, MAX_JSON_BYTES, where, budget)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise InvalidModel(f"{where}: {info.filename!r} is not valid JSON ({str(e)[:200]})",
                           code=ErrorCode.not_pt2) from None


# What torch 2.13 parses as JSON (torch/export/pt2_archive/_package.py): `_load_exported_programs` takes
# every record under models/ for a program (json.loads, sympify of each expr_str, torch.load of its
# data/sample_inputs/<name>.pt), and `_load_state_dict` / `_load_constants` parse the payload configs of
# each program name. torch.export.save writes one program, `model`; only its members are parsed here.
_PROGRAM = "models/model.json"
_PAYLOAD_CONFIGS = {"data/weights/": "model_weights_config.json", "data/constants/": "model_constants_config.json"}


def _check_single_program(infos: list[zipfile.ZipInfo], prefix: str, where: str) -> None:
    """Before anything is read: nothing under models/ but model.json (a directory entry included, which
    torch takes for a program named ''). Each would be a further program that torch deserializes; the
    review's 143 KB archive of 120 compressible ones cost the checker 3 GiB when they were parsed."""
    for info in infos:
        rel = info.filename[len(prefix):] if info.filename.startswith(prefix) else ""
        if rel.startswith("models/") and rel != _PROGRAM:
            raise _unsafe(f"{where}: member {info.filename!r} is a further program: torch.export.load deserializes "
                          f"every member under models/, and torch.export.save writes one, {_PROGRAM}. Save one "
                          "program with torch.export.save(torch.export.export(model, example_inputs), path)")


def _payload_members(zf, prefix: str, budget: _Budget, where: str) -> tuple[set[str], set[str]]:
    """(raw, pickled) member names from the weights/constants configs: raw payloads are read as plain
    storage bytes and never unpickled; pickled ones (`use_pickle`) go to torch.load(weights_only=False)."""
    raw: set[str] = set()
    pickled: set[str] = set()
    for folder, config_name in _PAYLOAD_CONFIGS.items():
        try:
            info = zf.getinfo(prefix + folder + config_name)
        except KeyError:  # torch then reads a legacy data/weights/model.pt (checked as a pickle) or fails
            continue
        config = _read_json(zf, info, where, budget)
        entries = config.get("config") if isinstance(config, dict) else None
        if not isinstance(entries, dict):
            raise InvalidModel(f"{where}: {info.filename!r} is not a payload config", code=ErrorCode.not_pt2)
        for entry in entries.values():
            path_name = entry.get("path_name") if isinstance(entry, dict) else None
            if not isinstance(path_name, str):
                raise InvalidModel(f"{where}: {info.filename!r} has an entry without a path", code=ErrorCode.not_pt2)
            target = prefix + folder + path_name
            plain = entry.get("use_pickle") is False and not path_name.startswith(("custom_obj_", "opaque_obj_"))
            (raw if plain else pickled).add(target)
    return raw - pickled, pickled


def _archive_prefix(infos: list[zipfile.ZipInfo]) -> str:
    """The archive folder: torch.export.save writes `<name>/models/model.json` and all else beside it."""
    found = [i.filename[: -len("models/model.json")] for i in infos
             if i.filename.endswith("/models/model.json") and i.filename.count("/") == 2]
    if len(found) != 1:
        raise InvalidModel(
            "not a torch.export program: expected exactly one <name>/models/model.json in the archive; "
            "save the model with torch.export.save(torch.export.export(model, example_inputs), path)",
            code=ErrorCode.not_pt2)
    return found[0]


def _check_members(zf, infos, prefix: str, max_bytes: int, budget: _Budget, where: str):
    """Every member by what torch would do with it; returns the parsed models/model.json."""
    raw, pickled = _payload_members(zf, prefix, budget, where)
    program = None
    for info in infos:
        name = info.filename
        if not name.startswith(prefix):  # torch takes the folder of the first entry as the archive's
            raise _unsafe(f"{where}: member {name!r} is outside the archive folder {prefix!r}; torch.export.save "
                          "writes every member under one folder")
        if info.is_dir():
            continue
        rel = name[len(prefix):]
        member = f"{where}:{name}"
        if rel.startswith("data/aotinductor/"):
            raise _unsafe(f"{member}: AOTInductor artifacts are native code that torch.export.load would "
                          "load; upload the torch.export program only (torch.export.save)")
        if rel == _PROGRAM:  # deserialized, and each expr_str sympified
            program = _read_json(zf, info, member, budget)
            _walk_exprs(program, member)
        elif name in pickled or any(fnmatch.fnmatchcase(rel, p) for p in _UNPICKLED):
            _check_torch_save(zf, info, max_bytes, budget, member)
        elif name not in raw:  # unknown members: by content, in case some loader path reads them
            head = _read(zf, info, 0, member, n=8)
            if _is_zip(head) or _is_pickle(head):
                _check_torch_save(zf, info, max_bytes, budget, member)
    return program


def checked_program(path: Path, max_bytes: int) -> dict:
    """The archive's program (models/model.json, parsed) once every member torch would read passed; InvalidModel
    with a clear, user-actionable message and a stable code otherwise: not_pt2, unsafe_pickle, unsafe_archive,
    archive_too_large, unsafe_graph."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise InvalidModel(f"not a .pt2 archive: the file is not a zip ({e}); save the model with "
                           "torch.export.save", code=ErrorCode.not_pt2) from None
    with zf:
        prefix = _archive_prefix(zf.infolist())
        _check_single_program(zf.infolist(), prefix, "archive")  # by name: the clearest reason comes first
        infos = _checked_entries(zf, max_bytes, "archive")
        return _check_members(zf, infos, prefix, max_bytes, _Budget(), "archive")
