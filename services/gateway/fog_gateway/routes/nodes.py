"""``/v1/nodes/{node_id}/credential``: the secret a node's agent authenticates with."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path

from fog_gateway.authz import NODES, PEOPLE, Authorizer
from fog_gateway.calls import ServiceCalls
from fog_gateway.problems import GUARDED_ERRORS, Problem, documented
from fog_gateway.security import Principal
from fog_shared.commands import auth as contract

NodeIdPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


def build_router(calls: ServiceCalls, authz: Authorizer) -> APIRouter:
    router = APIRouter(prefix="/v1/nodes", tags=["nodes"], responses=GUARDED_ERRORS)
    Provider = Annotated[Principal, Depends(authz.allow(PEOPLE, roles=("provider",)))]
    Revoker = Annotated[Principal, Depends(authz.allow((*PEOPLE, *NODES), roles=("provider", "admin", "node")))]

    @router.post("/{node_id}/credential", status_code=201, response_model=contract.IssuedNodeCredential)
    async def issue_node_credential(node_id: NodeIdPath, provider: Provider) -> dict[str, Any]:
        """A new credential for your node (any earlier one stops working); shown once."""
        assert provider.user_id is not None
        command = contract.NodeCredentialIssueCommand(node_id=node_id, owner_id=provider.user_id)
        return await calls.ask(contract.NODE_CREDENTIAL_ISSUE, command)

    @router.delete("/{node_id}/credential", status_code=204, responses=documented(404))
    async def revoke_node_credential(node_id: NodeIdPath, by: Revoker) -> None:
        """Revoke a node's credential: by its owner, an admin, or the node itself."""
        if by.kind == "node" and by.node_id != node_id:
            raise Problem(403, "Forbidden", "a node acts only as itself", code="forbidden")
        command = contract.NodeCredentialRevokeCommand(node_id=node_id, by=by)
        await calls.ask(contract.NODE_CREDENTIAL_REVOKE, command)

    return router
