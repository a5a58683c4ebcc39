"""The gateway's check of uploaded torch.export programs (.pt2), before anything loads them.

Archives are built here with torch (tests may import torch; the checker may not), then edited member by
member to plant what an attacker would. Hostile pickles are written byte by byte and never unpickled
here - except in the one test marked DANGER, which runs torch.export.load in a subprocess to prove the
checker is needed.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import shlex
import subprocess
import sys
import tarfile
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
import torch
from torch.export import Dim

from core.checks import pt2_safety
from core.checks.pt2_safety import check_pickle
from core.checks.pt2_signature import inspect_pt2
from core.errors import InvalidModel
from tests.hostile import planted_sample_inputs, reduce_pickle, rewrite, stack_global_pickle, swap_data_pkl

LIMIT = 256 * 1024 * 1024
MiB = 1024 * 1024


# ---------------------------------------------------------------------------------------------------
# builders
# ---------------------------------------------------------------------------------------------------

class TwoInputs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(10, 4)
        self.register_buffer("scale", torch.ones(4))

    def forward(self, ids, x):
        return self.emb(ids) * self.scale + x, ids.sum()


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, Path]:
    """Real torch.export.save archives: `seq` (dynamic batch) and `two` (int64 + float32 inputs)."""
    root = tmp_path_factory.mktemp("pt2")
    torch.manual_seed(0)
    seq = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    ep = torch.export.export(seq, (torch.randn(3, 4),), dynamic_shapes=({0: Dim("batch")},))
    torch.export.save(ep, root / "seq.pt2")
    ep = torch.export.export(TwoInputs(), (torch.tensor([[1, 2]]), torch.randn(1, 2, 4)))
    torch.export.save(ep, root / "two.pt2")
    return {"seq": root / "seq.pt2", "two": root / "two.pt2"}


def member(path: Path, suffix: str) -> str:
    """The full name of the member ending in `suffix` (archives live under `<name>/`)."""
    names = [n for n in zipfile.ZipFile(path).namelist() if n.endswith(suffix)]
    assert len(names) == 1, names
    return names[0]


def torch_save_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def data_pkl(obj) -> bytes:
    with zipfile.ZipFile(io.BytesIO(torch_save_bytes(obj))) as z:
        return z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))


def refused(path: Path, code: str, match: str | None = None) -> InvalidModel:
    with pytest.raises(InvalidModel, match=match) as e:
        inspect_pt2(path, LIMIT)
    assert e.value.code == code, e.value.message
    return e.value


def expr_payload(command: str) -> bytes:
    """Text to put before `Symbol('s...` in model.json so an expr_str runs os.system(command) when
    sympified, escaped for its place inside a JSON string."""
    return json.dumps(f"__import__('os').system({command!r}) or Symbol('s")[1:-1].encode()


def mark_weight_pickled(config: bytes) -> bytes:
    """The weights config with weight_0 marked `use_pickle` (torch then torch.loads it, unsafely)."""
    doc = json.loads(config)
    for entry in doc["config"].values():
        if entry["path_name"] == "weight_0":
            entry["use_pickle"] = True
    return json.dumps(doc).encode()


# ---------------------------------------------------------------------------------------------------
# what a good archive yields
# ---------------------------------------------------------------------------------------------------

def test_inputs_outputs_and_operators_of_a_dynamic_batch_model(archives):
    inputs, outputs, ops = inspect_pt2(archives["seq"], LIMIT)
    assert [i.name for i in inputs] == ["input"]  # parameters are not inputs
    batch = inputs[0].shape[0]
    assert isinstance(batch, str) and batch.startswith("s")  # torch's symbol name, e.g. "s31"
    assert inputs[0].model_dump() == {"name": "input", "dtype": "float32", "shape": [batch, 4], "batched": True,
                                      "value_range": None}
    assert [(o.name, o.dtype, o.shape) for o in outputs] == [(outputs[0].name, "float32", [batch, 2])]
    assert ops == ["torch.ops.aten.linear.default", "torch.ops.aten.relu.default"]


def test_two_inputs_int64_and_float32(archives):
    inputs, outputs, ops = inspect_pt2(archives["two"], LIMIT)
    assert [i.model_dump() for i in inputs] == [
        {"name": "ids", "dtype": "int64", "shape": [1, 2], "batched": True, "value_range": None},
        {"name": "x", "dtype": "float32", "shape": [1, 2, 4], "batched": True, "value_range": None},
    ]
    assert [(o.dtype, o.shape) for o in outputs] == [("float32", [1, 2, 4]), ("int64", [])]
    assert ops == sorted(ops) and "torch.ops.aten.embedding.default" in ops


class ConvNet(torch.nn.Module):
    """Buffers (batch norm) and a lifted tensor constant (`c`), stored raw in data/constants/."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.fc = torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 10)
        self.c = torch.ones(4)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).mean((2, 3)) * self.c)


