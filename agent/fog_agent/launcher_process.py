"""The job launcher: a small process that the agent starts once and that forks every job for it.

Why: a job needs its limits, its user and the parent-death signal set between fork and exec, which rules
out CPython's ``vfork`` path. Forked from the agent, every job copied the agent's whole address space and
ran Python in the copy (~3 ms a job, most of the agent's CPU per job). This process imports the standard
library alone, so its fork is small and cheap; the agent hands it each job over a socket pair.

Each job is started by a *spare*: a child the launcher forked while it had nothing else to do, which
waits for one request and becomes that job. The fork, and the first run of Python code in the copy (each
page it writes is copied then), happen before the job is asked for, off its way to running: on an idle
agent, from the request to the agent hearing the job runs took 2.8 ms, and takes 1.9 (docs/jobs.md).
Without a spare (jobs asked for back to back), one is forked for the request at hand.

It is run by path (``python -I -S launcher_process.py FD``), never imported by the agent: it
must not pull in the agent's dependencies. ``fog_agent.launcher`` is the agent's side of it.

Protocol: one JSON object a ``SOCK_SEQPACKET`` message.

- agent → launcher: ``{"id", "argv", "env", "cwd", "umask", "rlimits": [[which, soft, hard]...],
  "uid", "gid", "landlock"}`` with the job's output file descriptor attached (``SCM_RIGHTS``): stdout and
  stderr go there, stdin is ``/dev/null``. ``uid``/``gid`` are ``null`` to keep the launcher's own.
  ``landlock`` is ``null``, or ``{"abi", "read", "write"}``: the paths the job may read and run beneath, and
  those it may also change besides its ``cwd`` (see ``confine``). ``view`` is ``null``, or ``{"shm_bytes", "tmp"}`` for
  a view of the machine of the job's own (see ``private_view``). ``isolated_network``, if true, gives
  the job a network of its own with loopback alone (see ``isolate_network``). A request larger than
  ``MAX_INLINE_REQUEST_BYTES`` comes as ``{"id", "request_in_file": true}`` with a second descriptor, an
  in-memory file that holds it.
- launcher → agent: ``{"id", "pid", "cgroup"}`` once the job's program is executing, or ``{"id", "errno"}``
  when it could not start; later ``{"exited": pid, "code": c, "cpu_s", "max_rss_bytes"}`` (``code`` as
  ``Popen.returncode``: ``-N`` for a signal; the usage of the job's first process and of the descendants it
  waited for, as ``wait4`` gives it).

Preparing: a request with ``"prepare": true`` is handed to a spare at once and answered with nothing. The
spare takes every step before the exec (its output, directory, session, user, parent-death signal) and
waits. ``{"go": id}`` then starts it, answered as a request is, or with ``{"id", "unprepared": true}``
when no such request waits (the agent then asks again the usual way); ``{"withdraw": id}`` (no answer)
lets the spare exit without running anything. The agent prepares a job while its placement commits
(docs/jobs.md, "Preparing a job while its placement commits"). A spare that dies as it waits is replaced
at the go, from the request the launcher kept.

Each job is the leader of a new session (one ``killpg`` reaches its tree), has ``no_new_privs`` (a set-user-id
program gains nothing), and its first process dies with the launcher (``PR_SET_PDEATHSIG``). Run with a second
argument, the agent's cgroup directory (``fog_agent.cgroups``), each spare makes a cgroup below it and moves
into it while it waits; its job runs there, and ``cgroup`` in the answer names it (else ``null``). The agent
kills and removes a job's cgroup once the job has ended; the launcher removes those of spares that end without a
job. When the agent closes the socket, or dies (the kernel closes it then), the launcher kills every job's
process group and cgroup, and exits.

The lease: ``{"lease_s": S}`` (no answer) asks the launcher to kill every job's process group (and cgroup) once
it has heard nothing from the agent, no message of any kind, for ``S`` seconds. It then says ``{"fenced": silent_s}``
(the ``exited`` of each job follow), and holds no lease until the agent sends one again. An agent that is
stopped or frozen (a debugger, a Ctrl-Z in its terminal, a starved machine) can neither heartbeat nor stop
its jobs, and the platform runs them elsewhere once the node is declared down: the launcher, in a session
of its own, stops them first. The agent renews the lease four times a second (``fog_agent.connection``).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import resource
import selectors
import signal
import socket
import stat
import struct
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

PR_SET_PDEATHSIG = 1
#: a request up to this size comes in its message; a bigger one (a long command line) in a file whose
#: descriptor comes with it, after the output's, and the message says ``REQUEST_IN_FILE``
MAX_INLINE_REQUEST_BYTES = 64 * 1024
REQUEST_IN_FILE = "request_in_file"
PREPARE, GO, WITHDRAW, UNPREPARED = "prepare", "go", "withdraw", "unprepared"
LEASE, FENCED = "lease_s", "fenced"
#: the signals Python ignores or handles in this process, which a job must get back as the default
_RESTORED = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM, signal.SIGCHLD)
#: the C library, as this program already has it (``ctypes.util`` would import ``subprocess`` and threads with
#: it, and double the cost of every fork)
_LIBC = ctypes.CDLL(None, use_errno=True)


# -- Landlock: the file system as the job sees it ---------------------------------------------------------

#: the system calls' numbers, the same on every architecture
_LANDLOCK_CREATE_RULESET, _LANDLOCK_ADD_RULE, _LANDLOCK_RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
PR_SET_NO_NEW_PRIVS = 38
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR, _TRUNCATE = 1 << 0, 1 << 1, 1 << 2, 1 << 3, 1 << 14
#: the file-system rights Landlock handles, by ABI: 13 kinds of access in 1, ``REFER`` (linking or renaming
#: across directories) in 2, ``TRUNCATE`` in 3. Device ioctls (5) are left alone: a job has no terminal.
_HANDLED_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1}
#: beneath a path to read: open and list, read, run
_READ_RIGHTS = _EXECUTE | _READ_FILE | _READ_DIR
#: the rights that apply to a file (not a directory)
_FILE_RIGHTS = _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE
#: ABI 6: no signal to, and no abstract Unix socket of, a process outside the job (the agent, other jobs)
_SCOPE_ABI, _SCOPES = 6, (1 << 0) | (1 << 1)


class _RulesetAttr(ctypes.Structure):
    _fields_ = (("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64))  # fmt: skip


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


def _syscall(*args: Any) -> int:
    result: int = _LIBC.syscall(*args)
    if result < 0:
        raise OSError(ctypes.get_errno(), "landlock")
    return result


def landlock_abi() -> int:
    """The Landlock ABI this kernel offers; 0 when it has none (before Linux 5.13) or it is turned off."""
    result: int = _LIBC.syscall(ctypes.c_long(_LANDLOCK_CREATE_RULESET), None, ctypes.c_size_t(0),
                                ctypes.c_uint32(_CREATE_RULESET_VERSION))  # fmt: skip
    return max(result, 0)


#: a Landlock policy as requests carry it: ``{"abi", "read", "write"}``
Policy = dict[str, Any]
#: a ruleset a spare made while it waited, for the policy it expects its job to have
Prebuilt = tuple[Policy, int]


def confine(policy: Policy, own: str, prebuilt: Prebuilt | None = None) -> None:
    """Restrict this process and whatever it runs to reading (and running) beneath ``policy["read"]`` and
    changing beneath ``policy["write"]`` and ``own`` (the job's directory); the rest of the file system answers
    ``EACCES``. Paths that do not exist are skipped. The rules add no right the file modes do not give. From
    ABI 6 on, it can no longer signal processes outside, nor reach their abstract Unix sockets. Sets
    ``no_new_privs``, as Landlock requires: a set-user-id program then runs with the job's own rights.

    ``prebuilt`` (``prebuild``) is used when it was made for the same policy: the job's directory is added to it, and
    the paths a view of the job's own mounts anew, whose rules it left out."""
    handled = _handled(policy["abi"])
    later: list[tuple[int, str]] = []
    if prebuilt is not None and prebuilt[0] == policy:
        ruleset = prebuilt[1]
        later = [(rights, path) for rights, path in _rules(policy) if path in MOUNTED_BY_VIEW]
    else:
        if prebuilt is not None:
            os.close(prebuilt[1])
        ruleset = _ruleset(policy)
    try:
        for rights, path in [(handled, own), *later]:
            _allow(ruleset, path, rights)
        if _LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        _syscall(ctypes.c_long(_LANDLOCK_RESTRICT_SELF), ctypes.c_int(ruleset), ctypes.c_uint32(0))
    finally:
        os.close(ruleset)


def _handled(abi: int) -> int:
    return _HANDLED_BY_ABI[min(abi, max(_HANDLED_BY_ABI))]


def prebuild(policy: Policy) -> Prebuilt:
    """Most of the ruleset ``confine`` makes for ``policy``, made ahead of the job (in a spare, while it waits).

    It leaves out the paths a view of the job's own mounts anew (``MOUNTED_BY_VIEW``): a rule names what its path
    opens *now*, the machine's ``/proc`` say, which the view's then hides; and Landlock ignores rules on hidden mount
    points, so the job could read nothing of its own ``/proc``, nor write its ``/dev/shm`` or ``/tmp``. ``confine``
    adds them after the view."""
    return policy, _ruleset(policy, leave_out=MOUNTED_BY_VIEW)


def _rules(policy: Policy) -> list[tuple[int, str]]:
    """``policy``'s rules: the rights each path is given."""
    handled = _handled(policy["abi"])
    return [(_READ_RIGHTS, path) for path in policy["read"]] + [(handled, path) for path in policy["write"]]


def _ruleset(policy: Policy, *, leave_out: frozenset[str] = frozenset()) -> int:
    """A Landlock ruleset (its descriptor, close-on-exec) that allows what ``policy`` says, but for ``leave_out``."""
    abi = policy["abi"]
    # The whole structure, always: a kernel of an earlier ABI accepts the fields it does not know as zeros.
    attr = _RulesetAttr(_handled(abi), 0, _SCOPES if abi >= _SCOPE_ABI else 0)
    size = ctypes.c_size_t(ctypes.sizeof(attr))
    ruleset = _syscall(ctypes.c_long(_LANDLOCK_CREATE_RULESET), ctypes.byref(attr), size, ctypes.c_uint32(0))
    try:
        for rights, path in _rules(policy):
            if path not in leave_out:
                _allow(ruleset, path, rights)
    except BaseException:
        os.close(ruleset)
        raise
    return ruleset


def _allow(ruleset: int, path: str, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # not on this machine: nothing to allow
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            rights &= _FILE_RIGHTS
        rule = _PathBeneath(rights, fd)
        _syscall(ctypes.c_long(_LANDLOCK_ADD_RULE), ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH),
                 ctypes.byref(rule), ctypes.c_uint32(0))  # fmt: skip
    finally:
        os.close(fd)


#: looked up once, in the launcher: its spares rehearse with it
_LANDLOCK_ABI = landlock_abi()


# -- a view of the machine of the job's own -----------------------------------------------------------------------

_CLONE_NEWNS, _CLONE_NEWIPC, _CLONE_NEWNET, _CLONE_NEWUSER = 0x00020000, 0x08000000, 0x40000000, 0x10000000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REC, _MS_PRIVATE = 1 << 1, 1 << 2, 1 << 3, 1 << 14, 1 << 18
SHARED_MEMORY = "/dev/shm"  # noqa: S108
TMP_DIRECTORIES = ("/tmp", "/var/tmp")  # noqa: S108
#: where the machine's services keep their Unix sockets (``/var/run`` leads there): a job cut off the network gets an
#: empty one in its view, so that it reaches none of them (``view["run"]``)
RUN = "/run"
#: where a view mounts file systems anew (``_mount_view``), as a policy names them (real paths)
MOUNTED_BY_VIEW = frozenset(os.path.realpath(path) for path in ("/proc", SHARED_MEMORY, *TMP_DIRECTORIES))
_MS_BIND = 1 << 12


def private_view(view: dict[str, Any]) -> None:
    """Give this process, and what it runs, a mount namespace of its own, in which ``/proc`` lists its own
    processes alone (``hidepid=invisible``: not another job's command line, where secrets are often passed; as
    root only), ``/dev/shm`` is a tmpfs of its own of ``view["shm_bytes"]`` at most, gone with it, ``/tmp`` and
    ``/var/tmp`` are the directory ``view["tmp"]``, if given, and ``/run`` is empty if ``view["run"]``. Nothing
    mounted here reaches the machine's mounts (they become private to the namespace first). And an IPC namespace of
    its own: its System V shared memory, semaphores and message queues (and POSIX message queues) are out of other
    jobs' sight, and destroyed with it, whatever it did not remove."""
    enter_namespaces(view, isolated_network=False)


def enter_namespaces(view: dict[str, Any] | None, *, isolated_network: bool) -> None:
    """Give this process the namespaces of a job's view of its own (``private_view``), if ``view``, and of a network
    of its own (``isolate_network``), if ``isolated_network``; in one user namespace of its own, when not root."""
    flags = (_CLONE_NEWNS | _CLONE_NEWIPC if view is not None else 0) | (_CLONE_NEWNET if isolated_network else 0)
    if not flags:
        return
    root = os.geteuid() == 0
    if root:
        _succeeded(_LIBC.unshare(flags), "unshare")
    else:
        _own_user_namespace(flags)
    if view is not None:
        _mount_view(view, proc=root)
    if isolated_network:
        _loopback_up()


def _mount_view(view: dict[str, Any], *, proc: bool) -> None:
    """The mounts of a view of the job's own, in its new mount namespace. ``/proc`` is mounted again only if ``proc``:
    a process that is not root may mount one only for a PID namespace of its own."""
    _succeeded(_LIBC.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None), "making / private")
    if proc:
        flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
        _succeeded(_LIBC.mount(b"proc", b"/proc", b"proc", flags, b"hidepid=invisible"), "mounting /proc")
    if view.get("run") and os.path.isdir(RUN):
        shared_memory = os.path.realpath(SHARED_MEMORY)  # found before /run is covered: it may lead there
        flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
        _succeeded(_LIBC.mount(b"tmpfs", RUN.encode(), b"tmpfs", flags, b"size=1m,mode=0755"), f"mounting {RUN}")
        if shared_memory.startswith(RUN + "/"):
            os.makedirs(shared_memory, exist_ok=True)
    if os.path.isdir(SHARED_MEMORY):
        options = f"size={int(view['shm_bytes'])},mode=1777".encode()
        shm = _LIBC.mount(b"tmpfs", SHARED_MEMORY.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, options)
        _succeeded(shm, f"mounting {SHARED_MEMORY}")
    if view.get("tmp"):
        for target in TMP_DIRECTORIES:
            if os.path.isdir(target):
                bound = _LIBC.mount(view["tmp"].encode(), target.encode(), None, _MS_BIND, None)
                _succeeded(bound, f"binding {target}")


