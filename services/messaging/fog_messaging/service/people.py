"""Finding someone to message: by the e-mail address they signed up with.

Only a person (a user, or their API key) may ask, for an exact address: nothing is listed or matched in part. That
tells whoever asks whether an address has an account, as a messenger's contact discovery does; the gateway's rate
limit bounds how fast anyone can ask.
"""

from __future__ import annotations

import asyncpg

from fog_messaging import domain, store
from fog_messaging.service.common import MessagingError, member_of
from fog_shared.commands import messaging as contract


async def find(conn: asyncpg.Connection, query: contract.FindPersonQuery) -> contract.PersonView:
    if domain.is_node(member_of(query.by)):
        raise MessagingError("forbidden", "nodes message their owners; they look nobody up")
    found = await store.user_by_email(conn, query.email)
    if found is None:
        raise MessagingError("not_found", "nobody has signed up with that address")
    return contract.PersonView(user_id=found["user_id"], email=found["email"])
