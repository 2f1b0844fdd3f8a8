"""``fogctl chat send|edit|delete|read|sync|groups|upload|uploads|files|cancel-upload|delete-file|download``:
BitChat with the saved session (``fogctl login``).

Members are named by member id: a user's id, or ``node:<node id>`` for one of your nodes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Literal, TypeVar

import typer
from rich.table import Table

from fog_client import Conversation, FileInfo, FilePage, FogClient, Message, MessagePage
from fog_client.chat import UNREAD_CAP, ConversationMember
from fogctl import account
from fogctl.formats import JsonOption, human_bytes, print_table, when

app = typer.Typer(no_args_is_help=True, help="BitChat: direct and group messages.")
groups_app = typer.Typer(help="Groups: list (no command), create, add, remove, role, leave, transfer.")
app.add_typer(groups_app, name="groups")

T = TypeVar("T")
ConversationArgument = Annotated[str, typer.Argument(help="The conversation's (or group's) id", show_default=False)]
MemberArgument = Annotated[
    str, typer.Argument(help="A user's id or e-mail address, or node:<node id>", show_default=False)
]


@app.command()
def send(
    text: Annotated[str, typer.Argument(help="The message", show_default=False)],
    to: Annotated[
        str | None, typer.Option("--to", help="A member to message directly: a user's id or e-mail, node:<id>")
    ] = None,
    conversation: Annotated[str | None, typer.Option("--conversation", "-c", help="A conversation or group")] = None,
    reply_to: Annotated[int | None, typer.Option("--reply-to", min=1, help="The seq of the message answered")] = None,
    client_msg_id: Annotated[
        str | None, typer.Option("--id", help="Your id for the message: sending it again stores nothing new")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Send a message to a member (--to) or into a conversation (--conversation)."""
    if (to is None) == (conversation is None):
        raise typer.BadParameter("give either --to or --conversation")

    async def run(client: FogClient) -> Message:
        if to is not None:
            return await client.send_direct(await member_id(client, to), text, client_msg_id=client_msg_id)
        assert conversation is not None
        return await client.send_message(conversation, text, client_msg_id=client_msg_id, reply_to_seq=reply_to)

    sent = account.with_saved_session(run)
    if as_json:
        typer.echo(sent.model_dump_json())
    else:
        typer.echo(f"Sent #{sent.seq} to {sent.conversation_id}")


@app.command()
def edit(
    conversation: ConversationArgument,
    seq: Annotated[int, typer.Argument(min=1, help="The message's seq (#N in `read`)", show_default=False)],
    text: Annotated[str, typer.Argument(help="Its new text", show_default=False)],
) -> None:
    """Change a message you sent; members see it edited."""
    edited = account.with_saved_session(lambda client: client.edit_message(conversation, seq, text))
    typer.echo(message_line(edited))


@app.command()
def delete(
    conversation: ConversationArgument,
    seq: Annotated[int, typer.Argument(min=1, help="The message's seq (#N in `read`)", show_default=False)],
) -> None:
    """Delete a message you sent (or any in a group you own or administer); its text is gone for everyone."""
    deleted = account.with_saved_session(lambda client: client.delete_message(conversation, seq))
    typer.echo(message_line(deleted))