def _succeeded(result: int, what: str) -> None:
    """Raise the C library's errno as an ``OSError`` about ``what`` if its call failed."""
    if result != 0:
        raise OSError(ctypes.get_errno(), what)


def private_view_works() -> int:
    """0 if a job can have a view of its own here (root allowed to unshare and mount, not in a container without
    ``CAP_SYS_ADMIN``; or a user allowed to make user namespaces), else the errno that stops it."""
    return _works_in_a_child(lambda: private_view({"shm_bytes": 1 << 20}))


def _works_in_a_child(attempt: Callable[[], None]) -> int:
    """0 if ``attempt`` succeeds in a forked child, which exits at once; else the errno that stopped it."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover -- the child
        code = 0
        try:
            attempt()
        except OSError as exc:
            code = exc.errno or errno.EPERM
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


# -- a network of the job's own ----------------------------------------------------------------------------------

_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
#: ``struct ifreq`` as the two ioctls read it: the interface's name, then its flags
_IFREQ_FLAGS = "16sH14x"


def isolate_network() -> None:
    """Give this process, and what it runs, a network namespace of its own: no interface but loopback, which is
    brought up (a program may talk to itself over ``127.0.0.1``). Nothing outside is reachable, not even what
    listens on the machine's ``localhost``: the agent's, its owner's and the other jobs' services.

    Root unshares one. A process that is not root may own one only through a user namespace of its own
    (``_own_user_namespace``), where the kernel lets unprivileged users make them."""
    enter_namespaces(None, isolated_network=True)


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        name = b"lo"
        _, flags = struct.unpack(_IFREQ_FLAGS, fcntl.ioctl(sock, _SIOCGIFFLAGS, struct.pack(_IFREQ_FLAGS, name, 0)))
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack(_IFREQ_FLAGS, name, flags | _IFF_UP))


def _own_user_namespace(flags: int) -> None:
    """Unshare a user namespace, with the namespaces ``flags`` names, in which this process's user and group are
    themselves, and no other is mapped. The process holds every capability there (over those namespaces alone)
    until its exec, which clears them: its user is not root there either, and ``no_new_privs`` follows."""
    uid, gid = os.geteuid(), os.getegid()
    _succeeded(_LIBC.unshare(_CLONE_NEWUSER | flags), "unshare(CLONE_NEWUSER)")
    # The group map takes setgroups denied first: a process could otherwise drop a group that denies it something.
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        fd = os.open(f"/proc/self/{name}", os.O_WRONLY)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)


def isolated_network_works() -> int:
    """0 if a job can have a network of its own here (root allowed to unshare one, not in a container without
    ``CAP_SYS_ADMIN``; or a user allowed to make user namespaces), else the errno that stops it."""
    return _works_in_a_child(isolate_network)


def _enter_cgroup(path: str | None) -> int:
    """In a spare: make the cgroup ``path`` and move into it, so that everything its job forks is born there; the
    errno when that failed (its job then does not start), else 0.

    While it waits, not once its job is asked for: moving a process between cgroups waits for an RCU grace period
    when none moved lately, ~8 ms on this machine for a job after 200 ms of quiet (docs/performance.md).
    """
    if path is None:
        return 0
    try:
        os.mkdir(path)
        fd = os.open(os.path.join(path, "cgroup.procs"), os.O_WRONLY)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)
    except OSError as exc:
        return exc.errno or errno.EIO
    return 0


def _remove_cgroup(path: str | None) -> None:
    """Remove the cgroup of a spare that is gone without a job: empty, its only process has exited."""
    if path is not None:
        with contextlib.suppress(OSError):  # never made (its spare failed), or made by a spare that lives on
            os.rmdir(path)


def _kill_cgroup(path: str) -> None:
    with contextlib.suppress(OSError):  # gone already, with its processes
        fd = os.open(os.path.join(path, "cgroup.kill"), os.O_WRONLY)
        try:
            os.write(fd, b"1")
        finally:
            os.close(fd)


def _die_with_parent(parent: int) -> None:
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before the signal was asked for
        os._exit(1)


def _executables(argv0: str, env: dict[str, str]) -> list[bytes]:
    """Where ``argv0`` may be, in order, as ``subprocess`` looks: by ``PATH`` of the job's environment."""
    if os.path.dirname(argv0):
        return [os.fsencode(argv0)]
    return [os.fsencode(os.path.join(directory, argv0)) for directory in os.get_exec_path(env)]


