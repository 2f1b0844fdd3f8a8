"""A job's files (docs/jobs.md, "Files"): those it is given, written into its working directory before it starts,
and those it asked to have back, read from there once it has ended.

The agent may be root and the job is not: reading back must not let a job have the agent read something the job
could not. So a path is walked one name at a time, never through a link (``O_NOFOLLOW`` at each step: a link the
job planted, ``out -> /etc/shadow`` or ``dir -> /``, is not followed), only a regular file is read (a FIFO would
block, a device would be the machine's), and, when the job runs as a user of its own, only a file that user owns
(a hard link to another's file is not its output).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Mapping, Sequence

from fog_agent.job_messages import MAX_OUTPUT_BYTES, OutputFile
from fog_agent.sandbox.workdirs import Workdir

log = logging.getLogger(__name__)

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def write_inputs(workdir: Workdir, files: Mapping[str, bytes]) -> None:
    """Write ``files`` (path -> content) into the working directory, owned by the user the job runs as.

    Before the job starts, so nothing else writes there. Raises ``OSError`` when a path cannot be made (two files
    at one path, or a file where another's directory would be).
    """
    user = workdir.user
    for path, data in sorted(files.items()):
        parent = workdir.path
        for name in path.split("/")[:-1]:
            parent = parent / name
            if not parent.is_dir():
                parent.mkdir(mode=0o755)
                if user is not None:
                    os.chown(parent, user.uid, user.gid)
        fd = os.open(workdir.path / path, _CREATE, 0o644)
        try:
            if user is not None:
                os.fchown(fd, user.uid, user.gid)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)


def read_outputs(workdir: Workdir, paths: Sequence[str], budget: int = MAX_OUTPUT_BYTES) -> tuple[OutputFile, ...]:
    """The regular files at ``paths`` the job left, in order, ``budget`` bytes of them at most in all (a file past
    it is cut: ``truncated``). A path with no such file there is left out."""
    found: list[OutputFile] = []
    owner = workdir.user.uid if workdir.user is not None else None
    root = os.open(workdir.path, _DIRECTORY)
    try:
        for path in paths:
            read = _read_beneath(root, path, budget, owner)
            if read is None:
                continue
            data, size = read
            found.append(OutputFile(path, data, size, truncated=len(data) < size))
            budget -= len(data)
    finally:
        os.close(root)
    return tuple(found)


def _read_beneath(root: int, path: str, budget: int, owner: int | None) -> tuple[bytes, int] | None:
    names = path.split("/")
    opened: list[int] = []
    try:
        directory = root
        for name in names[:-1]:
            directory = os.open(name, _DIRECTORY, dir_fd=directory)
            opened.append(directory)
        fd = os.open(names[-1], _READ, dir_fd=directory)
        opened.append(fd)
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode) or (owner is not None and status.st_uid != owner):
            log.info("output %r of a job is not a regular file of its own: left out", path)
            return None
        return _read_up_to(fd, min(budget, status.st_size)), status.st_size
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR):  # a link (ELOOP), or no access: say so
            log.info("output %r of a job not read: %s", path, os.strerror(exc.errno or 0))
        return None
    finally:
        for fd in reversed(opened):
            os.close(fd)


def _read_up_to(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    left = limit
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 16))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
