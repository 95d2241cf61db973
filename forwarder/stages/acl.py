"""Access control: only clients in `acl.allow` are answered; everyone else gets REFUSED."""

from __future__ import annotations

import ipaddress

from forwarder.config import model

_MEMO_LIMIT = 65_536


class Acl:
    """Answers whether a client address may query; remembers recent verdicts by address."""

    __slots__ = ("_memo", "_networks")

    def __init__(self, networks: tuple[model.Network, ...]) -> None:
        self._networks = networks
        self._memo: dict[str, bool] = {}

    def allows(self, host: str) -> bool:
        verdict = self._memo.get(host)
        if verdict is None:
            verdict = in_networks(host, self._networks)
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            self._memo[host] = verdict
        return verdict


def in_networks(host: str, networks: tuple[model.Network, ...]) -> bool:
    """Answers whether the address *host* lies in any of *networks* (IPv4-mapped decoded)."""
    try:
        addr = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr in net for net in networks if net.version == addr.version)
