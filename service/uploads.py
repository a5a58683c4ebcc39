"""Streaming uploads: the request body goes to S3 part by part and to a spool file on disk for checking.

The body is never held in memory whole: at most one S3 part (8 MiB) plus one batch of received chunks.
The size limit is enforced from Content-Length before reading and again while streaming (413 as soon as
the limit is crossed). Nothing is visible in S3 until `Upload.commit()`; a failed check aborts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from core.errors import ErrorCode, InvalidInput, PayloadTooLarge
from core.objectstore import PART_SIZE, MultipartWriter, ObjectStore
from core.settings import Settings

BATCH = 4 * 1024 * 1024  # hand the S3 writer this much at a time
_PART_SENDERS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="s3-part")


class PipelinedWriter(MultipartWriter):
    """A MultipartWriter that sends parts in the background while the next ones are received: at most
    IN_FLIGHT parts on their way, so memory stays near IN_FLIGHT + 1 parts and receiving and sending
    overlap. Chunks are joined once into a part (parts may differ in size; S3 wants >= 5 MiB for all but
    the last), never re-copied."""

    IN_FLIGHT = 2

    def __init__(self, store: ObjectStore, key: str, content_type: str = "application/octet-stream"):
        super().__init__(store, key, content_type)
        self.in_flight: deque[Future] = deque()
        self.chunks: list[bytes] = []
        self.pending = 0

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self.sha256.update(chunk)
        self.chunks.append(chunk)
        self.pending += len(chunk)
        if self.pending >= PART_SIZE:
            self._send(self._take())

    def _take(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks, self.pending = [], 0
        return data

    def _send(self, data: bytes) -> None:
        c = self.store.client
        if self.upload_id is None:
            self.upload_id = c.create_multipart_upload(
                Bucket=self.store.bucket, Key=self.key, ContentType=self.content_type)["UploadId"]
        while len(self.in_flight) >= self.IN_FLIGHT:
            self._collect(self.in_flight.popleft())
        number = len(self.parts) + len(self.in_flight) + 1  # numbered in the order received

        def send() -> dict:
            etag = c.upload_part(Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id,
                                 PartNumber=number, Body=data)["ETag"]
            return {"ETag": etag, "PartNumber": number}

        self.in_flight.append(_PART_SENDERS.submit(send))

    def _collect(self, future: Future) -> None:
        self.parts.append(future.result())  # raises the part's error, if it failed

    def wait(self) -> None:
        """Waits for every part on its way."""
        while self.in_flight:
            self._collect(self.in_flight.popleft())

    def complete(self) -> None:
        if self.upload_id is not None and self.pending:
            self._send(self._take())
        self.wait()
        self.buffer = bytearray(self._take())  # small uploads: the base class puts it whole
        super().complete()

    def abort(self) -> None:
        try:
            self.wait()
        except Exception:
            pass  # the upload is being thrown away
        self.chunks, self.pending = [], 0
        super().abort()


@dataclass
class Upload:
    """A body received into S3 (uncommitted) and a local spool file."""

    writer: MultipartWriter
    spool: Path
    fields: dict[str, str] = field(default_factory=dict)  # multipart form fields other than `file`
    filename: str | None = None

    @property
    def size(self) -> int:
        return self.writer.size

    @property
    def sha256(self) -> str:
        return self.writer.sha256.hexdigest()

    async def commit(self) -> None:
        await run_in_threadpool(self.writer.complete)

    async def discard(self) -> None:
        await run_in_threadpool(self.writer.abort)

    def close(self) -> None:
        self.spool.unlink(missing_ok=True)


class _Sink:
    """Feeds chunks to the S3 writer and the spool file, in batches, off the event loop; one batch is
    written (hashed, spooled, sent) while the next one is received."""

    def __init__(self, writer: MultipartWriter, spool, limit: int):
        self.writer, self.spool, self.limit = writer, spool, limit
        self.pending: list[bytes] = []  # chunks as received: handed on without copying
        self.pending_bytes = 0
        self.received = 0
        self.writing: asyncio.Future | None = None

    async def feed(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.received > self.limit:
            raise PayloadTooLarge(f"the upload is larger than the limit of {self.limit} bytes")
        self.pending.append(chunk)
        self.pending_bytes += len(chunk)
        if self.pending_bytes >= BATCH:
            await self.flush()

    async def flush(self) -> None:
        if self.pending:
            data, self.pending, self.pending_bytes = self.pending, [], 0
            await self.settle()
            self.writing = asyncio.ensure_future(run_in_threadpool(self._write, data))

    async def settle(self) -> None:
        """Waits for the batch being written (raising its error, if it failed)."""
        if self.writing is not None:
            writing, self.writing = self.writing, None
            await writing

    def _write(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self.spool.write(chunk)
            self.writer.write(chunk)


async def receive(request: Request, store: ObjectStore, key: str, limit: int, spool_dir: Path,
                  max_fields: int) -> Upload:
    """Streams the request body (raw, or the `file` part of multipart/form-data) to `key`."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise PayloadTooLarge(f"the upload ({declared} bytes) is larger than the limit of {limit} bytes")
    spool_dir.mkdir(parents=True, exist_ok=True)
    fd, spool_name = tempfile.mkstemp(prefix="upload-", dir=spool_dir)
    writer = PipelinedWriter(store, key)
    upload = Upload(writer=writer, spool=Path(spool_name))
    sink = None
    try:
        with os.fdopen(fd, "wb") as spool:
            sink = _Sink(writer, spool, limit)
            content_type, options = parse_options_header(request.headers.get("content-type"))
            if content_type == b"multipart/form-data":
                await _receive_multipart(request, sink, options.get(b"boundary"), upload, max_fields)
            else:
                async for chunk in request.stream():
                    await sink.feed(chunk)
            await sink.flush()
            await sink.settle()
        if upload.size == 0:
            raise InvalidInput("the upload is empty", code=ErrorCode.empty_upload)
        return upload
    except BaseException:
        if sink is not None:
            with contextlib.suppress(BaseException):
                await sink.settle()  # the writer is not to be touched while a batch is on its way
        await upload.discard()
        upload.close()
        raise