class Branches(torch.nn.Module):
    """Control flow: torch.cond keeps each branch as a nested graph."""

    def forward(self, x):
        return torch.cond(x.sum() > 0, lambda x: x.sin(), lambda x: x.cos(), (x,))


class Derived(torch.nn.Module):
    def forward(self, x, y):
        return x[:, : y.shape[1]] + y


def test_other_real_programs_pass(tmp_path):
    b, n = Dim("b"), Dim("n", min=2, max=64)
    cases = [
        (ConvNet().eval(), (torch.randn(2, 1, 8, 8),), ({0: Dim("batch")},)),
        (Branches(), (torch.randn(3),), None),
        (Derived(), (torch.randn(2, 8), torch.randn(2, 4)), ({0: b, 1: 2 * n}, {0: b, 1: n})),
    ]
    results = []
    for i, (model, args, dynamic) in enumerate(cases):
        torch.export.save(torch.export.export(model, args, dynamic_shapes=dynamic), tmp_path / f"{i}.pt2")
        results.append(inspect_pt2(tmp_path / f"{i}.pt2", LIMIT))
    (conv_in,), (conv_out,), _ = results[0]
    assert conv_in.shape[1:] == [1, 8, 8] and conv_out.shape == [conv_in.shape[0], 10]
    assert {"torch.ops.higher_order.cond", "torch.ops.aten.sin.default"} <= set(results[1][2])  # nested too
    (x, y), _, _ = results[2]
    assert x.shape == [y.shape[0], f"Mul(2, {y.shape[1]})"]  # a derived dim, written readably


def test_raw_weights_that_look_like_a_pickle_are_not_refused(archives, tmp_path):
    """Raw weight payloads are storage bytes, never unpickled: one starting with a pickle header (as
    random float data may) must not be mistaken for a pickle."""
    path = rewrite(archives["seq"], tmp_path / "m.pt2",
                   replace={"data/weights/weight_0": lambda b: b"\x80\x02" + b[2:]})
    inspect_pt2(path, LIMIT)


@pytest.mark.parametrize("obj", [
    torch.ones(2, 3),
    torch.nn.Parameter(torch.ones(2)),
    torch.nn.Linear(2, 2).state_dict(),
    torch.ones(2, dtype=torch.uint16),  # _rebuild_tensor_v3 + UntypedStorage + a dtype global
    torch.arange(10)[2:5],
    ((torch.Size([1, 2]), torch.float16, torch.device("cpu"), b"ab", 1.5, -3, 2**70, "s", None, True,
      [1], {"a": 1}, {1, 2}, 1 + 2j),),
], ids=["tensor", "parameter", "state_dict", "uint16", "view", "containers"])
def test_what_torch_save_writes_for_tensors_and_containers_passes(obj):
    check_pickle(data_pkl(obj), "data.pkl")


def test_a_tensor_with_attributes_passes():
    t = torch.ones(2)
    t.note = 3  # pickled through torch._tensor._rebuild_from_type_v2
    check_pickle(data_pkl(t), "data.pkl")


def test_the_allowlist_is_a_subset_of_torchs_and_names_are_not_remapped():
    import _compat_pickle

    from torch._utils import IMPORT_MAPPING, NAME_MAPPING
    from torch._weights_only_unpickler import _get_allowed_globals

    assert set(_get_allowed_globals()) >= pt2_safety.ALLOWED_GLOBALS
    for full in pt2_safety.ALLOWED_GLOBALS:  # the name we check is the name torch and pickle resolve
        module, name = full.rsplit(".", 1)
        for imports, names in ((IMPORT_MAPPING, NAME_MAPPING),
                               (_compat_pickle.IMPORT_MAPPING, _compat_pickle.NAME_MAPPING)):
            assert module not in imports and (module, name) not in names
    assert IMPORT_MAPPING["__builtin__"] == _compat_pickle.IMPORT_MAPPING["__builtin__"] == "builtins"


def test_the_checker_does_not_import_torch():
    code = "import sys, core.checks.pt2_safety; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------------
# hostile pickles, directly
# ---------------------------------------------------------------------------------------------------

