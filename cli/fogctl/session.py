"""fogctl's saved login: ``credentials.json`` in ``$FOG_CONFIG_DIR`` (default ``~/.config/fog``).

The file holds a refresh token, so it is created readable by this user only (0600, in a 0700
directory) and replaced atomically: a crash mid-write never leaves a truncated file, and the
secret is never briefly readable under wider permissions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from fog_client import FogClient, Tokens

FILE_NAME = "credentials.json"


class SessionError(Exception):
    """The credentials file exists but cannot be used."""


def default_config_dir() -> Path:
    configured = os.environ.get("FOG_CONFIG_DIR")
    return Path(configured) if configured else Path.home() / ".config" / "fog"


def credentials_path(directory: Path | None = None) -> Path:
    return (directory or default_config_dir()) / FILE_NAME


@dataclass
class Session:
    gateway_url: str
    email: str
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    path: Path = field(default_factory=credentials_path, compare=False)

    @classmethod
    def load(cls, path: Path | None = None) -> Session | None:
        """The saved session, or ``None`` when nobody is logged in."""
        path = path or credentials_path()
        try:
            raw = json.loads(path.read_text())
            return cls(
                gateway_url=str(raw["gateway_url"]),
                email=str(raw["email"]),
                access_token=str(raw["access_token"]),
                refresh_token=str(raw["refresh_token"]),
                path=path,
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SessionError(f"{path} is not a usable credentials file ({exc.__class__.__name__})") from None

    def save(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        document = {k: v for k, v in asdict(self).items() if k != "path"}
        temporary = self.path.with_name(f".{self.path.name}.{secrets.token_hex(8)}")
        # O_EXCL | O_NOFOLLOW: a planted file or symlink under the temporary name is refused, not written through.
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(document, out, indent=2)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            raise

    def keep(self, tokens: Tokens) -> None:
        """Save a refreshed pair at once: the previous refresh token no longer works."""
        self.access_token, self.refresh_token = tokens.access_token, tokens.refresh_token
        self.save()


def delete(path: Path | None = None) -> bool:
    """Forget the saved session; ``False`` when there was none."""
    try:
        (path or credentials_path()).unlink()
    except FileNotFoundError:
        return False
    return True


async def login(client: FogClient, email: str, password: str, *, path: Path | None = None) -> Session:
    """Log ``client`` in and save the session."""
    tokens = await client.login(email, password)
    session = Session(client.base_url, email, tokens.access_token, tokens.refresh_token, path or credentials_path())
    session.save()
    return session


def login_and_save(
    gateway_url: str,
    email: str,
    password: str,
    config_dir: Path | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Session:
    """Log fogctl in from synchronous code (the dev stack logs the first admin in this way)."""

    async def run() -> Session:
        async with FogClient(gateway_url, transport=transport) as client:
            return await login(client, email, password, path=credentials_path(config_dir))

    return asyncio.run(run())
