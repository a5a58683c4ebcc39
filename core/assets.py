"""Records of what tenants upload: models and datasets. Stored as JSON beside the file in S3."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from core.errors import ErrorCode, NotFound
from core.ids import is_id
from core.job import now

ModelFormat = Literal["onnx", "pt2"]
DEFAULT_DYNAMIC_DIM = 16  # a named dimension other than the batch, e.g. a sequence length
GENERATED_SAMPLES = 64  # samples a job without a dataset generates from the model's input specs


class TensorSpec(BaseModel):
    name: str
    dtype: str  # numpy dtype name: float32, int64, ...
    shape: list[int | str | None]  # ints are fixed, strings are named dynamic dims, None unknown
    batched: bool = Field(True, description="whether axis 0 carries the samples; an input without a batch axis "
                          "(a recurrent state, a scalar, a fixed-size tensor) is fed as it is on every run")
    value_range: list[int] | None = Field(None, description="[low, high): the values an integer input may take, "
                                          "read from the graph (the rows of the table it indexes)")

    def sample_shape(self, fixed: dict[str, list[int]]) -> list[int]:
        """The shape of one sample (batch dimension dropped; the whole shape of an input without one), dynamic
        dimensions made concrete: by `fixed` (the target's input_shapes, honoured exactly) or
        DEFAULT_DYNAMIC_DIM."""
        if self.name in fixed:
            return list(fixed[self.name][1:] if self.batched else fixed[self.name])
        dims = self.shape[1:] if self.batched else self.shape
        return [d if isinstance(d, int) and d > 0 else DEFAULT_DYNAMIC_DIM for d in dims]

    @property
    def generable(self) -> bool:
        """Whether samples can be made for this input without a dataset: floats and booleans; integers whose
        range the graph shows, or that are named as token ids, masks or token types are."""
        if not self.dtype.startswith(("int", "uint")) or self.value_range:
            return True
        return any(word in self.name.lower() for word in ("ids", "token", "mask", "type", "segment", "position"))

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the graph fixes for this input, if it fixes one."""
        lead = self.shape[0] if self.batched and self.shape else None
        return lead if isinstance(lead, int) and lead > 0 else None


def _dynamic(dim: int | str | None) -> bool:
    return not (isinstance(dim, int) and dim > 0)


def mark_batch_axes(inputs: list[TensorSpec], outputs: list[TensorSpec]) -> list[TensorSpec]:
    """Which inputs carry the batch on axis 0. Where some input's first dimension is dynamic, the batch is
    dynamic: inputs whose first dimension is dynamic carry it, and those whose first dimension is fixed (the
    `h: [1, 1, 128]` state beside `input: [batch, 576]`) do not. Where every first dimension is fixed, the
    graph fixes the batch: the inputs whose first dimension is the one most outputs start with carry it.
    Scalars never do."""
    if any(s.shape and _dynamic(s.shape[0]) for s in inputs):
        batched = {s.name: bool(s.shape) and _dynamic(s.shape[0]) for s in inputs}
    else:
        leads = [o.shape[0] for o in outputs if o.shape and not _dynamic(o.shape[0])]
        leads = leads or [s.shape[0] for s in inputs if s.shape]
        first = inputs[0].shape[0] if inputs and inputs[0].shape else None
        batch = max(set(leads), key=lambda lead: (leads.count(lead), lead == first)) if leads else None
        batched = {s.name: bool(s.shape) and s.shape[0] == batch for s in inputs}
    return [s.model_copy(update={"batched": batched[s.name]}) for s in inputs]


class ModelRecord(BaseModel):
    id: str
    name: str
    format: ModelFormat
    size_bytes: int
    sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    operators: list[str] = Field(default_factory=list, description="ONNX operator types (for .pt2: the "
                                 "ONNX equivalents of its ATen operators)")
    layers: int = Field(0, description="repeated layers found (transformer layers or same-width blocks)")
    created_at: datetime = Field(default_factory=now)


class ArraySpec(BaseModel):
    name: str
    dtype: str
    shape: list[int]


class SplitCounts(BaseModel):
    """Samples a dataset's own `split` array marks for training (0) and for evaluation (1)."""

    train: int
    eval: int


class DatasetRecord(BaseModel):
    id: str
    name: str
    size_bytes: int
    sha256: str
    arrays: list[ArraySpec]
    split: SplitCounts | None = Field(None, description="when the dataset has its own `split` array")
    created_at: datetime = Field(default_factory=now)

    @property
    def samples(self) -> int:
        return self.arrays[0].shape[0] if self.arrays and self.arrays[0].shape else 0


class AssetStore:
    """Model and dataset records in S3: `{tenant}/{kind}/{id}/record.json` beside the file.

    A record is written last, after the file is complete, so an asset without one is not listed.
    """

    def __init__(self, objects):
        self.objects = objects

    @staticmethod
    def prefix(tenant: str, kind: str, asset_id: str) -> str:
        return f"{tenant}/{kind}/{asset_id}/"

    def file_key(self, tenant: str, kind: str, asset_id: str, filename: str) -> str:
        return self.prefix(tenant, kind, asset_id) + filename

    def save(self, tenant: str, kind: str, record: ModelRecord | DatasetRecord) -> None:
        self.objects.put_json(self.prefix(tenant, kind, record.id) + "record.json", record.model_dump(mode="json"))

    def load(self, tenant: str, kind: str, asset_id: str):
        cls = ModelRecord if kind == "models" else DatasetRecord
        data = None
        if is_id(asset_id, kind[0]):
            data = self.objects.get_json(self.prefix(tenant, kind, asset_id) + "record.json")
        if data is None:
            code = ErrorCode.model_not_found if kind == "models" else ErrorCode.dataset_not_found
            raise NotFound(f"{kind[:-1]} {asset_id} not found", code=code)
        return cls.model_validate(data)

    def list(self, tenant: str, kind: str) -> list:
        """Newest first (ids sort by creation time)."""
        cls = ModelRecord if kind == "models" else DatasetRecord
        records = []
        for asset_id in sorted(self.objects.child_prefixes(f"{tenant}/{kind}/"), reverse=True):
            data = self.objects.get_json(self.prefix(tenant, kind, asset_id) + "record.json")
            if data is not None:
                records.append(cls.model_validate(data))
        return records

    def delete(self, tenant: str, kind: str, asset_id: str) -> None:
        self.load(tenant, kind, asset_id)  # NotFound for unknown ids and other tenants' assets
        # The record goes first so a half-deleted asset is never listed.
        self.objects.client.delete_object(
            Bucket=self.objects.bucket, Key=self.prefix(tenant, kind, asset_id) + "record.json"
        )
        self.objects.delete_prefix(self.prefix(tenant, kind, asset_id))
