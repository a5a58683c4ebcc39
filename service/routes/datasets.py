"""Datasets: `.npz` uploads (arrays named after the model's inputs, optional `labels`)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from core.assets import AssetStore, DatasetRecord
from core.checks.dataset import inspect_npz
from core.ids import new_id, safe_filename
from service.deps import BackendsDep, TenantDep
from service.uploads import Upload, receive_checked

router = APIRouter(tags=["datasets"])
KIND = "datasets"
SOURCE = "data.npz"


@router.post("/datasets", status_code=201, response_model=DatasetRecord)
async def upload_dataset(
    request: Request, tenant: TenantDep, b: BackendsDep, name: str | None = Query(None, max_length=200)
) -> DatasetRecord:
    dataset_id = new_id("d")
    assets = AssetStore(b.objects)
    s = b.settings

    def check(spool: Path, upload: Upload):
        return inspect_npz(spool, s.max_upload_bytes)

    upload, (arrays, split) = await receive_checked(
        request, b.objects, assets.file_key(tenant, KIND, dataset_id, SOURCE), s, check)
    record = DatasetRecord(
        id=dataset_id,
        name=safe_filename(name or upload.fields.get("name") or upload.filename or "dataset", "dataset"),
        size_bytes=upload.size,
        sha256=upload.sha256,
        arrays=arrays,
        split=split,
    )
    await run_in_threadpool(assets.save, tenant, KIND, record)
    return record


@router.get("/datasets", response_model=list[DatasetRecord])
def list_datasets(tenant: TenantDep, b: BackendsDep) -> list[DatasetRecord]:
    return AssetStore(b.objects).list(tenant, KIND)


@router.get("/datasets/{dataset_id}", response_model=DatasetRecord)
def read_dataset(dataset_id: str, tenant: TenantDep, b: BackendsDep) -> DatasetRecord:
    return AssetStore(b.objects).load(tenant, KIND, dataset_id)


@router.delete("/datasets/{dataset_id}", status_code=204)
def delete_dataset(dataset_id: str, tenant: TenantDep, b: BackendsDep) -> Response:
    AssetStore(b.objects).delete(tenant, KIND, dataset_id)
    return Response(status_code=204)
