"""Bus adapters of the messaging service: decode, call one use case, reply; follow auth's users
and node credentials."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import ObjectNotFoundError
from nats.js.object_store import ObjectStore
from prometheus_client import Counter
from pydantic import BaseModel

from fog_messaging import read_models, service, store
from fog_messaging.config import Settings
from fog_messaging.service import MessagingError, files, keys, people
from fog_messaging.timeline_push import TimelinePusher
from fog_shared.bus.broker import queue_group
from fog_shared.bus.topology import FILES_BUCKET
from fog_shared.commands import messaging as contract
from fog_shared.commands.common import RebuildQuery, Refusal
from fog_shared.pg.group_commit import GroupCommit, Stopping
from fog_shared.replay.rebuild import answer_rebuild
from fog_shared.runtime import ServiceRuntime
from fog_shared.telemetry.context import correlation_id
from fog_shared.telemetry.tracing import current_traceparent

log = logging.getLogger(__name__)
UPLOADS_REMOVED = Counter(
    "fog_messaging_uploads_removed_total",
    "Uploads removed before they completed: idle too long, or cancelled by their uploader",
    ["reason"],
)
FILES_DELETED = Counter(
    "fog_messaging_files_deleted_total", "Complete files deleted, by their uploader or a group's owner or admins"
)


UseCase = Callable[[asyncpg.Connection], Awaitable[Any]]
Answer = Callable[[UseCase], Awaitable[dict[str, Any]]]


def pushing_answers(runtime: ServiceRuntime, pusher: TimelinePusher) -> Answer:
    """``runtime.answer``, with the timeline entries the use case commits pushed to the gateways."""

    async def answer(use_case: UseCase) -> dict[str, Any]:
        async def pushed(conn: asyncpg.Connection) -> Any:
            async with pusher.pushing(conn):
                return await use_case(conn)

        return await runtime.answer(pushed)

    return answer


def register(runtime: ServiceRuntime, settings: Settings) -> None:
    pusher = TimelinePusher(runtime.broker, enabled=settings.push_timeline)
    broker, group, answer = runtime.broker, queue_group("messaging"), pushing_answers(runtime, pusher)

    async def send_batch(
        conn: asyncpg.Connection, sendings: Sequence[service.Sending]
    ) -> list[contract.SendReply | service.MessagingError]:
        async with pusher.pushing(conn) as pushing:
            outcomes = await service.send_many(conn, sendings, now=_now())
            # one message entry for each new message, in order (send_many appends them so)
            pushing.messages = [o.message for o in outcomes if isinstance(o, contract.SendReply) and o.created]
        return outcomes

    sends = GroupCommit(lambda: runtime.pool, send_batch, max_batch=settings.send_batch_max)
    runtime.in_background("send-group-commit", sends.run)

    # Many sends in flight at once, so that those arriving during a commit share the next one.
    @broker.subscriber(contract.SEND, queue=group, title="send", max_workers=settings.send_batch_max)
    async def send(body: contract.SendCommand) -> dict[str, Any]:
        origin = (correlation_id(), *current_traceparent())
        try:
            outcome = await sends.submit(service.Sending(body, origin))
        except Stopping:
            return _STOPPING.reply()
        return _reply_of(outcome)

    @broker.subscriber(contract.EDIT, queue=group, title="edit")
    async def edit(body: contract.EditCommand) -> dict[str, Any]:
        return await answer(lambda conn: service.edit(conn, body, now=_now()))

    @broker.subscriber(contract.DELETE, queue=group, title="delete")
    async def delete(body: contract.MessageCommand) -> dict[str, Any]:
        return await answer(lambda conn: service.delete(conn, body, now=_now()))

    @broker.subscriber(contract.LIST_MESSAGES, queue=group, title="list_messages")
    async def list_messages(body: contract.ListMessagesQuery) -> dict[str, Any]:
        return await answer(lambda conn: service.list_messages(conn, body))

    @broker.subscriber(contract.SEARCH_MESSAGES, queue=group, title="search_messages")
    async def search_messages(body: contract.SearchMessagesQuery) -> dict[str, Any]:
        return await answer(lambda conn: service.search_messages(conn, body))

    @broker.subscriber(contract.LIST_CONVERSATIONS, queue=group, title="list_conversations")
    async def list_conversations(body: contract.ByQuery) -> dict[str, Any]:
        return await answer(lambda conn: service.list_conversations(conn, body))

    @broker.subscriber(contract.GET_CONVERSATION, queue=group, title="get_conversation")
    async def get_conversation(body: contract.ConversationQuery) -> dict[str, Any]:
        return await answer(lambda conn: service.get_conversation(conn, body))

    register_groups(runtime, answer)
    register_keys(runtime, answer)
    register_files(runtime, answer, settings)

    @broker.subscriber(contract.RECORD_RECEIPT, queue=group, title="record_receipt")
    async def record_receipt(body: contract.ReceiptCommand) -> dict[str, Any]:
        return await answer(lambda conn: service.record_receipt(conn, body, now=_now()))

    @broker.subscriber(contract.LIST_RECEIPTS, queue=group, title="list_receipts")
    async def list_receipts(body: contract.ConversationQuery) -> dict[str, Any]:
        return await answer(lambda conn: service.list_receipts(conn, body))

    @broker.subscriber(contract.SYNC, queue=group, title="sync")
    async def sync(body: contract.SyncQuery) -> dict[str, Any]:
        return await answer(lambda conn: service.sync(conn, body, catch_up_max=settings.sync_catch_up_max))

    @broker.subscriber(contract.SYNC_MANY, queue=group, title="sync_many", max_workers=SYNC_MANY_WORKERS)
    async def sync_many(body: contract.SyncManyQuery) -> dict[str, Any]:
        async with runtime.pool.acquire() as conn:
            found = await service.sync_many(conn, body.queries, catch_up_max=settings.sync_catch_up_max)
        entries = [entry.model_dump(mode="json") for entry in found.entries.values()]
        return {"entries": entries, "replies": [_reply_of(part) for part in found.parts]}

    for model in read_models.READ_MODELS:
        runtime.consume(model.consumer, model.project)

    @broker.subscriber(contract.REBUILD, queue=group, title="rebuild")
    async def rebuild_read_model(body: RebuildQuery) -> dict[str, Any]:
        return await answer_rebuild(runtime, read_models.READ_MODELS, body)  # rolled back: nothing to push

    runtime.in_background("timeline-retention", lambda: _keep_retention(runtime, settings))


#: a gateway asks one sync_many at a time or two; more replicas answer more gateways
SYNC_MANY_WORKERS = 4
_STOPPING = MessagingError("service_unavailable", "the messaging service is stopping; send again", retry_after_s=1)


def _reply_of(outcome: BaseModel | Refusal) -> dict[str, Any]:
    if isinstance(outcome, Refusal):
        return outcome.reply()
    dumped: dict[str, Any] = outcome.model_dump(mode="json")
    return dumped


def register_groups(runtime: ServiceRuntime, answer: Answer) -> None:
    broker, group = runtime.broker, queue_group("messaging")

    @broker.subscriber(contract.CREATE_GROUP, queue=group, title="create_group")
    async def create_group(body: contract.CreateGroupCommand) -> dict[str, Any]:
        return await answer(lambda conn: service.create_group(conn, body, now=_now()))

    @broker.subscriber(contract.ADD_MEMBER, queue=group, title="add_member")
    async def add_member(body: contract.AddMemberCommand) -> dict[str, Any]:
        return await answer(lambda conn: service.add_member(conn, body, now=_now()))

    @broker.subscriber(contract.REMOVE_MEMBER, queue=group, title="remove_member")
    async def remove_member(body: contract.RemoveMemberCommand) -> dict[str, Any]:
        return await answer(lambda conn: service.remove_member(conn, body, now=_now()))

    @broker.subscriber(contract.SET_ROLE, queue=group, title="set_role")
    async def set_role(body: contract.SetRoleCommand) -> dict[str, Any]:
        return await answer(lambda conn: service.set_role(conn, body, now=_now()))

    @broker.subscriber(contract.TRANSFER, queue=group, title="transfer")
    async def transfer(body: contract.TransferCommand) -> dict[str, Any]:
        return await answer(lambda conn: service.transfer(conn, body, now=_now()))


def register_keys(runtime: ServiceRuntime, answer: Answer) -> None:
    broker, group = runtime.broker, queue_group("messaging")

    @broker.subscriber(contract.PUBLISH_KEYS, queue=group, title="publish_keys")
    async def publish_keys(body: contract.PublishKeysCommand) -> dict[str, Any]:
        return await answer(lambda conn: keys.publish(conn, body, now=_now()))

    @broker.subscriber(contract.FIND_PERSON, queue=group, title="find_person")
    async def find_person(body: contract.FindPersonQuery) -> dict[str, Any]:
        return await answer(lambda conn: people.find(conn, body))

    @broker.subscriber(contract.USER_KEYS, queue=group, title="user_keys")
    async def user_keys(body: contract.UserKeysQuery) -> dict[str, Any]:
        return await answer(lambda conn: keys.user_keys(conn, body))

    @broker.subscriber(contract.CLAIM_PREKEY, queue=group, title="claim_prekey")
    async def claim_prekey(body: contract.ClaimPrekeyCommand) -> dict[str, Any]:
        return await answer(lambda conn: keys.claim(conn, body, now=_now()))


class JetStreamObjects:
    """File chunks in the JetStream object store (provisioned with the streams)."""

    def __init__(self, js: Callable[[], JetStreamContext]) -> None:
        """``js``: the service's JetStream context, once it is connected."""
        self._js = js
        self._store: ObjectStore | None = None

    async def _bucket(self) -> ObjectStore:
        if self._store is None:
            self._store = await self._js().object_store(FILES_BUCKET)
        return self._store

    async def put(self, name: str, data: bytes) -> None:
        await (await self._bucket()).put(name, data)

    async def get(self, name: str) -> bytes:
        try:
            found = await (await self._bucket()).get(name)
        except ObjectNotFoundError:
            raise files.ChunkMissing(name) from None
        return bytes(found.data or b"")

    async def delete(self, name: str) -> None:
        with contextlib.suppress(ObjectNotFoundError):  # gone already (a replica removed it too)
            await (await self._bucket()).delete(name)


