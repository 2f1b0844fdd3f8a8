"""BitChat files: ``POST /v1/conversations/{id}/files`` announces one, ``PUT /v1/files/{id}/chunks/{n}``
sends its chunks (raw bytes with their SHA-256 in ``X-Chunk-SHA256``; after a drop, send the
``missing`` ones), ``POST .../complete`` checks the whole, ``GET .../content`` downloads it (with
``Range``), ``DELETE /v1/files/{id}`` cancels an upload under way or deletes a file, ``GET /v1/uploads`` lists yours,
``GET /v1/conversations/{id}/files`` a conversation's complete ones. Only the conversation's members see a file."""

import base64
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse

from fog_gateway.authz import PEOPLE, Authorizer
from fog_gateway.byte_range import Unsatisfiable, parse_range
from fog_gateway.calls import ServiceCalls
from fog_gateway.problems import GUARDED_ERRORS, Problem, documented
from fog_gateway.routes.conversations import ConversationIdPath
from fog_gateway.security import Principal
from fog_gateway.tolerant import RepliesReadTolerantly, read
from fog_shared.commands import messaging as contract

FileIdPath = Annotated[str, Path(max_length=64)]
ChunkIndexPath = Annotated[int, Path(ge=0, lt=contract.MAX_CHUNKS)]
Sha256Header = Annotated[str, Header(alias="X-Chunk-SHA256", pattern=r"^[0-9a-f]{64}$")]
BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
CHUNK_BODY = {"requestBody": {"required": True, "content": BINARY}}
CONTENT: dict[int | str, dict[str, Any]] = {
    200: {"description": "the whole file", "content": BINARY},
    206: {"description": "the range asked for", "content": BINARY},
}


