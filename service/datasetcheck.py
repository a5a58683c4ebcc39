"""Checks an uploaded .npz dataset without loading its arrays: a zip of .npy files, read header by header.

Refused: anything that is not a zip of .npy, pickled (object) arrays, arrays whose sample counts
differ, and archives whose declared expansion is absurd (zip bombs).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from core.assets import ArraySpec
from core.errors import InvalidDataset

MAX_ARRAYS = 64
MAX_EXPANSION = 200  # declared uncompressed size / compressed size


def inspect_npz(path: Path, max_bytes: int) -> list[ArraySpec]:
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
    return arrays


def _header(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> ArraySpec:
    name = member.filename
    if not name.endswith(".npy") or "/" in name:
        raise InvalidDataset(f"{name!r} is not an array of an .npz (np.savez writes NAME.npy)")
    try:
        with archive.open(member) as f:
            version = np.lib.format.read_magic(f)
            read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in read:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, _, dtype = read[version](f, max_header_size=10000)
    except Exception as e:
        raise InvalidDataset(f"{name!r} is not a valid .npy array: {e}") from e
    if dtype.hasobject:
        raise InvalidDataset(f"{name!r} holds Python objects (pickles); only numeric arrays are accepted")
    if dtype.kind not in "biuf":
        raise InvalidDataset(f"{name!r} has dtype {dtype}; numeric arrays only")
    return ArraySpec(name=name[: -len(".npy")], dtype=dtype.name, shape=list(shape))