@app.command()
def read(
    conversation: Annotated[
        str | None, typer.Argument(help="A conversation's id; without one, your conversations", show_default=False)
    ] = None,
    after: Annotated[
        int | None, typer.Option("--after", min=0, help="Only messages after this seq (0: from the first)")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many messages")] = 100,
    causal: Annotated[bool, typer.Option("--causal", help="In causal order (vector clocks), not seq order")] = False,
    mark_read: Annotated[
        bool, typer.Option("--mark-read/--keep-unread", help="Mark what is shown as read (its unread count goes)")
    ] = True,
    as_json: JsonOption = False,
) -> None:
    """Your conversations, or the messages of one: from your first unread message on, or the latest when you
    have read them all (--after 0 for the first)."""
    if conversation is None:
        conversations = account.with_saved_session(lambda client: client.list_conversations())
        _print_conversations(conversations, as_json)
        return
    target = conversation

    async def run(client: FogClient) -> tuple[list[Message], Conversation]:
        conv = await client.get_conversation(target)
        order: Literal["seq", "causal"] = "causal" if causal else "seq"
        if after is not None or causal or conv.unread:
            start = after if after is not None else (0 if causal else conv.read_seq)
            page = await client.list_messages(target, after_seq=start, limit=limit, order=order)
        else:  # nothing new: the latest, as a chat opens
            page = await client.list_messages(target, before_seq=conv.last_seq + 1, limit=limit)
        if mark_read and page.items and max(m.seq for m in page.items) > conv.read_seq:
            await client.mark(target, max(m.seq for m in page.items), "read")
        return page.items, conv

    messages, conv = account.with_saved_session(run)
    if as_json:
        typer.echo(json.dumps({"items": [m.model_dump(mode="json") for m in messages]}))
        return
    names = names_of(conv.members)
    for message in messages:
        typer.echo(message_line(message, names))
    shown_up_to = max((m.seq for m in messages), default=0)
    if messages and shown_up_to < conv.last_seq and not causal:
        account.console.print(
            f"More after #{shown_up_to}: fogctl chat read {target} --after {shown_up_to}", markup=False
        )


@app.command("mark-read")
def mark_read_command(
    conversations: Annotated[
        list[str] | None, typer.Argument(help="Conversation ids (none: every one with unread messages)")
    ] = None,
) -> None:
    """Mark everything in these conversations (or all of yours) read: their unread counts go."""

    async def run(client: FogClient) -> int:
        if conversations:
            chosen = [await client.get_conversation(each) for each in conversations]
        else:
            chosen = [conv for conv in await client.list_conversations() if conv.unread]
        behind = [conv for conv in chosen if conv.last_seq > conv.read_seq]
        for conv in behind:
            await client.mark(conv.id, conv.last_seq, "read")
        return len(behind)

    marked = account.with_saved_session(run)
    account.console.print(f"Marked {marked} conversation{'' if marked == 1 else 's'} read.", markup=False)


@app.command()
def search(
    text: Annotated[str, typer.Argument(help="What the messages hold (any case)", show_default=False)],
    conversation: Annotated[
        str | None, typer.Option("--conversation", help="Only in this conversation", show_default=False)
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100, help="At most this many, the newest first")] = 20,
    as_json: JsonOption = False,
) -> None:
    """Messages you may read that hold TEXT, the newest first, each with its conversation."""

    async def run(client: FogClient) -> tuple[MessagePage, dict[str, str]]:
        page = await client.search_messages(text, conversation_id=conversation, limit=limit)
        people = {} if as_json else names_of([m for conv in await client.list_conversations() for m in conv.members])
        return page, people

    page, people = account.with_saved_session(run)
    if as_json:
        typer.echo(json.dumps(page.model_dump(mode="json")))
        return
    for message in page.items:
        typer.echo(f"{message.conversation_id} {message_line(message, people)}")
    if page.more:
        account.console.print(f"More than {limit}: --limit, or narrow it with --conversation", markup=False)


@app.command()
def sync(
    since: Annotated[str | None, typer.Option(help="The token from the last sync (none: from the start)")] = None,
    wait: Annotated[float, typer.Option(min=0, max=30, help="Seconds to wait for something new")] = 0,
) -> None:
    """What is new across your conversations, one JSON line per change, then the next token."""
    reply = account.with_saved_session(lambda client: client.sync(since, timeout_ms=int(wait * 1000)))
    if reply.limited and reply.gap is not None:
        account.console.print(
            f"limited: changes from {reply.gap.since} to {reply.gap.until} are not included;"
            " read the conversations for their history",
            markup=False,
        )
    for entry in reply.entries:
        typer.echo(entry.model_dump_json())
    typer.echo(json.dumps({"next": reply.next, "more": reply.more}))


@app.command()
def upload(
    conversation: ConversationArgument,
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The file to send", show_default=False)],
    name: Annotated[str | None, typer.Option(help="The name members see (default: the file's)")] = None,
    resume: Annotated[str | None, typer.Option(help="The id of an upload that broke off: send what it misses")] = None,
) -> None:
    """Send a file to a conversation's members, in checked chunks. Should it break off, its id (printed first)
    resumes it with --resume, or cancels it with `fogctl chat cancel-upload`."""
    data = path.read_bytes()

    async def send(client: FogClient) -> FileInfo:
        file_id = resume
        if file_id is None:
            file_id = (await client.start_upload(conversation, name or path.name, data)).id
            account.console.print(f"Uploading as file {file_id}", markup=False)
        return await client.upload_file(conversation, name or path.name, data, file_id=file_id)

    sent = account.with_saved_session(send)
    typer.echo(f"Uploaded {sent.name} ({sent.size} bytes) as file {sent.id}")