async def _receive_multipart(request: Request, sink: _Sink, boundary: bytes | None, upload: Upload,
                             max_fields: int):
    if not boundary:
        raise InvalidInput("multipart/form-data without a boundary", code=ErrorCode.invalid_multipart)
    state = {"header": b"", "value": b"", "headers": {}, "name": None, "data": bytearray()}
    file_chunks: list[bytes] = []  # parser callbacks are sync; the chunks are fed after each parse

    def on_header_field(data, start, end):
        state["header"] += data[start:end]

    def on_header_value(data, start, end):
        state["value"] += data[start:end]

    def on_header_end():
        state["headers"][state["header"].lower()] = state["value"]
        state["header"], state["value"] = b"", b""

    def on_headers_finished():
        _, opts = parse_options_header(state["headers"].get(b"content-disposition", b""))
        state["name"] = opts.get(b"name", b"").decode("utf-8", "replace")
        if state["name"] == "file":
            upload.filename = opts.get(b"filename", b"").decode("utf-8", "replace") or None
        state["data"] = bytearray()

    def on_part_data(data, start, end):
        if state["name"] == "file":
            file_chunks.append(bytes(data[start:end]))
        elif len(state["data"]) < 4096:  # small text fields only
            state["data"] += data[start:end]

    def on_part_end():
        if state["name"] and state["name"] != "file":
            upload.fields[state["name"]] = state["data"].decode("utf-8", "replace")
            if len(upload.fields) > max_fields:
                raise InvalidInput(f"the form has more than {max_fields} fields besides 'file' "
                                   "(PARETO_MAX_FORM_FIELDS)", code=ErrorCode.too_many_form_fields)
        state["headers"], state["name"] = {}, None

    parser = MultipartParser(
        boundary,
        {
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    raw = 0
    async for chunk in request.stream():
        raw += len(chunk)
        if raw > sink.limit + 1024 * 1024:  # the form's other fields count too
            raise PayloadTooLarge(f"the upload is larger than the limit of {sink.limit} bytes")
        try:
            parser.write(chunk)
        except InvalidInput:
            raise
        except Exception as e:  # the parser's errors are the client's malformed body
            raise InvalidInput(f"malformed multipart body: {e}", code=ErrorCode.invalid_multipart) from e
        for part in file_chunks:
            await sink.feed(part)
        file_chunks.clear()
    parser.finalize()
    if upload.filename is None and sink.received == 0:
        raise InvalidInput("multipart upload without a 'file' part", code=ErrorCode.invalid_multipart)


async def receive_checked(request: Request, store: ObjectStore, key: str, settings: Settings, check):
    """Receives the body to `key`, runs `check(spool_path, upload)` off the event loop, and commits the
    object only if the check passes. Returns (upload, what check returned)."""
    upload = await receive(request, store, key, settings.max_upload_bytes, settings.data_dir / "spool",
                           settings.max_form_fields)
    try:
        result = await run_in_threadpool(check, upload.spool, upload)
        await upload.commit()
        return upload, result
    except BaseException:
        await upload.discard()
        raise
    finally:
        upload.close()
