"""The systemd notify protocol (sd_notify(3)), spoken directly on the socket.

A service started with ``Type=notify`` tells systemd about its state by sending
newline-separated ``KEY=VALUE`` assignments in one datagram to the AF_UNIX socket
named by ``$NOTIFY_SOCKET``:

- ``READY=1`` once the listeners are bound and serving (systemd then reports
  the unit as started and ``systemctl start`` returns);
- ``RELOADING=1`` plus ``MONOTONIC_USEC=...`` when a SIGHUP reload begins, then
  ``READY=1`` when it is done (the Type=notify-reload protocol of systemd 253;
  older versions accept and ignore MONOTONIC_USEC);
- ``STOPPING=1`` when draining starts on SIGTERM;
- ``STATUS=...`` free text shown by ``systemctl status``;
- ``WATCHDOG=1`` keep-alive pings when the unit sets ``WatchdogSec=``.

A socket name starting with ``@`` is an abstract socket (Linux): the ``@`` stands
for a leading NUL byte. Without ``$NOTIFY_SOCKET`` (not started by systemd, or in a
container) every call is a no-op that returns ``False``. Sending never raises for
runtime problems: a missing or unreachable socket is logged and reported as
``False``, because losing a notification must never take the DNS service down.

No dependency is needed: this is the whole protocol short of passing file
descriptors (FDSTORE), which forwarder does not use.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

__all__ = ["Notifier", "notify", "notify_socket_address", "watchdog_interval"]

log = logging.getLogger("forwarder")

_SEND_TIMEOUT = 1.0  # seconds; a datagram to a live systemd never waits this long


def notify_socket_address(value: str | None = None) -> str | None:
    r"""Answer the socket address to send to, from *value* or ``$NOTIFY_SOCKET``.

    ``@name`` becomes the abstract address ``"\0name"``; an absolute path is used as
    is. Anything else (unset, empty, ``vsock:`` addresses of newer systemd versions)
    answers ``None``.
    """
    if value is None:
        value = os.environ.get("NOTIFY_SOCKET")
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    log.debug("unsupported NOTIFY_SOCKET address %r", value)
    return None


def notify(*fields: str) -> bool:
    """Send *fields* (``"READY=1"``, ``"STATUS=..."``) to systemd in one datagram.

    Returns True when the datagram was sent, False when ``$NOTIFY_SOCKET`` is unset or
    the send failed (the failure is logged at debug level).

    Raises:
        ValueError: a field is not ``KEY=VALUE`` or contains a newline; that is a bug
            in the caller, not a runtime condition.
    """
    for field in fields:
        if "=" not in field or "\n" in field:
            raise ValueError(f"sd_notify field must be KEY=VALUE on one line: {field!r}")
    address = notify_socket_address()
    if address is None or not fields:
        return False
    payload = "\n".join(fields).encode("utf-8")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(_SEND_TIMEOUT)
            sock.sendto(payload, address)
    except OSError as exc:
        log.debug("sd_notify to %r failed: %s", address.replace("\0", "@", 1), exc)
        return False
    return True


def watchdog_interval() -> float | None:
    """Answer the watchdog timeout in seconds that systemd expects, or None.

    Reads ``$WATCHDOG_USEC`` (set when the unit has ``WatchdogSec=``). When
    ``$WATCHDOG_PID`` is set it must be this process's PID, otherwise the watchdog is
    meant for another process (a parent that exec'd us keeps it). Send ``WATCHDOG=1``
    at least every half of the returned interval.
    """
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    return value / 1_000_000


def _one_line(text: str) -> str:
    """Answer *text* with line breaks replaced: STATUS must fit on one line."""
    return " ".join(text.splitlines())


class Notifier:
    """The service's side of Type=notify: ready, reloading, stopping, status, watchdog.

    Every method returns what :func:`notify` returns and is safe to call when not
    running under systemd. One instance per process (the main process only: the unit
    keeps the default ``NotifyAccess=main``).
    """

    def ready(self, status: str | None = None) -> bool:
        """Report that the service is serving (startup done, or a reload finished)."""
        fields = ["READY=1"]
        if status:
            fields.append("STATUS=" + _one_line(status))
        return notify(*fields)

    def reloading(self, status: str | None = None) -> bool:
        """Report that a reload started; send :meth:`ready` when it is done."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        fields = ["RELOADING=1", f"MONOTONIC_USEC={usec}"]
        if status:
            fields.append("STATUS=" + _one_line(status))
        return notify(*fields)

    def stopping(self, status: str | None = None) -> bool:
        """Report that shutdown (draining) started."""
        fields = ["STOPPING=1"]
        if status:
            fields.append("STATUS=" + _one_line(status))
        return notify(*fields)

    def status(self, text: str) -> bool:
        """Set the free-text status line shown by ``systemctl status``."""
        return notify("STATUS=" + _one_line(text))

    def watchdog(self) -> bool:
        """Send one watchdog keep-alive ping."""
        return notify("WATCHDOG=1")

    async def watchdog_loop(self, interval: float | None = None) -> None:
        """Ping the watchdog every half interval until cancelled.

        *interval* defaults to :func:`watchdog_interval`; when there is none this
        returns at once, so it is safe to start unconditionally as a task. Because the
        pings come from the event loop, a stalled loop stops them and systemd restarts
        the service, which is the point.
        """
        if interval is None:
            interval = watchdog_interval()
        if interval is None:
            return
        period = max(interval / 2, 0.01)
        while True:
            self.watchdog()
            await asyncio.sleep(period)
