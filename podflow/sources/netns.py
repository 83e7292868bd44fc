"""Work inside another network namespace without ever moving the agent itself.

DESIGN.md principle 6: the agent process never calls ``setns``: its threads would silently
change namespace. Instead a short-lived forked child enters the namespace, does one thing
(opens a socket, or reads/writes a sysctl under ``/proc/sys/net``, which is resolved against
the caller's namespace), passes the result or the descriptor back over a Unix socket
(``SCM_RIGHTS``) and exits. A socket keeps the namespace it was created in, so the parent can
use it from then on.

A namespace is named as ``ip netns`` names it (``/run/netns/NAME``) or given as a path
(``/proc/PID/ns/net``). ``None`` means the agent's own namespace. A missing namespace is an
error: nothing here ever creates one.

Example::

    >>> sock = open_socket(None, socket.AF_NETLINK, socket.SOCK_RAW, 12)  # doctest: +SKIP
    >>> write_sysctl_in_netns("pf-x", "net.netfilter.nf_conntrack_acct", "1")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_TIMEOUT = 10.0


def netns_path(netns: str) -> str:
    """The file that names ``netns``: a path as given, else ``/run/netns/NAME``."""
    return netns if "/" in netns else f"/run/netns/{netns}"


def _sysctl_path(key: str) -> Path:
    return Path("/proc/sys") / key.replace(".", "/")


def run_in_netns(netns: str, work: Callable[[], tuple[bytes, list[int]]]
                 ) -> tuple[bytes, list[int]]:
    """Run ``work`` in a forked child inside ``netns``; return its bytes and descriptors.

    ``work`` runs after ``setns`` in the child only; whatever it raises comes back as an
    ``OSError`` (with the child's errno when it had one). The descriptors it returns are
    duplicated into the parent by the kernel and belong to the caller.
    """
    path = netns_path(netns)
    nsfd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)  # FileNotFoundError if absent
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        pid = os.fork()
        if pid == 0:  # child: never returns
            code = 0
            try:
                # the agent's handlers (log + stop) must not run in a helper that is killed
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                ours.close()
                if _libc.setns(nsfd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({path}): {os.strerror(err)}")
                data, fds = work()
                socket.send_fds(theirs, [b"ok" + data], fds)
            except BaseException as exc:  # report everything, then exit
                code = 1
                errno = getattr(exc, "errno", None) or 0
                with contextlib.suppress(OSError):
                    theirs.send(f"err{errno}:{exc}".encode()[:4000])
            finally:
                os._exit(code)
        theirs.close()
        theirs = None  # type: ignore[assignment]
        ours.settimeout(_TIMEOUT)
        try:
            msg, fds, _flags, _addr = socket.recv_fds(ours, 65536, 16)
        finally:
            os.waitpid(pid, 0)
    finally:
        os.close(nsfd)
        ours.close()
        if theirs is not None:
            theirs.close()
    if msg.startswith(b"ok"):
        return msg[2:], fds
    for fd in fds:
        os.close(fd)
    head, _, text = msg[3:].decode(errors="replace").partition(":")
    raise OSError(int(head or 0) or None, text or f"helper in netns {netns} failed")


def open_socket(netns: str | None, family: int, type_: int, proto: int = 0) -> socket.socket:
    """A new socket created inside ``netns`` (``None``: here)."""
    if netns is None:
        return socket.socket(family, type_, proto)

    def work() -> tuple[bytes, list[int]]:
        s = socket.socket(family, type_, proto)
        return b"", [s.detach()]

    _data, fds = run_in_netns(netns, work)
    return socket.socket(family, type_, proto, fileno=fds[0])


def write_sysctl_in_netns(netns: str | None, key: str, value: str) -> None:
    """Write ``value`` to the sysctl ``key`` (dotted, e.g. ``net.netfilter.nf_conntrack_acct``)
    as seen from ``netns``, unless it already has it (in a container /proc/sys is read-only,
    and an init container may have set it); raises ``OSError`` when the kernel or /proc
    refuses."""
    target = _sysctl_path(key)

    def work() -> tuple[bytes, list[int]]:
        try:
            if target.read_text().strip() == value:
                return b"", []
        except OSError:
            pass
        target.write_text(f"{value}\n")
        return b"", []

    if netns is None:
        work()
    else:
        run_in_netns(netns, work)
