"""Write the kind overlay's Secret env files, with random passwords, unless they exist.

``make kind-up`` runs it before applying the overlay, whose secretGenerator reads these files;
they are git-ignored. Existing files are kept, so a cluster's passwords survive re-applies.
Passwords are hex: they go into connection URLs unescaped.

    python deploy/kind/make_secrets.py deploy/k8s/overlays/kind/secrets
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

NATS_USERS = ("auth", "registry", "scheduler", "messaging", "gateway", "provision")
DATABASE_SERVICES = ("auth", "registry", "scheduler", "messaging")
ADMIN_EMAIL = "admin@fog.localhost"


def _password() -> str:
    return secrets.token_hex(24)


def secret_values() -> dict[str, dict[str, str]]:
    """Env file name -> its keys and values (the keys the manifests' secretKeyRefs name)."""
    roles = {svc: _password() for svc in DATABASE_SERVICES} | {f"{svc}-owner": _password() for svc in DATABASE_SERVICES}
    return {
        "nats-users.env": {user: _password() for user in NATS_USERS},
        "postgres-admin.env": {"username": "postgres", "password": _password()},
        "postgres-roles.env": roles,
        "auth.env": {
            "bootstrap-admin-email": ADMIN_EMAIL,
            "bootstrap-admin-password": _password(),
            "signing-key-passphrase": _password(),
        },
    }


def write_missing(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, values in secret_values().items():
        path = directory / name
        if path.exists():
            continue
        # Readable only by this user from the first byte.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.writelines(f"{key}={value}\n" for key, value in values.items())
        written.append(path)
    return written


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    for path in write_missing(Path(sys.argv[1])):
        print(f"wrote {path}")
