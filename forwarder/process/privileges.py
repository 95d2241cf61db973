"""Dropping root after binding, and the PID file.

forwarder binds its listeners (port 53 needs privilege) *before* it drops root, so
nothing after the drop needs any capability:

1. bind every UDP/TCP listener (as root, or with ``CAP_NET_BIND_SERVICE``);
2. :func:`write_pid_file` if asked (``/run`` is writable only by root), and with a user
   to drop to, :func:`keep_pid_file` (a process that stays root only to remove it at
   exit) and the query log's file opened and given to that user;
3. :func:`drop_privileges` to the configured user;
4. start serving, then tell systemd ``READY=1`` (see :mod:`forwarder.process.sdnotify`).

``setuid`` from root to another user clears the permitted, effective and ambient
capability sets (no ``SECBIT_KEEP_CAPS`` is set), so ``CAP_NET_BIND_SERVICE`` is gone
afterwards too. Consequences for operators:

- a SIGHUP reload cannot add listeners: ``listen`` is a start-only setting, and a
  changed ``listen`` needs a restart;
- under systemd the unit runs with ``DynamicUser=yes`` and
  ``AmbientCapabilities=CAP_NET_BIND_SERVICE``: the process is never root, binds port
  53 with the ambient capability and has no need to call :func:`drop_privileges`
  (``--user`` is not given). The capability then stays in the effective set for the
  process's life; the unit's ``CapabilityBoundingSet`` limits it to that one;
- in a container, run as the image's ``forwarder`` user and grant the bind with
  ``--cap-add NET_BIND_SERVICE`` or ``--sysctl net.ipv4.ip_unprivileged_port_start=53``.

Supplementary groups are dropped (``setgroups([])``), the real, effective and saved
IDs are all set (``setresgid``/``setresuid``), and the drop is verified by trying to
regain root, which must fail.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import signal
import tempfile

__all__ = [
    "PidFileError",
    "PrivilegeError",
    "drop_privileges",
    "missing_accounts",
    "remove_pid_file",
    "running_as_root",
    "user_ids",
    "write_pid_file",
]

log = logging.getLogger("forwarder")


class PrivilegeError(Exception):
    """Switching to the configured user or group failed; the message says why."""


class PidFileError(Exception):
    """The PID file cannot be written, or names another running forwarder."""


def running_as_root() -> bool:
    """Answer whether the effective user is root (uid 0)."""
    return os.geteuid() == 0


def _lookup_user(user: str) -> pwd.struct_passwd:
    """Answer the passwd entry for a user name or numeric uid.

    Raises:
        PrivilegeError: no such user.
    """
    try:
        return pwd.getpwnam(user)
    except KeyError:
        pass
    if user.isdigit():
        try:
            return pwd.getpwuid(int(user))
        except KeyError:
            pass
    raise PrivilegeError(f"cannot drop privileges: user {user!r} does not exist")


def _lookup_group(group: str) -> int:
    """Answer the gid for a group name or numeric gid.

    Raises:
        PrivilegeError: no such group.
    """
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        pass
    if group.isdigit():
        try:
            return grp.getgrgid(int(group)).gr_gid
        except KeyError:
            pass
    raise PrivilegeError(f"cannot drop privileges: group {group!r} does not exist")


def missing_accounts(user: str | None, group: str | None) -> list[tuple[str, str]]:
    """The settings among `user` and `group` that name no account on this machine, each
    with the reason, e.g. ``[("user", "no user 'forwarder' on this machine")]``."""
    missing = []
    for key, name, lookup in (("user", user, _lookup_user), ("group", group, _lookup_group)):
        if name is None:
            continue
        try:
            lookup(name)
        except PrivilegeError:
            missing.append((key, f"no {key} {name!r} on this machine"))
    return missing


def user_ids(user: str, group: str | None = None) -> tuple[int, int]:
    """Answer the (uid, gid) that :func:`drop_privileges` would switch to.

    Raises:
        PrivilegeError: the user or group does not exist.
    """
    entry = _lookup_user(user)
    return entry.pw_uid, entry.pw_gid if group is None else _lookup_group(group)


def drop_privileges(user: str, group: str | None = None) -> None:
    """Switch the whole process to *user* and *group* (default: the user's primary group).

    As root: drop supplementary groups, set the real, effective and saved gid, then
    uid, then check that ``setuid(0)`` fails. When not root and already running as
    *user* (and *group*), there is nothing to drop and this returns quietly.

    Call it once, after every socket is bound and before serving. All threads switch
    with the process (glibc broadcasts the set*id calls).

    Raises:
        PrivilegeError: the user or group does not exist, the user is root, the
            process is not root and is some other user, a system call failed, or root
            could be regained after the drop.
    """
    entry = _lookup_user(user)
    uid = entry.pw_uid
    gid = entry.pw_gid if group is None else _lookup_group(group)
    if uid == 0:
        raise PrivilegeError(f"cannot drop privileges: user {user!r} is root (uid 0)")

    if not running_as_root():
        if os.geteuid() == uid and os.getegid() == gid:
            return  # already that user (a container's USER, a service's User=)
        raise PrivilegeError(
            f"cannot switch to user {user!r} (uid {uid}, gid {gid}): not running as root "
            f"(uid {os.geteuid()}, gid {os.getegid()})"
        )

    try:
        os.setgroups([])  # first: it needs root, and root's groups must not survive
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as exc:
        raise PrivilegeError(
            f"cannot switch to user {user!r} (uid {uid}, gid {gid}): {exc.strerror}"
        ) from exc

    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        raise PrivilegeError(f"dropped to user {user!r} but could regain root")
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise PrivilegeError(
            f"dropped to user {user!r} but ids are uid={os.getresuid()} gid={os.getresgid()}"
        )
    if os.getgroups() not in ([], [gid]):
        raise PrivilegeError(
            f"dropped to user {user!r} but supplementary groups remain: {os.getgroups()}"
        )
    log.info("dropped privileges to user %s (uid %d, gid %d)", user, uid, gid)


def _read_pid(path: str) -> int | None:
    """Answer the PID stored in *path*, or None when missing or unreadable."""
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    """Answer whether a process with *pid* exists (it may belong to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_pid_file(path: str | os.PathLike[str]) -> None:
    """Write this process's PID to *path*, atomically (temp file + rename), mode 0644.

    A stale file (its process is gone) is replaced. Write it before dropping
    privileges when it lives in a root-owned directory such as ``/run``; put it in a
    directory the service user owns (``/run/forwarder``) if it must be removed after.

    Raises:
        PidFileError: the file names another live process, or it cannot be written.
    """
    path = os.fspath(path)
    other = _read_pid(path)
    if other is not None and other != os.getpid() and _alive(other):
        raise PidFileError(f"{path}: another process is running with pid {other}")
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".forwarder-pid-", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(f"{os.getpid()}\n")
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise PidFileError(f"{path}: cannot write pid file: {exc.strerror}") from exc


_keeper_pipes: list[int] = []


def keep_pid_file(path: str | os.PathLike[str]) -> None:
    """Leaves behind, before the privilege drop, a process that keeps root for one thing:
    removing *path* once this process has exited (however it ends), if the file still
    names it. After the drop the process itself may not be allowed to (a pid file in a
    root-owned directory such as /run).

    The keeper closes every other file descriptor, ignores the signals a terminal or
    service manager sends the whole group, and waits on a pipe whose other end only this
    process holds: end of file means this process is gone.
    """
    path = os.path.abspath(os.fspath(path))
    pid = os.getpid()
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child:
        os.close(read_fd)
        _keeper_pipes.append(write_fd)  # open till this process ends; not inheritable
        return
    try:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_IGN)
        os.closerange(0, read_fd)
        os.closerange(read_fd + 1, os.sysconf("SC_OPEN_MAX"))
        while os.read(read_fd, 1):
            pass
        if _read_pid(path) == pid:
            os.unlink(path)
    except BaseException:  # nothing to report to, and nothing may escape
        pass
    os._exit(0)


def remove_pid_file(path: str | os.PathLike[str]) -> bool:
    """Remove *path* if it holds this process's PID; answer whether it was removed.

    Best effort, never raises: after a privilege drop the directory may no longer be
    writable (logged as a warning), and a file that names another process is left
    alone.
    """
    path = os.fspath(path)
    if _read_pid(path) != os.getpid():
        return False
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.warning("cannot remove pid file %s: %s", path, exc.strerror)
        return False
    return True
