"""PostgreSQL's text and jsonb cannot hold NUL. Text a client sends to be stored is refused with it (a 422 at
the gateway, where it used to fail the storing transaction, a 500); what a job printed is kept, NUL shown as
U+FFFD, so that its node's report is recorded."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from fog_shared.commands.auth import ApiKeyCreateRequest, LoginRequest
from fog_shared.commands.messaging import CreateGroupRequest, EditRequest, FileUploadRequest, SendRequest
from fog_shared.commands.registry import NodeRegistration
from fog_shared.commands.scheduler import Finished, JobSpec

CAPABILITIES = {"cpu_cores": 1, "memory_bytes": 1 << 30, "disk_bytes": 0, "arch": "x86_64", "os": "Linux"}
NODE = {"name": "n", "capabilities": CAPABILITIES}
SHA = "0" * 64

#: (model, a valid body, the same body with a NUL in one text field)
CASES: list[tuple[type[BaseModel], dict[str, Any], dict[str, Any]]] = [
    (JobSpec, {"command": ["echo", "a"]}, {"command": ["echo", "a\x00"]}),
    (JobSpec, {"command": ["true"]}, {"command": ["true"], "env": {"A": "\x00"}}),
    (JobSpec, {"command": ["true"]}, {"command": ["true"], "name": "\x00"}),
    (JobSpec, {"command": ["true"]}, {"command": ["true"], "idempotency_key": "k\x00"}),
    (JobSpec, {"command": ["true"]}, {"command": ["true"], "constraints": {"labels": {"zone": "\x00"}}}),
    (NodeRegistration, NODE, {**NODE, "name": "n\x00"}),
    (NodeRegistration, NODE, {**NODE, "labels": {"zone": "\x00"}}),
    (NodeRegistration, NODE, {**NODE, "capabilities": {**CAPABILITIES, "os": "Linux\x00"}}),
    (SendRequest, {"text": "hi", "client_msg_id": "m1"}, {"text": "h\x00i", "client_msg_id": "m1"}),
    (EditRequest, {"text": "hi"}, {"text": "\x00"}),
    (CreateGroupRequest, {"name": "g"}, {"name": "g\x00"}),
    (FileUploadRequest, {"name": "f", "size": 1, "sha256": SHA}, {"name": "f\x00", "size": 1, "sha256": SHA}),
    (ApiKeyCreateRequest, {"name": "k", "scopes": ["user"]}, {"name": "k\x00", "scopes": ["user"]}),
    (LoginRequest, {"email": "a@b.c", "password": "p"}, {"email": "a@b.c", "password": "p", "source": "\x00"}),
]


@pytest.mark.parametrize(("model", "valid", "with_nul"), CASES)
def test_text_to_be_stored_is_refused_with_a_nul(
    model: type[BaseModel], valid: dict[str, Any], with_nul: dict[str, Any]
) -> None:
    model.model_validate(valid)
    with pytest.raises(ValidationError, match="must not contain NUL"):
        model.model_validate(with_nul)


def test_what_a_job_printed_is_kept_with_nul_shown_as_the_replacement_character() -> None:
    report = Finished.model_validate(
        {"job_id": "j", "attempt": 1, "outcome": "failed", "duration_s": 0.1, "output": "\x00a\x00", "error": "e\x00"}
    )
    assert (report.output, report.error) == ("\ufffda\ufffd", "e\ufffd")