def register_files(runtime: ServiceRuntime, answer: Answer, settings: Settings) -> None:
    broker, group = runtime.broker, queue_group("messaging")
    objects = JetStreamObjects(lambda: runtime.js)

    @broker.subscriber(contract.START_UPLOAD, queue=group, title="start_upload")
    async def start_upload(body: contract.StartUploadCommand) -> dict[str, Any]:
        limits = {"open_max": settings.uploads_open_max, "bytes_max": settings.files_bytes_max_per_member}
        return await answer(lambda conn: files.start(conn, body, now=_now(), **limits))

    @broker.subscriber(contract.PUT_CHUNK, queue=group, title="put_chunk")
    async def put_chunk(body: contract.ChunkCommand) -> dict[str, Any]:
        return await answer(lambda conn: files.put_chunk(conn, objects, body, now=_now()))

    @broker.subscriber(contract.REMOVE_FILE, queue=group, title="remove_file")
    async def remove_file(body: contract.FileQuery) -> dict[str, Any]:
        async def removed(conn: asyncpg.Connection) -> None:
            gone = await files.remove(conn, body, now=_now())
            (UPLOADS_REMOVED.labels("cancelled") if gone.what == "cancelled" else FILES_DELETED).inc()
            try:  # its own chunks alone: a backlog of removals is the sweep's
                await files.remove_chunks_of(conn, objects, gone.file_id, gone.chunks)
            except (OSError, NatsError, asyncpg.PostgresError):
                log.warning("could not delete a removed file's chunks; the next sweep will", exc_info=True)

        return await answer(removed)

    @broker.subscriber(contract.COMPLETE_UPLOAD, queue=group, title="complete_upload")
    async def complete_upload(body: contract.FileQuery) -> dict[str, Any]:
        return await answer(lambda conn: files.complete(conn, objects, body, now=_now()))

    @broker.subscriber(contract.GET_FILE, queue=group, title="get_file")
    async def get_file(body: contract.FileQuery) -> dict[str, Any]:
        return await answer(lambda conn: files.get_file(conn, body))

    @broker.subscriber(contract.LIST_UPLOADS, queue=group, title="list_uploads")
    async def list_uploads(body: contract.ByQuery) -> dict[str, Any]:
        return await answer(lambda conn: files.list_uploads(conn, body))

    @broker.subscriber(contract.LIST_FILES, queue=group, title="list_files")
    async def list_files(body: contract.ListFilesQuery) -> dict[str, Any]:
        return await answer(lambda conn: files.list_files(conn, body))

    @broker.subscriber(contract.READ_CHUNK, queue=group, title="read_chunk")
    async def read_chunk(body: contract.ReadChunkQuery) -> dict[str, Any]:
        return await answer(lambda conn: files.read_chunk(conn, objects, body))

    runtime.in_background("idle-uploads", lambda: _remove_idle_uploads(runtime, objects, settings))