def _request_of(data: bytes, fds: list[int]) -> dict[str, Any]:
    request: dict[str, Any] = json.loads(data)
    if request.get(REQUEST_IN_FILE):
        request = json.loads(_read_file(fds[1]))
    return request


#: a request as the agent sends them, for a spare to rehearse on
_SAMPLE = json.dumps({
    "id": 0, "argv": ["true"], "env": {"PATH": "/usr/bin"}, "cwd": "/", "umask": 0o077, "uid": None, "gid": None,
    "rlimits": [[resource.RLIMIT_CORE, 0, 0]],
}).encode()  # fmt: skip


def _rehearse() -> None:
    """In a spare, while it waits: run the Python of ``_child``'s first steps on a sample, without effects.

    The objects they touch (functions, modules, caches) sit in pages shared with the launcher; a
    first write to one, a reference count, copies the page. Paid here, not once the job is asked for.
    A spare that knows the Landlock policy its job will likely have (the last one asked for) makes its
    ruleset now, to which the job's directory alone is added then; one that does not makes a small one and
    drops it (ctypes' first calls cost ~0.5 ms in a fresh fork).
    """
    request = _request_of(_SAMPLE, [])
    _encoded(request)
    for signum in _RESTORED:
        signal.getsignal(signum)
    if _LANDLOCK_ABI:
        os.close(_ruleset({"abi": _LANDLOCK_ABI, "read": ["/"], "write": [os.devnull]}))
        _LIBC.prctl  # noqa: B018 -- looked up (and cached) here, as confine() will


