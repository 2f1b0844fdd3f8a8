"""``/v1/nodes``: providers offer machines, agents connect and heartbeat, owners drain and remove.

Registering is two calls behind one route: the registry records the node, then auth issues its
credential. If auth does not answer, the node exists without a credential and the answer says
so; ``POST /v1/nodes/{node_id}/credential`` issues one later.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, WebSocket
from pydantic import ValidationError

from fog_gateway.authz import NODES, PEOPLE, Authorizer
from fog_gateway.calls import ServiceCalls
from fog_gateway.node_link import (
    CLOSE_FORBIDDEN,
    CLOSE_UNAUTHORIZED,
    HeartbeatRelay,
    NodeLinks,
    NodeSession,
    bearer_of,
)
from fog_gateway.problems import GUARDED_ERRORS, Problem, documented
from fog_gateway.scheduler_gate import SchedulerGate
from fog_gateway.security import Principal
from fog_gateway.tolerant import RepliesReadTolerantly
from fog_shared.bus.rpc import ServiceUnavailable
from fog_shared.commands import auth as auth_contract
from fog_shared.commands import registry as contract

NodeIdPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
LabelFilter = Annotated[list[str], Query(max_length=32, description="key=value; repeat for several")]


def build_router(
    calls: ServiceCalls,
    authz: Authorizer,
    relay: HeartbeatRelay,
    links: NodeLinks,
    heartbeat_interval_s: float,
    gate: SchedulerGate,
) -> APIRouter:
    router = APIRouter(route_class=RepliesReadTolerantly, prefix="/v1/nodes", tags=["nodes"], responses=GUARDED_ERRORS)
    Provider = Annotated[Principal, Depends(authz.allow(PEOPLE, roles=("provider",)))]
    Person = Annotated[Principal, Depends(authz.allow(PEOPLE))]
    PersonOrNode = Annotated[Principal, Depends(authz.allow((*PEOPLE, *NODES)))]
    OwnerOrAdmin = Annotated[Principal, Depends(authz.allow(PEOPLE, roles=("provider", "admin")))]
    Node = Annotated[Principal, Depends(authz.allow(NODES))]
    Revoker = Annotated[Principal, Depends(authz.allow((*PEOPLE, *NODES), roles=("provider", "admin", "node")))]

    @router.post("", status_code=201, response_model=contract.RegisteredNode)
    async def register_node(body: contract.NodeRegistration, provider: Provider) -> dict[str, Any]:
        """Offer a machine: the node (``down`` until its first heartbeat) and its credential, shown once."""
        owner = _user(provider)
        node = await calls.ask(contract.REGISTER_NODE, contract.RegisterNodeCommand(owner_id=owner, registration=body))
        issue = auth_contract.NodeCredentialIssueCommand(node_id=node["id"], owner_id=owner)
        try:
            issued = await calls.ask(auth_contract.NODE_CREDENTIAL_ISSUE, issue)
        except ServiceUnavailable:
            raise Problem(
                503, "Node registered without a credential",
                f"node {node['id']} is registered; get its credential with POST /v1/nodes/{node['id']}/credential",
                code="credential_pending", headers={"Retry-After": "1"},
            ) from None  # fmt: skip
        return {"node": node, "credential": issued["credential"]}

    @router.get("", response_model=contract.NodeList, responses=documented(404))
    async def list_nodes(
        by: Person,
        status: contract.NodeStatus | None = None,
        label: LabelFilter = [],  # noqa: B006 - FastAPI copies defaults
        min_cpu_cores: Annotated[int | None, Query(ge=1, le=4096)] = None,
        min_memory_bytes: Annotated[int | None, Query(ge=1, le=2**62)] = None,
        owner_id: Annotated[str | None, Query(max_length=64, description="admins only")] = None,
    ) -> dict[str, Any]:
        """Your nodes (all nodes for admins), filtered."""
        try:
            query = contract.ListNodesQuery(
                by=by, status=status, labels=_labels(label), min_cpu_cores=min_cpu_cores,
                min_memory_bytes=min_memory_bytes, owner_id=owner_id,
            )  # fmt: skip
        except ValidationError as exc:
            raise Problem(422, "Invalid request", f"label filter: {exc.errors()[0]['msg']}", code="invalid") from None
        return await calls.ask(contract.LIST_NODES, query)

    @router.get("/{node_id}", response_model=contract.NodeView, responses=documented(404))
    async def get_node(node_id: NodeIdPath, by: PersonOrNode) -> dict[str, Any]:
        """One node: its owner, an admin, or the node itself."""
        return await calls.ask(contract.GET_NODE, contract.NodeQuery(node_id=node_id, by=by))

    @router.post("/{node_id}/drain", response_model=contract.NodeView, responses=documented(404))
    async def drain_node(node_id: NodeIdPath, by: OwnerOrAdmin) -> dict[str, Any]:
        """No new work for the node; what runs there finishes."""
        return await calls.ask(contract.DRAIN_NODE, contract.NodeQuery(node_id=node_id, by=by))

    @router.patch("/{node_id}", response_model=contract.NodeView, responses=documented(404))
    async def change_node(node_id: NodeIdPath, body: contract.NodePatch, by: OwnerOrAdmin) -> dict[str, Any]:
        """Change the node's labels: ``{"labels": {"gpu": "a100", "old": null}}`` sets ``gpu`` and removes ``old``
        (a JSON merge patch); jobs are placed by the new ones from then on. 422 ``too_many_labels`` past 32."""
        command = contract.LabelNodeCommand(node_id=node_id, by=by, labels=body.labels)
        return await calls.ask(contract.LABEL_NODE, command)

    @router.post("/{node_id}/resume", response_model=contract.NodeView, responses=documented(404))
    async def resume_node(node_id: NodeIdPath, by: OwnerOrAdmin) -> dict[str, Any]:
        """End a drain: the node takes new work again (``ready`` at once if it is alive)."""
        return await calls.ask(contract.RESUME_NODE, contract.NodeQuery(node_id=node_id, by=by))

    @router.delete("/{node_id}", status_code=204, responses=documented(404))
    async def deregister_node(node_id: NodeIdPath, by: OwnerOrAdmin) -> None:
        """Remove the node for good; its credential is revoked and its connection closed."""
        await calls.ask(contract.DEREGISTER_NODE, contract.NodeQuery(node_id=node_id, by=by))
        try:
            await calls.ask(
                auth_contract.NODE_CREDENTIAL_REVOKE, auth_contract.NodeCredentialRevokeCommand(node_id=node_id, by=by)
            )
        except Problem as refused:
            if refused.status != 404:  # no live credential: nothing to revoke
                raise

    @router.post("/{node_id}/heartbeat", status_code=202, responses=documented(404))
    async def heartbeat(node_id: NodeIdPath, body: contract.Heartbeat, node: Node) -> dict[str, str]:
        """For agents that cannot keep a WebSocket: one heartbeat over HTTP."""
        if node_id != node.node_id or body.node_id != node.node_id:
            raise Problem(403, "Forbidden", "a node acts only as itself", code="forbidden")
        relay.beat(body)
        return {"status": "accepted"}

    @router.put("/{node_id}/capabilities", response_model=contract.NodeView, responses=documented(404))
    async def declare_capabilities(node_id: NodeIdPath, body: contract.Capabilities, node: Node) -> dict[str, Any]:
        """What the machine offers now, as its agent measured it at its start (the node itself alone): jobs are
        placed by it from then on. Announced (``registry.node.capabilities_changed``) only when it changed."""
        if node_id != node.node_id:
            raise Problem(403, "Forbidden", "a node acts only as itself", code="forbidden")
        command = contract.DeclareCapabilitiesCommand(node_id=node_id, by=node, capabilities=body)
        return await calls.ask(contract.DECLARE_CAPABILITIES, command)

    @router.post("/{node_id}/credential", status_code=201, response_model=auth_contract.IssuedNodeCredential)
    async def issue_node_credential(node_id: NodeIdPath, provider: Provider) -> dict[str, Any]:
        """A new credential for your node (any earlier one stops working); shown once."""
        command = auth_contract.NodeCredentialIssueCommand(node_id=node_id, owner_id=_user(provider))
        return await calls.ask(auth_contract.NODE_CREDENTIAL_ISSUE, command)

    @router.delete("/{node_id}/credential", status_code=204, responses=documented(404))
    async def revoke_node_credential(node_id: NodeIdPath, by: Revoker) -> None:
        """Revoke a node's credential: by its owner, an admin, or the node itself."""
        if by.kind == "node" and by.node_id != node_id:
            raise Problem(403, "Forbidden", "a node acts only as itself", code="forbidden")
        command = auth_contract.NodeCredentialRevokeCommand(node_id=node_id, by=by)
        await calls.ask(auth_contract.NODE_CREDENTIAL_REVOKE, command)

    @router.websocket("/connect")
    async def connect(websocket: WebSocket) -> None:
        """An agent's connection (``Authorization: Bearer <node credential>``); see docs/nodes.md."""
        await websocket.accept()
        credential = bearer_of(websocket)
        try:
            node = await authz.identify(credential or "")
        except Problem as refused:
            await websocket.close(code=CLOSE_UNAUTHORIZED, reason=refused.detail[:120])
            return
        if node.kind != "node" or node.node_id is None:
            await websocket.close(code=CLOSE_FORBIDDEN, reason="only a node credential may connect here")
            return
        await links.attach(node.node_id, node.credential_id, websocket)
        try:
            await NodeSession(websocket, node, relay, authz, calls, heartbeat_interval_s, gate).serve()
        finally:
            links.detach(node.node_id, websocket)

    return router


def _user(principal: Principal) -> str:
    assert principal.user_id is not None  # people have user ids
    return principal.user_id


def _labels(pairs: list[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise Problem(422, "Invalid request", f"label filter {pair!r} is not key=value", code="invalid")
        labels[key] = value
    return labels
