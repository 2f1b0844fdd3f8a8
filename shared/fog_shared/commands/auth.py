"""Requests the auth service answers, and its replies. Strict models: no coercion on the wire."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from fog_shared.commands.common import ErrorReply, Strict, Text, Timestamp, error
from fog_shared.subjects import command_subject, query_subject

__all__ = ["ErrorReply", "error"]  # re-exported: callers of auth use one module

REGISTER = command_subject("auth", "register")
LOGIN = command_subject("auth", "login")
REFRESH = command_subject("auth", "refresh")
LOGOUT = command_subject("auth", "logout")
JWKS = query_subject("auth", "jwks")
#: who a credential (API key or node credential) stands for; the gateway caches the answer
INTROSPECT = query_subject("auth", "introspect")
API_KEY_CREATE = command_subject("auth", "api_key_create")
API_KEY_LIST = query_subject("auth", "api_key_list")
API_KEY_REVOKE = command_subject("auth", "api_key_revoke")
USER_LIST = query_subject("auth", "user_list")
USER_SET_ROLES = command_subject("auth", "user_set_roles")
USER_DISABLE = command_subject("auth", "user_disable")
SIGNING_KEY_ROTATE = command_subject("auth", "signing_key_rotate")
NODE_CREDENTIAL_ISSUE = command_subject("auth", "node_credential_issue")
NODE_CREDENTIAL_REVOKE = command_subject("auth", "node_credential_revoke")
USER_ENABLE = command_subject("auth", "user_enable")
USER_GET = query_subject("auth", "user_get")
USER_UNLOCK = command_subject("auth", "user_unlock")
PASSWORD_CHANGE = command_subject("auth", "password_change")
PASSWORD_RESET_ISSUE = command_subject("auth", "password_reset_issue")
PASSWORD_RESET = command_subject("auth", "password_reset")
SESSION_LIST = query_subject("auth", "session_list")
SESSION_END = command_subject("auth", "session_end")
SESSION_END_OTHERS = command_subject("auth", "session_end_others")

API_KEY_PREFIX = "fogk_"
PASSWORD_RESET_PREFIX = "fogr_"  # noqa: S105 - a prefix, not a secret
NODE_CREDENTIAL_PREFIX = "fogn_"

Role = Literal["admin", "user", "provider"]
#: node ids are chosen by the registry; this shape keeps them safe in paths and logs
NodeId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


#: no control characters in an address (PostgreSQL's text cannot even hold a NUL)
_EMAIL_PART = r"[^@\s\x00-\x1f\x7f]+"


class RegisterRequest(Strict):
    email: str = Field(min_length=3, max_length=254, pattern=rf"^{_EMAIL_PART}@{_EMAIL_PART}\.{_EMAIL_PART}$")
    password: str = Field(min_length=1, max_length=1024)
    #: node owners sign up as providers themselves; only an admin makes admins
    roles: list[Literal["user", "provider"]] = Field(default=["user"], min_length=1, max_length=2)


class Credentials(Strict):
    email: str = Field(min_length=3, max_length=254, pattern=r"^[^\x00-\x1f\x7f]+$")
    password: str = Field(min_length=1, max_length=1024)


class LoginRequest(Strict):
    email: str = Field(min_length=3, max_length=254, pattern=r"^[^\x00-\x1f\x7f]+$")
    password: str = Field(min_length=1, max_length=1024)
    #: the caller's address as the gateway saw it: brute-force counting per source
    source: Text = Field(default="unknown", max_length=64)


class RefreshRequest(Strict):
    refresh_token: str = Field(min_length=1, max_length=256)


class TokenReply(Strict):
    access_token: str
    refresh_token: str
    token_type: str = "Bearer"  # noqa: S105 - a scheme, not a secret
    expires_in: int


class RegisteredReply(Strict):
    user_id: str


class Principal(Strict):
    """Who is asking, as the gateway established it: a user (access token), one of a user's API
    keys (acting with the key's scope), or a node (its node credential)."""

    kind: Literal["user", "api_key", "node"]
    user_id: str | None = None
    node_id: str | None = None
    roles: list[str]
    session_id: str | None = None
    api_key_id: str | None = None
    #: which node credential (nodes only): a connection ends when exactly that one is revoked
    credential_id: str | None = None


class IntrospectRequest(Strict):
    credential: str = Field(min_length=1, max_length=256)


class IntrospectReply(Strict):
    principal: Principal
    #: the credential's own expiry, if any: a cache must not outlive it
    expires_at: Timestamp | None = None


class ApiKeyCreateRequest(Strict):
    name: Text = Field(min_length=1, max_length=100)
    scopes: list[Role] = Field(min_length=1, max_length=3)
    expires_at: Timestamp | None = None


class ApiKeyCreateCommand(Strict):
    user_id: str
    key: ApiKeyCreateRequest


class ApiKeyView(Strict):
    id: str
    name: str
    scopes: list[str]
    created_at: Timestamp
    expires_at: Timestamp | None
    last_used_at: Timestamp | None
    revoked_at: Timestamp | None


class CreatedApiKey(Strict):
    id: str
    name: str
    scopes: list[str]
    created_at: Timestamp
    expires_at: Timestamp | None
    #: the secret: shown once, stored only as a hash
    key: str


class ApiKeyList(Strict):
    items: list[ApiKeyView]


class UserQuery(Strict):
    user_id: str


class ApiKeyRevokeCommand(Strict):
    user_id: str
    api_key_id: str = Field(max_length=64)


class UserView(Strict):
    id: str
    email: str
    roles: list[str]
    disabled: bool
    created_at: Timestamp
    #: wrong passwords in a row, and until when logins are refused for them (``POST .../unlock`` ends it)
    failed_logins: int = 0
    locked_until: Timestamp | None = None
    #: the last login (a session opened), and the last change of password (a change or a reset)
    last_login_at: Timestamp | None = None
    password_changed_at: Timestamp | None = None


class UserList(Strict):
    items: list[UserView]


class ListUsersQuery(Strict):
    limit: int = Field(default=100, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)
    #: only the account with this address (compared case-insensitively), if any
    email: str | None = Field(default=None, min_length=1, max_length=254, pattern=r"^[^\x00-\x1f\x7f]+$")


class SetRolesRequest(Strict):
    roles: list[Role] = Field(min_length=1, max_length=3)


class SetRolesCommand(Strict):
    user_id: str
    roles: list[Role]
    by: str


class DisableUserCommand(Strict):
    user_id: str
    by: str


class EnableUserCommand(Strict):
    user_id: str
    by: str


class UnlockUserCommand(Strict):
    user_id: str
    by: str


#: how long a password reset token works unless the admin says otherwise, and the bounds they may choose in
PASSWORD_RESET_DEFAULT_S = 3600
PASSWORD_RESET_MIN_S, PASSWORD_RESET_MAX_S = 300, 3 * 86_400


class PasswordResetIssueRequest(Strict):
    expires_in_s: int = Field(default=PASSWORD_RESET_DEFAULT_S, ge=PASSWORD_RESET_MIN_S, le=PASSWORD_RESET_MAX_S)


class PasswordResetIssueCommand(Strict):
    user_id: str
    by: str
    expires_in_s: int = Field(ge=PASSWORD_RESET_MIN_S, le=PASSWORD_RESET_MAX_S)


class IssuedPasswordReset(Strict):
    user_id: str
    email: str
    #: the secret: shown once, stored only as a hash; the user spends it at ``POST /v1/auth/password-reset``
    token: str
    expires_at: Timestamp


class PasswordResetRequest(Strict):
    token: str = Field(min_length=1, max_length=256)
    new_password: str = Field(min_length=1, max_length=1024)


class PasswordChangeRequest(Strict):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


class PasswordChangeCommand(Strict):
    user_id: str
    #: the session asking: it stays signed in; every other session of the user ends
    session_id: str
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)
    #: the caller's address as the gateway saw it (a lockout's event names it)
    source: Text = Field(default="unknown", max_length=64)


class SessionsEnded(Strict):
    #: how many sessions (logins on other devices or shells) ended with it
    sessions_ended: int


class SessionQuery(Strict):
    user_id: str
    #: the session asking, marked ``current`` in the list
    session_id: str


class SessionView(Strict):
    id: str
    #: the address the gateway saw at login (null for sessions older than this field)
    source: str | None
    created_at: Timestamp
    #: when its latest access token was issued (a login or a refresh)
    last_active_at: Timestamp
    current: bool


class SessionList(Strict):
    items: list[SessionView]


class SessionEndCommand(Strict):
    user_id: str
    #: the session to end (the caller's own included: that is a logout)
    session_id: str = Field(max_length=64)


class RotatedKey(Strict):
    kid: str


class NodeCredentialIssueCommand(Strict):
    node_id: NodeId
    #: the provider the node belongs to; a node id once bound to an owner stays with it
    owner_id: str


class NodeCredentialRevokeCommand(Strict):
    node_id: NodeId
    #: who asks: the node's owner, an admin, or the node itself
    by: Principal


class IssuedNodeCredential(Strict):
    node_id: str
    credential: str
    issued_at: Timestamp
