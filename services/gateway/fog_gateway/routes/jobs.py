"""``/v1/jobs``: submit work, follow it, read its output, cancel it, ask why it waits."""

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response, WebSocket, WebSocketDisconnect

from fog_gateway.authz import PEOPLE, Authorizer
from fog_gateway.calls import ServiceCalls
from fog_gateway.job_feed import JobWatchers
from fog_gateway.node_link import CLOSE_FORBIDDEN, CLOSE_UNAUTHORIZED, bearer_of
from fog_gateway.problems import GUARDED_ERRORS, Problem, documented
from fog_gateway.security import Principal
from fog_gateway.tolerant import RepliesReadTolerantly
from fog_shared.commands import scheduler as contract

JobId = Annotated[str, Path(max_length=64)]
#: a path in the job's directory, as its spec's ``outputs`` names it (checked as the spec's are)
FilePath = Annotated[contract.JobPath, Path(description="A path of the job's outputs, e.g. results/summary.csv")]
ArrayId = Annotated[str, Path(max_length=64)]
#: submitting or cancelling a large array takes longer than a request's usual few seconds: 100,000 jobs are
#: written in one transaction (a submit), or in a transaction per thousand (a cancel)
ARRAY_TIMEOUT_S = 60.0


def build_router(calls: ServiceCalls, authz: Authorizer, watchers: JobWatchers) -> APIRouter:
    router = APIRouter(route_class=RepliesReadTolerantly, prefix="/v1/jobs", tags=["jobs"], responses=GUARDED_ERRORS)
    Person = Annotated[Principal, Depends(authz.allow(PEOPLE))]

    # 409: the owner has too many jobs waiting already (too_many_waiting), or a key names a job retention deleted
    @router.post(
        "", status_code=201, response_model=contract.JobView,
        responses={200: {"model": contract.JobView}, **documented(409)},
    )  # fmt: skip
    async def submit(spec: contract.JobSpec, owner: Person, response: Response) -> dict[str, Any]:
        """Submit one job. The same ``idempotency_key`` again returns the first job (200)."""
        reply = await calls.ask(contract.SUBMIT, contract.SubmitCommand(owner_id=_user(owner), spec=spec))
        if not reply["created"]:
            response.status_code = 200
        job: dict[str, Any] = reply["job"]
        return job

    @router.post("/array", status_code=201, response_model=contract.ArrayView, responses=documented(409))
    async def submit_array(body: contract.ArrayRequest, owner: Person) -> dict[str, Any]:
        """Submit ``count`` jobs from one spec; each gets its index in ``FOG_ARRAY_INDEX``."""
        command = contract.SubmitArrayCommand(owner_id=_user(owner), request=body)
        return await calls.ask(contract.SUBMIT_ARRAY, command, timeout_s=ARRAY_TIMEOUT_S)

    @router.get("/arrays/{array_id}", response_model=contract.ArraySummary, responses=documented(404))
    async def array_summary(array_id: ArrayId, owner: Person) -> dict[str, Any]:
        """How far the array has got: how many of its jobs are in each status."""
        return await calls.ask(contract.ARRAY_SUMMARY, contract.ArrayQuery(array_id=array_id, by=owner))

    @router.post("/arrays/{array_id}/cancel", response_model=contract.ArraySummary, responses=documented(404))
    async def cancel_array(array_id: ArrayId, owner: Person) -> dict[str, Any]:
        """Cancel every job of the array that has not ended (a running one is killed on its node), and
        answer the array's summary. Ended jobs stay as they are; cancelling again changes nothing more."""
        query = contract.ArrayQuery(array_id=array_id, by=owner)
        return await calls.ask(contract.CANCEL_ARRAY, query, timeout_s=ARRAY_TIMEOUT_S)

    @router.get("", response_model=contract.JobPage, responses=documented(404))
    async def list_jobs(
        owner: Person,
        status: contract.JobStatus | None = None,
        array_id: Annotated[str | None, Query(max_length=64)] = None,
        name: Annotated[str | None, Query(min_length=1, max_length=128, pattern=r"^[^\x00]+$")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Query(max_length=128)] = None,
        order: contract.JobOrder = "oldest",
    ) -> dict[str, Any]:
        """Your jobs, a page at a time (follow ``next_cursor``): the oldest first, or with ``order=newest`` the
        last submitted first; ``status``, ``array_id`` and ``name`` (exactly) narrow them."""
        query = contract.ListJobsQuery(
            by=owner, status=status, array_id=array_id, name=name, limit=limit, cursor=cursor, order=order
        )
        return await calls.ask(contract.LIST_JOBS, query)

    @router.get("/{job_id}", response_model=contract.JobView, responses=documented(404))
    async def get_job(job_id: JobId, owner: Person) -> dict[str, Any]:
        return await calls.ask(contract.GET_JOB, contract.JobQuery(job_id=job_id, by=owner))

    @router.post("/{job_id}/cancel", response_model=contract.JobView, responses=documented(404))
    async def cancel_job(job_id: JobId, owner: Person) -> dict[str, Any]:
        """Cancel the job; if it runs, its node kills it (its whole process tree)."""
        return await calls.ask(contract.CANCEL_JOB, contract.JobQuery(job_id=job_id, by=owner))

    @router.get("/{job_id}/output", response_model=contract.JobOutput, responses=documented(404))
    async def job_output(
        job_id: JobId, owner: Person, offset: Annotated[int, Query(ge=0, le=1 << 30)] = 0
    ) -> dict[str, Any]:
        """What the job wrote (stdout and stderr, up to 1 MiB), from character ``offset``. While it runs, what
        its node has sent so far (every second or so): a follower asks again from the ``length`` it got,
        until ``ended``."""
        return await calls.ask(contract.JOB_OUTPUT, contract.OutputQuery(job_id=job_id, by=owner, offset=offset))

    @router.get("/{job_id}/files", response_model=contract.JobFiles, responses=documented(404))
    async def job_files(job_id: JobId, owner: Person) -> dict[str, Any]:
        """The files the job gave back of its ``outputs``, as the last of its attempts that ended left them; once
        it ended, ``missing`` lists the paths it left no regular file at."""
        return await calls.ask(contract.JOB_FILES, contract.JobFileQuery(job_id=job_id, by=owner))

    @router.get(
        "/{job_id}/files/{path:path}",
        response_class=Response,
        responses={200: {"content": {"application/octet-stream": {}}}, **documented(404)},
    )
    async def job_file(job_id: JobId, path: FilePath, owner: Person) -> Response:
        """One file the job gave back, as it left it (``X-Fog-Truncated: true``: its first bytes alone, of
        ``X-Fog-File-Size``)."""
        found = contract.JobFile.model_validate(
            await calls.ask(contract.JOB_FILE, contract.JobFileQuery(job_id=job_id, by=owner, path=path))
        )
        headers = {"X-Fog-File-Size": str(found.size), "X-Fog-Truncated": "true" if found.truncated else "false"}
        return Response(base64.b64decode(found.data), media_type="application/octet-stream", headers=headers)

    @router.get("/{job_id}/explain", response_model=contract.Explanation, responses=documented(404))
    async def explain_job(job_id: JobId, owner: Person) -> dict[str, Any]:
        """Why the job waits (which filters left out how many nodes), or how its node was chosen."""
        return await calls.ask(contract.EXPLAIN_JOB, contract.JobQuery(job_id=job_id, by=owner))

    @router.websocket("/updates")
    async def updates(websocket: WebSocket) -> None:
        """Your jobs as they change: ``{"type": "job", "job": {...}}`` per change."""
        await websocket.accept()
        try:
            owner = await authz.identify(bearer_of(websocket) or "")
        except Problem as refused:
            await websocket.close(code=CLOSE_UNAUTHORIZED, reason=refused.detail[:120])
            return
        if owner.kind not in PEOPLE:
            await websocket.close(code=CLOSE_FORBIDDEN, reason="only people watch jobs")
            return
        watchers.add(owner, websocket)
        try:
            while True:
                await websocket.receive_text()  # nothing is expected; this notices the close
        except WebSocketDisconnect:
            pass
        finally:
            watchers.remove(owner, websocket)

    return router


def _user(principal: Principal) -> str:
    assert principal.user_id is not None
    return principal.user_id