def build_router(calls: ServiceCalls, authz: Authorizer) -> APIRouter:
    router = APIRouter(route_class=RepliesReadTolerantly, prefix="/v1", tags=["messaging"], responses=GUARDED_ERRORS)
    Person = Annotated[Principal, Depends(authz.allow(PEOPLE))]

    @router.post(
        "/conversations/{conversation_id}/files", status_code=201, response_model=contract.FileView,
        responses=documented(404, 409),
    )  # fmt: skip
    async def start_upload(
        conversation_id: ConversationIdPath, body: contract.FileUploadRequest, me: Person
    ) -> dict[str, Any]:
        """Announce a file (name, size, SHA-256); then send its chunks of ``chunk_size`` bytes. 409
        ``too_many_uploads`` when you have too many under way (16 unless set): complete one, or cancel one, first."""
        command = contract.StartUploadCommand(by=me, conversation_id=conversation_id, upload=body)
        return await calls.ask(contract.START_UPLOAD, command)

    @router.get("/conversations/{conversation_id}/files", response_model=contract.FilePage, responses=documented(404))
    async def list_files(
        conversation_id: ConversationIdPath,
        me: Person,
        cursor: Annotated[str | None, Query(max_length=128)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> dict[str, Any]:
        """The conversation's complete files, the last completed first; ``next_cursor`` asks for the next page."""
        query = contract.ListFilesQuery(by=me, conversation_id=conversation_id, cursor=cursor, limit=limit)
        return await calls.ask(contract.LIST_FILES, query)

    @router.get("/uploads", response_model=contract.UploadList)
    async def list_uploads(me: Person) -> dict[str, Any]:
        """Your uploads under way, newest first, each with the chunks it misses: resume one (send those), or
        cancel it (``DELETE /v1/files/{id}``)."""
        return await calls.ask(contract.LIST_UPLOADS, contract.ByQuery(by=me))

    @router.get("/files/{file_id}", response_model=contract.FileView, responses=documented(404))
    async def get_file(file_id: FileIdPath, me: Person) -> dict[str, Any]:
        """A file's details; while uploading, the chunks still ``missing``."""
        return await calls.ask(contract.GET_FILE, contract.FileQuery(by=me, file_id=file_id))

    @router.put(
        "/files/{file_id}/chunks/{index}", response_model=contract.FileView, responses=documented(404, 409),
        openapi_extra=CHUNK_BODY,
    )  # fmt: skip
    async def put_chunk(
        file_id: FileIdPath, index: ChunkIndexPath, sha256: Sha256Header, request: Request, me: Person
    ) -> dict[str, Any]:
        """One chunk, as raw bytes; refused (422) when it does not match ``X-Chunk-SHA256``."""
        data = await request.body()
        if len(data) > contract.CHUNK_BYTES:
            raise Problem(413, "Chunk too large", f"a chunk is at most {contract.CHUNK_BYTES} bytes", code="too_large")
        command = contract.ChunkCommand(
            by=me, file_id=file_id, index=index, sha256=sha256, data=base64.b64encode(data).decode()
        )
        return await calls.ask(contract.PUT_CHUNK, command)

    @router.post("/files/{file_id}/complete", response_model=contract.FileView, responses=documented(404, 409))
    async def complete_upload(file_id: FileIdPath, me: Person) -> dict[str, Any]:
        """All chunks are in: check the file's SHA-256 and make it available to the members."""
        return await calls.ask(contract.COMPLETE_UPLOAD, contract.FileQuery(by=me, file_id=file_id))

    @router.delete("/files/{file_id}", status_code=204, response_class=Response, responses=documented(403, 404))
    async def remove_file(file_id: FileIdPath, me: Person) -> Response:
        """Cancel an upload under way (yours), or delete a complete file (yours, or any in a group you own or
        administer): it is gone, and its bytes with it. The conversation's members get a ``file_deleted`` entry.
        An upload that has had no chunk for a day is removed by itself."""
        await calls.ask(contract.REMOVE_FILE, contract.FileQuery(by=me, file_id=file_id))
        return Response(status_code=204)

    @router.get("/files/{file_id}/content", response_class=Response, responses={**CONTENT, **documented(404, 416)})
    async def download(
        file_id: FileIdPath, me: Person, range_header: Annotated[str | None, Header(alias="Range")] = None
    ) -> Response:
        """The file's bytes; ``Range: bytes=first-last`` (or ``-n``, ``first-``) for a part of it."""
        found = read(contract.FileView, await calls.ask(contract.GET_FILE, contract.FileQuery(by=me, file_id=file_id)))
        if found.status != "complete":
            raise Problem(404, "Not found", "the file is not uploaded yet", code="not_found")
        try:
            wanted = parse_range(range_header, found.size)
        except Unsatisfiable as exc:
            raise Problem(
                416, "Range not satisfiable", str(exc), code="range_not_satisfiable",
                headers={"Content-Range": f"bytes */{found.size}"},
            ) from None  # fmt: skip
        first, last = wanted if wanted is not None else (0, found.size - 1)
        headers = {
            "Accept-Ranges": "bytes", "Content-Length": str(last - first + 1), "ETag": f'"{found.sha256}"',
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(found.name, safe='')}",
        }  # fmt: skip
        if wanted is not None:
            headers["Content-Range"] = f"bytes {first}-{last}/{found.size}"
        body = _chunks(calls, me, found, first, last)
        return StreamingResponse(
            body, status_code=206 if wanted else 200, media_type="application/octet-stream", headers=headers
        )

    return router


async def _chunks(
    calls: ServiceCalls, me: Principal, found: contract.FileView, first: int, last: int
) -> AsyncIterator[bytes]:
    """Bytes ``first`` to ``last`` of the file, asked of the service one chunk at a time."""
    size = found.chunk_size
    for index in range(first // size, last // size + 1):
        query = contract.ReadChunkQuery(by=me, file_id=found.id, index=index)
        data = base64.b64decode((await calls.ask(contract.READ_CHUNK, query))["data"])
        start = first - index * size if index == first // size else 0
        end = last - index * size + 1 if index == last // size else len(data)
        yield data[start:end]