def unsafe(data: bytes, match: str | None = None) -> None:
    with pytest.raises(InvalidModel, match=match) as e:
        check_pickle(data, "x.pkl")
    assert e.value.code == "unsafe_pickle"


@pytest.mark.parametrize("module,name", [("os", "system"), ("posix", "system"), ("builtins", "eval"),
                                         ("subprocess", "call"), ("__builtin__", "exec")])
def test_reduce_of_a_dangerous_callable_is_refused(module, name):
    unsafe(reduce_pickle(module, name, "true"), match=rf"GLOBAL \S+\.{name} is not allowed")


def test_stack_global_is_refused():
    unsafe(stack_global_pickle("builtins", "eval", "1+1"), match=r"STACK_GLOBAL \(builtins\.eval\)")
    unsafe(stack_global_pickle("builtins", "eval", "1+1", short=True), match="SHORT_BINUNICODE")


def test_inst_and_obj_are_refused():
    unsafe(b"\x80\x02(icollections\nOrderedDict\n.", match="opcode INST")
    unsafe(b"\x80\x02(ccollections\nOrderedDict\no.", match="opcode OBJ")
    unsafe(b"(S'true'\nios\nsystem\n.", match="opcode")  # protocol 0, no header


@pytest.mark.parametrize("data,match", [
    (b"\x80\x02\x82\x01.", "EXT1"),
    (pickle.dumps({"a": 1}, protocol=4), "FRAME"),  # torch's weights-only unpickler refuses it too
    (b"\x80\x02X\x03\x00\x00\x00abc\x85Q.", "persistent id"),
    (b"\x80\x02ctorch\nFloatStorage\n)R.", "REDUCE calls torch.FloatStorage"),
    (b"\x80\x02}X\x01\x00\x00\x00kctorch._utils\n_rebuild_tensor_v2\ns.", "stored as data"),
    (b"\x80\x02}ctorch\nfloat32\nb.", "BUILD on a dict"),
    (b"\x80\x02ccollections\nOrderedDict\n)Rctorch\nfloat32\na.", "APPEND into"),
    (b"\x80\x02h\x05.", "memo"),
    (b"\x80\x02R.", "underflow"),
    (b"\x80\x02N.N.junk", "malformed"),
    (b"\x80\x02c torch\nSize\n)R.", "odd name"),
], ids=["ext1", "protocol4", "persid", "reduce-storage", "global-as-data", "build-dict", "append-odict",
        "memo", "underflow", "trailing", "odd-name"])
def test_other_hostile_or_malformed_pickles_are_refused(data, match):
    unsafe(data, match=match)


def test_rebuild_from_type_with_a_foreign_type_is_refused():
    t = torch.ones(2)
    t.note = 3
    good = data_pkl(t)
    assert b"ctorch\nTensor\n" in good
    unsafe(good.replace(b"ctorch\nTensor\n", b"ctorch\nFloatStorage\n"), match="_rebuild_from_type_v2")


# ---------------------------------------------------------------------------------------------------
# hostile archives
# ---------------------------------------------------------------------------------------------------

def test_1_sample_inputs_calling_os_system_are_refused(archives, tmp_path):
    path = planted_sample_inputs(archives["seq"], tmp_path / "m.pt2", "true")
    refused(path, "unsafe_pickle", match="sample_inputs/model.pt.*GLOBAL os.system")


def test_2_an_extra_pickle_member_is_checked(archives, tmp_path):
    name = member(archives["seq"], "models/model.json").split("/")[0] + "/evil.pkl"
    path = rewrite(archives["seq"], tmp_path / "m.pt2", add={name: stack_global_pickle("builtins", "eval", "0")})
    refused(path, "unsafe_pickle", match="evil.pkl.*STACK_GLOBAL")


def test_2b_a_pickle_is_found_by_content_whatever_its_name(archives, tmp_path):
    path = rewrite(archives["seq"], tmp_path / "m.pt2", add={"seq/extra/notes": reduce_pickle("os", "system", "x")})
    refused(path, "unsafe_pickle", match="extra/notes")


def test_3_a_nested_torch_save_zip_with_a_malicious_data_pkl_is_refused(archives, tmp_path):
    nested = swap_data_pkl(torch_save_bytes(torch.ones(2)), reduce_pickle("subprocess", "call", "x"))
    path = rewrite(archives["seq"], tmp_path / "m.pt2", add={"seq/extra/blob": nested})
    refused(path, "unsafe_pickle", match="extra/blob/.*data.pkl.*subprocess.call")


