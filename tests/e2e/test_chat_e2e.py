"""BitChat on the real stack (`fogctl dev up`): users talking through the gateway's HTTP API, a
live stream resumed from its token, and fogctl chat."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator

import pytest
from devstack_driver import RunningStack, fogctl, open_stack

from fog_client import ApiError, FogClient, Message
from fog_shared.testing.waiting import wait_until

pytestmark = pytest.mark.e2e
PASSWORD = "a long and unguessable password"


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    stack = open_stack(tmp_path_factory.mktemp("chat-e2e"))
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
async def stack(running: RunningStack) -> RunningStack:
    await running.ready()
    return running


async def user(stack: RunningStack) -> tuple[FogClient, str, str]:
    email = f"chat-{uuid.uuid4().hex[:10]}@example.org"
    fog = FogClient(stack.state["gateway_url"])
    user_id = await fog.register(email, PASSWORD)
    await fog.login(email, PASSWORD)
    return fog, user_id, email


async def first_message(sender: FogClient, to: str, text: str) -> Message:
    """The first message to a new user, sent again (same client id) until messaging has learned
    of them from auth's events: retrying stores it once."""
    client_msg_id = uuid.uuid4().hex

    async def sent() -> Message | None:
        try:
            return await sender.send_direct(to, text, client_msg_id=client_msg_id)
        except ApiError as refused:
            if refused.status != 404:
                raise
            return None

    found = await wait_until(sent, timeout=15, interval=0.1, what="the recipient known to messaging")
    assert found is not None
    return found


async def test_direct_messages_a_group_with_receipts_and_a_live_stream(stack: RunningStack) -> None:
    (alice, _, _), (bob, bob_id, _), (carol, carol_id, _) = [await user(stack) for _ in range(3)]
    conversation = (await first_message(alice, bob_id, "hi bob")).conversation_id
    await first_message(alice, carol_id, "hi carol")
    await bob.send_message(conversation, "hi alice")
    assert [m.text for m in (await alice.list_messages(conversation)).items] == ["hi bob", "hi alice"]
    assert (await alice.list_messages(conversation)).items == (await bob.list_messages(conversation)).items

    group = await alice.create_group("crew", [bob_id, carol_id])
    await alice.send_message(group.id, "welcome")
    assert (await carol.mark(group.id, 1)).read_seq == 1
    await alice.remove_member(group.id, carol_id)
    await alice.send_message(group.id, "carol is gone")
    assert [m.seq for m in (await carol.list_messages(group.id)).items] == [1]

    seen: list[str] = []
    async with contextlib.aclosing(bob.live()) as stream:
        async for page in stream:
            seen += [e.message.id for e in page.entries if e.message]
            token = page.next
            break  # dropped after the first page
    await alice.send_message(conversation, "while you were away")
    async with contextlib.aclosing(bob.live(token)) as stream:
        async for page in stream:
            seen += [e.message.id for e in page.entries if e.message]
            if any(e.message and e.message.text == "while you were away" for e in page.entries):
                break
    assert len(seen) == len(set(seen)) == 5  # the DM (2), the group (2), and the one sent meanwhile
    for fog in (alice, bob, carol):
        await fog.aclose()


async def test_fogctl_chat_sends_and_reads(stack: RunningStack) -> None:
    config = {"FOG_CONFIG_DIR": str(stack.dir / "fogctl")}  # fogctl is logged in as the first admin
    alice, _, _ = await user(stack)
    bob, bob_id, bob_email = await user(stack)
    await first_message(alice, bob_id, "so that messaging knows bob")
    code, out = await fogctl("chat", "send", "--to", bob_id, "hello from fogctl", "--json", env=config)
    assert code == 0, out
    conversation = json.loads(out)["conversation_id"]
    assert [m.text for m in (await bob.list_messages(conversation)).items] == ["hello from fogctl"]
    await bob.send_message(conversation, "hello back")
    code, out = await fogctl("chat", "read", conversation, "--mark-read", env=config)
    assert code == 0, out
    assert out.splitlines()[-1].endswith(f"{bob_email}: hello back")  # a member by address, not by id
    assert {r.member_id: r.read_seq for r in await bob.receipts(conversation)}[bob_id] == 0
    code, out = await fogctl("chat", "groups", "create", "ops", "--member", bob_id, env=config)
    assert (code, out.split()[0]) == (0, "Created")
    assert [c.name for c in await bob.list_conversations() if c.kind == "group"] == ["ops"]
    for fog in (alice, bob):
        await fog.aclose()
