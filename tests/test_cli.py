"""The command line as a user runs it: `forwarder --version`, `check-config`, and `run`
serving real queries until SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import signal
import socket
import sys
import tempfile
from pathlib import Path

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import pytest

from forwarder import __version__, cli
from tests.conftest import free_port
from tests.fakes import FakeUpstream

FORWARDER = [sys.executable, "-m", "forwarder"]


async def run_cli(*args: str, timeout: float = 20.0) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *FORWARDER, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_version() -> None:
    code, out, _ = await run_cli("--version")
    assert code == 0 and out.strip() == f"forwarder {__version__}"


async def test_check_config_good_and_bad(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("upstreams: {corp: {servers: [192.0.2.53]}}\n"
                    "zones: [{match: ., upstream: corp}]\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("upstreams: {corp: {servers: [192.0.2.53]}}\n"
                   "zones:\n  - {match: ., upstream: corp}\n  - {match: a, upstream: corp}\n"
                   "  - {match: amazonaws.com, upstream: r53}\n")
    code, out, _ = await run_cli("check-config", str(good))
    assert code == 0 and "ok" in out
    code, _, err = await run_cli("check-config", str(bad))
    assert code == 2
    assert f"{bad}:5:38: zones[2].upstream: unknown upstream group 'r53'" in err


async def test_check_config_encrypted_groups(tmp_path: Path) -> None:
    """check-config: a URL on a udp group is an error naming the field; a group that
    skips certificate verification passes, with a warning saying so."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("upstreams: {r53: {servers: ['https://10.10.0.10/dns-query']}}\n"
                   "zones: [{match: ., upstream: r53}]\n")
    code, _, err = await run_cli("check-config", str(bad))
    assert code == 2
    assert str(bad) in err
    assert "upstreams.r53.servers[0]: 'https://10.10.0.10/dns-query' is a URL: " \
           "URLs need transport: https" in err
    loose = tmp_path / "loose.yaml"
    loose.write_text("upstreams: {corp: {transport: tls, servers: [192.0.2.53], "
                     "tls: {insecure_skip_verify: true}}}\n"
                     "zones: [{match: ., upstream: corp}]\n")
    code, out, err = await run_cli("check-config", str(loose))
    assert code == 0 and "ok" in out
    assert "upstreams.corp.tls.insecure_skip_verify is true" in err


async def test_run_refuses_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("zones: [{match: ., upstream: nowhere}]\n")
    code, _, err = await run_cli("run", "-c", str(bad))
    assert code == 2 and "zones[0].upstream: unknown upstream group 'nowhere'" in err


ACCOUNTS = ("zones: [{match: ., action: refuse}]\n"
            "user: no-such-user-x\n"
            "group: no-such-group-x\n")


def test_check_config_on_the_target_needs_user_and_group(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """check-config runs where the forwarder will run unless told otherwise: a `user:` or
    `group:` that does not exist there is an error, with its line."""
    path = tmp_path / "f.yaml"
    path.write_text(ACCOUNTS)
    assert cli.main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{path}:2:7: user: no user 'no-such-user-x' on this machine: create it here, or, if "
        "the forwarder runs on another machine, check with --not-target",
        f"{path}:3:8: group: no group 'no-such-group-x' on this machine: create it here, or, "
        "if the forwarder runs on another machine, check with --not-target",
        f"{path}: 2 problem(s) found",
    ]


