"""``/v1/groups``: make a group, add and remove members, leave, change roles, hand it over."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response

from fog_gateway.authz import PEOPLE, Authorizer
from fog_gateway.calls import ServiceCalls
from fog_gateway.problems import GUARDED_ERRORS, documented
from fog_gateway.routes.conversations import ConversationIdPath, MemberIdPath
from fog_gateway.security import Principal
from fog_gateway.tolerant import RepliesReadTolerantly
from fog_shared.commands import messaging as contract


def build_router(calls: ServiceCalls, authz: Authorizer) -> APIRouter:
    router = APIRouter(
        route_class=RepliesReadTolerantly, prefix="/v1/groups", tags=["messaging"], responses=GUARDED_ERRORS
    )
    Person = Annotated[Principal, Depends(authz.allow(PEOPLE))]

    @router.post("", status_code=201, response_model=contract.ConversationView, responses=documented(404, 409))
    async def create_group(body: contract.CreateGroupRequest, me: Person) -> dict[str, Any]:
        """A group you own, with these members (users only; at most 256 in all)."""
        return await calls.ask(contract.CREATE_GROUP, contract.CreateGroupCommand(by=me, group=body))

    @router.post("/{conversation_id}/members", response_model=contract.ConversationView, responses=documented(404, 409))
    async def add_member(
        conversation_id: ConversationIdPath, body: contract.AddMemberRequest, me: Person
    ) -> dict[str, Any]:
        """Owners and admins add members, who read what is sent from then on."""
        command = contract.AddMemberCommand(by=me, conversation_id=conversation_id, member=body)
        return await calls.ask(contract.ADD_MEMBER, command)

    @router.delete(
        "/{conversation_id}/members/{member_id}", status_code=204, response_class=Response,
        responses=documented(404, 409),
    )  # fmt: skip
    async def remove_member(conversation_id: ConversationIdPath, member_id: MemberIdPath, me: Person) -> Response:
        """Remove a member, or leave (your own id): nothing sent afterwards reaches them. The owner
        hands the group over before leaving."""
        command = contract.RemoveMemberCommand(by=me, conversation_id=conversation_id, member_id=member_id)
        await calls.ask(contract.REMOVE_MEMBER, command)
        return Response(status_code=204)

    @router.put(
        "/{conversation_id}/members/{member_id}/role", response_model=contract.ConversationView,
        responses=documented(404, 409),
    )  # fmt: skip
    async def set_role(
        conversation_id: ConversationIdPath, member_id: MemberIdPath, body: contract.SetRoleRequest, me: Person
    ) -> dict[str, Any]:
        """The owner makes a member an admin, or an admin a member."""
        command = contract.SetRoleCommand(by=me, conversation_id=conversation_id, member_id=member_id, change=body)
        return await calls.ask(contract.SET_ROLE, command)

    @router.post("/{conversation_id}/owner", response_model=contract.ConversationView, responses=documented(404))
    async def transfer(
        conversation_id: ConversationIdPath, body: contract.TransferRequest, me: Person
    ) -> dict[str, Any]:
        """The owner hands the group to another member and stays on as an admin."""
        command = contract.TransferCommand(by=me, conversation_id=conversation_id, transfer=body)
        return await calls.ask(contract.TRANSFER, command)

    return router
