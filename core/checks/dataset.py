"""Checks an uploaded .npz dataset without holding its arrays in memory: a zip of .npy files, read header by
header, then streamed through once in chunks.

Refused: anything that is not a zip of .npy, pickled (object) arrays, arrays whose sample counts
differ, archives whose declared expansion is absurd (zip bombs), datasets without a sample
(`empty_dataset`), NaN or infinite values (`non_finite_values`), and a `split` array holding anything but
0 (train) and 1 (eval).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from core.assets import ArraySpec, SplitCounts
from core.errors import ErrorCode, InvalidDataset

MAX_ARRAYS = 64
MAX_EXPANSION = 200  # declared uncompressed size / compressed size
SCAN_CHUNK = 8 * 1024 * 1024
READ_HEADER = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def inspect_npz(path: Path, max_bytes: int) -> tuple[list[ArraySpec], SplitCounts | None]:
    """The arrays, and the sample counts of the dataset's own `split` array if it has one."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise InvalidDataset(f"not an .npz file (not a zip archive): {e}") from e
    with archive:
        members = archive.infolist()
        if not members or len(members) > MAX_ARRAYS:
            raise InvalidDataset(f"an .npz holds 1 to {MAX_ARRAYS} arrays; this one has {len(members)}")
        total = sum(m.file_size for m in members)
        packed = max(1, sum(m.compress_size for m in members))
        if total > max_bytes or total / packed > MAX_EXPANSION:
            raise InvalidDataset(
                f"the archive expands to {total} bytes from {packed}: refused as a decompression bomb"
            )
        arrays = [_header(archive, m) for m in members]
        counts = {a.shape[0] if a.shape else None for a in arrays}
        if len(counts) != 1 or None in counts:
            raise InvalidDataset("every array must have the same first (sample) dimension")
        if counts == {0}:
            raise InvalidDataset("the dataset holds no sample", code=ErrorCode.empty_dataset)
        split = None
        for member, array in zip(members, arrays, strict=True):
            values = _scan(archive, member, array)
            if array.name == "split":
                split = values
    return arrays, split


def _chunks(archive: zipfile.ZipFile, member: zipfile.ZipInfo):
    """The array's values, SCAN_CHUNK bytes at a time, after its header (in the header's byte order)."""
    with archive.open(member) as f:
        version = np.lib.format.read_magic(f)
        _, _, dtype = READ_HEADER[version](f, max_header_size=10000)
        step = SCAN_CHUNK - SCAN_CHUNK % dtype.itemsize
        while chunk := f.read(step):
            yield np.frombuffer(chunk[: len(chunk) - len(chunk) % dtype.itemsize], dtype)


def _scan(archive: zipfile.ZipFile, member: zipfile.ZipInfo, array: ArraySpec) -> SplitCounts | None:
    """Refuses NaN and infinities in float arrays; for `split`, its counts."""
    if array.name == "split":
        counts = np.zeros(2, np.int64)
        for values in _chunks(archive, member):
            if ((values != 0) & (values != 1)).any():
                raise InvalidDataset("'split' may hold only 0 (train) and 1 (eval)")
            counts += np.bincount(values.astype(np.int64), minlength=2)
        return SplitCounts(train=int(counts[0]), eval=int(counts[1]))
    if np.dtype(array.dtype).kind == "f":
        for values in _chunks(archive, member):
            if not np.isfinite(values).all():
                raise InvalidDataset(f"{array.name!r} holds NaN or infinite values; models and metrics need "
                                     "finite inputs and labels", code=ErrorCode.non_finite_values)
    return None


def _header(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> ArraySpec:
    name = member.filename
    if not name.endswith(".npy") or "/" in name:
        raise InvalidDataset(f"{name!r} is not an array of an .npz (np.savez writes NAME.npy)")
    try:
        with archive.open(member) as f:
            version = np.lib.format.read_magic(f)
            if version not in READ_HEADER:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, _, dtype = READ_HEADER[version](f, max_header_size=10000)
    except Exception as e:
        raise InvalidDataset(f"{name!r} is not a valid .npy array: {e}") from e
    if dtype.hasobject:
        raise InvalidDataset(f"{name!r} holds Python objects (pickles); only numeric arrays are accepted")
    if dtype.kind not in "biuf":
        raise InvalidDataset(f"{name!r} has dtype {dtype}; numeric arrays only")
    return ArraySpec(name=name[: -len(".npy")], dtype=dtype.name, shape=list(shape))