async def _remove_idle_uploads(runtime: ServiceRuntime, objects: files.Objects, settings: Settings) -> None:
    """Now and then, remove uploads idle for ``upload_idle_s`` and remove their chunks (every replica may)."""
    while True:
        try:
            async with runtime.pool.acquire() as conn:
                removed = await files.remove_idle_uploads(conn, objects, now=_now(), idle_s=settings.upload_idle_s)
            if removed:
                UPLOADS_REMOVED.labels("idle").inc(removed)
                log.info("removed %d uploads idle for %.0f s", removed, settings.upload_idle_s)
        except (OSError, NatsError, asyncpg.PostgresError):
            log.warning("removing idle uploads failed; trying again later", exc_info=True)
        await asyncio.sleep(settings.upload_sweep_every_s)  # a period, not a synchronisation


async def _keep_retention(runtime: ServiceRuntime, settings: Settings) -> None:
    """Drop timeline entries past retention, now and then (every replica may: it is idempotent)."""
    while True:
        try:
            async with runtime.pool.acquire() as conn:
                cutoff = _now() - timedelta(seconds=settings.timeline_retention_s)
                await store.prune_timeline(conn, cutoff)
        except (OSError, asyncpg.PostgresError):
            log.warning("timeline retention failed; trying again later", exc_info=True)
        await asyncio.sleep(settings.timeline_prune_every_s)  # a period, not a synchronisation


def _now() -> datetime:
    return datetime.now(UTC)
