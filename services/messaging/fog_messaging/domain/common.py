"""What every rule shares: refusals, roles, member ids."""

from __future__ import annotations

import re
from typing import Literal

#: a message's text, in UTF-8 bytes
MAX_TEXT_BYTES = 16 * 1024
#: members of one group, its owner included
MAX_GROUP_MEMBERS = 256
#: devices one vector clock may name
MAX_CLOCK_DEVICES = 64
MAX_CLOCK_COUNTER = 2**53  # exact in every JSON implementation
NODE_PREFIX = "node:"
#: what a node may name its owner by, in ``direct/{member}``: an agent knows its node, not whose it is
OWNER_ALIAS = "owner"
DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

Role = Literal["owner", "admin", "member"]
ReceiptKind = Literal["delivered", "read"]


class Rejected(ValueError):
    """A rule said no: a stable ``code`` for machines and a reason for people."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code, self.detail = code, detail


def node_member(node_id: str) -> str:
    return NODE_PREFIX + node_id


def is_node(member_id: str) -> bool:
    return member_id.startswith(NODE_PREFIX)