def test_check_config_elsewhere_warns_about_user_and_group(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "f.yaml"
    path.write_text(ACCOUNTS)
    assert cli.main(["check-config", "--not-target", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        f"{path}:2:7: user: warning: no user 'no-such-user-x' on this machine; it must exist "
        "on the machine that runs the forwarder",
        f"{path}:3:8: group: warning: no group 'no-such-group-x' on this machine; it must "
        "exist on the machine that runs the forwarder",
    ]
    assert out == f"{path}: ok (1 rules, 1 upstream groups, 0 policies)\n"


def test_check_config_accepts_accounts_that_exist(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    me = pwd.getpwuid(os.getuid())
    path = tmp_path / "f.yaml"
    path.write_text(f"zones: [{{match: ., action: refuse}}]\nuser: {me.pw_name}\n"
                    f"group: {me.pw_gid}\n")
    assert cli.main(["check-config", str(path)]) == 0
    assert capsys.readouterr().err == ""


RANGES = Path(__file__).resolve().parent / "fixtures" / "ip-ranges.json"


@pytest.mark.parametrize(("clients", "warned"), [("", True),
                                                 (", clients: [10.20.0.0/16]", False)])
def test_check_config_warns_about_a_gateway_entry_for_on_premises_clients(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], clients: str, warned: bool) -> None:
    """`aws:gateway:...` is right only for clients inside the VPC: on a rule that answers
    every client the ACL admits, check-config says so (a warning: exit 0), with its line."""
    path = tmp_path / "f.yaml"
    path.write_text(f"aws: {{ip_ranges: {RANGES}}}\n"
                    f"zones: [{{match: amazonaws.com, upstream: system, policy: p{clients}}}]\n"
                    "policies: {p: {allowed: [default, 'aws:gateway:s3:ap-northeast-1']}}\n")
    assert cli.main(["check-config", str(path)]) == 0
    err = capsys.readouterr().err
    if warned:
        assert err.startswith(f"{path}:2:58: zones[0].policy: warning: policy p allows "
                              "aws:gateway:s3:ap-northeast-1, but rule amazonaws.com has no "
                              "clients: and answers every client acl.allow admits")
        assert "on-premises clients need an Interface endpoint" in err
    else:
        assert err == ""


def test_run_refuses_a_user_that_does_not_exist_before_binding(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "f.yaml"
    path.write_text(ACCOUNTS)
    assert cli.run(str(path)) == 2
    assert capsys.readouterr().err.splitlines()[0] == \
        f"{path}:2:7: user: no user 'no-such-user-x' on this machine"


async def test_run_reports_port_in_use(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        cfg = tmp_path / "f.yaml"
        cfg.write_text(f"listen: [{{address: 127.0.0.1, port: {port}}}]\nallow_root: true\n"
                       "metrics: {enabled: false}\nzones: [{match: ., action: refuse}]\n")
        code, _, err = await run_cli("run", "-c", str(cfg))
    assert code == 1 and "cannot bind" in err


@pytest.mark.parametrize("workers", [1, 2])
async def test_run_reports_a_metrics_port_in_use_in_one_line(tmp_path: Path,
                                                             workers: int) -> None:
    """A taken metrics port is reported as a taken DNS port is: one line naming the
    address and the reason, no traceback, exit 1 (with workers: 2 too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        http = taken.getsockname()[1]
        cfg = tmp_path / "f.yaml"
        cfg.write_text(f"listen: [{{address: 127.0.0.1, port: {free_port()}}}]\n"
                       f"allow_root: true\nworkers: {workers}\n"
                       f"metrics: {{listen: '127.0.0.1:{http}'}}\n"
                       "zones: [{match: ., action: refuse}]\n")
        code, _, err = await run_cli("run", "-c", str(cfg))
    assert code == 1
    assert f"cannot bind metrics.listen 127.0.0.1:{http}: Address already in use" in err
    assert "Traceback" not in err


async def test_run_serves_until_sigterm(tmp_path: Path) -> None:
    """`forwarder run -c FILE` answers over UDP and TCP, and exits 0 on SIGTERM."""
    async with FakeUpstream() as up:
        port = free_port()
        cfg = tmp_path / "f.yaml"
        cfg.write_text(
            f"listen: [{{address: 127.0.0.1, port: {port}}}]\n"
            f"upstreams: {{up: {{servers: ['{up.addr}'], health_check: {{enabled: false}}}}}}\n"
            "metrics: {enabled: false}\nzones: [{match: ., upstream: up}]\n"
            + ("allow_root: true\n" if os.geteuid() == 0 else ""))
        proc = await asyncio.create_subprocess_exec(
            *FORWARDER, "run", "-c", str(cfg), stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            r = await wait_answer(port)
            assert r.rcode() == dns.rcode.NOERROR and r.answer[0][0].address == "192.0.2.1"
            q = dns.message.make_query("tcp.example", "A")
            r = await dns.asyncquery.tcp(q, "127.0.0.1", port=port, timeout=2)
            assert r.rcode() == dns.rcode.NOERROR
        finally:
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 10)
        assert code == 0


async def wait_answer(port: int, tries: int = 100) -> dns.message.Message:
    """Asks until the freshly started process answers (bounded)."""
    q = dns.message.make_query("example.com", "A")
    for _ in range(tries):
        try:
            return await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=0.1)
        except (dns.exception.Timeout, OSError):
            continue
    raise AssertionError("the forwarder did not start answering")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to test the privilege drop")
async def test_root_refused_without_user(tmp_path: Path) -> None:
    cfg = tmp_path / "f.yaml"
    cfg.write_text(f"listen: [{{address: 127.0.0.1, port: {free_port()}}}]\n"
                   "metrics: {enabled: false}\nzones: [{match: ., action: refuse}]\n")
    code, _, err = await run_cli("run", "-c", str(cfg))
    assert code == 1 and "refusing to serve as root" in err


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to test the privilege drop")
async def test_binds_then_drops_to_user(tmp_path: Path) -> None:
    """Started as root with --user nobody: it serves, as nobody, writes its pid file and
    removes it at exit, and writes a query log whose file only root could create (in a
    root-owned directory: it is opened before the drop and given to nobody)."""
    port = free_port()
    cfg = tmp_path / "f.yaml"
    pid_file = tmp_path / "forwarder.pid"
    querylog = tmp_path / "queries.jsonl"
    cfg.write_text(f"listen: [{{address: 127.0.0.1, port: {port}}}]\n"
                   "metrics: {enabled: false}\nzones: [{match: ., action: refuse}]\n"
                   f"querylog: {{enabled: true, path: '{querylog}'}}\n")
    tmp_path.chmod(0o755)
    proc = await asyncio.create_subprocess_exec(
        *FORWARDER, "run", "-c", str(cfg), "--user", "nobody", "--pid-file", str(pid_file),
        stderr=asyncio.subprocess.PIPE)
    try:
        r = await wait_answer(port)
        assert r.rcode() == dns.rcode.REFUSED
        status = Path(f"/proc/{proc.pid}/status").read_text()
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert set(uid_line.split()[1:]) == {str(pwd.getpwnam("nobody").pw_uid)}
        assert pid_file.read_text().strip() == str(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    err = (await proc.stderr.read()).decode()  # type: ignore[union-attr]
    for _ in range(100):  # the keeper removes it once the process is gone
        if not pid_file.exists():
            break
        await asyncio.sleep(0.02)
    assert not pid_file.exists(), err
    lines = [json.loads(line) for line in querylog.read_text().splitlines()]
    assert lines and lines[0]["rcode"] == "REFUSED"
    assert querylog.stat().st_uid == pwd.getpwnam("nobody").pw_uid


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to test the privilege drop")
async def test_hooks_load_after_the_drop() -> None:
    """Hook files are imported (and their setup() run) as the unprivileged user, not root."""
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:  # pytest's tmp is root-only
        os.chmod(tmp, 0o777)
        await hooks_load_after_the_drop(Path(tmp))


async def hooks_load_after_the_drop(tmp_path: Path) -> None:
    out = tmp_path / "uid.txt"
    hook = tmp_path / "hook.py"
    hook.write_text("import os\n\n\ndef setup(options):\n"
                    "    with open(options['out'], 'w') as f:\n"
                    "        f.write(str(os.geteuid()))\n\n\n"
                    "def on_query(ctx):\n    return None\n")
    hook.chmod(0o644)
    port = free_port()
    cfg = tmp_path / "f.yaml"
    cfg.write_text(f"listen: [{{address: 127.0.0.1, port: {port}}}]\n"
                   f"hooks: [{{path: {hook}, options: {{out: {out}}}}}]\n"
                   "metrics: {enabled: false}\nzones: [{match: ., action: refuse}]\n")
    cfg.chmod(0o644)
    proc = await asyncio.create_subprocess_exec(
        *FORWARDER, "run", "-c", str(cfg), "--user", "nobody")
    try:
        await wait_answer(port)
        assert out.read_text() == str(pwd.getpwnam("nobody").pw_uid)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
