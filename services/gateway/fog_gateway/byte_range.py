"""HTTP ``Range`` requests (RFC 9110 §14) for downloads: one byte range, or the whole content."""

from __future__ import annotations


class Unsatisfiable(ValueError):
    """The range starts past the end (answered with 416 and ``Content-Range: bytes */size``)."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The first and last byte (inclusive) a ``Range`` header asks for, or None for everything:
    no header, or one this server does not serve (several ranges, another unit), which RFC 9110
    allows to be ignored."""
    if header is None:
        return None
    unit, equals, spec = header.partition("=")
    if not equals or unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_text, dash, last_text = spec.strip().partition("-")
    if not dash or not (first_text + last_text).isdigit():
        return None
    if first_text == "":  # the last N bytes
        suffix = int(last_text)
        if suffix == 0:
            raise Unsatisfiable("an empty suffix range")
        return max(size - suffix, 0), size - 1
    first = int(first_text)
    if first >= size:
        raise Unsatisfiable(f"the content is {size} bytes")
    last = min(int(last_text), size - 1) if last_text else size - 1
    if last < first:
        return None  # invalid: ignored, as RFC 9110 says
    return first, last