def _encoded(request: dict[str, Any]) -> tuple[list[bytes], dict[bytes, bytes], list[bytes]]:
    """The job's argv, environment and the paths its program may be at, as ``execve`` takes them."""
    argv = [os.fsencode(arg) for arg in request["argv"]]
    env = {os.fsencode(k): os.fsencode(v) for k, v in request["env"].items()}
    return argv, env, _executables(request["argv"][0], request["env"])


def _child(
    data: bytes,
    fds: list[int],
    report: int,
    launcher: int,
    requests: socket.socket,
    prebuilt: Prebuilt | None = None,
    cgroup_errno: int = 0,
) -> None:
    """In a spare: become the job ``data`` asks for, or write the errno that stopped it to ``report``. Never returns.

    A request to prepare waits for its go on ``requests`` before its limits and its exec; the launcher
    closing its end instead (a withdrawal) ends the spare with nothing run.
    """
    try:
        if cgroup_errno:  # the job would run without its cgroup: whatever it left behind would outlive it
            raise OSError(cgroup_errno, "cgroup")
        request, output = _request_of(data, fds), fds[0]
        argv, env, candidates = _encoded(request)
        for signum in _RESTORED:
            signal.signal(signum, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(output, 1)
        os.dup2(output, 2)
        os.chdir(request["cwd"])
        os.umask(request["umask"])
        os.setsid()
        # Before Landlock, which forbids mounting, and the change of user (root needs no user namespace).
        enter_namespaces(request.get("view"), isolated_network=bool(request.get("isolated_network")))
        if request.get("landlock"):  # before the change of user, which might not reach the directories
            confine(request["landlock"], request["cwd"], prebuilt)
        if request["uid"] is not None:
            os.setgroups([])
            os.setgid(request["gid"])
            os.setuid(request["uid"])
        # Confined or not, a set-user-id program the job runs gains nothing: it stays the job's user, whose
        # processes are the job's (and are killed as such once the job ended).
        if _LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        # After the change of user, which clears it.
        _die_with_parent(launcher)
        if request.get(PREPARE) and not requests.recv(1):
            os._exit(0)  # withdrawn: its placement never committed
        for which, soft, hard in request["rlimits"]:  # memory and address space last: then nothing may allocate
            resource.setrlimit(which, (soft, hard))
        first_telling, last = 0, errno.ENOENT
        for path in candidates:
            try:
                os.execve(path, argv, env)  # noqa: S606 -- the job's own argv, never through a shell
            except OSError as exc:
                # As subprocess does: the first error that is not "not there" is the one to tell, else the last.
                last = exc.errno or errno.ENOENT
                if not first_telling and last not in (errno.ENOENT, errno.ENOTDIR):
                    first_telling = last
        raise OSError(first_telling or last, "")
    except OSError as exc:
        code = exc.errno or errno.EINVAL
    except BaseException:  # a NUL in an argument, say: whatever it is, the job cannot start
        code = errno.EINVAL
    try:
        os.write(report, code.to_bytes(4, "little", signed=True))
    finally:
        os._exit(127)


class _Spare:
    """A forked child waiting for its job: the request goes down ``requests``, its exec or errno comes on ``report``."""

    # Not a dataclass: ``dataclasses`` imports ``inspect`` and much more, and every byte here is copied by each fork.
    __slots__ = ("cgroup", "pid", "report", "requests")

    def __init__(self, pid: int, requests: socket.socket, report: int, cgroup: str | None) -> None:
        self.pid, self.requests, self.report, self.cgroup = pid, requests, report, cgroup

    def discard(self) -> None:
        self.requests.close()
        os.close(self.report)


class _Prepared:
    """A spare that holds a prepared job until its go, and the request, to start it anew should the spare die."""

    __slots__ = ("data", "fds", "spare")

    def __init__(self, spare: _Spare, data: bytes, fds: list[int]) -> None:
        self.spare, self.data, self.fds = spare, data, fds

    def close_fds(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


class Launcher:
    def __init__(self, channel: socket.socket, cgroup_root: str | None = None) -> None:
        self.channel = channel
        #: where each spare makes its cgroup, which it joins as it waits, and which its job then runs in
        self.cgroup_root = cgroup_root
        self.spares_forked = 0
        #: the cgroup of each spare forked and not reaped yet (jobs included): removed with a spare that had no job
        self.spare_cgroups: dict[int, str] = {}
        #: each running job's first process, and the cgroup it joined (if any)
        self.children: dict[int, str | None] = {}
        self.pid = os.getpid()
        self.spare: _Spare | None = None
        self.prepared: dict[int, _Prepared] = {}
        self.refill = True  # false after a failed fork, until the next request
        #: how long the agent may stay silent before its jobs are killed (its last ``lease_s``), and since when
        self.lease_s: float | None = None
        self.heard_at = time.monotonic()
        #: the Landlock policy of the latest request that had one: spares make its ruleset while they wait
        self.landlock: Policy | None = None
        wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.wake_read, self.wake_write = wake_read, wake_write
        signal.set_wakeup_fd(wake_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so that the wake-up byte is written

    def serve(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self.channel, selectors.EVENT_READ, self._on_request)
        selector.register(self.wake_read, selectors.EVENT_READ, self._on_child_exit)
        while True:
            wants_spare = self.spare is None and self.refill
            # Poll when a spare is wanted: it is forked once nothing else waits, never ahead of a request.
            ready = selector.select(timeout=0 if wants_spare else self._lease_left())
            if not ready and wants_spare:
                self._refill_spare()
            for key, _ in ready:
                if not key.data():
                    self._kill_children()
                    return
            if self._lease_left() == 0 and not self._fence():
                return

    def _lease_left(self) -> float | None:
        """Seconds until the lease runs out (0 once it has), or None when there is none to keep."""
        if self.lease_s is None:
            return None
        return max(0.0, self.heard_at + self.lease_s - time.monotonic())

    def _fence(self) -> bool:
        """The agent has been silent for its whole lease: kill the jobs, and say so (False if it is gone)."""
        silent_s = time.monotonic() - self.heard_at
        self.lease_s = None  # until the agent sends one again
        self._kill_jobs()
        return self._send({FENCED: round(silent_s, 3)})

    def _on_request(self) -> bool:
        try:
            data, fds, _, _ = socket.recv_fds(self.channel, MAX_INLINE_REQUEST_BYTES + 1024, 2)
        except OSError:
            return False
        for fd in fds:  # a job gets it as stdout and stderr alone (3.11's recv_fds drops MSG_CMSG_CLOEXEC)
            os.set_inheritable(fd, False)
        if not data:  # the agent closed its end: it is gone, or done
            return False
        self.heard_at = time.monotonic()
        try:
            message = json.loads(data)  # the rest is the spare's to read
            if LEASE in message:
                self.lease_s = float(message[LEASE])
                return True
            self.landlock = message.get("landlock") or self.landlock
            if GO in message:
                return self._send({"id": message[GO], **self._go(message[GO])})
            if WITHDRAW in message:
                self._withdraw(message[WITHDRAW])
                return True
            if message.get(PREPARE):
                self._prepare(message["id"], data, fds)
                fds = []  # kept with the prepared spare, for its go
                return True
            return self._send({"id": message["id"], **self._started(data, fds)})
        finally:
            for fd in fds:
                os.close(fd)
            self.refill = True

    def _started(self, data: bytes, fds: list[int], *, go: bool = False) -> dict[str, Any]:
        try:
            return self._launch(data, fds, go=go)
        except OSError as exc:  # no fork, no pipe (the machine is out of processes or files): this job fails
            return {"errno": exc.errno or errno.EAGAIN}

    def _prepare(self, request_id: int, data: bytes, fds: list[int]) -> None:
        try:
            spare = self._take_spare()
            socket.send_fds(spare.requests, [data], fds)
        except OSError:  # no fork, or the spare died waiting: the go finds nothing, and the agent asks again
            for fd in fds:
                os.close(fd)
            return
        self.prepared[request_id] = _Prepared(spare, data, fds)

    def _go(self, request_id: int) -> dict[str, Any]:
        prepared = self.prepared.pop(request_id, None)
        if prepared is None:
            return {UNPREPARED: True}
        try:
            try:
                failure = _go_ahead(prepared.spare)
            finally:
                prepared.spare.discard()
            if failure is None:  # it died as it waited, without a word (reaped as it comes): another takes the job
                return self._started(prepared.data, prepared.fds, go=True)
        finally:
            prepared.close_fds()
        if failure:
            return {"errno": int.from_bytes(failure[:4], "little", signed=True)}
        return self._running(prepared.spare)

    def _withdraw(self, request_id: int) -> None:
        prepared = self.prepared.pop(request_id, None)
        if prepared is not None:
            prepared.spare.discard()  # it reads the end of its socket and exits
            prepared.close_fds()

    def _running(self, spare: _Spare) -> dict[str, Any]:
        """The answer for a spare that became its job: its pid and its cgroup."""
        self.children[spare.pid] = spare.cgroup
        return {"pid": spare.pid, "cgroup": spare.cgroup}

    def _launch(self, data: bytes, fds: list[int], *, go: bool = False) -> dict[str, Any]:
        """Start the job ``data`` asks for on a spare; ``go`` when it is a request to prepare, to start it at once."""
        spare = self._take_spare()
        failure = _hand_over(spare, data, fds, go=go)
        if failure is None:  # it died waiting, unseen yet (it is reaped as it comes): a new one takes the job
            spare = self._fork_spare()
            failure = _hand_over(spare, data, fds, go=go)
            if failure is None:
                raise OSError(errno.EAGAIN, "the job's process died before it could start")
        if failure:
            os.waitpid(spare.pid, 0)
            _remove_cgroup(self.spare_cgroups.pop(spare.pid, None))
            return {"errno": int.from_bytes(failure[:4], "little", signed=True)}
        return self._running(spare)

    def _take_spare(self) -> _Spare:
        spare, self.spare = self.spare, None
        return spare if spare is not None else self._fork_spare()

    def _refill_spare(self) -> None:
        try:
            self.spare = self._fork_spare(ahead=True)
        except OSError:  # out of processes or files: the next request forks for itself, and may fail
            self.refill = False

    def _fork_spare(self, *, ahead: bool = False) -> _Spare:
        """A new spare; forked ``ahead`` of any request, it rehearses while it waits (else its request is there)."""
        with contextlib.ExitStack() as undone:  # closes all four if the pipe or the fork fails
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            undone.callback(ours.close)
            undone.callback(theirs.close)
            report_read, report_write = os.pipe2(os.O_CLOEXEC)
            undone.callback(os.close, report_read)
            undone.callback(os.close, report_write)
            cgroup = self._next_cgroup()
            pid = os.fork()
            if pid == 0:
                ours.close()
                os.close(report_read)
                self._wait_as_spare(theirs, report_write, cgroup, rehearse=ahead)  # never returns
            undone.pop_all()
        theirs.close()
        os.close(report_write)
        if cgroup is not None:
            self.spare_cgroups[pid] = cgroup
        return _Spare(pid, ours, report_read, cgroup)

    def _next_cgroup(self) -> str | None:
        if self.cgroup_root is None:
            return None
        self.spares_forked += 1
        return os.path.join(self.cgroup_root, f"{self.pid}.{self.spares_forked}")

    def _wait_as_spare(self, requests: socket.socket, report: int, cgroup: str | None, *, rehearse: bool) -> None:
        """In the spare: enter its cgroup, wait for one request and become its job. Never returns."""
        cgroup_errno = 0
        try:
            _die_with_parent(self.pid)
            cgroup_errno = _enter_cgroup(cgroup)
            signal.set_wakeup_fd(-1)
            # Nothing of the launcher's stays open in a job; closed now, so that a waiting spare holds none either.
            self.channel.close()
            os.close(self.wake_read)
            os.close(self.wake_write)
            if self.spare is not None:
                self.spare.discard()
            for prepared in self.prepared.values():
                prepared.spare.discard()
                prepared.close_fds()
            prebuilt = None
            if rehearse:
                _rehearse()
                if self.landlock is not None:
                    with contextlib.suppress(OSError):  # its job then makes its own
                        prebuilt = prebuild(self.landlock)
            data, fds, _, _ = socket.recv_fds(requests, MAX_INLINE_REQUEST_BYTES + 1024, 2)
            for fd in fds:  # as in the launcher: the job gets the output as stdout and stderr alone
                os.set_inheritable(fd, False)
        except BaseException:
            os._exit(1)
        if not data:  # the launcher closed its end without a job for it
            os._exit(0)
        _child(data, fds, report, self.pid, requests, prebuilt, cgroup_errno)

    def _on_child_exit(self) -> bool:
        while True:  # drain the wake-up pipe: one byte a signal, many children a byte
            try:
                if not os.read(self.wake_read, 512):
                    break
            except BlockingIOError:
                break
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            cgroup = self.spare_cgroups.pop(pid, None)
            if self.spare is not None and pid == self.spare.pid:  # killed while it waited: it had no job
                self.spare.discard()
                self.spare = None
            if pid not in self.children:  # a spare that had no job (withdrawn, or killed as it waited)
                _remove_cgroup(cgroup)
                continue
            # A job's cgroup is the agent's to empty and remove: what the job left behind may still run there.
            del self.children[pid]
            if not self._send({"exited": pid, "code": os.waitstatus_to_exitcode(status), **_usage_of(usage)}):
                return False
        return True

    def _send(self, message: dict[str, Any]) -> bool:
        try:
            self.channel.sendall(json.dumps(message).encode())
        except OSError:
            return False
        return True

    def _kill_children(self) -> None:
        waiting = [spare.pid for spare in (self.spare, *(p.spare for p in self.prepared.values())) if spare is not None]
        for pid in waiting:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        self._kill_jobs()

    def _kill_jobs(self) -> None:
        """SIGKILL to each job's process group, and to its cgroup: what left the group dies too."""
        for pid, cgroup in self.children.items():
            with contextlib.suppress(OSError):  # gone already
                os.killpg(pid, signal.SIGKILL)
            if cgroup is not None:
                _kill_cgroup(cgroup)


def _usage_of(usage: resource.struct_rusage) -> dict[str, float | int]:
    """What a job's process used, with every descendant it waited for: CPU time (user and system, s) and the
    largest resident set of any one of them (bytes; Linux counts ``ru_maxrss`` in KiB)."""
    return {"cpu_s": round(usage.ru_utime + usage.ru_stime, 3), "max_rss_bytes": usage.ru_maxrss * 1024}


def _hand_over(spare: _Spare, data: bytes, fds: list[int], *, go: bool = False) -> bytes | None:
    """Give ``spare`` its job: what it reports (empty once its exec succeeded), or ``None`` if it was gone."""
    try:
        try:
            socket.send_fds(spare.requests, [data], fds)
        except OSError:
            return None
        return _go_ahead(spare) if go else _read_all(spare.report)
    finally:
        spare.discard()


def _go_ahead(spare: _Spare) -> bytes | None:
    """Start a prepared spare's job: what it reports (empty once its exec succeeded), or ``None`` if it was gone."""
    try:
        spare.requests.send(b"g")
    except OSError:  # gone: what it reported before, if anything, says why
        return _read_all(spare.report) or None
    return _read_all(spare.report)


def _read_file(fd: int) -> bytes:
    with os.fdopen(os.dup(fd), "rb") as file:
        file.seek(0)
        return file.read()


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 64):
        chunks.append(chunk)
    return b"".join(chunks)


def main(argv: list[str]) -> int:
    fd = int(argv[1])
    # No parent-death signal here: when the agent dies, the kernel closes its end of the socket, and this
    # process kills each job's whole process group before it goes (a signal would leave the groups behind).
    # Ctrl-C in the agent's terminal is the agent's to handle; its jobs' fate is the agent's to decide.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    channel = socket.socket(fileno=fd)
    os.set_inheritable(fd, False)
    Launcher(channel, argv[2] if len(argv) > 2 else None).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