def test_3b_a_weight_marked_use_pickle_is_checked_as_a_pickle(archives, tmp_path):
    nested = swap_data_pkl(torch_save_bytes(torch.ones(2)), reduce_pickle("os", "system", "x"))
    path = rewrite(archives["seq"], tmp_path / "m.pt2", replace={
        "data/weights/model_weights_config.json": mark_weight_pickled,
        "data/weights/weight_0": nested,
    })
    refused(path, "unsafe_pickle", match="weight_0")


def test_3c_an_opaque_constant_without_a_pickle_header_is_checked(archives, tmp_path):
    """opaque_obj_* constants go to pickle.loads, which also takes header-less protocol 0 pickles."""
    protocol_0 = b"cos\nsystem\n(S'x'\ntR."
    path = rewrite(archives["seq"], tmp_path / "m.pt2", add={"seq/data/constants/opaque_obj_0": protocol_0})
    refused(path, "unsafe_pickle", match="opaque_obj_0")


def test_3d_a_torchscript_archive_inside_is_refused(archives, tmp_path):
    nested = io.BytesIO()
    with zipfile.ZipFile(nested, "w") as z:
        z.writestr("archive/data.pkl", data_pkl(torch.ones(1)))
        z.writestr("archive/constants.pkl", data_pkl(()))
        z.writestr("archive/code/__torch__.py", b"")
    path = rewrite(archives["seq"], tmp_path / "m.pt2", add={"seq/data/sample_inputs/other.pt": nested.getvalue()})
    refused(path, "unsafe_archive", match="TorchScript")


def test_3e_a_legacy_tar_where_torch_loads_a_pickle_is_refused(archives, tmp_path):
    """torch.load reads a tar (legacy format) before trying bare pickles, and unpickles its members
    fully on the weights_only=False retry; a tar that also parses as a safe pickle must not pass."""
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w", format=tarfile.PAX_FORMAT) as t:
        body = reduce_pickle("os", "system", "x")
        info = tarfile.TarInfo("storages")
        info.size = len(body)
        t.addfile(info, io.BytesIO(body))
    path = rewrite(archives["seq"], tmp_path / "m.pt2", replace={"data/sample_inputs/model.pt": tar.getvalue()})
    refused(path, "unsafe_archive", match="tar archive")


@pytest.mark.parametrize("name", ["../../etc/x", "/etc/x", "seq/../../x", "seq\\..\\x"])
def test_4_member_names_that_escape_are_refused(archives, tmp_path, name):
    path = rewrite(archives["seq"], tmp_path / "m.pt2", add={name: b"x"})
    refused(path, "unsafe_archive", match="plain relative path")


@pytest.mark.parametrize("name", ["other/data/sample_inputs/model.pt", "serialized_example_inputs.pt"])
def test_4a_members_outside_the_archive_folder_are_refused(archives, tmp_path, name):
    """torch reads the archive under the folder of its first entry; a second folder (or the older
    layout's root-level members) could be what it loads, so only one folder is accepted."""
    path = rewrite(archives["seq"], tmp_path / "m.pt2", add={name: data_pkl(torch.ones(1))})
    refused(path, "unsafe_archive", match="outside the archive folder")


def test_4b_symlinks_and_duplicates_are_refused(archives, tmp_path):
    link = zipfile.ZipInfo("seq/extra/link")
    link.create_system = 3
    link.external_attr = 0o120777 << 16
    refused(rewrite(archives["seq"], tmp_path / "l.pt2", add={link: b"/etc/passwd"}), "unsafe_archive", "symbolic link")
    with pytest.warns(UserWarning, match="Duplicate name"):
        dup = rewrite(archives["seq"], tmp_path / "d.pt2", add={member(archives["seq"], "sample_inputs/model.pt"): b""})
    refused(dup, "unsafe_archive", match="twice")


def test_5_a_zip_bomb_is_refused(archives, tmp_path):
    bomb = zipfile.ZipInfo("seq/extra/bomb")
    bomb.compress_type = zipfile.ZIP_DEFLATED
    path = rewrite(archives["seq"], tmp_path / "m.pt2", add={bomb: bytes(64 * 1024 * 1024)})
    assert path.stat().st_size < 1024 * 1024
    refused(path, "archive_too_large", match="zip bomb")


def test_5b_declared_size_over_the_limit_is_refused(archives):
    with pytest.raises(InvalidModel) as e:
        inspect_pt2(archives["seq"], 1000)
    assert e.value.code == "archive_too_large"


