"""The object store: S3 (or any S3-compatible server) through boto3.

Layout: {tenant}/models/{id}/..., {tenant}/datasets/{id}/..., {tenant}/jobs/{id}/job.json,
{tenant}/jobs/{id}/artifacts/..., {tenant}/jobs/{id}/report.json. Keys are built by the helpers below
from validated tenants and ids only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from core.errors import Unavailable
from core.retry import Backoff, RetryingClient
from core.settings import Settings

PART_SIZE = 8 * 1024 * 1024  # S3 needs >= 5 MiB for every part but the last


def model_prefix(tenant: str, model_id: str) -> str:
    return f"{tenant}/models/{model_id}/"


def dataset_prefix(tenant: str, dataset_id: str) -> str:
    return f"{tenant}/datasets/{dataset_id}/"


def job_prefix(tenant: str, job_id: str) -> str:
    return f"{tenant}/jobs/{job_id}/"


class ObjectStore:
    def __init__(self, settings: Settings, retry_s: float | None = None):
        """`retry_s`: how long transient S3 errors are retried (default PARETO_WORKER_RETRY_S)."""
        self.settings = settings
        self.bucket = settings.s3_bucket
        self.backoff = Backoff(settings.worker_retry_s if retry_s is None else retry_s)

    @cached_property
    def client(self):
        return RetryingClient(self._client(self.settings.s3_endpoint_url), self.backoff)

    @cached_property
    def presigner(self):
        """Signs URLs for the host clients reach (S3_PUBLIC_ENDPOINT_URL), which may differ from ours."""
        return self._client(self.settings.s3_public_endpoint_url or self.settings.s3_endpoint_url)

    def _client(self, endpoint_url: str | None):
        s = self.settings
        return boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=s.s3_region,
            aws_access_key_id=s.s3_access_key,
            aws_secret_access_key=s.s3_secret_key,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                retries={"max_attempts": 4, "mode": "standard"},
                connect_timeout=5,
                read_timeout=60,
            ),
        )

    # -- bucket and health
    def ensure_bucket(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)

    def ping(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as e:
            raise Unavailable(f"object store: {e}") from e

    # -- whole objects
    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def put_json(self, key: str, value) -> None:
        self.put_bytes(key, json.dumps(value, default=str).encode(), "application/json")

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as e:
            if e.response["Error"]["Code"] in ("NoSuchKey", "404"):
                return None
            raise

    def get_json(self, key: str):
        data = self.get_bytes(key)
        return None if data is None else json.loads(data)

    def upload_file(self, key: str, path: Path, content_type: str = "application/octet-stream") -> str:
        """Uploads a file (multipart when large), its sha256 kept as metadata; returns the sha256."""
        sha256 = file_sha256(path)
        self.client.upload_file(str(path), self.bucket, key,
                                ExtraArgs={"ContentType": content_type, "Metadata": {"sha256": sha256}})
        return sha256

    def copy(self, source: str, key: str) -> tuple[int, str]:
        """A server-side copy; returns the (size, sha256) recorded when the source was uploaded."""
        self.client.copy_object(Bucket=self.bucket, Key=key, CopySource={"Bucket": self.bucket, "Key": source},
                                MetadataDirective="COPY")
        head = self.client.head_object(Bucket=self.bucket, Key=key)
        return head["ContentLength"], head.get("Metadata", {}).get("sha256", "")

    def download_file(self, key: str, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.client.download_file(self.bucket, key, str(path))
        return path

    def size(self, key: str) -> int | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"]
        except ClientError:
            return None

    # -- listing and deleting
    def child_prefixes(self, prefix: str) -> Iterator[str]:
        """The 'folders' right under prefix, e.g. the model ids under {tenant}/models/."""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix, Delimiter="/"
        )
        for page in pages:
            for p in page.get("CommonPrefixes", []):
                yield p["Prefix"][len(prefix) :].rstrip("/")

    def keys(self, prefix: str) -> Iterator[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                yield obj["Key"]

    def delete_prefix(self, prefix: str) -> int:
        keys = list(self.keys(prefix))
        for i in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[i : i + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        return len(keys)

    # -- presigned download
    def presigned_get(self, key: str, filename: str, ttl_s: int) -> tuple[str, datetime]:
        url = self.presigner.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": key,
                "ResponseContentDisposition": f'attachment; filename="{filename}"',
            },
            ExpiresIn=ttl_s,
        )
        return url, datetime.now(UTC) + timedelta(seconds=ttl_s)

    # -- streaming upload
    def writer(self, key: str, content_type: str = "application/octet-stream") -> MultipartWriter:
        return MultipartWriter(self, key, content_type)


class MultipartWriter:
    """Streams chunks to one object, PART_SIZE at a time, holding at most one part in memory.

    Nothing is visible under `key` until `complete()`; `abort()` discards the parts.
    """

    def __init__(self, store: ObjectStore, key: str, content_type: str):
        self.store, self.key, self.content_type = store, key, content_type
        self.buffer = bytearray()
        self.parts: list[dict] = []
        self.upload_id: str | None = None
        self.size = 0
        self.sha256 = hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self.sha256.update(chunk)
        self.buffer += chunk
        while len(self.buffer) >= PART_SIZE:
            self._send(bytes(self.buffer[:PART_SIZE]))
            del self.buffer[:PART_SIZE]

    def _send(self, data: bytes) -> None:
        c, bucket = self.store.client, self.store.bucket
        if self.upload_id is None:
            self.upload_id = c.create_multipart_upload(
                Bucket=bucket, Key=self.key, ContentType=self.content_type
            )["UploadId"]
        number = len(self.parts) + 1
        etag = c.upload_part(
            Bucket=bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=data
        )["ETag"]
        self.parts.append({"ETag": etag, "PartNumber": number})

    def complete(self) -> None:
        c, bucket = self.store.client, self.store.bucket
        if self.upload_id is None:  # small: one plain put
            c.put_object(Bucket=bucket, Key=self.key, Body=bytes(self.buffer), ContentType=self.content_type)
        else:
            if self.buffer:
                self._send(bytes(self.buffer))
            c.complete_multipart_upload(
                Bucket=bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": self.parts}
            )
        self.buffer = bytearray()

    def abort(self) -> None:
        self.buffer = bytearray()
        if self.upload_id is not None:
            try:
                self.store.client.abort_multipart_upload(
                    Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id
                )
            except (BotoCoreError, ClientError, Unavailable):
                pass  # the server expires abandoned uploads; nothing was made visible


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
