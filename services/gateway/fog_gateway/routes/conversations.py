"""``/v1/conversations``: direct and group conversations, their messages and receipts (BitChat).

The sender of a message is always the caller: bodies cannot name one. A node credential may
message its owner only (``POST /v1/conversations/direct/{owner_id}/messages``, or ``direct/owner/messages``).
"""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response

from fog_gateway.authz import NODES, PEOPLE, Authorizer
from fog_gateway.calls import ServiceCalls
from fog_gateway.problems import GUARDED_ERRORS, documented
from fog_gateway.security import Principal
from fog_gateway.tolerant import RepliesReadTolerantly
from fog_shared.commands import messaging as contract

ConversationIdPath = Annotated[str, Path(max_length=64)]
MemberIdPath = Annotated[str, Path(pattern=r"^(node:)?[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
SeqPath = Annotated[int, Path(ge=1, le=2**53)]
SENT: dict[int | str, dict[str, Any]] = {
    200: {"model": contract.MessageView, "description": "sent before with this client_msg_id"}
}


def build_router(calls: ServiceCalls, authz: Authorizer) -> APIRouter:
    router = APIRouter(
        route_class=RepliesReadTolerantly, prefix="/v1/conversations", tags=["messaging"], responses=GUARDED_ERRORS
    )
    Person = Annotated[Principal, Depends(authz.allow(PEOPLE))]
    PersonOrNode = Annotated[Principal, Depends(authz.allow((*PEOPLE, *NODES)))]

    async def send(command: contract.SendCommand, response: Response) -> dict[str, Any]:
        reply = await calls.ask(contract.SEND, command)
        if not reply["created"]:
            response.status_code = 200
        message: dict[str, Any] = reply["message"]
        return message

    @router.get("", response_model=contract.ConversationList)
    async def list_conversations(me: Person) -> dict[str, Any]:
        """Your conversations, the most recently active first."""
        return await calls.ask(contract.LIST_CONVERSATIONS, contract.ByQuery(by=me))

    @router.get("/search", response_model=contract.MessagePage, responses=documented(404))
    async def search_messages(
        me: Person,
        text: Annotated[str, Query(min_length=1, max_length=200, pattern=r"^[^\x00]+$")],
        conversation_id: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> dict[str, Any]:
        """Messages you may read whose text holds ``text`` (any case), the newest first, across your
        conversations or in ``conversation_id`` (404 unless it is yours); ``more`` when there are more than
        ``limit``."""
        query = contract.SearchMessagesQuery(by=me, text=text, conversation_id=conversation_id, limit=limit)
        return await calls.ask(contract.SEARCH_MESSAGES, query)

    @router.post(
        "/direct/{member_id}/messages", status_code=201, response_model=contract.MessageView,
        responses={**SENT, **documented(404)},
    )  # fmt: skip
    async def send_direct(
        member_id: MemberIdPath, body: contract.SendRequest, me: PersonOrNode, response: Response
    ) -> dict[str, Any]:
        """Message a user (or your node, ``node:<id>``; a node, its owner: ``owner``); the conversation is made by
        the first message. The same ``client_msg_id`` again stores nothing and returns the first (200)."""
        return await send(contract.SendCommand(by=me, to=member_id, message=body), response)

    @router.get("/{conversation_id}", response_model=contract.ConversationView, responses=documented(404))
    async def get_conversation(conversation_id: ConversationIdPath, me: Person) -> dict[str, Any]:
        return await calls.ask(
            contract.GET_CONVERSATION, contract.ConversationQuery(by=me, conversation_id=conversation_id)
        )

    @router.post(
        "/{conversation_id}/messages", status_code=201, response_model=contract.MessageView,
        responses={**SENT, **documented(404)},
    )  # fmt: skip
    async def send_message(
        conversation_id: ConversationIdPath, body: contract.SendRequest, me: Person, response: Response
    ) -> dict[str, Any]:
        """Send to a conversation you are in. Attach ``device_id`` and a vector ``clock`` to
        messages written offline: they are then ordered causally (``?order=causal``)."""
        return await send(contract.SendCommand(by=me, conversation_id=conversation_id, message=body), response)

    @router.get("/{conversation_id}/messages", response_model=contract.MessagePage, responses=documented(404))
    async def list_messages(
        conversation_id: ConversationIdPath,
        me: Person,
        after_seq: Annotated[int | None, Query(ge=0, le=2**53)] = None,
        before_seq: Annotated[int | None, Query(ge=1, le=2**53)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        order: contract.Order = "seq",
    ) -> dict[str, Any]:
        """The messages you may read: forward with ``after_seq``, back with ``before_seq``."""
        query = contract.ListMessagesQuery(
            by=me, conversation_id=conversation_id, after_seq=after_seq, before_seq=before_seq, limit=limit,
            order=order,
        )  # fmt: skip
        return await calls.ask(contract.LIST_MESSAGES, query)

    @router.patch(
        "/{conversation_id}/messages/{seq}", response_model=contract.MessageView, responses=documented(404, 409)
    )
    async def edit_message(
        conversation_id: ConversationIdPath, seq: SeqPath, body: contract.EditRequest, me: Person
    ) -> dict[str, Any]:
        """Change your message's text."""
        command = contract.EditCommand(by=me, conversation_id=conversation_id, seq=seq, edit=body)
        return await calls.ask(contract.EDIT, command)

    @router.delete("/{conversation_id}/messages/{seq}", response_model=contract.MessageView, responses=documented(404))
    async def delete_message(conversation_id: ConversationIdPath, seq: SeqPath, me: Person) -> dict[str, Any]:
        """Delete a message (yours, or any in a group you own or administer): a tombstone stays."""
        command = contract.MessageCommand(by=me, conversation_id=conversation_id, seq=seq)
        return await calls.ask(contract.DELETE, command)

    @router.post("/{conversation_id}/receipts", response_model=contract.ReceiptView, responses=documented(404))
    async def record_receipt(
        conversation_id: ConversationIdPath, body: contract.ReceiptRequest, me: Person
    ) -> dict[str, Any]:
        """Everything up to ``up_to_seq`` reached you (``delivered``) or you read it (``read``)."""
        command = contract.ReceiptCommand(by=me, conversation_id=conversation_id, receipt=body)
        return await calls.ask(contract.RECORD_RECEIPT, command)

    @router.get("/{conversation_id}/receipts", response_model=contract.ReceiptList, responses=documented(404))
    async def list_receipts(conversation_id: ConversationIdPath, me: Person) -> dict[str, Any]:
        """How far each member has received and read."""
        return await calls.ask(
            contract.LIST_RECEIPTS, contract.ConversationQuery(by=me, conversation_id=conversation_id)
        )

    return router
