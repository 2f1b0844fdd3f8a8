"""``/v1/people``: finding someone to message by the e-mail address they signed up with (an exact address; nothing is
listed). Their ``user_id`` is the member id that conversations, groups and the key directory take."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from fog_gateway.authz import PEOPLE, Authorizer
from fog_gateway.calls import ServiceCalls
from fog_gateway.problems import GUARDED_ERRORS, documented
from fog_gateway.security import Principal
from fog_gateway.tolerant import RepliesReadTolerantly
from fog_shared.commands import messaging as contract

EmailQuery = Annotated[str, Query(min_length=3, max_length=254, pattern=r"^[^\x00-\x1f\x7f]+$")]


def build_router(calls: ServiceCalls, authz: Authorizer) -> APIRouter:
    router = APIRouter(route_class=RepliesReadTolerantly, prefix="/v1/people", tags=["messaging"],
                       responses=GUARDED_ERRORS)  # fmt: skip
    Person = Annotated[Principal, Depends(authz.allow(PEOPLE))]

    @router.get("", response_model=contract.PersonView, responses=documented(404))
    async def find_person(email: EmailQuery, me: Person) -> dict[str, Any]:
        """Who signed up with ``email`` (whatever its case): their ``user_id``, to message them. 404 when nobody did."""
        return await calls.ask(contract.FIND_PERSON, contract.FindPersonQuery(by=me, email=email))

    return router