def test_6_not_a_zip(tmp_path):
    path = tmp_path / "m.pt2"
    path.write_bytes(b"\x80\x02N." + bytes(100))
    refused(path, "not_pt2", match="not a zip")


def test_7_a_zip_without_model_json(archives, tmp_path):
    src = zipfile.ZipFile(archives["seq"])
    path = tmp_path / "m.pt2"
    with zipfile.ZipFile(path, "w") as z:
        for info in src.infolist():
            if not info.filename.endswith("models/model.json"):
                z.writestr(info, src.read(info))
    refused(path, "not_pt2", match="models/model.json")


def test_8_inst_and_obj_inside_an_archive(archives, tmp_path):
    inst = swap_data_pkl(torch_save_bytes(torch.ones(2)), b"\x80\x02(X\x01\x00\x00\x00xios\nsystem\n.")
    path = rewrite(archives["seq"], tmp_path / "m.pt2", replace={"data/sample_inputs/model.pt": inst})
    refused(path, "unsafe_pickle", match="INST")
    obj_pickle = b"\x80\x02(ccollections\nOrderedDict\no."
    obj = rewrite(archives["seq"], tmp_path / "o.pt2", add={"seq/extra/o.pkl": obj_pickle})
    refused(obj, "unsafe_pickle", match="OBJ")


def test_aotinductor_members_are_refused(archives, tmp_path):
    path = rewrite(archives["seq"], tmp_path / "m.pt2", add={"seq/data/aotinductor/model/x.so": b"\x7fELF"})
    refused(path, "unsafe_archive", match="AOTInductor")


def test_a_shape_expression_that_is_python_code_is_refused(archives, tmp_path):
    path = rewrite(archives["seq"], tmp_path / "m.pt2", replace={
        "models/model.json": lambda b: b.replace(b"Symbol('s", expr_payload("true"), 1)})
    refused(path, "unsafe_graph", match="sympy")


@pytest.mark.parametrize("expr", [
    "Symbol('s31', positive=True, integer=True)",
    "Add(Mul(Integer(2), Symbol('s0', integer=True, positive=True)), Integer(1))",
    "FloorDiv(Symbol('s0'), Integer(2))",
    "Float('1.5', precision=53)",
    "Equality(Symbol('u0'), Integer(3))",
    "s0 + 2*s1",
    "int_oo",
])
def test_plain_sympy_expressions_pass(expr):
    pt2_safety._check_sym_expr(expr, "m")


@pytest.mark.parametrize("expr", [
    "__import__('os')", "Symbol.__class__", "Symbol('a').func", "[x for x in ()]", "lambda: 0",
    "getattr(Symbol, 'x')", "eval('1')", "Symbol('a\\'b')", "s0.__class__", "sympify('x')", "preview(s0)",
    "Symbol('s0'); 1", "f'{s0}'",
])
def test_shape_expressions_that_could_run_code_are_refused(expr):
    with pytest.raises(InvalidModel) as e:
        pt2_safety._check_sym_expr(expr, "m")
    assert e.value.code == "unsafe_graph"


def test_the_symbol_pattern_names_nothing_sympify_could_call():
    import builtins

    namespace: dict = {}
    exec("from sympy import *", namespace)  # what sympify evaluates in, plus builtins
    known = set(namespace) | set(dir(builtins))
    assert not [n for n in known if pt2_safety._SYMBOL.fullmatch(n)]
    for name in pt2_safety._SYMPY_NAMES & set(namespace):
        assert getattr(namespace[name], "__module__", "sympy").startswith("sympy"), name


# ---------------------------------------------------------------------------------------------------
# denial of service: small archives that would cost the checker (or torch) memory or CPU without bound
# ---------------------------------------------------------------------------------------------------

