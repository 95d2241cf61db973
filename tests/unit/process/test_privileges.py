"""Tests for forwarder.process.privileges: real privilege drops in forked children."""

from __future__ import annotations

import grp
import json
import os
import pwd
import select
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from forwarder.process import privileges

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")


def _in_child(fn: Callable[[], dict[str, Any]], timeout: float = 10.0) -> dict[str, Any]:
    """Run *fn* in a forked child and answer the dict it returned (or its error).

    The drop is irreversible, so it must never happen in the test process itself.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report, then leave without running pytest's cleanup
        os.close(read_fd)
        try:
            result = fn()
        except BaseException as exc:  # everything goes back to the parent
            result = {
                "error": type(exc).__name__,
                "message": str(exc),
                "traceback": traceback.format_exc(),
            }
        try:
            os.write(write_fd, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    try:
        ready, _, _ = select.select([read_fd], [], [], timeout)
        assert ready, "child did not report in time"
        chunks = []
        while chunk := os.read(read_fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(read_fd)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return json.loads(b"".join(chunks))


def _identity() -> dict[str, Any]:
    """Answer the process's ids and whether setuid(0) / setgid(0) still work."""
    report: dict[str, Any] = {
        "resuid": list(os.getresuid()),
        "resgid": list(os.getresgid()),
        "groups": os.getgroups(),
    }
    for name, call in (("setuid0", os.setuid), ("setgid0", os.setgid)):
        try:
            call(0)
        except PermissionError:
            report[name] = "EPERM"
        else:
            report[name] = "succeeded"
    return report


def _drop_and_report(user: str, group: str | None = None) -> Callable[[], dict[str, Any]]:
    def run() -> dict[str, Any]:
        privileges.drop_privileges(user, group)
        return _identity()

    return run


@needs_root
def test_drop_to_nobody() -> None:
    """drop_privileges("nobody"): uid nobody, gid nogroup, no supplementary groups, no root."""
    nobody = pwd.getpwnam("nobody")
    assert grp.getgrgid(nobody.pw_gid).gr_name == "nogroup"
    report = _in_child(_drop_and_report("nobody"))
    assert "error" not in report, report
    assert report["resuid"] == [nobody.pw_uid] * 3
    assert report["resgid"] == [nobody.pw_gid] * 3
    assert report["groups"] == []
    assert report["setuid0"] == "EPERM"
    assert report["setgid0"] == "EPERM"


@needs_root
def test_drop_with_explicit_group() -> None:
    """An explicit group wins over the user's primary group."""
    daemon_gid = grp.getgrnam("daemon").gr_gid
    report = _in_child(_drop_and_report("nobody", "daemon"))
    assert "error" not in report, report
    assert report["resuid"] == [pwd.getpwnam("nobody").pw_uid] * 3
    assert report["resgid"] == [daemon_gid] * 3
    assert report["groups"] == []
    assert report["setuid0"] == "EPERM"


@needs_root
def test_drop_by_numeric_id() -> None:
    report = _in_child(_drop_and_report("65534", "65534"))
    assert "error" not in report, report
    assert report["resuid"] == [65534] * 3
    assert report["resgid"] == [65534] * 3


@needs_root
def test_supplementary_groups_are_dropped() -> None:
    """Root's supplementary groups do not survive the drop."""

    def run() -> dict[str, Any]:
        os.setgroups([1, 2, 3])
        privileges.drop_privileges("nobody")
        return _identity()

    report = _in_child(run)
    assert "error" not in report, report
    assert report["groups"] == []


@needs_root
def test_second_drop_as_same_user_is_noop_and_other_user_fails() -> None:
    """Not root any more: the same user is a no-op, another user is a clear error."""

    def run() -> dict[str, Any]:
        privileges.drop_privileges("nobody")
        privileges.drop_privileges("nobody")  # already nobody: fine
        try:
            privileges.drop_privileges("daemon")
        except privileges.PrivilegeError as exc:
            return {"root": privileges.running_as_root(), "message": str(exc)}
        return {"root": privileges.running_as_root(), "message": None}

    report = _in_child(run)
    assert report["root"] is False
    assert report["message"] is not None
    assert "'daemon'" in report["message"]
    assert "not running as root" in report["message"]


def test_unknown_user_raises_with_its_name() -> None:
    """An unknown user is a PrivilegeError naming it, raised before anything changes."""
    before = (os.getresuid(), os.getresgid(), os.getgroups())
    with pytest.raises(privileges.PrivilegeError, match="no-such-user-fwd") as info:
        privileges.drop_privileges("no-such-user-fwd")
    assert "does not exist" in str(info.value)
    assert (os.getresuid(), os.getresgid(), os.getgroups()) == before


def test_unknown_group_raises_with_its_name() -> None:
    before = (os.getresuid(), os.getresgid(), os.getgroups())
    with pytest.raises(privileges.PrivilegeError, match="no-such-group-fwd"):
        privileges.drop_privileges("nobody", "no-such-group-fwd")
    assert (os.getresuid(), os.getresgid(), os.getgroups()) == before


def test_root_as_target_is_refused() -> None:
    with pytest.raises(privileges.PrivilegeError, match="'root' is root"):
        privileges.drop_privileges("root")


def test_running_as_root() -> None:
    assert privileges.running_as_root() is (os.geteuid() == 0)


def test_write_and_remove_pid_file(tmp_path: Path) -> None:
    pid_file = tmp_path / "forwarder.pid"
    privileges.write_pid_file(pid_file)
    assert pid_file.read_text() == f"{os.getpid()}\n"
    assert pid_file.stat().st_mode & 0o777 == 0o644
    assert list(tmp_path.iterdir()) == [pid_file]  # no temp file left behind
    assert privileges.remove_pid_file(pid_file) is True
    assert not pid_file.exists()
    assert privileges.remove_pid_file(pid_file) is False  # already gone: no error


def test_stale_pid_file_is_replaced(tmp_path: Path) -> None:
    pid_file = tmp_path / "forwarder.pid"
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)  # reaped: that pid is now (almost certainly) free
    pid_file.write_text(f"{pid}\n")
    privileges.write_pid_file(pid_file)
    assert pid_file.read_text() == f"{os.getpid()}\n"


def test_pid_file_of_live_process_is_kept(tmp_path: Path) -> None:
    """Another running process's pid file is neither overwritten nor removed."""
    pid_file = tmp_path / "forwarder.pid"
    pid_file.write_text(f"{os.getppid()}\n")
    with pytest.raises(privileges.PidFileError, match=str(os.getppid())):
        privileges.write_pid_file(pid_file)
    assert privileges.remove_pid_file(pid_file) is False
    assert pid_file.read_text() == f"{os.getppid()}\n"


def test_unwritable_pid_file_raises(tmp_path: Path) -> None:
    with pytest.raises(privileges.PidFileError, match="cannot write pid file"):
        privileges.write_pid_file(tmp_path / "missing-dir" / "forwarder.pid")
