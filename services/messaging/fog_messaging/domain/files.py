"""Files in chunks."""

from __future__ import annotations

from collections.abc import Iterable

from fog_messaging.domain.common import Rejected


def chunk_count(size: int, chunk_bytes: int) -> int:
    return -(-size // chunk_bytes)


def expected_chunk_size(size: int, index: int, chunk_bytes: int) -> int:
    """Every chunk is ``chunk_bytes`` long but the last, which holds the rest."""
    count = chunk_count(size, chunk_bytes)
    if not 0 <= index < count:
        raise Rejected("invalid_chunk", f"the file has chunks 0 to {count - 1}")
    return size - chunk_bytes * (count - 1) if index == count - 1 else chunk_bytes


def check_chunk(size: int, index: int, chunk_bytes: int, length: int, claimed_sha256: str, sha256: str) -> None:
    """A chunk is the right length and its bytes hash to what the client says (else it was
    damaged on the way, and is refused so that the client sends it again)."""
    expected = expected_chunk_size(size, index, chunk_bytes)
    if length != expected:
        raise Rejected("invalid_chunk", f"chunk {index} is {expected} bytes, not {length}")
    if claimed_sha256 != sha256:
        raise Rejected("chunk_corrupt", f"chunk {index} does not match its SHA-256")


#: bytes of files a member keeps at most, unless the settings say otherwise (``files_bytes_max_per_member``)
FILES_BYTES_MAX = 10 * 1024**3


def check_quota(kept_bytes: int, adding_bytes: int, bytes_max: int) -> None:
    """A member keeps at most ``bytes_max`` bytes of files (complete, and under way)."""
    if kept_bytes + adding_bytes > bytes_max:
        raise Rejected(
            "quota_exceeded",
            f"your files take {kept_bytes:,} bytes; with this one they would pass the {bytes_max:,} you may keep:"
            " delete some (DELETE /v1/files/{id}) first",
        )


def missing_chunks(count: int, received: Iterable[int]) -> list[int]:
    return sorted(set(range(count)) - set(received))