@app.command()
def uploads(as_json: JsonOption = False) -> None:
    """Your uploads under way: resume one with `upload --resume ID`, or cancel it with `cancel-upload ID`."""
    found = account.with_saved_session(lambda client: client.list_uploads())
    if as_json:
        typer.echo(json.dumps({"items": [f.model_dump(mode="json") for f in found]}))
        return
    table = Table("id", "name", "size", "chunks missing", "conversation", "started")
    for upload in found:
        missing = f"{len(upload.missing)} of {upload.chunks}"
        table.add_row(upload.id, upload.name, str(upload.size), missing, upload.conversation_id, str(upload.created_at))
    print_table(table)


@app.command()
def files(
    conversation: ConversationArgument,
    limit: Annotated[int | None, typer.Option(min=1, max=200, help="Files per page (default 50)")] = None,
    cursor: Annotated[str | None, typer.Option(help="Start at this page (a previous list's next cursor)")] = None,
    all_pages: Annotated[bool, typer.Option("--all", help="Follow the cursors to the last page")] = False,
    as_json: JsonOption = False,
) -> None:
    """The conversation's files, the last sent first: `download ID` fetches one."""

    async def fetch(client: FogClient) -> tuple[FilePage, dict[str, str]]:
        if not all_pages:
            page = await client.list_files(conversation, cursor=cursor, limit=limit)
        else:
            page = FilePage(items=[found async for found in client.iter_files(conversation, limit=limit)])
        names = {} if as_json else names_of((await client.get_conversation(conversation)).members)
        return page, names

    page, names = account.with_saved_session(fetch)
    if as_json:
        typer.echo(json.dumps(page.model_dump(mode="json")))
        return
    table = Table("id", "name", "size", "sent by", "sent")
    for found in page.items:
        sender = names.get(found.uploaded_by, found.uploaded_by)
        table.add_row(found.id, found.name, human_bytes(found.size), sender, when(found.completed_at))
    print_table(table)
    if page.next_cursor is not None:
        account.console.print(f"More files: --cursor {page.next_cursor} (or --all)", markup=False, soft_wrap=True)


@app.command("cancel-upload")
def cancel_upload(file_id: Annotated[str, typer.Argument(help="The upload's file id", show_default=False)]) -> None:
    """Cancel an upload of yours that has not completed: it is gone, and so are the chunks it sent."""
    account.with_saved_session(lambda client: client.cancel_upload(file_id))
    typer.echo(f"Cancelled the upload of file {file_id}")


@app.command("delete-file")
def delete_file(file_id: Annotated[str, typer.Argument(help="The file's id", show_default=False)]) -> None:
    """Delete a file you sent (or any in a group you own or administer): nobody can download it any more."""
    account.with_saved_session(lambda client: client.delete_file(file_id))
    typer.echo(f"Deleted file {file_id}")


@app.command()
def download(
    file_id: Annotated[str, typer.Argument(help="The file's id", show_default=False)],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Where to write it (default: its name)")] = None,
) -> None:
    """Fetch a file of one of your conversations; its SHA-256 is checked."""

    async def run(client: FogClient) -> tuple[FileInfo, bytes]:
        return await client.file_info(file_id), await client.download_file(file_id)

    info, data = account.with_saved_session(run)
    if hashlib.sha256(data).hexdigest() != info.sha256:
        account.console.print(f"{info.name}: the download does not match its SHA-256; nothing written", markup=False)
        raise typer.Exit(1)
    target = output or Path(Path(info.name).name)  # never a path the sender chose
    target.write_bytes(data)
    typer.echo(f"Wrote {len(data)} bytes to {target}")


