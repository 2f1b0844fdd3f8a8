"""A job's files through the gateway: given with its spec, handed to its node, given back with its end, read by
its owner alone. The node is simulated (the real one: tests/e2e/test_jobs_e2e.py)."""

from __future__ import annotations

import base64

from gateway_stack import Stack

from .test_jobs import job_status, provider, ready_node


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_files_go_to_the_node_and_the_last_attempts_outputs_come_back_to_their_owner(stack: Stack) -> None:
    url = await stack.serve_gateway()
    agent = await ready_node(stack, url, await provider(stack), "a")
    user = stack.bearer(await stack.register_and_login("uma@example.org"))
    spec = {"command": ["./run.sh"], "files": {"run.sh": b64(b"#!/bin/sh\n"), "in/data.csv": b64(b"a,b\n")},
            "outputs": ["out.txt", "big.bin", "never.txt"], "max_attempts": 2, "retry_backoff_s": 0}  # fmt: skip
    job = (await stack.http.post("/v1/jobs", json=spec, headers=user)).json()
    assert job["spec"]["outputs"] == spec["outputs"]

    first = await agent.next_of("assignment")
    assert (first["files"], first["outputs"]) == (spec["files"], spec["outputs"])
    given_back = [{"path": "out.txt", "data": b64(b"attempt 1\n"), "size": 10},
                  {"path": "not-asked.txt", "data": b64(b"x"), "size": 1}]  # fmt: skip
    await agent.run(first, outcome="failed", exit_code=1, files=given_back)
    files_path = f"/v1/jobs/{job['id']}/files"
    between = (await stack.http.get(files_path, headers=user)).json()
    assert between == {"items": [{"path": "out.txt", "size": 10, "truncated": False, "attempt": 1}], "missing": [],
                       "ended": False}  # fmt: skip

    second = await agent.next_of("assignment")
    cut = {"path": "big.bin", "data": b64(b"\x00" * 100), "size": 5_000_000, "truncated": True}
    await agent.run(second, files=[{"path": "out.txt", "data": b64(b"attempt 2\n"), "size": 10}, cut])
    await job_status(stack, user, job["id"], "succeeded")
    listed = (await stack.http.get(files_path, headers=user)).json()
    assert listed == {
        "items": [{"path": "out.txt", "size": 10, "truncated": False, "attempt": 2},
                  {"path": "big.bin", "size": 5_000_000, "truncated": True, "attempt": 2}],
        "missing": ["never.txt"], "ended": True,
    }  # fmt: skip
    out = await stack.http.get(f"{files_path}/out.txt", headers=user)
    assert (out.status_code, out.content) == (200, b"attempt 2\n")
    assert out.headers["content-type"] == "application/octet-stream"
    big = await stack.http.get(f"{files_path}/big.bin", headers=user)
    assert (big.content, big.headers["X-Fog-File-Size"], big.headers["X-Fog-Truncated"]) == (
        b"\x00" * 100, "5000000", "true",
    )  # fmt: skip

    for missing in ("never.txt", "not-asked.txt"):
        assert (await stack.http.get(f"{files_path}/{missing}", headers=user)).status_code == 404
    assert (await stack.http.get(f"{files_path}/a//b", headers=user)).status_code == 422
    other = stack.bearer(await stack.register_and_login("oscar@example.org"))
    assert (await stack.http.get(files_path, headers=other)).status_code == 404  # someone else's job: as none
    assert (await stack.http.get(f"{files_path}/out.txt", headers=other)).status_code == 404


async def test_a_job_that_asks_no_files_back_has_none_and_bad_files_are_refused(stack: Stack) -> None:
    user = stack.bearer(await stack.register_and_login("uma@example.org"))
    plain = (await stack.http.post("/v1/jobs", json={"command": ["true"]}, headers=user)).json()
    assert "files" not in plain["spec"] or plain["spec"]["files"] == {}
    listed = (await stack.http.get(f"/v1/jobs/{plain['id']}/files", headers=user)).json()
    assert listed == {"items": [], "missing": [], "ended": False}
    bad = [
        {"files": {"../escape": b64(b"x")}},
        {"files": {"/etc/cron.d/x": b64(b"x")}},
        {"files": {"a": "not base64!"}},
        {"files": {"big": b64(b"x" * ((512 << 10) + 1))}},
        {"outputs": ["a/./b"]},
        {"outputs": ["same", "same"]},
        {"outputs": [f"o{i}" for i in range(17)]},
    ]
    for extra in bad:
        refused = await stack.http.post("/v1/jobs", json={"command": ["true"], **extra}, headers=user)
        assert refused.status_code == 422, extra
    assert len((await stack.http.get("/v1/jobs", headers=user)).json()["items"]) == 1  # nothing made


async def test_a_listing_of_jobs_with_large_files_comes_in_pages_that_fit(stack: Stack) -> None:
    user = stack.bearer(await stack.register_and_login("uma@example.org"))
    spec = {"command": ["true"], "files": {"input.bin": b64(b"\x01" * (512 << 10))}}  # ~700 KB of spec each
    submitted = [(await stack.http.post("/v1/jobs", json=spec, headers=user)).json()["id"] for _ in range(5)]
    seen, pages, cursor = list[str](), 0, None
    while True:
        params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        page = await stack.http.get("/v1/jobs", params=params, headers=user)
        assert page.status_code == 200, page.text
        seen += [job["id"] for job in page.json()["items"]]
        pages, cursor = pages + 1, page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == submitted  # each once, in order, whole
    assert pages > 1  # 100 of them would not fit in a reply: each page holds what fits


async def test_an_array_whose_specs_would_take_too_much_room_is_refused(stack: Stack) -> None:
    user = stack.bearer(await stack.register_and_login("uma@example.org"))
    spec = {"command": ["true"], "files": {"input.bin": b64(b"\x01" * (512 << 10))}}  # ~700 KB each job keeps
    refused = await stack.http.post("/v1/jobs/array", json={"spec": spec, "count": 2000}, headers=user)
    assert refused.status_code == 422, refused.text
    assert "smaller files" in refused.json()["detail"]
    accepted = await stack.http.post("/v1/jobs/array", json={"spec": spec, "count": 3}, headers=user)
    assert accepted.status_code == 201, accepted.text
    jobs = (await stack.http.get("/v1/jobs", params={"status": "pending", "limit": 1}, headers=user)).json()
    assert jobs["items"][0]["array_id"] == accepted.json()["array_id"]  # the refused array made no job