def deflated(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def reads(monkeypatch) -> list[tuple[str, int]]:
    """(member, bytes) of every member the checker reads whole (the 8-byte sniffs of unknown members
    are left out), recorded from pt2_safety._read."""
    log: list[tuple[str, int]] = []
    real = pt2_safety._read

    def recorded(zf, info, limit, where, n=None):
        data = real(zf, info, limit, where, n)
        if n is None:
            log.append((info.filename, len(data)))
        return data

    monkeypatch.setattr(pt2_safety, "_read", recorded)
    return log


def refused_quickly(path: Path, code: str, match: str | None = None, seconds: float = 5.0) -> InvalidModel:
    start = time.perf_counter()
    error = refused(path, code, match)
    assert time.perf_counter() - start < seconds
    return error


def json_bomb(size: int) -> bytes:
    """Valid JSON of `size` bytes that json.loads turns into ~20x as much memory (a dict per 3 bytes)."""
    return b"[" + b"{}," * (size // 3 - 1) + b"{}]"


def test_9_programs_beside_models_model_json_are_refused_unread(archives, tmp_path, monkeypatch):
    """The review's archive: 143 KB, 120 compressible models/*.json members; parsing each took the
    checker from 117 MiB to 3 GiB. torch.export.load deserializes every member under models/ as a
    program, so the archive is refused before any of them is read."""
    bomb = json_bomb(MiB)
    members = {deflated(f"seq/models/m{i}.json"): bomb for i in range(120)}
    path = rewrite(archives["seq"], tmp_path / "m.pt2", add=members)
    assert path.stat().st_size < 512 * 1024
    log = reads(monkeypatch)
    refused_quickly(path, "unsafe_archive", match="models/m0.json.*torch.export.save")
    assert not [name for name, _ in log if "/models/m" in name]


@pytest.mark.parametrize("extra", ["second_program", "directory"])
def test_9b_a_second_program_or_anything_else_under_models_is_refused(archives, tmp_path, extra):
    """torch 2.13 load_pt2 deserializes (sympifies, unpickles the inputs of) every models/<name>.json,
    not only the `model` that torch.export.load returns; a directory entry becomes a program named ''."""
    with zipfile.ZipFile(archives["seq"]) as z:
        second = {"seq/models/other.json": z.read("seq/models/model.json"),
                  "seq/data/sample_inputs/other.pt": z.read("seq/data/sample_inputs/model.pt")}
    add = second if extra == "second_program" else {zipfile.ZipInfo("seq/models/"): b""}
    refused(rewrite(archives["seq"], tmp_path / "m.pt2", add=add), "unsafe_archive", match="one program")


def string_pickle(size: int) -> bytes:
    """A valid protocol 2 pickle of `size` bytes: one str (few opcodes, many bytes)."""
    n = size - 8
    return b"\x80\x02X" + n.to_bytes(4, "little") + b"a" * n + b"."


def test_10_the_bytes_parsed_across_members_are_capped(archives, tmp_path, monkeypatch):
    """Members of at most 1 MiB escape the ratio limit; enough small pickles (any member torch could
    unpickle is read whole and parsed) add up to any amount. The checker stops at MAX_PARSED_BYTES,
    refusing each member before reading it."""
    count = pt2_safety.MAX_PARSED_BYTES // MiB + 2
    body = string_pickle(MiB)
    path = rewrite(archives["seq"], tmp_path / "m.pt2",
                   add={deflated(f"seq/data/sample_inputs/p{i}.pt"): body for i in range(count)})
    assert path.stat().st_size < 2 * MiB
    log = reads(monkeypatch)
    refused_quickly(path, "archive_too_large", match="more than")
    assert sum(n for _, n in log) <= pt2_safety.MAX_PARSED_BYTES


def none_pickle(ops: int) -> bytes:
    """A valid pickle of `ops` NONE opcodes (one byte each): cheap to store, costly to walk."""
    return b"\x80\x02" + b"N" * ops + b"."


def test_11_pickle_opcodes_are_capped_across_the_archive(archives, tmp_path):
    """The review's archive: 96 KB of NONE pickles, each under the ratio limit, cost 91 s of CPU. The
    opcodes of all pickles of an archive are counted against MAX_PICKLE_OPS as they are run."""
    per_member = pt2_safety.MAX_PICKLE_OPS // 4
    body = none_pickle(per_member)
    path = rewrite(archives["seq"], tmp_path / "m.pt2",
                   add={deflated(f"seq/data/sample_inputs/n{i}.pt"): body for i in range(12)})
    assert path.stat().st_size < 512 * 1024
    refused_quickly(path, "archive_too_large", match="opcodes")


def test_11b_one_pickle_with_too_many_opcodes_is_refused_quickly():
    start = time.perf_counter()
    with pytest.raises(InvalidModel, match="opcodes") as e:
        check_pickle(none_pickle(20 * pt2_safety.MAX_PICKLE_OPS), "x.pkl")
    assert e.value.code == "archive_too_large"
    assert time.perf_counter() - start < 5


def test_11c_a_nested_zip_read_backwards_is_charged_for_its_reinflation(archives, tmp_path):
    """A deflated torch.save zip whose central directory lists its members last to first: reading each
    one seeks back and inflates the member again from its start. Its 8000 tiny pickles cost ~3 GB of
    decompression (2 s; a hundred such members in a 6 MB upload, minutes)."""
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        for i in range(8000):
            z.writestr(f"a/{i}.pkl", b"\x80\x02N.")
        z.filelist.reverse()
    path = rewrite(archives["seq"], tmp_path / "m.pt2", add={deflated("seq/data/sample_inputs/x.pt"): inner.getvalue()})
    assert path.stat().st_size < 128 * 1024
    refused_quickly(path, "archive_too_large", match="more than")


def first_expr_replaced(model_json: bytes, expr: str) -> bytes:
    """model.json with the first `expr_str` found replaced by `expr`."""
    doc = json.loads(model_json)
    todo = [doc]
    while todo:
        node = todo.pop()
        if isinstance(node, dict) and "expr_str" in node:
            node["expr_str"] = expr
            return json.dumps(doc).encode()
        todo.extend(node.values() if isinstance(node, dict) else node if isinstance(node, list) else [])
    raise AssertionError("no expr_str in model.json")


def test_12_a_shape_expression_sympy_cannot_finish_evaluating_is_refused(archives, tmp_path):
    """10**(10**10): plain sympy names only, so the allowlist let it through, and sympy.sympify in
    torch.export.load computes a number of 33 billion bits (it never returns)."""
    tower = "Pow(Integer(10), Pow(Integer(10), Integer(10)))"
    path = rewrite(archives["seq"], tmp_path / "m.pt2",
                   replace={"models/model.json": lambda b: first_expr_replaced(b, tower)})
    refused_quickly(path, "unsafe_graph", match="bits")


@pytest.mark.parametrize("expr", [
    "Pow(Integer(10), Pow(Integer(10), Integer(10)))",
    "Pow(Integer(10), Integer(100000))",
    "PowByNatural(Rational(3, 2), Integer(10000000000))",
    "FloatPow(Float('10.0', precision=53), Integer(100000000))",
    "Pow(Symbol('s0', integer=True), Symbol('s1', integer=True))",  # a symbolic exponent
    "LShift(Integer(1), Integer(10000000000))",
    "Mul(Pow(Integer(2), Integer(2000)), Pow(Integer(3), Integer(1500)))",  # 4377 bits, each factor fewer
    "Integer(" + "9" * 1300 + ")",
    "Integer(Float('1e100000000'))",
    "Rational(Float('1e-100000000'))",
    "Float('1.5', precision=1000000000)",
    "Add(" * 80 + "s0" + ", 1)" * 80,
    "Max(" + ", ".join(f"s{i}" for i in range(300)) + ")",  # 1.7 KB; sympy compares the 300 pairwise
])
def test_shape_expressions_too_large_to_evaluate_are_refused(expr):
    start = time.perf_counter()
    with pytest.raises(InvalidModel, match="sympy") as e:
        pt2_safety._check_sym_expr(expr, "m")
    assert e.value.code == "unsafe_graph"
    assert time.perf_counter() - start < 1


@pytest.mark.parametrize("expr", [
    "Mul(Integer(16), Pow(Symbol('s6', positive=True, integer=True), Integer(2)))",
    "Add(Mod(Mul(Integer(4), Symbol('s6', positive=True, integer=True)), Integer(3)), Integer(1))",
    "Mul(Symbol('s77', positive=True, integer=True), Max(Integer(1), TruncToInt(Mul(Float('2.5', precision=53), "
    "ToFloat(Symbol('s27', positive=True, integer=True))))))",
    "LessThan(Symbol('u0', integer=True), Integer(3))",
    "Piecewise((Integer(1), StrictLessThan(Symbol('s0'), Integer(3))), (Integer(0), true))",
    "Mul(Integer(-1), Pow(Symbol('s0', integer=True), Integer(-1)))",
    "FloatPow(ToFloat(Symbol('s0')), Float('0.5', precision=53))",
    "PowByNatural(Symbol('s0'), Integer(64))",
    "Pow(Integer(2), Integer(2000))",
    "LShift(Symbol('s0'), Integer(3))",
    "Rational(1, 2)",
    "Max(Integer(5), -oo, -int_oo)",
    "Add(" + ", ".join(f"Symbol('s{i}', positive=True, integer=True)" for i in range(90)) + ")",
])
def test_shape_expressions_torch_writes_pass(expr):
    pt2_safety._check_sym_expr(expr, "m")


class Reshapes(torch.nn.Module):
    """Derived dims (2*b, b+1) and views: Mul, Add, Pow, FloorDiv and Mod in the shapes."""

    def forward(self, x, y):
        n = x.shape[0]
        return x.reshape(-1, 4).sum() + x.view(n // 2, 2, 6).sum() + y[1:].sum(), x.new_zeros(n * n), x[: n % 3 + 1]


class Strided(torch.nn.Module):
    """Convolution and pooling over a dynamic length (FloorDiv, Max), interpolation (Float, ToFloat)."""

    def __init__(self):
        super().__init__()
        self.conv, self.pool = torch.nn.Conv1d(2, 3, 5, stride=3, padding=1), torch.nn.AvgPool1d(3, 2)

    def forward(self, x):
        return self.pool(self.conv(x)), torch.nn.functional.interpolate(x, scale_factor=2.5)


class Unbacked(torch.nn.Module):
    def forward(self, x):
        return torch.nonzero(x).float().sum(0)


def test_symbolic_shape_programs_pass(tmp_path):
    b = Dim("b", max=1024)
    cases = [
        (Reshapes(), (torch.randn(4, 6), torch.randn(3, 3)), ({0: 2 * b}, {0: b + 1})),
        (Strided(), (torch.randn(2, 2, 50),), ({0: Dim("n"), 2: Dim.AUTO},)),
        (Unbacked(), (torch.tensor([1.0, 0.0, 2.0]),), None),
    ]
    functions = set()
    for i, (model, args, dynamic) in enumerate(cases):
        torch.export.save(torch.export.export(model, args, dynamic_shapes=dynamic), tmp_path / f"{i}.pt2")
        inspect_pt2(tmp_path / f"{i}.pt2", LIMIT)
        with zipfile.ZipFile(tmp_path / f"{i}.pt2") as z:
            functions |= set(re.findall(r"\b([A-Z][A-Za-z]+)\(", z.read(f"{i}/models/model.json").decode()))
    assert {"Mul", "Add", "Pow", "FloorDiv", "Mod", "Max", "Float", "ToFloat", "TruncToInt"} <= functions


# ---------------------------------------------------------------------------------------------------
# DANGER: proof that the check is needed. torch.export.load, in a subprocess, runs what was planted;
# inspect_pt2 refuses the very same files. The payloads only create marker files under tmp_path.
# ---------------------------------------------------------------------------------------------------

def test_DANGER_torch_export_load_runs_planted_code_and_inspect_refuses_it(archives, tmp_path):
    """Three ways torch 2.13's torch.export.load executes code from a .pt2:
    - sample inputs: torch/_export/serde/serialize.py deserialize_torch_artifact tries
      torch.load(weights_only=True), and on failure retries torch.load(weights_only=False);
    - a weight marked use_pickle: torch/export/pt2_archive/_package.py _load_state_dict calls
      torch.load(weights_only=False) directly (constants: _load_constants, likewise);
    - a symbolic shape: ExportedProgramDeserializer._parse_sym_expr passes expr_str to sympy.sympify (eval).
    """
    markers = {k: tmp_path / f"ran-{k}" for k in ("sample", "weight", "expr")}

    def touch(marker: Path) -> str:
        return f": > {shlex.quote(str(marker))}"  # a shell builtin: no binary needed

    hostile = {
        "sample": planted_sample_inputs(archives["seq"], tmp_path / "sample.pt2", touch(markers["sample"])),
        "weight": rewrite(archives["seq"], tmp_path / "weight.pt2", replace={
            "data/weights/model_weights_config.json": mark_weight_pickled,
            "data/weights/weight_0": swap_data_pkl(torch_save_bytes(torch.ones(2)),
                                                   reduce_pickle("os", "system", touch(markers["weight"]))),
        }),
        "expr": rewrite(archives["seq"], tmp_path / "expr.pt2", replace={
            "models/model.json": lambda b: b.replace(b"Symbol('s", expr_payload(touch(markers["expr"])))}),
    }
    script = textwrap.dedent("""
        import sys, torch
        for path in sys.argv[1:]:
            try:
                torch.export.load(path)
            except Exception as e:  # the payload has run by the time loading fails
                print(path, type(e).__name__)
    """)
    subprocess.run([sys.executable, "-c", script, *map(str, hostile.values())],
                   capture_output=True, text=True, timeout=300, check=True)
    assert {k: m.exists() for k, m in markers.items()} == {"sample": True, "weight": True, "expr": True}

    codes = {}
    for kind, path in hostile.items():
        with pytest.raises(InvalidModel) as e:
            inspect_pt2(path, LIMIT)
        codes[kind] = e.value.code
    assert codes == {"sample": "unsafe_pickle", "weight": "unsafe_pickle", "expr": "unsafe_graph"}
