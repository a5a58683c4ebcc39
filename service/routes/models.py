"""Models: upload (streamed to S3, checked before it is listed), list, read, delete."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from core.assets import AssetStore, ModelRecord
from core.checks.model import inspect_model
from core.errors import ErrorCode, InvalidModel
from core.ids import new_id, safe_filename
from service.deps import BackendsDep, TenantDep
from service.uploads import Upload, receive_checked

router = APIRouter(tags=["models"])
KIND = "models"
SOURCE = "model"  # the uploaded file's name inside the model's folder


def _format(declared: str | None, upload: Upload, spool: Path) -> str:
    declared = declared or upload.fields.get("format")
    if not declared and upload.filename:
        declared = "pt2" if upload.filename.endswith(".pt2") else "onnx"
    if not declared:
        with open(spool, "rb") as f:
            declared = "pt2" if f.read(2) == b"PK" else "onnx"
    if declared not in ("onnx", "pt2"):
        raise InvalidModel(f"format must be 'onnx' or 'pt2', not {declared!r}", code=ErrorCode.invalid_format)
    return declared


@router.post("/models", status_code=201, response_model=ModelRecord)
async def upload_model(
    request: Request,
    tenant: TenantDep,
    b: BackendsDep,
    name: str | None = Query(None, max_length=200),
    format: Literal["onnx", "pt2"] | None = Query(None),
) -> ModelRecord:
    """Raw body (`application/octet-stream`, `?name=&format=`) or multipart/form-data with a `file` part."""
    model_id = new_id("m")
    assets = AssetStore(b.objects)
    key = assets.file_key(tenant, KIND, model_id, SOURCE)

    def check(spool: Path, upload: Upload):
        fmt = _format(format, upload, spool)
        return fmt, inspect_model(spool, fmt, b.settings)

    s = b.settings
    upload, (fmt, summary) = await receive_checked(request, b.objects, key, s, check)
    record = ModelRecord(
        id=model_id,
        name=safe_filename(name or upload.fields.get("name") or upload.filename or "model"),
        format=fmt,
        size_bytes=upload.size,
        sha256=upload.sha256,
        **summary,
    )
    await run_in_threadpool(assets.save, tenant, KIND, record)
    return record


@router.get("/models", response_model=list[ModelRecord])
def list_models(tenant: TenantDep, b: BackendsDep) -> list[ModelRecord]:
    return AssetStore(b.objects).list(tenant, KIND)


@router.get("/models/{model_id}", response_model=ModelRecord)
def read_model(model_id: str, tenant: TenantDep, b: BackendsDep) -> ModelRecord:
    return AssetStore(b.objects).load(tenant, KIND, model_id)


@router.delete("/models/{model_id}", status_code=204)
def delete_model(model_id: str, tenant: TenantDep, b: BackendsDep) -> Response:
    AssetStore(b.objects).delete(tenant, KIND, model_id)
    return Response(status_code=204)
