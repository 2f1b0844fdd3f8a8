"""The node's state: ``node.json`` in the state directory (``--state-dir``, ``$FOG_AGENT_STATE_DIR`` or
``~/.local/state/fog-agent``).

It holds the node credential, which the gateway showed once and cannot show again, so it is
created readable by this user only (0600, in a 0700 directory) and replaced atomically: a crash
mid-write never leaves a truncated file, and the secret is never briefly readable under wider
permissions. The same approach as fogctl's saved session (``fogctl.session``).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

FILE_NAME = "node.json"


class StateError(Exception):
    """The state file exists but cannot be used."""


def default_state_dir() -> Path:
    configured = os.environ.get("FOG_AGENT_STATE_DIR")
    return Path(configured) if configured else Path.home() / ".local" / "state" / "fog-agent"


def state_path(directory: Path | None = None) -> Path:
    return (directory or default_state_dir()) / FILE_NAME


def prepare_dir(directory: Path) -> None:
    """Create the state directory (0700) before anything is registered that would need saving in it."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)


@dataclass
class NodeState:
    gateway_url: str
    node_id: str
    name: str
    credential: str = field(repr=False)
    path: Path = field(default_factory=state_path, compare=False)
    #: the networks the node said it gives its jobs when it joined; None in a state saved before nodes said
    networks: tuple[str, ...] | None = None

    @classmethod
    def load(cls, path: Path | None = None) -> NodeState | None:
        """The saved state, or ``None`` when this machine has not joined."""
        path = path or state_path()
        try:
            raw = json.loads(path.read_text())
            values = {key: raw[key] for key in ("gateway_url", "node_id", "name", "credential")}
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StateError(f"{path} is not a usable state file ({exc.__class__.__name__})") from None
        if not all(isinstance(value, str) and value for value in values.values()):
            raise StateError(f"{path} is not a usable state file (a field is empty or not a string)")
        networks = raw.get("networks")
        if networks is not None and not (isinstance(networks, list) and all(isinstance(n, str) for n in networks)):
            raise StateError(f"{path} is not a usable state file (networks is not a list of strings)")
        return cls(**values, path=path, networks=None if networks is None else tuple(networks))

    def save(self) -> None:
        prepare_dir(self.path.parent)
        document = {
            "gateway_url": self.gateway_url,
            "node_id": self.node_id,
            "name": self.name,
            "credential": self.credential,
        }
        if self.networks is not None:
            document["networks"] = list(self.networks)  # type: ignore[assignment]
        _write_private(self.path, json.dumps(document, indent=2))


def _write_private(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    # O_EXCL | O_NOFOLLOW: a planted file or symlink under the temporary name is refused, not written through.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    _sync_dir(path.parent)


def _sync_dir(directory: Path) -> None:
    """Make the rename itself durable: a credential lost to a power cut cannot be fetched again."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
