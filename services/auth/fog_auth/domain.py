"""Pure rules of the auth service: synchronous, no I/O, no clock, no uuid4 (all passed in).

The import-linter contract in pyproject.toml keeps asyncpg, nats, faststream and HTTP out of here.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

ROLES = ("admin", "user", "provider")

MIN_PASSWORD_LENGTH = 12
#: argon2 hashes anything, but a megabyte "password" is a denial of service, not a secret
MAX_PASSWORD_LENGTH = 256
#: a few of the most common passwords long enough to pass the length rule (NIST SP 800-63B
#: asks verifiers to refuse known-breached values; a full list belongs in a data file)
COMMON_PASSWORDS = frozenset(
    {"password1234", "123456789012", "qwertyuiopas", "passwordpassword", "iloveyou1234", "administrator"}
)


@dataclass(frozen=True, slots=True)
class PolicyViolation:
    code: str
    message: str


def check_password(password: str, *, email: str) -> list[PolicyViolation]:
    """NIST SP 800-63B style: length over composition rules, refuse the guessable."""
    normalised = unicodedata.normalize("NFKC", password)
    problems = []
    if len(normalised) < MIN_PASSWORD_LENGTH:
        problems.append(PolicyViolation("too_short", f"use at least {MIN_PASSWORD_LENGTH} characters"))
    if len(normalised) > MAX_PASSWORD_LENGTH:
        problems.append(PolicyViolation("too_long", f"use at most {MAX_PASSWORD_LENGTH} characters"))
    lowered = normalised.casefold()
    if lowered in COMMON_PASSWORDS or len(set(lowered)) <= 2:
        problems.append(PolicyViolation("too_common", "this password is too easy to guess"))
    local_part = email.split("@", 1)[0].casefold()
    if len(local_part) >= 4 and local_part in lowered:
        problems.append(PolicyViolation("contains_email", "the password must not contain your e-mail name"))
    return problems


def check_new_password(password: str, *, email: str, current: str) -> list[PolicyViolation]:
    """A changed password: the policy's rules, and not the one it replaces."""
    problems = check_password(password, email=email)
    if unicodedata.normalize("NFKC", password) == unicodedata.normalize("NFKC", current):
        problems.append(PolicyViolation("unchanged", "the new password must differ from the current one"))
    return problems


def lockout_seconds(consecutive_failures: int, *, free_attempts: int = 5, base_s: int = 30, cap_s: int = 3600) -> int:
    """How long to refuse logins after this many failures in a row: none at first, then doubling.

    5 free attempts, then 30 s, 60 s, 120 s, … up to an hour per further failure.
    """
    over = consecutive_failures - free_attempts
    if over < 0:
        return 0
    return int(min(cap_s, base_s * 2**over))


def scope_allowed(requested: set[str], owner_roles: set[str]) -> bool:
    """An API key may carry only roles its owner has."""
    return requested <= owner_roles and requested <= set(ROLES)


def api_key_roles(scopes: list[str], owner_roles: list[str]) -> list[str]:
    """What an API key may do now: its scope, cut down to whatever roles its owner still has."""
    return sorted(set(scopes) & set(owner_roles))


def may_revoke_node_credential(
    *, kind: str, user_id: str | None, node_id: str | None, roles: list[str], owner_id: str, target_node: str
) -> bool:
    """The node's owner, an admin, or the node itself."""
    if kind == "node":
        return node_id == target_node
    if "admin" in roles:
        return True
    return user_id == owner_id and "provider" in roles