@groups_app.callback(invoke_without_command=True)
def groups(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Your groups (with no command)."""
    if ctx.invoked_subcommand is not None:
        return
    conversations = account.with_saved_session(lambda client: client.list_conversations())
    _print_conversations([c for c in conversations if c.kind == "group"], as_json)


@groups_app.command()
def create(
    name: Annotated[str, typer.Argument(help="The group's name", show_default=False)],
    member: Annotated[
        list[str] | None, typer.Option("--member", "-m", help="A member's user id or e-mail address; repeatable")
    ] = None,
) -> None:
    """Make a group that you own."""

    async def run(client: FogClient) -> Conversation:
        return await client.create_group(name, [await member_id(client, each) for each in member or []])

    group = account.with_saved_session(run)
    typer.echo(f"Created group {group.id} ({group.name}) with {len(group.members)} members")


@groups_app.command()
def add(group: ConversationArgument, member: MemberArgument) -> None:
    """Add a member (owners and admins)."""
    account.with_saved_session(lambda client: as_member(client, member, lambda who: client.add_member(group, who)))
    typer.echo(f"Added {member} to {group}")


@groups_app.command()
def remove(group: ConversationArgument, member: MemberArgument) -> None:
    """Remove a member: nothing sent afterwards reaches them."""
    account.with_saved_session(lambda client: as_member(client, member, lambda who: client.remove_member(group, who)))
    typer.echo(f"Removed {member} from {group}")


@groups_app.command()
def leave(group: ConversationArgument) -> None:
    """Leave a group (an owner hands it over first: ``transfer``)."""

    async def run(client: FogClient) -> None:
        me = await client.me()
        assert me.user_id is not None
        await client.remove_member(group, me.user_id)

    account.with_saved_session(run)
    typer.echo(f"Left {group}")


@groups_app.command()
def role(
    group: ConversationArgument,
    member: MemberArgument,
    new_role: Annotated[
        str, typer.Argument(metavar="ROLE", help="admin (may add, remove and moderate) or member", show_default=False)
    ],
) -> None:
    """Make a member an admin, or an admin a member again (the group's owner)."""
    if new_role not in ("admin", "member"):
        raise typer.BadParameter(f"{new_role!r} is neither admin nor member", param_hint="ROLE")
    chosen: Literal["admin", "member"] = "admin" if new_role == "admin" else "member"
    account.with_saved_session(
        lambda client: as_member(client, member, lambda who: client.set_member_role(group, who, chosen))
    )
    typer.echo(f"{member} is now {chosen} of {group}")


@groups_app.command()
def transfer(group: ConversationArgument, member: MemberArgument) -> None:
    """Hand the group to another member; you stay on as an admin."""
    account.with_saved_session(lambda client: as_member(client, member, lambda who: client.transfer_group(group, who)))
    typer.echo(f"{member} now owns {group}")


async def member_id(client: FogClient, member: str) -> str:
    """A member as the API names them: an e-mail address is looked up (``find_person``); ids stay as they are."""
    return (await client.find_person(member)).user_id if "@" in member else member


async def as_member(client: FogClient, member: str, call: Callable[[str], Awaitable[T]]) -> T:
    """``call`` with ``member`` named as the API names them (``member_id``)."""
    return await call(await member_id(client, member))


def names_of(members: Sequence[ConversationMember]) -> dict[str, str]:
    """How to show each member: a person by e-mail address; a node (or one an older gateway sent bare) by id."""
    return {member.member_id: member.email or member.member_id for member in members}


def message_line(message: Message, names: Mapping[str, str] | None = None) -> str:
    """``#3 2026-12-07 11:46:31 ann@example.org ↪#2: text``: the sender by name where ``names`` knows them (a
    member who left is shown by id)."""
    at = message.sent_at.strftime("%Y-%m-%d %H:%M:%S")
    text = "(deleted)" if message.text is None else message.text
    edited = " (edited)" if message.edited_at and message.text is not None else ""
    reply = f" ↪#{message.reply_to_seq}" if message.reply_to_seq else ""
    sender = (names or {}).get(message.sender_id, message.sender_id)
    return f"#{message.seq} {at} {sender}{reply}: {text}{edited}"


def _print_conversations(conversations: list[Conversation], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"items": [c.model_dump(mode="json") for c in conversations]}))
        return
    table = Table("id", "kind", "name", "members", "messages", "unread")
    for conv in conversations:
        names = names_of(conv.members)
        members = ", ".join(
            names[m.member_id] if m.role == "member" else f"{names[m.member_id]} ({m.role})" for m in conv.members
        )
        unread = f"{conv.unread}+" if conv.unread >= UNREAD_CAP else str(conv.unread or "-")
        table.add_row(conv.id, conv.kind, conv.name or "-", members, str(conv.last_seq), unread,
                      style="bold" if conv.unread else None)  # fmt: skip
    print_table(table)
